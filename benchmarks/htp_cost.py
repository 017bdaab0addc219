"""What QNN context-binary preparation and one HTP verification sample cost, per stage of a build.

    python benchmarks/htp_cost.py BUILD_DIR --stage llm-decode [--prepare-budget 1500] [--run-budget 1500]

Takes ``BUILD_DIR/<stage>.onnx`` (the onnx backend's QDQ model, as
``edgevlm compile --target sa8295p --backends onnx`` writes it) and does
what the qnn backend does with it, through the backend's own functions:
prepares the QNN context binary for the target's HTP (``prepare_stage``:
one graph in a fresh process, or, past PART_MAX_ACTIVATIONS, one graph a
part, PREPARE_WORKERS at a time; ``--whole`` keeps it one graph), then runs one sample on the HTP simulation
(``run_on_htp``), each stopped at its budget.  The sample is seeded: float
inputs normal(0, 1), KV caches and conv states zero, ``pos`` 0, ``n_valid``
the prompt length, token ids 1; the HTP's outputs are compared with
onnxruntime CPU's on the same QDQ model (a check that the run was real, not
the artifact's parity, which is against float on calibration data).
Peak RSS is the largest child's (getrusage of the finished children). Appends one
JSON line per stage to ``--out`` (benchmarks/results/htp_cost.jsonl).
Run it under ``flock /tmp/edgevlm-bigmem.lock`` at published sizes.
"""
import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path


def sample_for(model_path: Path) -> list:
    import numpy as np
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    out = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        shape = dims[inp.name]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type)
        if inp.name == "n_valid":
            valid = next((v[1] for k, v in dims.items() if k in ("embeds", "input_ids") and len(v) > 1), 1)
            out.append(np.full(shape, valid, dtype))
        elif np.issubdtype(dtype, np.integer):
            out.append(np.full(shape, 0 if inp.name == "pos" else 1, dtype))
        elif "cache" in inp.name or "state" in inp.name:
            out.append(np.zeros(shape, dtype))
        else:
            out.append(rng.standard_normal(shape).astype(dtype))
    return out


def _children_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 ** 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--stage", required=True)
    ap.add_argument("--target", default="sa8295p")
    ap.add_argument("--prepare-budget", type=float, default=1500.0, help="seconds (default 25 min)")
    ap.add_argument("--run-budget", type=float, default=1500.0, help="seconds for the one HTP sample")
    ap.add_argument("--label", default="", help="what the build is (e.g. lfm2-vl-450m)")
    ap.add_argument("--whole", action="store_true",
                    help="prepare the stage as one QNN graph even past PART_MAX_ACTIVATIONS (the qnn backend splits it)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/htp_cost.jsonl"))
    args = ap.parse_args(argv)

    import numpy as np
    import onnxruntime as ort

    from edgevlm.compiler.backends import qnn_backend
    from edgevlm.compiler.backends.qnn_backend import context_files, prepare_stage, run_on_htp
    from edgevlm.core.metrics import sqnr_db
    from edgevlm.quant.ort_cpu import cpu_session_options
    from edgevlm.targets import get_target

    htp = get_target(args.target).htp
    source = args.build / f"{args.stage}.onnx"
    row = {"label": args.label, "build": str(args.build), "stage": args.stage, "target": args.target,
           "htp_arch": htp.arch, "soc_model": htp.soc_model, "qdq_bytes": source.stat().st_size,
           "prepare_budget_s": args.prepare_budget, "run_budget_s": args.run_budget,
           "load_avg_start": [round(x, 1) for x in os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="edgevlm-htp-cost-") as tmp:
        context = Path(tmp) / f"{args.stage}.htp.onnx"
        t0 = time.perf_counter()
        if args.whole:
            qnn_backend.PART_MAX_ACTIVATIONS = float("inf")
        graphs = prepare_stage(source, context, htp, f"stage '{args.stage}'", budget_s=args.prepare_budget)
        done = graphs is not None
        row.update(prepare_s=round(time.perf_counter() - t0, 1), prepared=done, qnn_graphs=graphs,
                   part_max_activations=qnn_backend.PART_MAX_ACTIVATIONS if not args.whole else None,
                   prepare_workers=qnn_backend.PREPARE_WORKERS,
                   prepare_peak_rss_gb=round(_children_peak_gb(), 2))
        print(json.dumps(row), flush=True)
        if done:
            row["context_bytes"] = sum(f.stat().st_size for f in context_files(context))
            sample = sample_for(source)
            t0 = time.perf_counter()
            outs = run_on_htp(context, htp, [sample], args.run_budget, what=f"stage '{args.stage}'")
            row.update(run_s=round(time.perf_counter() - t0, 1), ran=bool(outs),
                       prepare_and_run_peak_rss_gb=round(_children_peak_gb(), 2))
            if outs:
                cpu = ort.InferenceSession(str(source), cpu_session_options(2), providers=["CPUExecutionProvider"])
                feed = {i.name: x for i, x in zip(cpu.get_inputs(), sample, strict=True)}
                t0 = time.perf_counter()
                ref = cpu.run(None, feed)
                row["cpu_run_s"] = round(time.perf_counter() - t0, 1)
                row["htp_vs_cpu_db"] = [round(float(sqnr_db(np.asarray(r, np.float64), np.asarray(g, np.float64))), 1)
                                        for r, g in zip(ref, outs[0])]
    row["load_avg_end"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
