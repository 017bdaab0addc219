"""The compile pipeline: model -> capture -> passes -> export -> quantize -> lower (backends) -> verify -> report.

``compile()`` is the Python API behind ``edgevlm compile``.  The build is
written to a temporary directory beside the destination and renamed into
place at the end, so a failed compile leaves no half-written build (and an
earlier build of the same name stays intact).
"""
import contextlib
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgevlm import __version__
from edgevlm import progress as progress_eta
from edgevlm.compiler import report as report_io
from edgevlm.compiler import runtime_bundle
from edgevlm.compiler.backends import get_backend, list_backends
from edgevlm.compiler.backends.base import Artifact, Plan, lower_stage, lowering_error
from edgevlm.compiler.capture import capture, export_static
from edgevlm.compiler.native_output import fds_redirected_to
from edgevlm.compiler.passes import run_pipeline
from edgevlm.compiler.stage import CapturedStage
from edgevlm.core.config import CompileConfig, QuantConfig
from edgevlm.core.metrics import compare
from edgevlm.core.stage import Stage, StageKind
from edgevlm.errors import BackendUnavailableError, EdgeVLMError, InputError
from edgevlm.models import ModelBundle, build_model
from edgevlm.targets import get_target


@dataclass
class CompileResult:
    """The build's directory, its report (report.json's content) and each artifact as its backend returned it,
    keyed by (stage name, backend name)."""

    build_dir: Path
    report: dict
    artifacts: dict[tuple[str, str], Artifact] = field(default_factory=dict)


def _as_bundle(model, example_inputs, name, calibration, max_context=None) -> ModelBundle:
    if model is None or isinstance(model, (str, os.PathLike)):
        return build_model(None if model is None else str(model), max_context=max_context)
    if max_context is not None:
        raise InputError("max_context applies to a Hugging Face VLM checkpoint directory", "pass the directory, or drop max_context")
    if isinstance(model, ModelBundle):
        return model
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise InputError("example_inputs is required when compiling an nn.Module", "pass a tuple of example tensors with the static shapes to compile for")
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
            raise InputError("example_inputs must be a tensor or a tuple of tensors", "pass e.g. (torch.randn(1, 3, 224, 224),)")
        label = name or type(model).__name__.lower()
        return ModelBundle(label, [Stage("model", model, inputs, calibration=list(calibration) if calibration else None)])
    raise InputError(f"cannot compile an object of type {type(model).__name__}", "pass a model name, a checkpoint directory or a torch.nn.Module")


def _select_backends(target, names):
    """(backends to use, [(name, reason) skipped]); explicit requests must be usable."""
    if names is None:
        chosen, skipped = [], []
        registered = {b.name for b in list_backends()}
        for n in target.backends:
            if n not in registered:
                skipped.append((n, "backend not part of this edgevlm build"))
                continue
            with _backend_log(None):
                ok, why = get_backend(n).available()
            (chosen.append(get_backend(n)) if ok else skipped.append((n, why)))
        if not chosen:
            raise BackendUnavailableError(f"no backend of target {target.name} is usable here: " + "; ".join(f"{n}: {w}" for n, w in skipped), "install edgevlm with its extras: pip install 'edgevlm[all]'")
        return _with_sources(chosen), skipped
    chosen = []
    for n in names:
        backend = get_backend(n)
        with _backend_log(None):
            ok, why = backend.available()
        if not ok:
            raise BackendUnavailableError(f"backend '{n}' is not usable: {why}", f"pip install 'edgevlm[{backend.extra}]'" if backend.extra else "reinstall edgevlm")
        chosen.append(backend)
    return _with_sources(chosen), []


def _with_sources(chosen: list) -> list:
    """``chosen`` in lowering order: a backend that consumes another's artifact comes after it
    (added when not asked for: ``--backends qnn`` lowers onnx's QDQ model first)."""
    ordered: list = []
    for backend in chosen:
        source = backend.consumes
        if source is not None and all(b.name != source for b in ordered):
            dep = get_backend(source)
            with _backend_log(None):
                ok, why = dep.available()
            if not ok:
                raise BackendUnavailableError(f"backend '{backend.name}' lowers the {source} artifact, and '{source}' is not usable: {why}",
                                              f"pip install 'edgevlm[{dep.extra}]'" if dep.extra else "reinstall edgevlm")
            ordered.append(dep)
        if backend not in ordered:
            ordered.append(backend)
    return ordered


