"""Study: how well a MobileNetV5-style encoder quantizes vs a ViT (AutoNeural's claim), measured here.

    python benchmarks/quant_study.py [--models autoneural-nano,vit-nano] [--schemes w8a8,w8a16] [--n 500]

For each model and encoder scheme it compiles an sa8295p build (ONNX backend;
projector w8a16 and LLM w4a16 as the target's defaults) and records:
- encoder SQNR in dB: the quantized encoder artifact vs the float encoder on
  the stage's calibration inputs (report.json, stage "encoder");
- the noise power ratio vs the best encoder at the same scheme (10^(dB gap / 10));
- task accuracy: exact match on n shapes samples (seed 12345) through the
  build (quantized vision + C runtime Q4_0 LLM), and the float model's.
Writes benchmarks/results/quant_study.{json,md}.
"""
import argparse
import json
import os
import sys
from pathlib import Path

from _results import write_results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="autoneural-nano,vit-nano")
    ap.add_argument("--schemes", default="w8a8,w8a16")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--builds", type=Path, default=Path("benchmarks/_work/quant_study"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quant_study"))
    args = ap.parse_args(argv)

    import torch

    import edgevlm

    torch.set_num_threads(1)
    rows = []
    for model in args.models.split(","):
        for scheme in args.schemes.split(","):
            result = edgevlm.compile(model, target="sa8295p", out=args.builds / f"{model}-{scheme}", backends=["onnx"],
                                     quant=f"encoder={scheme}", eval_n=args.n)
            rep = result.report
            enc = next(s for s in rep["stages"] if s["name"] == "encoder")
            art = enc["artifacts"][0]
            row = {"model": model, "encoder": rep["model_meta"]["config"]["encoder"]["name"], "scheme": scheme,
                   "encoder_sqnr_db": enc["sqnr_db"], "integer_only": art.get("integer_only"),
                   "exact_match_build": rep["accuracy"]["quantized"], "exact_match_float": rep["accuracy"]["float"],
                   "n": rep["accuracy"]["n"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for r in rows:
        best = max(x["encoder_sqnr_db"] for x in rows if x["scheme"] == r["scheme"])
        r["noise_vs_best"] = 10 ** ((best - r["encoder_sqnr_db"]) / 10)
    meta = {"target": "sa8295p", "load_avg": os.getloadavg(),
            "sqnr": "encoder artifact vs float encoder, calibration inputs of the stage (8 shapes images)",
            "accuracy": f"exact match on {args.n} shapes samples, seed 12345, through each build "
                        "(quantized ONNX encoder + w8a16 projector + C runtime Q4_0 LLM)"}
    lines = ["| model | encoder | encoder scheme | encoder SQNR (dB) | noise power vs best | exact match (build) | exact match (float) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['encoder']} | {r['scheme']} | {r['encoder_sqnr_db']:.1f} | {r['noise_vs_best']:.1f}x | "
                     f"{r['exact_match_build']:.3f} | {r['exact_match_float']:.3f} |")
    write_results(args.out, {"meta": meta, "rows": rows}, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
