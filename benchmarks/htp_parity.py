"""Parity on the QNN HTP: each zoo stage's SQNR vs float on Qualcomm's HTP next to onnxruntime CPU.

    python benchmarks/htp_parity.py [--models autoneural-nano,enc-vit-nano,...] [--checkpoint DIR ...] [--n 2]

For each model (the VLMs' four stages, the encoders' one) the stage is
lowered as ``edgevlm compile --target sa8295p`` lowers it (capture, the
sa8295p passes, ONNX QDQ with the target's default schemes: encoders and
projectors w8a16, LLM stages w4a16 with a kv8 cache; the ``enc-*`` models
w8a16), then the same QDQ model runs
- on onnxruntime's CPU execution provider, and
- on QNN's HTP backend (onnxruntime-qnn, HTP v68 simulation, soc_model 39,
  CPU fallback disabled: a graph QNN refuses is recorded as refused),
each against float PyTorch on the stage's first ``--n`` calibration inputs
(the VLMs' shapes images and prompts; seeded normal samples for the
encoders, as the compiler makes them without data).  The figure is the
worst sample's SQNR in dB, the worst output for multi-output stages.
Writes benchmarks/results/htp_parity.{json,md}.
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _results import write_results

VLMS = ["autoneural-nano", "fastvlm-nano", "vit-nano"]
ENCODERS = ["mobilenetv5", "fastvithd", "efficientvit-m", "casvit", "lsnet", "vit"]
DEFAULT_MODELS = VLMS + [f"enc-{e}-nano" for e in ENCODERS]
SYNTHETIC_SAMPLES = 8  # as edgevlm.compiler.pipeline calibrates a stage given no data


def _stage_rows(model: str, n: int, work: Path) -> list[dict]:
    import numpy as np
    import onnxruntime as ort
    import torch

    from edgevlm.compiler.backends.base import Plan
    from edgevlm.compiler.backends.onnx_backend import BACKEND as ONNX
    from edgevlm.compiler.backends.qnn_backend import htp_session
    from edgevlm.compiler.capture import capture, export_static
    from edgevlm.compiler.passes import run_pipeline
    from edgevlm.compiler.stage import CapturedStage
    from edgevlm.core.metrics import sqnr_db
    from edgevlm.errors import UnsupportedOpError
    from edgevlm.models import build_model
    from edgevlm.quant.ort_cpu import cpu_session_options
    from edgevlm.quant.schemes import parse_quant_spec
    from edgevlm.targets import get_target

    target = get_target("sa8295p")
    bundle = build_model(model)
    schemes = parse_quant_spec("w8a16" if model.startswith("enc-") else None, target)
    rows = []
    for stage in bundle.stages:
        if not stage.calibration:
            gen = torch.Generator().manual_seed(0)
            stage.calibration = [tuple(torch.randn(x.shape, generator=gen) if x.is_floating_point() else x
                                       for x in stage.example_inputs) for _ in range(SYNTHETIC_SAMPLES)]
        out = work / bundle.name.replace("/", "_") / stage.name
        out.mkdir(parents=True, exist_ok=True)
        gm, _ = run_pipeline(capture(stage), target)
        captured = CapturedStage(stage, gm, export_static(gm, stage.example_inputs, stage.name), [])
        art = ONNX.lower(captured, Plan(target, out, quant=schemes))
        # report.json's record of the artifact (Artifact.report_info where the backends keep typed records)
        quant = (art.report_info() if hasattr(art, "report_info") else art.info)["quant"]
        path = out / art.path
        cpu = ort.InferenceSession(str(path), cpu_session_options(), providers=["CPUExecutionProvider"])
        names = [i.name for i in cpu.get_inputs()]
        row = {"model": bundle.name, "stage": stage.name, "scheme": quant["scheme"],
               "kv_cache_bits": quant.get("kv_cache", {}).get("bits"),
               "integer_only": quant["integer_only"], "htp_forms": quant["htp_forms"],
               "htp_split_matmuls": quant.get("htp_split_matmuls", 0), "samples": 0,
               "cpu_sqnr_db": None, "htp_sqnr_db": None, "htp_refused": None, "htp_s_per_sample": None}
        try:
            htp = htp_session(path, target.htp)
        except UnsupportedOpError as exc:
            htp, row["htp_refused"] = None, str(exc).split(" (fix:")[0]
        cpu_db, htp_db, htp_s = [], [], []
        for sample in stage.calibration[:n]:
            with torch.no_grad():
                ref = [t.numpy() for t in torch.utils._pytree.tree_leaves(stage.module(*sample))
                       if isinstance(t, torch.Tensor)]
            feed = {k: np.asarray(x.numpy()) for k, x in zip(names, sample)}
            cpu_db.append(min(sqnr_db(r, t) for r, t in zip(ref, cpu.run(None, feed))))
            if htp is not None:
                t0 = time.perf_counter()
                got = htp.run(None, feed)
                htp_s.append(time.perf_counter() - t0)
                htp_db.append(min(sqnr_db(r, t) for r, t in zip(ref, got)))
        row.update(samples=len(cpu_db), cpu_sqnr_db=round(min(cpu_db), 1),
                   htp_sqnr_db=round(min(htp_db), 1) if htp_db else None,
                   htp_s_per_sample=round(sum(htp_s) / len(htp_s), 2) if htp_s else None)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _write_lfm2_vl(path: Path) -> str:
    """A random LFM2-VL checkpoint at ``path``: SigLIP2 tower (hidden 64, 2 layers, 8x8 patches of 4 px),
    2x2 pixel-unshuffle projector, 4-layer LFM2 LM; transformers' own classes, seed 0."""
    import torch
    import transformers

    torch.manual_seed(0)
    text = transformers.Lfm2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, block_multiple_of=8,
                                   layer_types=["conv", "full_attention", "conv", "full_attention"],
                                   max_position_embeddings=128)
    vision = dict(model_type="siglip2_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, num_channels=3, num_patches=64, patch_size=4)
    cfg = transformers.Lfm2VlConfig(vision_config=vision, text_config=text.to_dict(), image_token_id=5,
                                    projector_hidden_size=64, downsample_factor=2)
    transformers.Lfm2VlForConditionalGeneration(cfg).eval().save_pretrained(path)
    return str(path)


def _markdown(rows: list[dict]) -> str:
    lines = ["| model | stage | scheme | SQNR QNN HTP v68 (dB) | SQNR onnxruntime CPU (dB) | integer-only |",
             "|---|---|---|---:|---:|---|"]
    for r in rows:
        scheme = r["scheme"] + (f", kv{r['kv_cache_bits']}" if r["kv_cache_bits"] else "")
        htp = f"{r['htp_sqnr_db']:.1f}" if r["htp_sqnr_db"] is not None else "refused"
        lines.append(f"| {r['model']} | {r['stage']} | {scheme} | {htp} | {r['cpu_sqnr_db']:.1f} | "
                     f"{'yes' if r['integer_only'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--checkpoint", type=Path, action="append", default=[],
                    help="also a checkpoint directory (e.g. an LFM2-VL one written by transformers)")
    ap.add_argument("--lfm2-vl", action="store_true",
                    help="also a small random LFM2-VL checkpoint (SigLIP2 tower), written here by transformers")
    ap.add_argument("--n", type=int, default=2, help="calibration samples per stage (the HTP simulation is slow)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/htp_parity"))
    args = ap.parse_args(argv)

    import torch

    from edgevlm._compat import import_timm

    import_timm()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgevlm-htp-parity-") as work:
        checkpoints = [str(c) for c in args.checkpoint]
        if args.lfm2_vl:
            checkpoints.append(_write_lfm2_vl(Path(work) / "lfm2-vl-small"))
        for model in [m for m in args.models.split(",") if m] + checkpoints:
            rows += _stage_rows(model, args.n, Path(work))
    import onnxruntime_qnn

    meta = {"target": "sa8295p", "htp": "QNN HTP v68 simulation, soc_model 39, vtcm 8 MB, CPU fallback disabled",
            "onnxruntime_qnn": getattr(onnxruntime_qnn, "__version__", "?"),
            "reference": "float PyTorch stage on its first n calibration inputs; worst sample, worst output",
            "n": args.n, "load_avg": os.getloadavg(), "wall_s": round(time.perf_counter() - t0, 1),
            "command": "python benchmarks/htp_parity.py" + (f" --n {args.n}" if args.n != 2 else "")
                       + (" --lfm2-vl" if args.lfm2_vl else "")}
    write_results(args.out, {"meta": meta, "rows": rows}, _markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