SYNTHETIC_CALIBRATION_SAMPLES = 8


def _stage_calibration(stage: Stage, calib_dir, limit: int) -> str:
    """Give ``stage`` calibration samples if it has none; return where they came from."""
    if stage.calibration:
        return f"given: {len(stage.calibration)} samples"
    first = stage.example_inputs[0]
    if calib_dir is not None and stage.kind == StageKind.ENCODER and first.dim() == 4 and first.shape[1] == 3:
        from edgevlm.quant.calibration import load_calibration_images

        mean = getattr(stage.module, "mean", (0.0, 0.0, 0.0))
        std = getattr(stage.module, "std", (1.0, 1.0, 1.0))
        images = load_calibration_images(calib_dir, tuple(first.shape[2:]), mean, std, limit=limit)
        stage.calibration = [(torch.from_numpy(im).expand_as(first).contiguous(),) + tuple(stage.example_inputs[1:]) for im in images]
        return f"{len(images)} images from {calib_dir}"
    # No data: seeded normal samples for float inputs, the example values for integer inputs.
    gen = torch.Generator().manual_seed(0)
    stage.calibration = [
        tuple(torch.randn(x.shape, generator=gen, dtype=x.dtype) if x.is_floating_point() else x for x in stage.example_inputs)
        for _ in range(SYNTHETIC_CALIBRATION_SAMPLES)
    ]
    return f"synthetic: {SYNTHETIC_CALIBRATION_SAMPLES} seeded normal samples (no calibration data given)"


def _vlm_calibration(bundle: ModelBundle, calib_dir, limit: int) -> str | None:
    """Calibrate an imported VLM's stages on images with prompts (``calib_dir``, else the built-in set).

    Each pair runs through the float model once, and every stage calibrates on
    the inputs it sees there (tower tokens, projected embeddings spliced into
    the prompt, the state after prefill); a stage's intermediate activations
    are observed later, one sample at a time.  The prompt is the checkpoint's
    chat template around the image when it has a tokenizer, else the words as
    hashed token ids (said so).  Returns where the samples came from, or None
    for a bundle that is not an imported VLM (zoo VLMs bring their own set).
    """
    import zlib

    vlm = bundle.modules.get("vlm")
    if vlm is None or vlm.encoder is None or bundle.meta.get("source") != "huggingface":
        return None
    from edgevlm.data.calibration_set import calibration_pairs
    from edgevlm.models.arch.vlm import vlm_stages

    pairs, source = calibration_pairs(calib_dir, limit)
    processing = bundle.modules.get("processing")
    vocab = vlm.lm.config.vocab_size
    samples = []
    for image, prompt in pairs:
        words = prompt.split()
        while True:  # the prompt's words that fit the prefill stage's room
            text = " ".join(words)
            if processing is not None:
                px = torch.from_numpy(processing.image(image))
                ids = processing.prompt_ids(text, vlm.num_image_tokens)
            else:
                px = vlm.pixel_values(image)
                ids = vlm.prompt_ids([zlib.crc32(w.encode()) % vocab for w in words], bos_id=1)
            if len(ids) <= vlm.prefill_len or not words:
                break
            words = words[:-1]
        samples.append((px, ids[:vlm.prefill_len]))
    bundle.stages = vlm_stages(vlm, samples)
    how = "chat template + tokenizer.json" if processing is not None else "no tokenizer.json: prompt words as hashed token ids"
    return f"{source}; {how}; propagated through the float model"


def _flat_outputs(out) -> list[np.ndarray]:
    leaves = torch.utils._pytree.tree_leaves(out)
    return [t.detach().cpu().numpy() for t in leaves if isinstance(t, torch.Tensor)]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


LEGACY_TMP_AGE_S = 3600  # temp dirs named without a pid (older edgevlm): stale when untouched this long


