"""QNN backend: the QNN context binary a Qualcomm device loads, prepared by Qualcomm's own HTP toolchain.

It lowers the ONNX backend's QDQ model (``consumes = "onnx"``: it does not
quantize again) with onnxruntime-qnn, the QNN execution provider that
bundles Qualcomm's QNN libraries: ``libHtpPrepare.so`` prepares the graph
offline for the target's HTP arch and SoC, and the result is written as an
EPContext model, ``<stage>.htp.onnx`` (a one-node ONNX graph naming the
context) plus ``<stage>.htp_qnn.bin`` (the QNN context binary itself).

CPU fallback is disabled: QNN takes the whole graph or the compile fails
with one line naming the node, the op, the target and QNN's reason.  On
x86_64 Linux ``libQnnHtp.so`` runs the HTP in simulation, so the context
binaries are executed here and their SQNR against float PyTorch is the
artifact's parity (see ``verify_samples``).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgevlm.compiler.backends.base import Artifact, Backend, Plan
from edgevlm.core.records import HtpContext, QuantRecord
from edgevlm.compiler.native_output import fds_redirected_to
from edgevlm.quant import onnx_files
from edgevlm.errors import BackendUnavailableError, InputError, LoweringError, UnsupportedOpError
from edgevlm.progress import track

INSTALL = "pip install 'edgevlm[qnn]'"
EP_NAME = "QNNExecutionProvider"
# Metadata keys written into each EPContext model: the context binary says what it was prepared for.
META = {"htp_arch": "edgevlm.htp_arch", "soc_model": "edgevlm.soc_model", "vtcm_mb": "edgevlm.vtcm_mb",
        "target": "edgevlm.target"}
# Verification runs the HTP simulation, which costs real CPU time on large stages: it takes the
# calibration samples that finish within this budget (seconds per stage; a sample still running
# then is stopped, and a stage with none finished says so in the report).
VERIFY_BUDGET_S = 120.0
# The HTP simulation's pace, for skipping a verification that could not finish one sample (pipeline._verify):
# the fastest measured on the LFM2-VL-450M-shaped default build (2026-12-04, 2-core AMD EPYC VM, load 1-4;
# benchmarks/results/compile_scale_lfm2-vl-450m_sa8295p_default.md): the projector's 2.68 GMAC sample
# within 120 s (>= 22 M MAC/s), llm-decode's 0.37 GMAC at ~40 s a sample (~9 M MAC/s).  The encoder
# (107 GMAC) and llm-prefill (100 GMAC) finished no sample in their 120 s: about an hour each at this pace.
HTP_SIM_MACS_PER_S = 25e6
# Preparing a context binary (libHtpPrepare) costs seconds at nano size and up to past a quarter hour
# at real size (benchmarks/htp_cost.py, LFM2-VL-450M-shaped, load 8-22: projector 19 s, llm-decode
# 61 s, encoder and llm-prefill still preparing at 15 min); a QNN graph still preparing after this
# many seconds stops the compile with one line naming the stage, the budget and the fixes
# (EDGEVLM_QNN_PREPARE_BUDGET_S=<seconds>, 0 for no limit, or --backends onnx).  The budget is per
# graph, so per part for a stage prepared in parts: a part is bounded in size (PART_MAX_ACTIVATIONS),
# and a deeper stage has more of them (the 450M encoder 19, the 1.6B one more), not larger ones.
PREPARE_BUDGET_S = 1800.0
# QNN's preparation cost grows with the activations it tiles, slightly faster than linearly
# (benchmarks/results/htp_cost.md, one LFM2-VL-450M-shaped SigLIP2 layer = 56 M activation elements:
# 107 CPU s and 1.0 GB; two layers 235 CPU s and 2.0 GB; the whole 12-layer encoder, 676 M, still
# preparing at 29 min and 7 GB).  A stage computing more activation elements than this is prepared
# in parts cut between its blocks (edgevlm.compiler.qdq_parts), each its own QNN graph and context
# binary, PREPARE_WORKERS at a time, and chained in one EPContext model that runs them in sequence.
PART_MAX_ACTIVATIONS = 64_000_000
PREPARE_WORKERS = 2
VERIFY_MAX_SAMPLES = 8
# Calibration samples behind the per-layer HTP view in report.html: one, since the graph with every
# activation as an output is slow to prepare and run (llm-prefill of autoneural-nano: 113 s for two).
DEPARTURE_SAMPLES = 1
DEPARTURE_DB = 30.0  # a tensor whose HTP value is below this SQNR vs onnxruntime CPU has departed


@functools.lru_cache(maxsize=1)
def _qnn_devices():
    """The QNN EP's devices after registering its library with onnxruntime (once per process)."""
    import onnxruntime as ort
    import onnxruntime_qnn

    ort.register_execution_provider_library(EP_NAME, onnxruntime_qnn.get_library_path())
    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise BackendUnavailableError("onnxruntime-qnn registered no QNN device", INSTALL)
    return tuple(devices)


