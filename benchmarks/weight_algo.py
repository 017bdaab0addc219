"""Weight rounding (rtn, gptq, mse, awq): SQNR per stage and greedy agreement, on the target's defaults.

    python benchmarks/weight_algo.py [--models autoneural-nano,...] [--checkpoint DIR ...] [--algos rtn,gptq,mse,awq]
                                     [--n 2] [--steps 64] [--no-htp] [--out benchmarks/results/weight_algo]

Each stage is lowered as ``edgevlm compile --target sa8295p`` lowers it
(capture, the sa8295p passes, the ONNX backend's QDQ model with the
target's default schemes: encoder/projector w8a16, LLM w4a16 with a kv8
cache; ``enc-*`` models w8a16), once per ``--weight-algo``, calibrated on
the stage's calibration inputs (the VLMs' shapes images and prompts: image
+prompt prefills for the LLM).  Then
- SQNR vs float PyTorch on the first ``--n`` calibration inputs (as the
  compiler verifies a stage; with ``--held-out`` the stage is calibrated,
  and GPTQ fitted, on the others only), worst sample and output, on onnxruntime CPU and on QNN's HTP (onnxruntime-qnn,
  HTP v68 simulation, soc_model 39, CPU fallback disabled), and
- for VLMs, greedy agreement with float: from each of those prefills, up
  to ``--steps`` teacher-forced decode steps (the float model's greedy
  tokens fed to both; as many as the KV cache holds), the QDQ llm-prefill
  and llm-decode on onnxruntime CPU; the fraction of steps whose argmax
  matches float's.
Writes <out>.json and <out>.md; prints each row as it is measured.
"""
import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from _results import write_results


def _lowered(model: str, algos: list[str], n: int, htp: bool, held_out: bool, work: Path,
             only: set[str] | None = None, quality_target: float | None = None) -> tuple[list[dict], dict]:
    import numpy as np
    import onnxruntime as ort
    import torch

    from edgevlm.compiler.backends.base import Plan
    from edgevlm.compiler.backends.onnx_backend import BACKEND as ONNX
    from edgevlm.compiler.backends.qnn_backend import htp_session
    from edgevlm.compiler.capture import capture, export_static
    from edgevlm.compiler.passes import run_pipeline
    from edgevlm.compiler.stage import CapturedStage
    from edgevlm.core.config import CompileConfig, QuantConfig
    from edgevlm.core.metrics import sqnr_db
    from edgevlm.errors import UnsupportedOpError
    from edgevlm.models import build_model
    from edgevlm.quant.gptq import HessianStore
    from edgevlm.quant.ort_cpu import cpu_session_options
    from edgevlm.quant.schemes import parse_quant_spec
    from edgevlm.targets import get_target

    target = get_target("sa8295p")
    bundle = build_model(model)
    schemes = parse_quant_spec("w8a16" if model.startswith("enc-") else None, target)
    rows, paths = [], {}
    stores = {algo: HessianStore() for algo in algos}  # as edgevlm.compile shares them across a build's stages
    for stage in bundle.stages:
        if only and stage.name not in only:
            continue
        if not stage.calibration:
            gen = torch.Generator().manual_seed(0)
            stage.calibration = [tuple(torch.randn(x.shape, generator=gen) if x.is_floating_point() else x
                                       for x in stage.example_inputs) for _ in range(8)]
        measured = stage.calibration[:n]
        if held_out:  # the first n samples measured on, never calibrated on (GPTQ fits the rest)
            if len(stage.calibration) <= n:
                print(f"{bundle.name} {stage.name}: {len(stage.calibration)} calibration samples, none left "
                      f"beside {n} held out: not measured", flush=True)
                measured = []
                continue
            stage.calibration = stage.calibration[n:]
        gm, _ = run_pipeline(capture(stage), target)
        captured = CapturedStage(stage, gm, export_static(gm, stage.example_inputs, stage.name), [])
        stage.measured = measured
        refs = []
        for sample in measured:
            with torch.no_grad():
                refs.append([t.numpy() for t in torch.utils._pytree.tree_leaves(stage.module(*sample))
                             if isinstance(t, torch.Tensor)])
        for algo in algos:
            out = work / bundle.name.replace("/", "_") / algo / stage.name
            out.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            # The weight algorithm and quality target reach the quantizer through the Plan's QuantConfig, as
            # edgevlm.compile passes them (Plan options carry neither: set there, every algo ran the default).
            config = CompileConfig(weight_algo=algo, quality_target_db=quality_target
                                   if quality_target is not None and stage.name.startswith("llm") else None)
            art = ONNX.lower(captured, Plan(target, out, quant=QuantConfig.resolve(schemes, config),
                                            options={"gptq_hessians": stores[algo]}))
            lower_s = time.perf_counter() - t0
            path = out / art.path
            paths[(algo, stage.name)] = path
            quant = art.report_info()["quant"]  # the typed QuantRecord, as report.json holds it
            cpu = ort.InferenceSession(str(path), cpu_session_options(), providers=["CPUExecutionProvider"])
            names = [i.name for i in cpu.get_inputs()]
            row = {"model": bundle.name, "stage": stage.name, "weight_algo": algo, "scheme": quant["scheme"],
                   "kv_cache_bits": quant.get("kv_cache", {}).get("bits"), "lower_s": round(lower_s, 1),
                   "gptq_s": quant["weights"].get("seconds"), "gptq_layers": quant["weights"].get("layers"),
                   "weights": {k: v for k, v in quant["weights"].items() if k != "why"},
                   "samples": len(refs), "cpu_sqnr_db": None, "htp_sqnr_db": None, "htp_refused": None}
            mp = quant.get("mixed_precision")
            if mp:
                kv = quant.get("kv_cache", {}).get("tensors", 0)
                row["mixed_precision"] = {"target_db": mp["target"], "met": mp["met"], "achieved_db": round(mp["achieved"], 2),
                                          "tensors_raised": len(mp["overrides"]) - kv,
                                          "candidates_measured": len(mp["steps"]) - 1}
            feeds = [{k: np.asarray(x.numpy()) for k, x in zip(names, sample)} for sample in measured]
            row["cpu_sqnr_db"] = round(min(min(sqnr_db(r, t) for r, t in zip(ref, cpu.run(None, f)))
                                           for ref, f in zip(refs, feeds)), 1)
            if htp:
                try:
                    sess = htp_session(path, target.htp)
                    row["htp_sqnr_db"] = round(min(min(sqnr_db(r, t) for r, t in zip(ref, sess.run(None, f)))
                                                   for ref, f in zip(refs, feeds)), 1)
                except UnsupportedOpError as exc:
                    row["htp_refused"] = str(exc).split(" (fix:")[0]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows, {"bundle": bundle, "paths": paths}


