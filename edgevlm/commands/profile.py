"""`edgevlm profile BUILD`: where the time goes, measured on this machine and estimated on the build's target.

Measured: the build is run (`edgevlm run`'s path: vision artifacts + C
runtime) on ``--runs`` shapes samples after one warm-up; each figure is the
median over the runs; peak RSS is this process's high-water mark.
Estimated: the per-stage roofline estimates the compiler wrote into
report.json for the build's target (edgevlm.compiler.estimate).
"""
import json
import resource
import statistics
import sys

from edgevlm.compiler.estimate import report_estimates
from edgevlm.core.stage import StageName
from edgevlm.runner import RUNNABLE_BACKENDS

NAME = "profile"
HELP = "latency of a build: measured here (encoder, projector, TTFT, decode tokens/s, peak RSS) and estimated on its target"
ORDER = 6

MEASURED = (("encoder_ms", "encoder", "ms"), ("projector_ms", "projector", "ms"), ("prefill_ms", "LLM prefill", "ms"),
            ("ttft_ms", "time to first token", "ms"), ("decode_tokens_per_s", "decode", "tokens/s"))


def add_arguments(parser):
    parser.add_argument("build", help="build directory written by `edgevlm compile`")
    parser.add_argument("--runs", type=int, default=10, help="timed runs after one warm-up (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--backend", default=None, choices=list(RUNNABLE_BACKENDS), help="vision artifacts to run (default onnx)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def measure(runner, runs: int, seed: int = 4242) -> dict:
    """Median timings of ``runs`` answers to shapes "describe the image." prompts (plus one warm-up)."""
    from edgevlm.data.shapes import make_sample

    samples = [make_sample(seed, i, runner.meta["image_size"]) for i in range(runs + 1)]
    per_run = []
    for i, s in enumerate(samples):
        timings: dict = {}
        for _ in runner.stream(s.image, "describe the image.", 24, None, timings):
            pass
        if i:  # the first run warms caches and thread pools
            per_run.append(timings)
    out = {"label": "measured", "where": "this machine", "runs": runs, "threads": runner.threads, "vision_backend": runner.backend}
    for key, _, _ in MEASURED:
        values = [t[key] for t in per_run if t.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    out["new_tokens_median"] = statistics.median(t["new_tokens"] for t in per_run)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return out


def run(args) -> int:
    from edgevlm.errors import InputError
    from edgevlm.runner import BuildRunner

    if args.runs < 1:
        raise InputError(f"--runs must be >= 1, got {args.runs}", "pass e.g. --runs 10")
    runner = BuildRunner(args.build, threads=args.threads, backend=args.backend)
    result = {"build": str(args.build), "model": runner.meta["model"], "measured": measure(runner, args.runs),
              "estimated": report_estimates(runner.report)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print(result)
    return 0


def _fmt(v, unit):
    return "-" if v is None else (f"{v:.0f} {unit}" if unit == "tokens/s" else f"{v:.2f} {unit}")


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    m, e = result["measured"], result["estimated"]
    table = Table(title=f"{result['model']}: {result['build']}")
    table.add_column("")
    table.add_column(f"measured here ({m['threads']} threads, median of {m['runs']})", justify="right")
    table.add_column(f"estimated on {e['target']} (roofline)", justify="right")
    stage_of = {"encoder_ms": StageName.ENCODER, "projector_ms": StageName.PROJECTOR, "prefill_ms": StageName.LLM_PREFILL}
    for key, label, unit in MEASURED:
        est = e["stages_ms"].get(stage_of[key]) if key in stage_of else e.get(key)
        table.add_row(label, _fmt(m[key], unit), _fmt(est, unit))
    table.add_row("peak RSS", f"{m['peak_rss_mb']:.0f} MB", "-")
    console = Console(width=max(Console().width, 100))
    console.print(table)
    console.print(f"measured: {m['vision_backend']} vision artifacts + C runtime on this CPU; "
                  f"estimated: {e['method']}, not a measurement on the target.", highlight=False)
    if m["vision_backend"] == "qnn":
        console.print("qnn: the vision times are QNN's HTP simulation on this CPU; they say nothing of the HTP's speed.",
                      highlight=False)
    for stage, why in e.get("not_estimated", {}).items():
        print(f"{stage}: not estimated: {why}", file=sys.stderr)