def clear_stale_dirs(build_dir: Path) -> list[Path]:
    """Remove ``.NAME.tmp-<pid>-*`` / ``.NAME.old-<pid>`` dirs of ``build_dir`` whose compile is gone
    (an ``old`` one becomes ``build_dir`` again if that is missing).

    A compile killed by SIGKILL (or a crash) cannot clean up after itself;
    the next compile of the same build does.  A dir whose pid is still alive
    belongs to a compile in progress and is kept.
    """
    removed = []
    for d in build_dir.parent.glob(f".{build_dir.name}.*"):
        kind, _, rest = d.name[len(build_dir.name) + 2:].partition("-")
        if kind not in ("tmp", "old") or not d.is_dir():
            continue
        pid = rest.split("-")[0]
        if pid.isdigit():
            stale = not _pid_alive(int(pid))
        else:
            stale = time.time() - d.stat().st_mtime > LEGACY_TMP_AGE_S
        if stale and kind == "old" and not build_dir.exists():
            d.rename(build_dir)  # the earlier build, moved aside by a compile that died mid-swap: put it back
        elif stale:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _prepare_dir(build_dir: Path) -> Path:
    if build_dir.exists() and not build_dir.is_dir():
        raise InputError(f"output path '{build_dir}' exists and is not a directory", "choose another --out")
    if build_dir.is_dir() and any(build_dir.iterdir()) and not (build_dir / "manifest.json").exists():
        raise InputError(f"output directory '{build_dir}' is not empty and is not an edgevlm build", "choose another --out, or empty it first")
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    clear_stale_dirs(build_dir)
    return Path(tempfile.mkdtemp(prefix=f".{build_dir.name}.tmp-{os.getpid()}-", dir=build_dir.parent))