def _greedy_agreement(bundle, paths, algo: str, steps: int) -> dict:
    """Teacher-forced greedy agreement of the QDQ LLM stages (onnxruntime CPU) with float PyTorch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    stages = {s.name: s for s in bundle.stages}
    if "llm-prefill" not in stages or (algo, "llm-decode") not in paths:
        return {}
    prefill, decode = stages["llm-prefill"], stages["llm-decode"]
    if not getattr(prefill, "measured", None):
        return {}
    q_pre = ort.InferenceSession(str(paths[(algo, "llm-prefill")]), providers=["CPUExecutionProvider"])
    q_dec = ort.InferenceSession(str(paths[(algo, "llm-decode")]), providers=["CPUExecutionProvider"])
    pre_names = [i.name for i in q_pre.get_inputs()]
    dec_names = [i.name for i in q_dec.get_inputs()]
    capacity = int(prefill.example_inputs[3].shape[-2])  # key cache [layers, 1, kv heads, positions, head dim]
    same = total = 0
    for sample in prefill.measured:
        with torch.no_grad():
            f_logits, *f_state = prefill.module(*sample)
        q_logits, *q_state = q_pre.run(None, {k: np.asarray(x.numpy()) for k, x in zip(pre_names, sample)})
        for _ in range(min(steps, capacity - int(f_state[-1].reshape(-1)[0]))):
            token = int(f_logits.argmax())
            same += int(np.argmax(q_logits) == token)
            total += 1
            tok = torch.tensor([[token]], dtype=torch.int64)
            with torch.no_grad():
                f_logits, *f_state = decode.module(tok, *f_state)
            q_logits, *q_state = q_dec.run(None, dict(zip(dec_names, [tok.numpy(), *q_state])))
    return {"greedy_agreement": round(same / total, 3), "greedy_steps": total,
            "greedy_prompts": len(prefill.measured)}


def _markdown(rows: list[dict], greedy: list[dict]) -> str:
    lines = ["| model | stage | scheme | weights | SQNR QNN HTP v68 (dB) | SQNR onnxruntime CPU (dB) | lower s (weight algo s) |",
             "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        scheme = r["scheme"] + (f", kv{r['kv_cache_bits']}" if r["kv_cache_bits"] else "")
        htp = f"{r['htp_sqnr_db']:.1f}" if r["htp_sqnr_db"] is not None else ("refused" if r["htp_refused"] else "-")
        gptq = f" ({r['gptq_s']:.1f})" if r["gptq_s"] is not None else ""
        weights, mp = r["weight_algo"], r.get("mixed_precision")
        w = r.get("weights") or {}
        if r["weight_algo"] == "awq":
            weights += f" ({w.get('layers', 0)} layers scaled, {(w.get('unscaled') or {}).get('layers', 0)} unscaled)"
        if mp:
            weights += (f", target {mp['target_db']:g} dB {'met' if mp['met'] else 'NOT met'}: {mp['tensors_raised']} "
                        f"weights at 8 bits, {mp['candidates_measured']} candidates measured")
        lines.append(f"| {r['model']} | {r['stage']} | {scheme} | {weights} | {htp} | {r['cpu_sqnr_db']:.1f} | "
                     f"{r['lower_s']:.1f}{gptq} |")
    if greedy:
        lines += ["", "| model | weights | greedy agreement with float (onnxruntime CPU) | teacher-forced steps (prompts) |",
                  "|---|---|---:|---:|"]
        lines += [f"| {g['model']} | {g['weight_algo']} | {g['greedy_agreement']:.3f} | {g['greedy_steps']} "
                  f"({g['greedy_prompts']}) |" for g in greedy]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="autoneural-nano")
    ap.add_argument("--checkpoint", type=Path, action="append", default=[], help="also a checkpoint directory")
    ap.add_argument("--lfm2-vl", action="store_true",
                    help="also htp_parity.py's small random LFM2-VL checkpoint (SigLIP2 tower, transformers' classes)")
    ap.add_argument("--algos", default="rtn,gptq", help="comma-separated --weight-algo values (rtn, gptq, mse, awq)")
    ap.add_argument("--n", type=int, default=3, help="calibration samples per stage measured for the SQNR and "
                    "greedy agreement (the HTP simulation is slow)")
    ap.add_argument("--steps", type=int, default=64, help="teacher-forced decode steps per prompt at most")
    ap.add_argument("--no-htp", action="store_true", help="onnxruntime CPU only")
    ap.add_argument("--held-out", action="store_true", help="calibrate on the samples after the first n only")
    ap.add_argument("--stages", default=None, help="comma-separated stage names to measure (default: all)")
    ap.add_argument("--quality-target", type=float, default=None, metavar="DB",
                    help="LLM stages: mixed precision (edgevlm.quant.mixed_precision, bisect) to this SQNR, as "
                    "compile --quality-target llm-prefill=DB,llm-decode=DB")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/weight_algo"))
    args = ap.parse_args(argv)

    import torch

    from edgevlm._compat import import_timm

    import_timm()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    algos = [a for a in args.algos.split(",") if a]
    rows, greedy = [], []
    with tempfile.TemporaryDirectory(prefix="edgevlm-weight-algo-") as work:
        checkpoints = [str(c) for c in args.checkpoint]
        if args.lfm2_vl:
            from htp_parity import _write_lfm2_vl

            checkpoints.append(_write_lfm2_vl(Path(work) / "lfm2-vl-small"))
        for model in [m for m in args.models.split(",") if m] + checkpoints:
            model_rows, built = _lowered(model, algos, args.n, not args.no_htp, args.held_out, Path(work),
                                         set(args.stages.split(",")) if args.stages else None, args.quality_target)
            rows += model_rows
            for algo in algos:
                g = _greedy_agreement(built["bundle"], built["paths"], algo, args.steps)
                if g:
                    greedy.append({"model": built["bundle"].name, "weight_algo": algo, **g})
                    print(json.dumps(greedy[-1]), flush=True)
    meta = {"target": "sa8295p", "htp": None if args.no_htp else "QNN HTP v68 simulation, soc_model 39, CPU fallback disabled",
            "reference": "float PyTorch stage on its first n calibration inputs"
                         + (", held out from calibration" if args.held_out else " (also calibrated on)")
                         + "; worst sample, worst output",
            "held_out": args.held_out,
            "n": args.n, "steps": args.steps, "load_avg": os.getloadavg(), "wall_s": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "command": "python benchmarks/weight_algo.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    write_results(args.out, {"meta": meta, "rows": rows, "greedy": greedy}, _markdown(rows, greedy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
