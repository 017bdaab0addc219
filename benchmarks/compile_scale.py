"""Where a compile's time and memory go: wall time and peak RSS per step of `edgevlm compile`.

Runs the CLI's compile in this process (the same code path as the command)
with two instruments:

- a sampler thread reading the resident set of this process and of its
  children (the QNN HTP verification runs in child processes) every
  SAMPLE_S seconds;
- wrappers around the named steps of the pipeline and its backends (STEPS:
  model load, capture, passes, ONNX export, QNN pre-processing, calibration,
  onnxruntime's quantize_static, the per-layer SQNR, ExecuTorch's pt2e
  quantization, lowering and serialization, QNN context preparation,
  verification, runtime bundle, report): each call's wall time, the peak RSS
  while it ran (sampled, so a spike shorter than SAMPLE_S can be missed;
  the process total comes from getrusage and is exact), and the RSS when it
  returned.

The steps nest (onnxruntime's quantizer inside the quantize step); the table lists them
in call order, indented.  Results go to ``--out`` .md and .json.

Usage (a real-size checkpoint: take the big-memory lock)::

    flock /tmp/edgevlm-bigmem.lock /usr/bin/time -v .venv/bin/python benchmarks/compile_scale.py \\
        --label lfm2-vl-450m -- --model /work/ckpt/lfm2-vl-450m --target sa8295p
"""
import argparse
import functools
import importlib
import json
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

import psutil

from _results import write_results

SAMPLE_S = 0.2
FLUSH_S = 30.0  # the steps so far go to <out>.partial.json this often
# (module, attribute path, step label).  Methods are patched on their class, functions where the
# caller looks them up (a `from x import f` binds f in the caller's module).
STEPS = [
    ("edgevlm.compiler.pipeline", "build_model", "load checkpoint"),
    ("edgevlm.compiler.pipeline", "_stage_calibration", "calibration inputs"),
    ("edgevlm.compiler.pipeline", "capture", "capture (torch.export)"),
    ("edgevlm.compiler.pipeline", "run_pipeline", "passes"),
    ("edgevlm.compiler.pipeline", "_estimate", "latency estimate"),
    ("edgevlm.compiler.pipeline", "export_static", "re-export after passes"),
    ("edgevlm.compiler.backends.onnx_backend", "OnnxBackend.export", "export onnx"),
    ("edgevlm.compiler.backends.base", "quantize", "quantize (the backend family's quantizer)"),
    ("torch.onnx", "export", "torch.onnx.export"),
    ("edgevlm.quant.onnx_qdq", "quantize_onnx", "quantize (QDQ)"),
    ("edgevlm.quant.onnx_qdq", "qnn_preprocess_model", "qnn_preprocess_model"),
    ("edgevlm.quant.htp_forms", "apply", "htp_forms"),
    ("edgevlm.quant.onnx_qdq", "check_weights", "check weights"),
    ("edgevlm.quant.onnx_qdq", "calibrate_onnx", "calibrate (observers)"),
    ("edgevlm.quant.onnx_qdq", "get_qnn_qdq_config", "get_qnn_qdq_config"),
    ("edgevlm.quant.onnx_qdq", "quantize_static", "onnxruntime quantize_static"),
    ("edgevlm.quant.onnx_qdq", "apply_gptq", "GPTQ"),
    ("edgevlm.compiler.quantizers.onnx_qdq_quantizer", "_layer_sqnr", "per-layer SQNR"),
    ("edgevlm.compiler.backends.onnx_backend", "OnnxBackend.finish", "finish onnx"),
    ("edgevlm.compiler.backends.qnn_backend", "QnnBackend.lower", "lower qnn"),
    ("edgevlm.compiler.backends.qnn_backend", "prepare_context", "QNN context binary"),
    ("edgevlm.compiler.backends.qnn_backend", "htp_departure", "HTP departure"),
    ("edgevlm.compiler.backends.executorch_backend", "ExecuTorchBackend.finish", "lower executorch"),
    ("edgevlm.quant.pt2e", "quantize_pt2e_program", "pt2e quantize"),
    ("edgevlm.compiler.backends.executorch_backend", "_lower_portable", "to_edge (portable)"),
    ("edgevlm.compiler.backends.executorch_backend", "_lower_xnnpack", "to_edge (xnnpack)"),
    ("executorch.exir.program._program", "EdgeProgramManager.to_executorch", "to_executorch"),
    ("edgevlm.compiler.pipeline", "_verify", "verify"),
    ("edgevlm.compiler.pipeline", "_median_ms", "latency runs"),
    ("edgevlm.compiler.runtime_bundle", "write", "runtime bundle"),
    ("edgevlm.accuracy", "build_accuracy", "accuracy"),
    ("edgevlm.compiler.report", "write_manifest", "manifest"),
    ("edgevlm.compiler.report", "write_report", "report"),
]


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and its finished children: on a shared machine the
    figure that the load does not inflate, beside wall time."""
    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _rss(children: dict | None = None) -> int:
    """Resident bytes of this process and all its children; with ``children``, each child's resident
    bytes by pid go in it too ({pid: (rss, command line)})."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            rss = child.memory_info().rss
            if children is not None:
                children[child.pid] = (rss, child.cmdline())
        except psutil.Error:
            continue
        total += rss
    return total