def _exit_on_sigterm():
    """Make SIGTERM raise SystemExit(143) until the returned function is called, so that a
    terminated compile removes its temporary build dir like an interrupted one (SIGINT already
    raises KeyboardInterrupt).  Only the main thread can set handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def terminate(signum, _frame):
        print("edgevlm: terminated (SIGTERM); removing the temporary build dir", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _swap_into_place(tmp: Path, build_dir: Path) -> None:
    old = None
    if build_dir.exists():
        old = build_dir.with_name(f".{build_dir.name}.old-{os.getpid()}")
        build_dir.rename(old)
    tmp.rename(build_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _discard_failed(tmp: Path, build_dir: Path, keep: bool) -> None:
    """A failed compile's temporary dir: removed, or with ``keep`` renamed to ``<out>.failed-<pid>``
    (not a ``.tmp-``/``.old-`` name, so no later compile clears it) and its path printed."""
    if not keep or not tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    kept = build_dir.with_name(f"{build_dir.name}.failed-{os.getpid()}")
    shutil.rmtree(kept, ignore_errors=True)  # a pid reused by an earlier failed compile
    tmp.rename(kept)
    print(f"edgevlm: the failed build is kept in {kept}/ (logs/, and every artifact written before the failure)",
          file=sys.stderr, flush=True)


def _release_memory() -> None:
    """Collect the finished stage's graphs and models and hand freed heap back to the OS.

    glibc keeps freed memory mapped, so the resident set of a real-size
    compile grew stage after stage without it (a 4-layer LFM2-VL, 1.8 ->
    2.5 -> 3.5 GB after its projector and LM stages; benchmarks/compile_scale.py).
    """
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _peak_rss_gb() -> float:
    """This process's peak resident set so far (getrusage; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class _Progress:
    """Progress when verbose: a rich bar on stderr in a terminal; one line per finished step on stdout
    when stdout is not a terminal (a log, a pipe, CI), so long compiles show they are alive.
    Silent when not verbose."""

    # In a log, a long step's items-done line at most this often, and when it ends if it took ITEM_LINE_MIN_S
    # or more (a step of a few seconds needs no line beside its "finished" one).
    ITEM_LINE_EVERY_S = 30.0
    ITEM_LINE_MIN_S = 10.0

    def __init__(self, verbose: bool, total: int):
        self.bar = None
        self.lines = verbose and not sys.stdout.isatty()
        self.t0 = time.perf_counter()
        self.current = ""
        self.last_item_line = 0.0
        # Long steps report from inside _backend_log, which points fds 1 and 2 at a log file: the
        # progress keeps copies of the console's own descriptors.
        self.out = _console_copy(sys.stdout) if self.lines else None
        if verbose and not self.lines:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.err = _console_copy(sys.stderr)
            self.bar = Progress(TextColumn("{task.description:<36}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=Console(file=self.err), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("compiling", total=total)
            # the long step in progress (edgevlm.progress.track): items done and its ETA
            self.items = self.bar.add_task("", total=None, visible=False)
        self._reporting = progress_eta.reporting(self.item) if verbose else contextlib.nullcontext()
        self._reporting.__enter__()

    def step(self, text: str, advance: int = 0):
        self.current = text
        if self.bar:
            self.bar.update(self.task, description=text, advance=advance)
            self.bar.update(self.items, visible=False)

    def item(self, label: str, done: int, total: int, elapsed_s: float):
        """A long step's progress (the reporter of edgevlm.progress.track): ``done`` of ``total`` items."""
        eta = progress_eta.eta_s(done, total, elapsed_s)
        left = f", ETA {progress_eta.fmt_s(eta)}" if eta is not None and done < total else ""
        if self.bar:
            self.bar.update(self.items, description=f"  {label} {done}/{total}{left}", completed=done, total=total, visible=True)
        now = time.perf_counter()
        if done == 0:
            self.last_item_line = now
        elif self.lines and (now - self.last_item_line >= self.ITEM_LINE_EVERY_S
                             or (done == total and elapsed_s >= self.ITEM_LINE_MIN_S)):
            self.last_item_line = now
            self._print(f"edgevlm: {self.current}: {label} {done}/{total} in {progress_eta.fmt_s(elapsed_s)}{left}")

    def finished(self, stage: str, what: str, seconds: float):
        """One line for a finished step: stage, backend (or other step), its seconds, the total so far."""
        if self.lines:
            self._print(f"edgevlm: {stage} {what}: {seconds:.2f} s (total {time.perf_counter() - self.t0:.1f} s, "
                        f"peak RSS {_peak_rss_gb():.1f} GB)")

    def _print(self, line: str):
        try:
            print(line, file=self.out, flush=True)
        except BrokenPipeError:  # the reader left (`| head -3`): the build goes on, its output to /dev/null
            self.lines = False
            devnull = os.open(os.devnull, os.O_WRONLY)
            for stream in {self.out, sys.stdout}:
                with contextlib.suppress(OSError, ValueError):  # a stream without a descriptor
                    os.dup2(devnull, stream.fileno())
            os.close(devnull)

    def close(self):
        self._reporting.__exit__(None, None, None)
        if self.bar:
            self.bar.stop()
            if self.err is not sys.stderr:
                self.err.close()
        if self.out is not None and self.out is not sys.stdout:
            with contextlib.suppress(BrokenPipeError):
                self.out.close()


def _console_copy(stream):
    """A file on a copy of ``stream``'s descriptor, which _backend_log's redirection of fds 1 and 2
    leaves pointing at the console; ``stream`` itself when it has no descriptor (pytest's capture, an
    IDE's console), where there is nothing to redirect either."""
    try:
        return os.fdopen(os.dup(stream.fileno()), "w")
    except (OSError, ValueError):   # io.UnsupportedOperation is both
        return stream


@contextlib.contextmanager
def _backend_log(build_dir: Path | None, name: str = ""):
    """Send what third-party toolchains print while a backend works to logs/<name>.log in the build
    (to /dev/null when ``build_dir`` is None: the import-time chatter of availability checks).

    coremltools, the QNN quantizer, TVM and ExecuTorch's cpuinfo write
    dozens of warnings and progress lines (Python logging, print and C
    stderr alike); redirecting file descriptors 1 and 2 catches all of them,
    so the console shows edgevlm's own output only.  The log stays in the
    build (it is not an artifact: not in manifest.json).
    """
    if build_dir is None:
        target = Path(os.devnull)
    else:
        (Path(build_dir) / "logs").mkdir(exist_ok=True)
        target = Path(build_dir) / "logs" / f"{name}.log"
    with open(target, "ab") as log, fds_redirected_to(log):
        yield


LATENCY_RUNS = 5
# The runs stop early once they have taken this long (a large stage's run takes many seconds here): the
# median of those done, at least one.
LATENCY_BUDGET_S = 30.0


def _median_ms(run, inputs) -> dict:
    """Median wall time of ``run(inputs)`` over LATENCY_RUNS runs after the verification run (measured here),
    fewer when they pass LATENCY_BUDGET_S."""
    times = []
    for _ in range(LATENCY_RUNS):
        t0 = time.perf_counter()
        run(inputs)
        times.append((time.perf_counter() - t0) * 1e3)
        if sum(times) > LATENCY_BUDGET_S * 1e3:
            break
    return {"label": "measured", "where": "this machine (compile host), CPU", "median": float(np.median(times)),
            "runs": len(times)}


def _estimate(gm, stage: Stage, target, scheme) -> dict:
    """The target latency of the stage's graph from the target's roofline (labelled estimated)."""
    from edgevlm.errors import EdgeVLMError
    from edgevlm.compiler.estimate import count_ops, time_ops

    try:
        est = time_ops(count_ops(gm, stage.example_inputs), target, scheme)
    except EdgeVLMError as exc:
        return {"label": "estimated", "total_ms": None, "reason": exc.cause}
    return {"label": "estimated", "target": target.name, "scheme": est.scheme, "total_ms": est.total_ms,
            "macs": est.macs, "by_class": est.by_class(), "efficiency_source": est.efficiency.source}


def _sample_parity(stage: Stage, samples: list, results: list, metric: str, budget_s: float) -> dict:
    """``metric`` of the outputs ``results`` (one list per sample that finished) vs the float module
    on ``samples``: the worst value, each sample's and each output's, and how many samples ran."""
    if not results:
        return {"metric": "not run", "value": None, "samples": 0, "of": len(samples), "budget_s": budget_s,
                "reason": f"no sample finished within the verification budget of {budget_s:g} s"}
    pick = max if metric == "max_abs_err" else min
    names = stage.output_names or ()
    values, per_output = [], {}
    for sample, got in zip(samples, results):
        with torch.no_grad():
            ref = _flat_outputs(stage.module(*sample))
        if len(got) != len(ref):
            raise RuntimeError(f"artifact of {stage.name} has {len(got)} outputs, PyTorch {len(ref)}")
        values.append(compare(metric, ref, got))
        for name, r, g in zip(names, ref, got):
            v = compare(metric, [r], [g])
            per_output[name] = pick(per_output[name], v) if name in per_output else v
    return {"metric": metric, "value": pick(values), "samples": len(values), "of": len(samples), "budget_s": budget_s,
            "per_sample": [round(v, 2) for v in values], "per_output": {n: round(v, 2) for n, v in per_output.items()}}


# A verification with a time budget is not started when the stage's MAC count, at the backend's measured
# pace (Backend.simulated_macs_per_s), puts one sample past this many budgets: it would spend the budget and
# finish nothing.  The LFM2-VL-450M default compile spent 480 of its 3632 s so (encoder and llm-prefill, on
# the HTP simulation and on ExecuTorch's portable kernels; estimated 3990-4280 s and 400-430 s a sample).
SIMULATION_SKIP_FACTOR = 3.0


def _too_slow_to_verify(backend, macs: int | None, samples: list, budget_s: float) -> dict | None:
    """The parity entry of a verification not run because one sample would take over SIMULATION_SKIP_FACTOR
    budgets at the backend's pace, or None to run it."""
    rate = backend.simulated_macs_per_s
    if not (rate and macs):
        return None
    seconds = macs / rate
    if seconds <= SIMULATION_SKIP_FACTOR * budget_s:
        return None
    return {"metric": "not run", "value": None, "samples": 0, "of": len(samples), "budget_s": budget_s,
            "estimated_sample_s": round(seconds), "verify_s": 0.0,
            "reason": f"not run: one sample would take about {seconds:.0f} s on {backend.simulated_where} (an "
                      f"estimate: {macs / 1e9:.1f} GMAC at the {rate / 1e6:g} M MAC/s measured there on a 2-core VM), "
                      f"over {SIMULATION_SKIP_FACTOR:g} times the verification budget of {budget_s:g} s"}


def _verify(backend, artifact, stage: Stage, plan: Plan, checks, reference, inputs, macs: int | None = None) -> dict:
    """{"parity": ..., "latency_ms": ...} of an artifact run here against the float model.

    ``checks`` is the backend's ``verify_samples``: with a time budget, the
    figure is taken over those samples, as many as finish within it
    (``Backend.run_samples``: the HTP simulation, on calibration inputs), and
    not run at all when the stage's ``macs`` say no sample could (_too_slow_to_verify);
    without one, on the stage's example inputs.
    """
    # Float artifacts must match closely; quantized ones are judged by their noise level.
    metric = "sqnr_db" if artifact.quant is not None else "max_abs_err"
    samples, budget_s = checks
    if budget_s is not None and (skipped := _too_slow_to_verify(backend, macs, samples, budget_s)) is not None:
        return {"parity": skipped | {"reference": backend.reference(plan)}}
    if budget_s is not None:
        t0 = time.perf_counter()
        with _backend_log(plan.out_dir, f"{stage.name}-{backend.name}"):
            results = backend.run_samples(artifact, plan.out_dir, [[x.detach().cpu().numpy() for x in s] for s in samples],
                                          budget_s)
        parity = _sample_parity(stage, samples, results, metric, budget_s)
        return {"parity": parity | {"reference": backend.reference(plan), "verify_s": round(time.perf_counter() - t0, 2)}}
    out = {}
    with _backend_log(plan.out_dir, f"{stage.name}-{backend.name}"):
        run = backend.load(artifact, plan.out_dir)
        outputs = run(inputs)
    if backend.measures_latency:
        out["latency_ms"] = _median_ms(run, inputs)
    if len(outputs) != len(reference):
        raise RuntimeError(f"{backend.name} artifact of {stage.name} has {len(outputs)} outputs, PyTorch {len(reference)}")
    out["parity"] = {"metric": metric, "value": compare(metric, reference, outputs), "reference": backend.reference(plan)}
    return out


def _compile_stage(stage: Stage, target, backends, plan: Plan, progress: _Progress, scheme=None,
                   lowered: dict | None = None) -> dict:
    """The stage's report entry: captured, passes run, lowered on each backend and verified.  Each
    Artifact also goes into ``lowered`` under (stage name, backend name)."""
    progress.step(f"{stage.name}: capture")
    t0 = time.perf_counter()
    gm = capture(stage)
    progress.step(f"{stage.name}: passes")
    gm, log = run_pipeline(gm, target)
    estimate = _estimate(gm, stage, target, scheme)
    program = export_static(gm, stage.example_inputs, f"stage '{stage.name}' after passes")
    captured = CapturedStage(stage, gm, program, log)
    with torch.no_grad():
        reference = _flat_outputs(stage.module(*stage.example_inputs))
    inputs = [x.detach().cpu().numpy() for x in stage.example_inputs]
    entry = {"name": stage.name, "kind": stage.kind, "passes": log, "artifacts": [], "skipped": [], "estimate": estimate}
    progress.finished(stage.name, "capture + passes", time.perf_counter() - t0)
    produced = {}
    for backend in backends:
        progress.step(f"{stage.name}: lower {backend.name}")
        t0 = time.perf_counter()
        source = (produced[backend.consumes],) if backend.consumes else ()
        with _backend_log(plan.out_dir, f"{stage.name}-{backend.name}"):
            try:
                artifact = produced[backend.name] = lower_stage(backend, captured, plan, *source)
            except EdgeVLMError:
                raise
            except Exception as exc:  # a toolchain's own error: one line naming backend, stage and op
                raise lowering_error(backend.name, stage.name, exc) from exc
        if lowered is not None:
            lowered[stage.name, backend.name] = artifact
        art = {"backend": backend.name, "path": artifact.path, "files": artifact.files, "info": artifact.report_info(),
               "lower_s": round(time.perf_counter() - t0, 3)}
        if artifact.integer_only is not None:
            art["integer_only"] = artifact.integer_only
        checks = backend.verify_samples(stage, plan) if backend.can_execute else None
        if checks is not None:
            progress.step(f"{stage.name}: verify {backend.name}")
            art |= _verify(backend, artifact, stage, plan, checks, reference, inputs, estimate.get("macs"))
        elif backend.can_execute:
            art["parity"] = {"metric": "not run", "value": None,
                             "reference": f"{backend.name} verification skipped (--no-htp-verify)"}
        else:
            art["parity"] = {"metric": "not run", "value": None, "reference": f"{backend.name} artifacts cannot run on this machine"}
        entry["artifacts"].append(art)
        progress.step(f"{stage.name}: {backend.name} done", advance=1)
        progress.finished(stage.name, backend.name + (" lowered + verified" if backend.can_execute else " lowered"),
                          time.perf_counter() - t0)
    # A backend built from another's artifact is the one deployed (qnn's context binary from onnx's
    # QDQ model): listed first.
    entry["artifacts"].sort(key=lambda a: get_backend(a["backend"]).consumes is None)
    return entry


def compile(  # noqa: A001 - the public verb
    model=None,
    example_inputs=None,
    target: str = "sa8295p",
    config: CompileConfig | None = None,
    **fields,
) -> CompileResult:
    """Compile a model for a target and verify every artifact against PyTorch.

    ``model`` is a zoo name, a checkpoint directory, a ModelBundle, or any
    ``torch.nn.Module`` (then ``example_inputs``, a tensor or tuple of tensors
    at the static shapes to compile for, is required).  Artifacts, manifest.json,
    report.json and report.html go to ``config.out`` (default build/<model>-<target>).

    ``config`` is a :class:`edgevlm.core.config.CompileConfig`, which lists
    and documents every option with its default; keyword ``fields`` override
    its fields (``compile("tinyconv", target="sa8295p", quant="w8a16")``), and
    a name that is not a field is a TypeError.  Quantization calibrates on
    ``calibration`` (an iterable of input tuples, for a module), the stage's
    own samples, images in ``calib_dir``, or, failing all, seeded synthetic
    samples (said so in the report).
    """
    if config is not None and not isinstance(config, CompileConfig):
        raise TypeError(f"config must be an edgevlm.core.config.CompileConfig, not {type(config).__name__}")
    from edgevlm.quant.gptq import check_weight_algo
    from edgevlm.quant.schemes import parse_quant_spec

    cfg = (config or CompileConfig()).with_fields(**fields)
    check_weight_algo(cfg.weight_algo)  # here, not only when the first stage quantizes after its export
    tgt = get_target(target)
    quant = QuantConfig.resolve(parse_quant_spec(cfg.quant, tgt), cfg)  # once, for every stage and backend
    bundle = _as_bundle(model, example_inputs, cfg.name, cfg.calibration, cfg.max_context)
    if cfg.vision_tokens is not None:
        from edgevlm.models.zoo.vlms import with_token_reduction

        bundle = with_token_reduction(bundle, cfg.vision_tokens, cfg.token_reduce)
    chosen, skipped = _select_backends(tgt, None if cfg.backends is None else list(cfg.backends))
    build_dir = Path(cfg.out) if cfg.out is not None else Path("build") / f"{bundle.name}-{tgt.name}"
    tmp = _prepare_dir(build_dir)
    progress = _Progress(cfg.verbose, total=len(bundle.stages) * len(chosen))
    t_start = time.perf_counter()
    restore_sigterm = _exit_on_sigterm()
    try:
        lowered: dict[tuple[str, str], Artifact] = {}
        report = _build(bundle, tgt, cfg, quant, chosen, skipped, tmp, progress, lowered)
        report["compile_s"] = round(time.perf_counter() - t_start, 3)
        _finish_report(bundle, tgt, cfg, chosen, tmp, progress, report)
        _swap_into_place(tmp, build_dir)
    except BaseException:
        _discard_failed(tmp, build_dir, cfg.keep_failed)
        raise
    finally:
        restore_sigterm()
        progress.close()
    return CompileResult(build_dir, report, lowered)


def _build(bundle: ModelBundle, tgt, cfg: CompileConfig, quant: QuantConfig, chosen: list, skipped: list, tmp: Path,
           progress: _Progress, lowered: dict) -> dict:
    """Every stage captured, lowered and verified, and the runtime bundle written, into ``tmp``: the report so far."""
    from edgevlm.quant.gptq import HessianStore

    plan = Plan(target=tgt, out_dir=tmp, quant=quant, options={
        "htp_verify": cfg.htp_verify, "gptq_hessians": HessianStore() if quant.weight_algo == "gptq" else None})
    stages = []
    vlm_source = None
    if quant.quantized:
        progress.step("calibration inputs")
        t0 = time.perf_counter()
        vlm_source = _vlm_calibration(bundle, cfg.calib_dir, cfg.calib_samples)
        if vlm_source:
            progress.finished("vlm", "calibration inputs (float model on images + prompts)", time.perf_counter() - t0)
    for stage in bundle.stages:
        scheme = quant.scheme_for(stage.kind)
        calib_source = None if scheme is None else (
            f"{vlm_source} ({len(stage.calibration)} samples)" if vlm_source else _stage_calibration(stage, cfg.calib_dir, cfg.calib_samples))
        entry = _compile_stage(stage, tgt, chosen, plan, progress, scheme, lowered)
        _release_memory()
        entry["skipped"] = [{"backend": n, "reason": why} for n, why in skipped]
        entry["quant"] = scheme.name if scheme is not None else None
        entry["calibration"] = calib_source
        quantized = [a["parity"]["value"] for a in entry["artifacts"] if a["parity"]["metric"] == "sqnr_db"]
        if quantized:
            entry["sqnr_db"] = min(quantized)
        stages.append(entry)
    runtime = None
    if runtime_bundle.is_runtime_vlm(bundle):
        progress.step("runtime bundle: GGUF + verify")
        t0 = time.perf_counter()
        paths = {st["name"]: {a["backend"]: a["path"] for a in st["artifacts"]} for st in stages}
        runtime = runtime_bundle.write(bundle, quant.scheme_for(StageKind.LLM), tmp, paths)
        progress.finished("llm", "runtime bundle (GGUF) written + verified", time.perf_counter() - t0)
    return {
        "model": bundle.name,
        "target": tgt.name,
        "edgevlm_version": __version__,
        "model_meta": bundle.meta,
        "quant": {kind: (sch.name if sch is not None else None) for kind, sch in quant.schemes.items()},
        "stages": stages,
        "runtime": runtime,
    }


VISION_KINDS = (StageKind.ENCODER, StageKind.PROJECTOR)


def _accuracy_vision_backend(cfg: CompileConfig, chosen: list, report: dict) -> tuple[str | None, str | None]:
    """The vision artifacts the build's accuracy runs (None: the runner's choice), and why, when not the deployed ones.

    On an HTP target the deployed vision path is the QNN context binaries, run on the HTP simulation.
    Where verification finished no sample of a vision stage on it within its budget, the accuracy
    would wait as long for every image, with no bound (the full-depth LFM2-VL-450M compile's first
    image had not left its SigLIP2 tower on the HTP simulation after 10 min), so it runs the ONNX QDQ
    artifacts on onnxruntime CPU instead, and the report says so.  (qnn consumes onnx's QDQ model: both exist.)
    """
    if not (cfg.htp_verify and any(b.name == "qnn" for b in chosen)):
        return None, None
    slow = [st["name"] for st in report["stages"] if st["kind"] in VISION_KINDS for art in st["artifacts"]
            if art["backend"] == "qnn" and art.get("parity", {}).get("samples") == 0]
    if not slow:
        return "qnn", None
    return "onnx", (f"vision through the ONNX QDQ artifacts on onnxruntime CPU, not the QNN context binaries: the HTP "
                    f"simulation finished no sample of {', '.join(slow)} within its verification budget (or, "
                    f"by its MAC count, could not)")


def _finish_report(bundle: ModelBundle, tgt, cfg: CompileConfig, chosen: list, tmp: Path, progress: _Progress,
                   report: dict) -> None:
    """AI Hub (when asked), manifest.json, the build's shapes accuracy, then report.json and report.html."""
    if cfg.hub:
        from rich.console import Console

        from edgevlm.compiler.hub import run_hub

        run_hub(tmp, report, tgt, Console(stderr=True))
    report_io.write_manifest(tmp, report)
    # The build against float: shapes samples for a zoo model, greedy agreement with transformers for a
    # checkpoint with its tokenizer (edgevlm.accuracy.build_accuracy).
    runtime = report["runtime"]
    if runtime is not None and cfg.eval_n and cfg.accuracy_check is not None:
        progress.step("accuracy: the build vs float")
        t0 = time.perf_counter()
        deployed, why = _accuracy_vision_backend(cfg, chosen, report)
        report["accuracy"] = cfg.accuracy_check(bundle, tmp, cfg.eval_n, runtime["info"]["gguf_type"], deployed)
        if why:
            report["accuracy"]["vision_path_note"] = why
        progress.finished("build", "accuracy: the build vs float", time.perf_counter() - t0)
    report_io.write_report(tmp, report)