def htp_options(htp) -> dict[str, str]:
    """The QNN EP provider options for ``htp`` (an edgevlm.targets.base.Htp)."""
    return {"backend_type": "htp", "htp_arch": str(htp.arch), "soc_model": str(htp.soc_model),
            "vtcm_mb": str(htp.vtcm_mb)}


def htp_session(model, htp, context_path: Path | None = None, threads: int = 0, what: str = "the graph"):
    """An onnxruntime session running ``model`` (a path or serialized bytes) wholly on QNN's HTP.

    With ``context_path`` the session also writes the QNN context binary
    model there (EPContext ONNX + ``<name>_qnn.bin`` beside it).  Raises
    UnsupportedOpError when QNN refuses any part of the graph (CPU fallback
    is disabled, so a refused node is an error, never a silent CPU op).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if context_path is not None:
        opts.add_session_config_entry("ep.context_enable", "1")
        opts.add_session_config_entry("ep.context_file_path", str(context_path))
        opts.add_session_config_entry("ep.context_embed_mode", "0")
    opts.add_provider_for_devices(list(_qnn_devices()), htp_options(htp))
    with _native_output_captured() as log:
        try:
            session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts)
            # onnxruntime's Python run() answers a failed EP run by re-creating the session on the CPU EP,
            # which the disabled fallback refuses ("Conflicting session configuration ..."), hiding QNN's error.
            session.disable_fallback()
            return session
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own Fail/RuntimeException types
            error = str(exc)
        captured = log()
    raise UnsupportedOpError(refusal_message(captured, error, htp, what),
                             "rewrite the named node into a form QNN takes (see edgevlm.quant.htp_forms), "
                             "or compile for a CPU target")


@contextlib.contextmanager
def _native_output_captured():
    """File descriptors 1 and 2 go to a temporary file while QNN prepares a graph; yields a function
    returning what was written.

    onnxruntime names refused nodes only in its log ("Unsupported nodes in QNN
    EP: { name: ..., type: ... }", QNN's validation errors), not in the
    exception; and Qualcomm's libraries print a configuration notice
    ("# LIBNATIVE: ...") on stdout, where `edgevlm run` streams its answer.
    """
    with tempfile.TemporaryFile() as log, fds_redirected_to(log):

        def text() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")

        yield text


_UNSUPPORTED = re.compile(r"Unsupported nodes in QNN EP: (.*)")
_NODE = re.compile(r"name: ([^,}]+), type: ([^,}\s]+)")
_VALIDATION = re.compile(r"[^\n\]]*(?:validat|[Ff]ailed)[^\n]*node[^\n]*")


def refusal_message(log: str, error: str, htp, what: str = "the graph") -> str:
    """One line from onnxruntime-qnn's log and error: the refused nodes and ops, the HTP and QNN's reason."""
    where = what
    found = _UNSUPPORTED.search(log)
    if found:
        nodes = _NODE.findall(found.group(1))
        more = f" and {len(nodes) - 3} more" if len(nodes) > 3 else ""
        named = ", ".join(f"node '{n.strip()}' (op {t})" for n, t in nodes[:3]) + more
        where = f"{named} of {what}" if named else what
    validation = _VALIDATION.search(log)
    if validation:
        reason = validation.group(0)
    elif found:
        reason = "the QNN EP does not support these nodes in this form (CPU fallback is disabled)"
    else:
        reason = error
    reason = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(reason.split()))
    return f"QNN HTP v{htp.arch} (soc_model {htp.soc_model}) refused {where}: {reason[:400]}"


def _in_child(job: str, htp, args: list[str], what: str, timeout_s: float | None = None) -> bool:
    """Run ``job`` (a key of ``_CHILD_JOBS``) in a fresh Python process; kill it after ``timeout_s``.

    Returns False when it was killed there, True when it finished.

    A refusal in the child (exit 2, "cause<TAB>fix" on stderr) is raised
    here as the same UnsupportedOpError; any other failure as LoweringError.
    Two things need the fresh process: QNN's preparation writes a different
    binary for the same graph depending on how many graphs the process
    prepared before (seen here: 3 in a row, 3 different binaries; the same 3
    again in the next process), and a call into QNN cannot be interrupted
    in-process (one HTP-simulated llm-prefill sample of an LFM2-VL-450M-shaped
    build ran past 20 minutes).
    """
    child = subprocess.Popen(_child_cmd(job, htp, what, args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        _, err = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        return False
    if child.returncode != 0:
        _raise_child_failure(f"({job})", what, child.returncode, err)
    return True


def _child_cmd(job: str, htp, what: str, args: list[str]) -> list[str]:
    """The command line of a ``_child_main`` process running ``job``."""
    return [sys.executable, "-c", "import sys; from edgevlm.compiler.backends.qnn_backend import _child_main; "
            "sys.exit(_child_main(sys.argv[1:]))", job, str(htp.arch), str(htp.soc_model), str(htp.vtcm_mb), what,
            *args]


def _raise_child_failure(doing: str, what: str, code: int, err: str):
    """A child that exited with ``code`` != 0: a refusal (exit 2, "cause<TAB>fix" as the last line of its
    stderr ``err``) as the same UnsupportedOpError, anything else as LoweringError ("QNN HTP ``doing`` of
    ``what`` failed ...")."""
    last = (err.strip().splitlines() or [""])[-1]
    if code == 2:
        cause, _, fix = last.partition("\t")
        raise UnsupportedOpError(cause, fix or None)
    raise LoweringError(f"QNN HTP {doing} of {what} failed (exit {code}): {last[:300]}",
                        f"check that onnxruntime-qnn imports here ({INSTALL})")


def _prepare_job(htp, what, source, context):
    htp_session(Path(source).read_bytes(), htp, context_path=Path(context), what=what)


class HtpRunner:
    """Runs the context binary model at ``path`` on the HTP: ``runner.inputs`` (names), ``runner(feed)`` ->
    outputs in the model's order.  Use it as a context manager (a chain's scratch dir goes at exit).

    Any other model (one EPContext node, or a QDQ model) is one session, held.  A chain of parts (chain_contexts) runs one
    part's session at a time, each released before the next is loaded: the HTP simulation holds only
    about 115 MB of context binaries a process (measured on the full-depth LFM2-VL-450M encoder's
    parts: 7 parts of 109 MB load together, 8 of 119 MB fail with QNN_COMMON_ERROR_MEM_ALLOC, in one
    session or two, and a released session frees its share), while that encoder's 19 parts are
    225 MB.  Loading a part takes about 0.05 s, against minutes of HTP simulation a part.  Each part's
    model is written to a scratch dir beside symbolic links to its binary, because onnxruntime resolves
    ``ep_cache_context`` relative to the model's own path and refuses '..' and absolute paths.
    """

    def __init__(self, path: Path, htp, what: str = "the graph", threads: int = 0):
        import onnx

        self.path, self.htp, self.what, self.threads = Path(path), htp, what, threads
        model = onnx.load(str(path), load_external_data=False)
        self.inputs = [i.name for i in model.graph.input]
        self.outputs = [o.name for o in model.graph.output]
        self._scratch = None
        if len(model.graph.node) <= 1 or any(n.op_type != "EPContext" for n in model.graph.node):  # not a chain
            self._session = htp_session(self.path, htp, threads=threads, what=what)
            self.inputs = [i.name for i in self._session.get_inputs()]
            return
        self._session = None
        self._scratch = tempfile.TemporaryDirectory(prefix="edgevlm-htp-chain-")
        values = {v.name: v for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]}
        self._parts = [self._part_model(model, values, node, i) for i, node in enumerate(model.graph.node)]

    def _part_model(self, model, values: dict, node, i: int) -> tuple[Path, list[str], list[str]]:
        """One EPContext node of the chain as its own model file in the scratch dir: (path, inputs, outputs);
        ``values``: the chain's value infos by name."""
        import onnx

        ins, outs = [n for n in node.input if n], list(node.output)
        graph = onnx.helper.make_graph([node], f"{model.graph.name}_part{i}", [values[n] for n in ins],
                                       [values[n] for n in outs])
        part = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        scratch = Path(self._scratch.name)
        for attr in node.attribute:
            if attr.name == "ep_cache_context":
                binary = attr.s.decode()
                (scratch / binary).symlink_to(self.path.parent.resolve() / binary)
        path = scratch / f"part{i}.onnx"
        onnx.save(part, str(path))
        return path, ins, outs

    def __call__(self, feed: dict) -> list:
        if self._session is not None:
            return self._session.run(None, {n: feed[n] for n in self.inputs})
        values = dict(feed)
        for i, (path, ins, outs) in enumerate(self._parts):
            session = htp_session(path, self.htp, threads=self.threads,
                                  what=f"part {i + 1}/{len(self._parts)} of {self.what}")
            values.update(zip(outs, session.run(None, {n: values[n] for n in ins})))
            del session  # its context's HTP memory is freed before the next part loads
        return [values[n] for n in self.outputs]

    def close(self) -> None:
        self._session = None
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _run_job(htp, what, model, tmp, n):
    """Each sample's outputs to out<i>.npz as soon as it is done (a killed child leaves the finished ones)."""
    tmp = Path(tmp)
    with HtpRunner(Path(model), htp, what) as run, np.load(tmp / "in.npz", allow_pickle=False) as data:
        for i in range(int(n)):
            outs = run({name: data[f"s{i}_{j}"] for j, name in enumerate(run.inputs)})
            partial = tmp / f"out{i}.partial.npz"
            np.savez(partial, **{f"o{k}": o for k, o in enumerate(outs)})
            partial.replace(tmp / f"out{i}.npz")


def _serve_job(htp, what, model, threads, parent):
    """The worker behind ``HtpWorker``: one HtpRunner, one run per line on stdin (a dir holding in.npz);
    answers "ok" on its stdout once that dir holds out.npz; ends at EOF, or with its parent ``parent``."""
    _die_with_parent(int(parent))
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever QNN's libraries print goes to the log, not into the answers
    with HtpRunner(Path(model), htp, what, threads=int(threads)) as run:
        print("\t".join(run.inputs), file=answers, flush=True)
        for line in sys.stdin:
            tmp = Path(line.rstrip("\n"))
            with np.load(tmp / "in.npz", allow_pickle=False) as data:
                outs = run({name: data[name] for name in run.inputs})
            np.savez(tmp / "out.npz", **{f"o{k}": o for k, o in enumerate(outs)})
            print("ok", file=answers, flush=True)


_CHILD_JOBS = {"prepare": _prepare_job, "run": _run_job, "serve": _serve_job}


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when ``parent`` dies (Linux prctl PR_SET_PDEATHSIG), so a parent killed
    outright leaves no HTP simulation running on; exit now if it has died already.  Off Linux, only
    the EOF on stdin ends the child, after its current run."""
    import ctypes
    import signal

    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(0)


class HtpWorker:
    """``HtpRunner`` on the model at ``path``, held in a child process: ``worker(feed)`` -> outputs.

    A call into onnxruntime-qnn's ``Session.run`` cannot be interrupted in-process: Ctrl-C or SIGTERM
    acts only once the call returns, minutes later on a large stage of the HTP simulation (seen on an
    LFM2-VL-450M-shaped encoder: SIGTERM waited past 25 s, and it took SIGKILL).  Here the parent only
    waits on a pipe, so an interrupt ends the wait at once and kills the child.  Inputs and outputs go
    through .npz files in a scratch dir (no pickle); the session stays loaded between calls.
    """

    def __init__(self, path: Path, htp, what: str = "the graph", threads: int = 0):
        import weakref

        self.what = what
        self._scratch = tempfile.TemporaryDirectory(prefix="edgevlm-htp-worker-")
        self._log = open(Path(self._scratch.name) / "stderr.log", "w+")
        cmd = _child_cmd("serve", htp, what, [str(path), str(threads or 0), str(os.getpid())])
        self._child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self._finalizer = weakref.finalize(self, HtpWorker._stop, self._child, self._log, self._scratch)
        self.inputs = self._answer().split("\t")

    @staticmethod
    def _stop(child, log, scratch) -> None:
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        log.close()
        scratch.cleanup()

    def _answer(self) -> str:
        """The child's next line; an interrupt here (Ctrl-C, or SIGTERM raising) kills the child first."""
        try:
            line = self._child.stdout.readline()
        except BaseException:
            self.close()
            raise
        if line:
            return line.rstrip("\n")
        code = self._child.wait()
        self._log.seek(0)
        err = self._log.read()
        self.close()
        _raise_child_failure("run", self.what, code, err)

    def __call__(self, feed: dict) -> list:
        tmp = Path(self._scratch.name)
        np.savez(tmp / "in.npz", **{n: np.asarray(feed[n]) for n in self.inputs})
        try:
            self._child.stdin.write(f"{tmp}\n")
            self._child.stdin.flush()
        except BrokenPipeError:
            pass  # the child has ended: _answer reads its reason
        self._answer()
        with np.load(tmp / "out.npz", allow_pickle=False) as data:
            return [data[f"o{k}"] for k in range(len(data.files))]

    def close(self) -> None:
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _child_main(argv: list[str]) -> int:
    """Entry of the process ``_in_child`` starts: job, HTP arch, soc_model, VTCM MB, what, then the job's args."""
    from edgevlm.targets.base import Htp

    job, arch, soc, vtcm, what, *args = argv
    try:
        _CHILD_JOBS[job](Htp(arch=int(arch), soc_model=int(soc), soc_name="", vtcm_mb=int(vtcm)), what, *args)
    except UnsupportedOpError as exc:
        print(f"{exc.cause}\t{exc.fix or ''}", file=sys.stderr)
        return 2
    return 0


def prepare_context(source: Path, context_path: Path, htp, what: str, budget_s: float | None = None) -> bool:
    """Write the QNN context binary model of the QDQ ONNX ``source`` for ``htp`` at ``context_path``.

    In a fresh process (see ``_in_child``), from the model's bytes, not its
    path: onnxruntime names the QNN graph by a hash of the model path when it
    has one.  Both keep a rebuild byte-identical.  Returns False when the
    preparation was stopped at ``budget_s`` seconds (nothing is written then).
    """
    if not _in_child("prepare", htp, [str(source), str(context_path)], what, budget_s):
        for path in (context_path, context_path.with_name(context_path.stem + "_qnn.bin")):
            path.unlink(missing_ok=True)  # whatever the stopped child had begun to write
        return False
    if context_path.is_file():
        return True
    raise LoweringError(f"QNN wrote no context binary for {what}", "check the build's logs/<stage>-qnn.log")


def prepare_stage(source: Path, context_path: Path, htp, what: str, budget_s: float | None = None) -> int | None:
    """The QNN context binary model of stage QDQ model ``source`` at ``context_path``: one graph, or for a
    stage past PART_MAX_ACTIVATIONS one graph a part, chained (see chain_contexts).

    Returns the number of QNN graphs, or None when a graph's preparation was stopped at ``budget_s``
    seconds (each graph has its own; nothing is left written then).
    """
    from edgevlm.compiler.qdq_parts import write_parts

    stem = context_path.name.removesuffix(".htp.onnx")
    with tempfile.TemporaryDirectory(prefix="edgevlm-qnn-parts-") as tmp:
        parts = [path for path, _ in write_parts(source, Path(tmp), stem, PART_MAX_ACTIVATIONS)]
        if not parts:
            return 1 if prepare_context(source, context_path, htp, what, budget_s) else None
        contexts = [context_path.with_name(f"{path.stem}.htp.onnx") for path in parts]

        stopped = threading.Event()  # a part refused or past its budget: no later part starts

        def prepare(i: int) -> bool:
            if stopped.is_set():
                return False
            try:
                ok = prepare_context(parts[i], contexts[i], htp, f"part {i + 1}/{len(parts)} of {what}", budget_s)
            except BaseException:
                stopped.set()
                raise
            if not ok:
                stopped.set()
            return ok

        pool = concurrent.futures.ThreadPoolExecutor(PREPARE_WORKERS)
        try:
            done = all(track(pool.map(prepare, range(len(parts))), f"QNN preparation, {PREPARE_WORKERS} parts at a time",
                             len(parts)))
            if done:
                chain_contexts(contexts, source, context_path)
        finally:
            pool.shutdown(cancel_futures=True)  # a part refused or past its budget: the parts not started are not prepared
            for path in contexts:
                path.unlink(missing_ok=True)
        if not done:
            for path in contexts:
                path.with_name(path.stem + "_qnn.bin").unlink(missing_ok=True)
            return None
    return len(parts)


def chain_contexts(contexts: list[Path], source: Path, out_path: Path) -> None:
    """One EPContext model at ``out_path`` running the parts' QNN graphs in sequence.

    Its nodes are the parts' EPContext nodes in order, each naming its own
    context binary; a tensor one part outputs and a later one reads has the
    same name in both (edgevlm.compiler.qdq_parts), so onnxruntime passes it
    on.  Inputs and outputs are the stage's.
    """
    import onnx

    stage = onnx.load(str(source), load_external_data=False).graph
    models = [onnx.load(str(c), load_external_data=False) for c in contexts]
    finals = {o.name for o in stage.output}
    nodes = [node for m in models for node in m.graph.node]
    between = [v for m in models for v in m.graph.output if v.name not in finals]
    graph = onnx.helper.make_graph(nodes, models[0].graph.name, list(stage.input), list(stage.output),
                                   value_info=between)
    chained = onnx.helper.make_model(graph, opset_imports=list(models[0].opset_import), ir_version=models[0].ir_version,
                                     producer_name=models[0].producer_name)
    onnx.save(chained, str(out_path))


def prepare_budget_s() -> float | None:
    """Seconds a stage's preparation may take: EDGEVLM_QNN_PREPARE_BUDGET_S if set (0: no limit), else PREPARE_BUDGET_S."""
    raw = os.environ.get("EDGEVLM_QNN_PREPARE_BUDGET_S")
    if raw is None:
        return PREPARE_BUDGET_S
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"EDGEVLM_QNN_PREPARE_BUDGET_S={raw!r} is not a number of seconds",
                         "set it to seconds, e.g. 3600, or 0 for no limit") from None
    if value < 0:
        raise InputError(f"EDGEVLM_QNN_PREPARE_BUDGET_S={raw!r} is negative", "set it to seconds, or 0 for no limit")
    return value or None


