"""How far the SA8295P latency estimate is from published Qualcomm AI Hub latencies.

Reads edgevlm/targets/ai_hub_sa8295p.json (published SA8295P ADP inference
times: two calibration models, the rest held out for validation), builds each
architecture from timm with random weights, estimates it with the stored HTP
efficiencies and prints published vs estimated with the error.

    python benchmarks/validate_latency_estimator.py            # table (markdown)
    python benchmarks/validate_latency_estimator.py --refit    # also re-fit the constants
    python benchmarks/validate_latency_estimator.py --json

Takes about a minute (capturing seven timm models at 224 px on 2 CPU cores).
"""
import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refit", action="store_true", help="re-fit the HTP efficiencies on the calibration rows first")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a markdown table")
    args = parser.parse_args(argv)

    from edgevlm.targets import get_target
    from edgevlm.compiler.estimate import HTP_EFFICIENCY, count_timm_ops, fit_efficiency, published_latencies, time_ops

    target = get_target("sa8295p")
    published = published_latencies()
    counts = {}
    for p in published:
        if (p.model, p.image_size) not in counts:
            print(f"counting {p.model} @{p.image_size}px ...", file=sys.stderr)
            counts[p.model, p.image_size] = count_timm_ops(p.model, p.image_size, target)

    efficiency = HTP_EFFICIENCY
    if args.refit:
        cases = [(counts[p.model, p.image_size], p.precision, p.published_ms) for p in published if p.role == "calibration"]
        fitted, worst = fit_efficiency(cases, target)
        print(f"re-fit: dense={fitted.dense:g} depthwise={fitted.depthwise:g} (worst calibration error {worst:.2%}); "
              f"stored: dense={HTP_EFFICIENCY.dense:g} depthwise={HTP_EFFICIENCY.depthwise:g}", file=sys.stderr)
        efficiency = fitted

    rows = []
    for p in published:
        est = time_ops(counts[p.model, p.image_size], target, p.precision, efficiency)
        rows.append({"role": p.role, "model": p.published_name, "timm": p.model, "precision": p.precision,
                     "published_ms": p.published_ms, "estimated_ms": round(est.total_ms, 3),
                     "error_pct": round((est.total_ms / p.published_ms - 1) * 100, 1), "source": p.source})
    held_out = [abs(r["error_pct"]) for r in rows if r["role"] == "validation"]
    summary = {"validation_models": len(held_out),
               "mean_abs_error_pct": round(sum(held_out) / len(held_out), 1) if held_out else None,
               "max_abs_error_pct": max(held_out) if held_out else None}
    if args.json:
        print(json.dumps({"efficiency": {"dense": efficiency.dense, "depthwise": efficiency.depthwise,
                                         "memory": efficiency.memory, "op_overhead_s": efficiency.op_overhead_s},
                          "rows": rows, "summary": summary}, indent=2))
        return 0
    print("| role | model (timm) | precision | published ms | estimated ms | error |")
    print("|---|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['role']} | {r['model']} ({r['timm']}) | {r['precision']} | {r['published_ms']:.3f} | "
              f"{r['estimated_ms']:.3f} | {r['error_pct']:+.1f} % |")
    if held_out:
        print(f"\nvalidation ({summary['validation_models']} rows not used for calibration): mean |error| "
              f"{summary['mean_abs_error_pct']:.1f} %, max {summary['max_abs_error_pct']:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