def _child_job(cmdline: list[str]) -> str:
    """A child's command line without the interpreter and its ``-c`` program, paths by their file name:
    a QNN child reads ``prepare 68 36 8 part 3/19 of encoder <source> <context>``."""
    args = cmdline[3:] if len(cmdline) > 2 and cmdline[1] == "-c" else cmdline
    return " ".join(Path(a).name if a.startswith("/") else a for a in args)[:160]


class Recorder:
    def __init__(self, partial: Path | None = None):
        self.partial = partial
        self.rows: list[dict] = []
        self.active: list[dict] = []
        self.lock = threading.Lock()
        self.t0 = time.perf_counter()
        self.peak = 0
        self.children: dict[int, dict] = {}  # pid -> {"job", "peak_rss", "stage", "step"}: each child's own peak
        self.stage = ""  # the stage of the last step that named one (steps taking only a graph inherit it)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        last_flush = time.perf_counter()
        while not self._stop.wait(SAMPLE_S):
            if self.partial is not None and time.perf_counter() - last_flush > FLUSH_S:  # a killed run leaves its steps
                last_flush = time.perf_counter()
                with self.lock:
                    rows = [dict(r) for r in self.rows]
                    child_rows = [dict(c) for c in self.children.values()]
                self.partial.write_text(json.dumps({"steps": rows, "peak_rss_sampled": self.peak,
                                                    "children": child_rows}, indent=1) + "\n")
            children: dict = {}
            rss = _rss(children)
            with self.lock:
                self.peak = max(self.peak, rss)
                for row in self.active:
                    row["peak_rss"] = max(row["peak_rss"], rss)
                for pid, (child_rss, cmdline) in children.items():
                    seen = self.children.setdefault(pid, {"job": _child_job(cmdline), "peak_rss": 0})
                    if child_rss > seen["peak_rss"]:
                        step = self.active[-1] if self.active else {"stage": self.stage, "step": ""}
                        seen.update(peak_rss=child_rss, stage=step["stage"], step=step["step"])

    def stop(self):
        self._stop.set()
        self.thread.join()

    def wrap(self, fn, label):
        @functools.wraps(fn)
        def wrapped(*args, **kwargs):
            stage = _stage_name(args) or (self.active[-1]["stage"] if self.active else self.stage)
            self.stage = stage
            rss = _rss()
            row = {"step": label, "stage": stage, "depth": len(self.active), "start_s": time.perf_counter() - self.t0,
                   "cpu_before": _cpu_s(), "rss_before": rss, "peak_rss": rss}
            with self.lock:
                self.rows.append(row)
                self.active.append(row)
            try:
                return fn(*args, **kwargs)
            finally:
                row["wall_s"] = time.perf_counter() - self.t0 - row["start_s"]
                row["cpu_s"] = _cpu_s() - row.pop("cpu_before")
                row["rss_after"] = _rss()
                with self.lock:
                    row["peak_rss"] = max(row["peak_rss"], row["rss_after"])
                    self.active.remove(row)
        return wrapped


