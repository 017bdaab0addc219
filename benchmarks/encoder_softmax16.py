"""Where a w8a8 encoder loses its SQNR, and the encoder with its Softmax outputs at 16 bits.

    python benchmarks/encoder_softmax16.py --checkpoint DIR [--target cpu-x86_64] [--work /tmp/x] [--top 25]

The checkpoint's encoder stage is captured, put through the target's passes
and lowered to float ONNX as ``edgevlm compile`` does, quantized with the
target's scheme (cpu-x86_64: w8a8) on the stage's calibration samples, and
``analysis.layer_sqnr`` on the first sample lists the ``--top`` tensors
with the lowest local SQNR (each tensor before vs after its own Q/DQ pair).
Then the same quantization with every Softmax output overridden to 16 bits;
both stages' SQNR vs the float ONNX (``analysis.stage_sqnr``, first sample).
At published size (SigLIP2 base, 1024 patches) this takes ~5 GB: run it
under the big-memory lock.
"""
import argparse
import json
import logging
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--target", default="cpu-x86_64")
    ap.add_argument("--work", type=Path, default=None, help="keep the ONNX files here (default: a temporary dir)")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)

    import onnx

    from edgevlm.compiler.backends.base import Plan
    from edgevlm.compiler.backends.onnx_backend import BACKEND as ONNX
    from edgevlm.compiler.capture import capture, export_static
    from edgevlm.compiler.passes import run_pipeline
    from edgevlm.compiler.stage import CapturedStage
    from edgevlm.models import build_model
    from edgevlm.quant.analysis import layer_sqnr, stage_sqnr
    from edgevlm.quant.onnx_qdq import quantize_onnx
    from edgevlm.quant.schemes import parse_quant_spec
    from edgevlm.targets import get_target

    target = get_target(args.target)
    stage = next(s for s in build_model(args.checkpoint).stages if s.name == "encoder")
    scheme = parse_quant_spec(None, target)[stage.kind]
    with tempfile.TemporaryDirectory(prefix="enc-softmax16-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        gm, _ = run_pipeline(capture(stage), target)
        art = ONNX.lower(CapturedStage(stage, gm, export_static(gm, stage.example_inputs, stage.name), []),
                         Plan(target, work))
        float_path, q8, q16 = work / art.path, work / "q.onnx", work / "q_softmax16.onnx"
        quantize_onnx(float_path, q8, scheme, stage.calibration, target)
        first = stage.calibration[:1]
        rows = layer_sqnr(float_path, q8, first, chunk_bytes=128 << 20)
        ranked = sorted((r for r in rows if r["local_sqnr_db"] is not None), key=lambda r: r["local_sqnr_db"])
        for r in ranked[:args.top]:
            print(json.dumps({k: r[k] for k in ("op", "tensor", "sqnr_db", "local_sqnr_db")}), flush=True)
        model = onnx.load(str(float_path), load_external_data=False)
        softmax = {n.output[0]: 16 for n in model.graph.node if n.op_type == "Softmax"}
        del model
        t0 = time.perf_counter()
        info = quantize_onnx(float_path, q16, scheme, stage.calibration, target, overrides=softmax)
        result = {"scheme": info["scheme"], "softmax_outputs": len(softmax),
                  "sqnr_db": round(stage_sqnr(float_path, q8, first)["sqnr_db"], 2),
                  "softmax16_sqnr_db": round(stage_sqnr(float_path, q16, first)["sqnr_db"], 2),
                  "softmax16_integer_only": info["integer_only"], "quantize_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
