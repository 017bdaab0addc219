"""Vision tokens vs accuracy vs time to first token, for a zoo VLM on a target (a benchmark, not a test).

    python benchmarks/token_reduction.py [--model autoneural-nano] [--target sa8295p] [--tokens 4,1]
        [--methods dct,pool,merge] [--n 500] [--runs 20] [--threads 2] [--out benchmarks/results/token_reduction]

For the full model and each (tokens, method) it compiles a build (ONNX
backend, the target's default schemes), measures exact match on ``--n``
shapes samples of the evaluation seed through the build's deployed path
(quantized vision artifacts + the C runtime), and the median time to first
token over ``--runs`` answers (edgevlm.commands.profile.measure), with the
roofline estimate of the same on the target.  Writes <out>.json and <out>.md
(the README table), and adds the sweep to the full build's report
(report.json "token_sweep", plotted in report.html).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

from _results import write_results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="autoneural-nano")
    ap.add_argument("--target", default="sa8295p")
    ap.add_argument("--tokens", default="4,1", help="reduced token counts (comma-separated)")
    ap.add_argument("--methods", default="dct,pool,merge,prune")
    ap.add_argument("--n", type=int, default=500, help="shapes samples for accuracy")
    ap.add_argument("--runs", type=int, default=20, help="timed answers for time to first token")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--builds", type=Path, default=Path("benchmarks/_work/token_reduction"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/token_reduction"))
    args = ap.parse_args(argv)

    import torch

    import edgevlm
    from edgevlm.commands.profile import measure
    from edgevlm.compiler import report as report_io
    from edgevlm.compiler.estimate import report_estimates
    from edgevlm.runner import BuildRunner

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_runtime_vs_llamacpp import cpu_name  # noqa: E402 - a sibling script

    torch.set_num_threads(1)
    configs = [(None, "none")] + [(int(t), m) for t in args.tokens.split(",") for m in args.methods.split(",")]
    rows, base_dir = [], None
    for tokens, method in configs:
        out = args.builds / (f"{args.model}-{method}{tokens}" if tokens else args.model)
        t0 = time.perf_counter()
        result = edgevlm.compile(args.model, target=args.target, out=out, backends=["onnx"], eval_n=args.n,
                                 vision_tokens=tokens, token_reduce=method if tokens else "dct")
        runner = BuildRunner(out, threads=args.threads)
        m = measure(runner, args.runs)
        e = report_estimates(result.report)
        acc = result.report["accuracy"]
        row = {"tokens": runner.meta["num_image_tokens"], "method": method, "exact_match": acc["quantized"],
               "float_exact_match": acc["float"], "ttft_ms": m["ttft_ms"], "encoder_ms": m["encoder_ms"],
               "prefill_ms": m["prefill_ms"], "estimated_ttft_ms": e["ttft_ms"], "n": acc["n"], "runs": args.runs}
        rows.append(row)
        base_dir = base_dir or out
        print(json.dumps(row), f"({time.perf_counter() - t0:.0f} s)", flush=True)

    meta = {"model": args.model, "target": args.target, "threads": args.threads, "cpu": cpu_name(), "load_avg": os.getloadavg(),
            "accuracy": f"exact match, shapes seed 12345, n={args.n}, through each build (quantized vision + C runtime)",
            "ttft": f"median of {args.runs} answers after one warm-up, measured on this machine",
            "estimated_ttft": f"roofline estimate on {args.target} (encoder + projector + prefill), not measured"}
    lines = ["| vision tokens | reduction | exact match (build) | exact match (float) | TTFT measured (ms) | "
             f"TTFT estimated on {args.target} (ms) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tokens']} | {r['method']} | {r['exact_match']:.3f} | {r['float_exact_match']:.3f} | "
                     f"{r['ttft_ms']:.2f} | {r['estimated_ttft_ms']:.3f} |")
    write_results(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")

    # The sweep also goes into the full build's report (plotted in its report.html).
    rep = json.loads((base_dir / "report.json").read_text())
    rep["token_sweep"] = [{k: r[k] for k in ("tokens", "method", "exact_match", "ttft_ms")} for r in rows]
    report_io.write_report(base_dir, rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