def _stage_name(args) -> str | None:
    """The name of the Stage (or CapturedStage) among a step's first arguments."""
    for a in args[:3]:
        for obj in (a, getattr(a, "stage", None)):
            if hasattr(obj, "example_inputs") and isinstance(getattr(obj, "name", None), str):
                return obj.name
    return None


def install(rec: Recorder) -> list[str]:
    """Patch every step of STEPS that exists here; return those that do not (a backend not installed)."""
    missing = []
    for module, attr, label in STEPS:
        try:
            owner = importlib.import_module(module)
        except ImportError:
            missing.append(f"{module}.{attr}")
            continue
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        if not hasattr(owner, name):
            missing.append(f"{module}.{attr}")
            continue
        setattr(owner, name, rec.wrap(getattr(owner, name), label))
    return missing


def _gb(n: int) -> str:
    return f"{n / 2**30:.2f}"


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# compile scale: {meta['label']}", "",
             f"Command: `{meta['command']}`  ", f"Measured {meta['date']} on {meta['host']} ({meta['cpus']} CPUs, "
             f"{meta['mem_gb']:.0f} GB), load average at start {meta['load_start']}, at end {meta['load_end']}.  ",
             f"Wall time **{meta['wall_s']:.0f} s** ({meta['wall_s'] / 60:.1f} min), CPU time {meta['cpu_s']:.0f} s; peak RSS **{_gb(meta['peak_rss_self'])} GB** "
             f"(getrusage, this process), children's largest {_gb(meta['peak_rss_children'])} GB; sampled self+children "
             f"peak {_gb(meta['peak_rss_sampled'])} GB; exit status {meta['exit']}.", "",
             "Per step (call order; nested steps indented; RSS of this process and its children, sampled every "
             f"{SAMPLE_S} s):", "",
             "| stage | step | wall s | CPU s | peak RSS GB | RSS after GB |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if "wall_s" not in r:
            continue
        lines.append(f"| {r['stage']} | {'&nbsp;&nbsp;' * r['depth']}{r['step']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
                     f"{_gb(r['peak_rss'])} | {_gb(r['rss_after'])} |")
    children = sorted(meta.get("children", []), key=lambda c: -c["peak_rss"])
    if children:
        lines += ["", f"Child processes ({len(children)}), largest first, each one's own peak RSS (sampled every "
                  f"{SAMPLE_S} s) and the step running then:", "",
                  "| child | stage | step | peak RSS GB |", "|---|---|---|---:|"]
        lines += [f"| `{c['job']}` | {c['stage']} | {c['step']} | {_gb(c['peak_rss'])} |" for c in children[:20]]
    return "\n".join(lines) + "\n"


def _stage_totals(rows: list[dict]) -> dict:
    """{stage: {step: (wall s, peak RSS)}} of the top-level steps and each backend's lowering."""
    out: dict = {}
    for r in rows:
        if "wall_s" in r and r["stage"] and (r["depth"] == 0 or r["step"].startswith(("lower ", "verify"))):
            wall, peak = out.setdefault(r["stage"], {}).get(r["step"], (0.0, 0))
            out[r["stage"]][r["step"]] = (wall + r["wall_s"], max(peak, r["peak_rss"]))
    return out