def run_on_htp(model_path: Path, htp, samples: list, timeout_s: float, what: str = "the graph") -> list:
    """Outputs of the ONNX model at ``model_path`` run on the HTP for each of ``samples``, as many as finish
    within ``timeout_s`` seconds (a child process, killed then; inputs and outputs as .npz, no pickle)."""
    with tempfile.TemporaryDirectory(prefix="edgevlm-htp-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "in.npz", **{f"s{i}_{j}": np.asarray(x) for i, s in enumerate(samples) for j, x in enumerate(s)})
        _in_child("run", htp, [str(model_path), str(tmp), str(len(samples))], what, timeout_s)
        results = []
        for i in range(len(samples)):
            done = tmp / f"out{i}.npz"
            if not done.is_file():
                break
            with np.load(done, allow_pickle=False) as data:
                results.append([data[f"o{k}"] for k in range(len(data.files))])
        return results


def departure_view(qdq_path: Path, samples: list, htp, graphs: int) -> dict:
    """The per-layer HTP view (htp_departure) of a stage prepared as ``graphs`` QNN graphs, or why it is not run.

    Only for a stage prepared whole: the view prepares the QDQ model as one graph with every activation an
    output, the whole-graph preparation that a stage in parts avoids.  Measured on the LFM2-VL-450M encoder
    (19 parts): its view's child grew past 8.6 GB in the 120 s budget and finished no sample.
    """
    if graphs > 1:
        return _no_departure(f"not run: the stage is prepared in {graphs} parts, and this view would prepare it "
                             "whole, with every activation an output", 0.0)
    return htp_departure(qdq_path, samples, htp, VERIFY_BUDGET_S)


def _no_departure(reason: str, seconds: float) -> dict:
    """An htp_departure result with no tensor measured, and why."""
    return {"rows": [], "first_departure": None, "samples": 0, "threshold_db": DEPARTURE_DB,
            "seconds": round(seconds, 2), "reason": reason}


def htp_departure(qdq_path: Path, samples: list, htp, budget_s: float) -> dict:
    """Where the HTP's execution of a QDQ model departs from onnxruntime CPU's, tensor by tensor.

    Every dequantized activation of the model becomes a graph output; the
    model runs on the HTP and on onnxruntime's CPU EP on the same samples, and
    each tensor gets the SQNR of the HTP's values against the CPU's (dB, over
    the samples).  On CPU the QDQ model matches float within its quantization
    noise, so the first tensor far below that is where the HTP computes
    something else: the layer to rewrite (edgevlm.quant.htp_forms).  The extra
    outputs can keep QNN from fusing across them, so this is a diagnostic of
    the graph, not a figure of the context binary (that is the parity).
    Returns ``{"rows": [{"tensor", "op", "sqnr_db"}], "first_departure": row or None, "samples": n}``.
    """
    import onnx
    import onnxruntime as ort

    from edgevlm.core.metrics import sqnr_db
    from edgevlm.quant.htp_forms import SPLIT_TAG
    from edgevlm.quant.ort_cpu import cpu_session_options

    t0 = time.perf_counter()
    model = onnx.load(str(qdq_path))
    inits = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    consumer = {}
    for node in model.graph.node:
        for t in node.input:
            consumer.setdefault(t, node.op_type)
    names = [n.output[0] for n in model.graph.node
             if n.op_type == "DequantizeLinear" and n.input[0] not in inits and n.output[0] not in outputs
             and SPLIT_TAG not in n.output[0]]
    inferred = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    model.graph.output.extend(inferred[n] for n in names if n in inferred)
    names = [n for n in names if n in inferred]
    cpu = ort.InferenceSession(model.SerializeToString(), cpu_session_options(), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in cpu.get_inputs()]
    out_names = [o.name for o in cpu.get_outputs()]
    with tempfile.TemporaryDirectory(prefix="edgevlm-departure-") as tmp:
        augmented = Path(tmp) / "augmented.onnx"
        onnx.save(model, str(augmented))
        on_htp = run_on_htp(augmented, htp, samples, budget_s, what="the per-layer view's graph")
    if not on_htp:
        return _no_departure(f"the HTP did not finish one sample within {budget_s:g} s", time.perf_counter() - t0)
    ref, got = {n: [] for n in names}, {n: [] for n in names}
    for sample, htp_outs in zip(samples, on_htp):
        feeds = {k: np.asarray(v) for k, v in zip(inputs, sample, strict=True)}
        for store, outs in ((ref, cpu.run(None, feeds)), (got, htp_outs)):
            for name, value in zip(out_names, outs):
                if name in store:
                    store[name].append(np.asarray(value, np.float64).ravel())
    rows = []
    for n in names:
        value = sqnr_db(np.concatenate(ref[n]), np.concatenate(got[n]))
        rows.append({"tensor": n.removesuffix("_DequantizeLinear_Output"), "op": consumer.get(n, "output"),
                     "sqnr_db": round(value, 2) if np.isfinite(value) else value})
    first = next((r for r in rows if r["sqnr_db"] < DEPARTURE_DB), None)
    return {"rows": rows, "first_departure": first, "samples": len(on_htp), "threshold_db": DEPARTURE_DB,
            "seconds": round(time.perf_counter() - t0, 2)}


def context_files(context_path: Path) -> list[Path]:
    """The EPContext model and the binaries it names (onnxruntime-qnn writes ``<stem>_qnn.bin``)."""
    import onnx

    model = onnx.load(str(context_path), load_external_data=False)
    bins = []
    for node in model.graph.node:
        if node.op_type == "EPContext":
            attrs = {a.name: a for a in node.attribute}
            if "ep_cache_context" in attrs and attrs.get("embed_mode") and attrs["embed_mode"].i == 0:
                bins.append(context_path.parent / attrs["ep_cache_context"].s.decode())
    return [context_path, *bins]


def describe(context_path: Path) -> dict:
    """What ``edgevlm inspect`` shows of a context binary model: QNN version, arch, SoC, graphs, size."""
    import onnx

    model = onnx.load(str(context_path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    graphs, sdk = [], None
    for node in model.graph.node:
        if node.op_type == "EPContext":
            attrs = {a.name: a for a in node.attribute}
            graphs.append(attrs["partition_name"].s.decode() if "partition_name" in attrs else node.name)
            sdk = attrs["ep_sdk_version"].s.decode() if "ep_sdk_version" in attrs else sdk
    files = context_files(context_path)
    return {"qnn_sdk": sdk, "htp_arch": meta.get(META["htp_arch"]), "soc_model": meta.get(META["soc_model"]),
            "vtcm_mb": meta.get(META["vtcm_mb"]), "target": meta.get(META["target"]), "graphs": graphs,
            "bytes": sum(f.stat().st_size for f in files if f.is_file())}


def _htp_of(context_path: Path):
    """The Htp a context binary model was prepared for, from its metadata."""
    from edgevlm.targets.base import Htp

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(context_path), load_external_data=False).metadata_props}
    try:
        return Htp(arch=int(meta[META["htp_arch"]]), soc_model=int(meta[META["soc_model"]]), soc_name="",
                   vtcm_mb=int(meta[META["vtcm_mb"]]))
    except (KeyError, ValueError):
        raise InputError(f"'{context_path}' does not say which HTP it was prepared for",
                         "recompile the build with `edgevlm compile`") from None


class QnnBackend(Backend):
    name = "qnn"
    extra = "qnn"
    can_execute = True
    consumes = "onnx"  # lowers the ONNX backend's QDQ model of the same stage
    measures_latency = False  # the HTP simulation's speed says nothing of the device's

    def available(self):
        try:
            import onnxruntime_qnn  # noqa: F401
        except ImportError:
            return False, f"onnxruntime-qnn not installed ({INSTALL}; Linux x86_64 and Windows ARM64 wheels)"
        try:
            _qnn_devices()
        except Exception as exc:  # noqa: BLE001 - any failure to load Qualcomm's libraries is a reason
            return False, f"onnxruntime-qnn could not load its QNN libraries: {exc}"
        return True, ""

    def lower(self, stage, plan: Plan, source: Artifact | None = None) -> Artifact:
        import onnx

        htp = plan.target.htp
        if htp is None:
            raise InputError(f"target {plan.target.name} has no Hexagon HTP: the qnn backend cannot build for it",
                             "use --backends onnx (or another backend the target lists)")
        if source is None or source.quant is None:
            raise InputError(f"the qnn backend needs the quantized ONNX model of stage '{stage.name}'",
                             "compile with a quantization scheme (the HTP runs integer graphs)")
        out = Path(plan.out_dir)
        rel = f"{stage.name}.htp.onnx"
        context = out / rel
        t0 = time.perf_counter()
        budget = prepare_budget_s()
        graphs = prepare_stage(out / source.path, context, htp, what=f"stage '{stage.name}' for {plan.target.name}",
                               budget_s=budget)
        if graphs is None:
            size = sum(f.stat().st_size for f in onnx_files.files(out / source.path)) / 1e6
            raise LoweringError(
                f"QNN HTP v{htp.arch} preparation of stage '{stage.name}' ({size:.0f} MB QDQ model) for "
                f"{plan.target.name} did not finish within its budget of {budget:g} s per QNN graph",
                "set EDGEVLM_QNN_PREPARE_BUDGET_S to more seconds (0: no limit), or compile with "
                "--backends onnx to build without the QNN context binaries")
        prepare_s = time.perf_counter() - t0
        model = onnx.load(str(context), load_external_data=False)
        del model.metadata_props[:]
        for key, value in (("htp_arch", htp.arch), ("soc_model", htp.soc_model), ("vtcm_mb", htp.vtcm_mb),
                           ("target", plan.target.name)):
            model.metadata_props.add(key=META[key], value=str(value))
        onnx.save(model, str(context))
        files = [str(f.relative_to(out)) for f in context_files(context)]
        departure = None
        if plan.options.get("htp_verify", True) and stage.stage.calibration:
            samples = [[x.detach().cpu().numpy() for x in s] for s in list(stage.stage.calibration)[:DEPARTURE_SAMPLES]]
            departure = departure_view(out / source.path, samples, htp, graphs)
        facts = HtpContext(source.path, htp.arch, htp.soc_model, htp.vtcm_mb, round(prepare_s, 2), budget,
                           describe(context)["qnn_sdk"], departure, graphs)
        return Artifact("qnn", stage.name, rel, files, htp=facts, quant=QuantRecord(source.quant.scheme, {"from": "onnx"}),
                        integer_only=source.integer_only)

    simulated_macs_per_s = HTP_SIM_MACS_PER_S
    simulated_where = "the QNN HTP simulation"

    def verify_samples(self, stage, plan: Plan):
        """Inputs the HTP verification runs: the stage's calibration samples, within VERIFY_BUDGET_S.

        Returns None when ``--no-htp-verify`` turned verification off.
        """
        if plan.options.get("htp_verify", True) is False:
            return None
        samples = list(stage.calibration or [])[:VERIFY_MAX_SAMPLES] or [stage.example_inputs]
        return samples, VERIFY_BUDGET_S

    def reference(self, plan: Plan) -> str:
        htp = plan.target.htp
        return f"float PyTorch model, calibration inputs; run on QNN HTP simulation (HTP v{htp.arch}, soc_model {htp.soc_model})"

    def run_samples(self, artifact: Artifact, build_dir, samples: list, budget_s: float) -> list:
        """As many samples as the HTP simulation finishes within ``budget_s`` (a killed child past it)."""
        path = Path(build_dir) / artifact.path
        return run_on_htp(path, _htp_of(path), samples, budget_s, what=f"context binary '{artifact.path}'")

    def load(self, artifact: Artifact, build_dir, threads: int = 0):
        path = Path(build_dir) / artifact.path
        # In a child process (HtpWorker), so that Ctrl-C and SIGTERM stop `edgevlm run --backend qnn` at once.
        runner = HtpWorker(path, _htp_of(path), f"context binary '{artifact.path}'", threads=threads)

        def run(inputs):
            return runner({n: np.asarray(x) for n, x in zip(runner.inputs, inputs, strict=True)})

        return run


BACKEND = QnnBackend()
