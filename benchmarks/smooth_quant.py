"""SmoothQuant before w8a8 (edgevlm.quant.smooth_quant): SQNR per stage without and with it, per alpha.

    python benchmarks/smooth_quant.py --checkpoint DIR [--stages encoder,llm-prefill] [--target cpu-x86_64]
                                      [--alphas 0.5,0.8] [--n 2] [--held-out] [--out benchmarks/results/smooth_quant]

Each stage is captured and put through the target's passes as ``edgevlm
compile`` does, exported to float ONNX, then quantized with the target's
default scheme for the stage (cpu-x86_64: w8a8), KV-cache overrides as the
ONNX backend sets them, once as is ("none") and once per alpha after
SmoothQuant on the float graph.  SQNR vs float PyTorch on the first ``--n``
calibration samples, onnxruntime CPU: the worst sample of the first output
(the encoder's features, the LM's logits), and the worst over all outputs
(as the compiler's stage check takes it).  With ``--held-out`` the
quantizer calibrates on the other samples only.
Writes <out>.json and <out>.md; prints each row as it is measured.
"""
import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _results import write_results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="checkpoint directory (or a zoo model name)")
    ap.add_argument("--stages", default="encoder,llm-prefill")
    ap.add_argument("--target", default="cpu-x86_64")
    ap.add_argument("--alphas", default="0.5")
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--held-out", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/smooth_quant"))
    args = ap.parse_args(argv)

    import numpy as np
    import onnxruntime as ort
    import torch

    from edgevlm.compiler.backends.base import Plan
    from edgevlm.compiler.backends.onnx_backend import BACKEND as ONNX
    from edgevlm.compiler.capture import capture, export_static
    from edgevlm.compiler.passes import run_pipeline
    from edgevlm.compiler.stage import CapturedStage
    from edgevlm.core.metrics import sqnr_db
    from edgevlm.models import build_model
    from edgevlm.quant.onnx_qdq import quantize_onnx
    from edgevlm.quant.ort_cpu import cpu_session_options
    from edgevlm.quant.schemes import KV_CACHE, parse_quant_spec
    from edgevlm.quant.smooth_quant import smooth_onnx_file
    from edgevlm.targets import get_target

    t0 = time.perf_counter()
    target = get_target(args.target)
    bundle = build_model(args.checkpoint)
    schemes = parse_quant_spec(None, target)
    alphas = [float(a) for a in args.alphas.split(",")]
    wanted = args.stages.split(",")
    rows = []
    with tempfile.TemporaryDirectory(prefix="smooth-quant-", dir=os.environ.get("TMPDIR")) as tmp:
        tmp = Path(tmp)
        for stage in bundle.stages:
            if stage.name not in wanted:
                continue
            scheme = schemes.get(stage.kind)
            if scheme is None:
                print(f"{stage.name}: not quantized on {args.target}", flush=True)
                continue
            measured = stage.calibration[:args.n]
            calib = stage.calibration[args.n:] if args.held_out else stage.calibration
            if not calib:
                raise SystemExit(f"{stage.name}: no calibration samples left beside {args.n} held out")
            gm, _ = run_pipeline(capture(stage), target)
            captured = CapturedStage(stage, gm, export_static(gm, stage.example_inputs, stage.name), [])
            (tmp / "float").mkdir(exist_ok=True)
            art = ONNX.lower(captured, Plan(target, tmp / "float"))
            float_path = tmp / "float" / art.path
            refs = []
            for sample in measured:
                with torch.no_grad():
                    refs.append([t.numpy() for t in torch.utils._pytree.tree_leaves(stage.module(*sample))
                                 if isinstance(t, torch.Tensor)])
            kv = {}
            if stage.name.startswith("llm") and schemes.get(KV_CACHE) is not None:
                import onnx

                from edgevlm.compiler.quantizers.onnx_qdq_quantizer import kv_overrides

                kv = kv_overrides(onnx.load(str(float_path), load_external_data=False), stage, scheme,
                                  schemes.get(KV_CACHE), stage.graph_output_names())
            for alpha in [None] + alphas:
                work = tmp / f"a{alpha}"
                work.mkdir(exist_ok=True)
                src = work / "float.onnx"
                shutil.copy(float_path, src)
                record, t1 = None, time.perf_counter()
                if alpha is not None:
                    record = smooth_onnx_file(src, calib, alpha)
                smooth_s = time.perf_counter() - t1
                q = work / "q.onnx"
                info = quantize_onnx(src, q, scheme, calib, target, overrides=kv)
                sess = ort.InferenceSession(str(q), cpu_session_options(), providers=["CPUExecutionProvider"])
                names = [i.name for i in sess.get_inputs()]
                first, worst = [], []
                for ref, sample in zip(refs, measured):
                    out = sess.run(None, {k: np.asarray(x.numpy()) for k, x in zip(names, sample)})
                    dbs = [sqnr_db(r, o) for r, o in zip(ref, out)]
                    first.append(dbs[0])
                    worst.append(min(dbs))
                row = {"model": bundle.name, "stage": stage.name, "scheme": info["scheme"], "alpha": alpha,
                       "first_output_sqnr_db": round(min(first), 2), "all_outputs_sqnr_db": round(min(worst), 2),
                       "smooth": record, "smooth_s": round(smooth_s, 1), "samples": len(refs),
                       "calibration": len(calib), "kv_overrides": len(kv)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                shutil.rmtree(work)
    meta = {"target": args.target, "held_out": args.held_out, "load_avg": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "command": "python benchmarks/smooth_quant.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    md = ["| model | stage | scheme | SmoothQuant alpha | first output SQNR (dB) | all outputs SQNR (dB) | groups folded / undone |",
          "|---|---|---|---|---:|---:|---|"]
    for r in rows:
        sq = r["smooth"]
        md.append(f"| {r['model']} | {r['stage']} | {r['scheme']} | {'none' if r['alpha'] is None else r['alpha']} | "
                  f"{r['first_output_sqnr_db']:.1f} | {r['all_outputs_sqnr_db']:.1f} | "
                  + (f"{sq['folded']} / {sq['reverted']}" + (f", {len(sq['unfolded'])} left" if sq['unfolded'] else "")
                     if sq else "-") + " |")
    write_results(args.out, {"meta": meta, "rows": rows}, "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