def summary(results: Path) -> str:
    """benchmarks/results/compile_scale.md: one row per measurement of compile_scale_*.json, newest last."""
    runs = [json.loads(p.read_text()) for p in sorted(results.glob("compile_scale_*.json")) if not p.name.endswith(".partial.json")]
    runs.sort(key=lambda r: r["meta"]["date"])
    lines = ["# compile scale: time and peak RSS of `edgevlm compile` on real-size checkpoints", "",
             "Written by `benchmarks/compile_scale.py --summary` from the per-run files beside it "
             "(compile_scale_<label>.md: every step's wall time, CPU time and peak RSS).  The machine is shared "
             "(2 cores, 24 GB): the load average says how much of it the compile had; CPU time is the figure the "
             "load does not inflate.", "",
             "| run | command | wall | CPU s | peak RSS GB | load avg start / end | exit |", "|---|---|---:|---:|---:|---|---|"]
    for r in runs:
        m = r["meta"]
        lines.append(f"| [{m['label']}](compile_scale_{m['label']}.md) | `{m['command']}` | {m['wall_s'] / 60:.1f} min | "
                     f"{m.get('cpu_s', float('nan')):.0f} | {_gb(m['peak_rss_self'])} | {m['load_start'][0]} / {m['load_end'][0]} | "
                     f"{m['exit']} |")
    notes = [f"- {r['meta']['label']}: {r['meta']['note']}" for r in runs if r["meta"].get("note")]
    lines += [""] + notes if notes else []
    for r in runs:
        lines += ["", f"## {r['meta']['label']}: per stage", "", "| stage | step | wall s | peak RSS GB |", "|---|---|---:|---:|"]
        for stage, steps in _stage_totals(r["steps"]).items():
            for step, (wall, peak) in steps.items():
                lines.append(f"| {stage} | {step} | {wall:.0f} | {_gb(peak)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", help="name of the measurement (the results file is named after it)")
    ap.add_argument("--out", type=Path, default=None, help="results file stem (default benchmarks/results/compile_scale_<label>)")
    ap.add_argument("--note", default="", help="what was compiled (the checkpoint, the code), for the summary")
    ap.add_argument("--summary", action="store_true", help="only rewrite benchmarks/results/compile_scale.md from the runs there")
    ap.add_argument("compile_args", nargs=argparse.REMAINDER, help="after --: the arguments of `edgevlm compile`")
    args = ap.parse_args(argv)
    results = Path("benchmarks/results")
    if args.summary:
        (results / "compile_scale.md").write_text(summary(results))
        return 0
    if not args.label:
        ap.error("--label is required (the results file is named after it)")
    compile_args = [a for a in args.compile_args if a != "--"]
    out = args.out or Path("benchmarks/results") / f"compile_scale_{args.label}"

    from edgevlm._compat import import_timm

    import_timm()
    from edgevlm.cli import main as cli_main

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial.json")  # not with_suffix: a label may hold a dot (lfm2-vl-1.6b)
    rec = Recorder(partial)
    missing = install(rec)
    load_start = [round(x, 1) for x in os.getloadavg()]
    t0 = time.perf_counter()
    try:
        status = cli_main(["compile", *compile_args])
    finally:
        rec.stop()
    wall = time.perf_counter() - t0
    meta = {
        "label": args.label, "command": "edgevlm compile " + " ".join(compile_args),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": platform.node(),
        "cpus": os.cpu_count(), "mem_gb": psutil.virtual_memory().total / 2**30,
        "load_start": load_start, "load_end": [round(x, 1) for x in os.getloadavg()],
        "wall_s": wall, "cpu_s": _cpu_s(), "exit": status,
        "peak_rss_self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_rss_children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
        "peak_rss_sampled": rec.peak, "not_instrumented": missing, "note": args.note,
        "children": [c for c in rec.children.values() if c["peak_rss"]],
    }
    partial.unlink(missing_ok=True)
    write_results(out, {"meta": meta, "steps": rec.rows}, markdown(meta, rec.rows), indent=1, echo=False)
    print(f"compile_scale: {wall:.0f} s, peak RSS {_gb(meta['peak_rss_self'])} GB -> {out.name}.md", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
