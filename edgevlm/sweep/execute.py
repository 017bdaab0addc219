"""Run sweep points (one compile + one eval each) and stream their records into DIR/sweep.jsonl.

A point's record holds its settings and key, the build's accuracy through its deployed path (the
target's first runnable vision backend, e.g. qnn on sa8295p: the QNN context binaries on the HTP
simulation, + the C runtime), and the target latency implied by the build's per-stage roofline
estimates (TTFT = encoder + projector + llm-prefill; decode tokens/s = 1000 / llm-decode ms;
labelled estimated).  Records are appended one line each as points finish, so a sweep killed
halfway keeps every finished point and a rerun computes only the rest.
"""
from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path

from edgevlm import parallel
from edgevlm.errors import EdgeVLMError
from edgevlm.sweep.grid import Point

JSONL = "sweep.jsonl"
FORMAT = 1


def deployed_backend(target_name: str, build_stages: dict) -> str | None:
    """The vision backend the target deploys: its first preferred backend that the runner can run and the
    build has for encoder and projector (None: the runner's choice)."""
    from edgevlm.core.stage import VISION_STAGES
    from edgevlm.runner import RUNNABLE_BACKENDS
    from edgevlm.targets import get_target

    for b in get_target(target_name).backends:
        if b in RUNNABLE_BACKENDS and all(b in build_stages.get(s, {}) for s in VISION_STAGES):
            return b
    return None


def run_point(point: Point, build_dir: str, backends: list[str] | None = None, hub: bool = False) -> dict:
    """Compile ``point`` into ``build_dir``, evaluate it on ``point.eval_n`` shapes samples, read its estimates.

    ``hub=True`` also compiles and profiles the point's stages on a device through Qualcomm AI Hub (the
    compile's ``hub``): the measured per-stage latencies go into the record beside the estimates, and
    without credentials the record says the hub step was skipped and why.

    Never raises for the point's own failure: the record then has ``"status": "failed"`` and the error.
    """
    from edgevlm.compiler.estimate import report_estimates
    from edgevlm.compiler.pipeline import compile as compile_model
    from edgevlm.compiler.runtime_bundle import VLM_JSON
    from edgevlm.data.evaluate import evaluate
    from edgevlm.runner import BuildRunner

    record = {"format": FORMAT, "key": point.key, "settings": point.settings(), "build": build_dir,
              "host": socket.gethostname(), "pid": os.getpid()}
    t0 = time.perf_counter()
    try:
        result = compile_model(point.model, target=point.target, out=build_dir, backends=backends, quant=point.quant or None,
                               vision_tokens=point.vision_tokens, token_reduce=point.token_reduce or "dct", eval_n=0,
                               htp_verify=point.htp_verify, hub=hub)
        t1 = time.perf_counter()
        stages = json.loads((Path(build_dir) / VLM_JSON).read_text())["stages"]
        runner = BuildRunner(build_dir, threads=1, backend=deployed_backend(point.target, stages))
        ev = evaluate(lambda im, p: runner.answer(im, p).text, n=point.eval_n, seed=point.seed,
                      image_size=runner.meta["image_size"])
        t2 = time.perf_counter()
    except EdgeVLMError as exc:
        return {**record, "status": "failed", "error": str(exc), "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as exc:  # a toolchain's own failure: keep the sweep going, say which point and why
        return {**record, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8), "seconds": round(time.perf_counter() - t0, 2)}
    est = report_estimates(result.report)
    return {**record, "status": "ok", "exact_match": ev["exact_match"], "by_question": ev["by_question"], "n": ev["n"],
            "vision_backend": runner.backend, "gguf_type": result.report.get("runtime", {}).get("info", {}).get("gguf_type"),
            "num_image_tokens": runner.meta["num_image_tokens"],
            "estimate": {"label": "estimated", "method": est["method"], "ttft_ms": est["ttft_ms"],
                         "decode_tokens_per_s": est["decode_tokens_per_s"], "stages_ms": est["stages_ms"],
                         "schemes": est["schemes"]},
            "compile_s": round(t1 - t0, 2), "eval_s": round(t2 - t1, 2), "seconds": round(t2 - t0, 2),
            **({"hub": _hub_record(result.report)} if hub else {})}


def _hub_record(report: dict) -> dict:
    """AI Hub's outcome for a point: status (ok, partial, skipped, failed), why, and each measured stage latency."""
    hub = report.get("hub") or {}
    measured = {s["name"]: s["device_latency"]["latency_ms"] for s in report["stages"] if s.get("device_latency")}
    return {"status": hub.get("status"), "reason": hub.get("reason"), "device": hub.get("device"),
            "label": "measured on the device (Qualcomm AI Hub)", "stages_ms": measured}


def read_records(path: Path) -> tuple[dict[str, dict], int]:
    """The last record per key in a sweep.jsonl, and how many lines could not be read (a run killed
    mid-write leaves at most one)."""
    records, bad = {}, 0
    if not path.is_file():
        return records, 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            records[rec["key"]] = rec
        except (ValueError, KeyError, TypeError):
            bad += 1
    return records, bad


def _append(path: Path, record: dict) -> None:
    from edgevlm.compiler.report import json_safe

    with open(path, "a") as f:
        f.write(json.dumps(json_safe(record), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_sweep(points: list[Point], out_dir: Path, engine: parallel.Engine, backends: list[str] | None = None,
              on_start=None, on_done=None, hub: bool = False) -> dict[str, dict]:
    """Run every point of ``points`` without an "ok" record in ``out_dir``/sweep.jsonl; returns all records by key.

    ``on_start(todo, done_before)`` is called once, ``on_done(point, record)`` as each point finishes.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / JSONL
    records, _ = read_records(path)
    todo = [p for p in points if records.get(p.key, {}).get("status") != "ok"]
    if on_start:
        on_start(todo, len(points) - len(todo))
    builds = out_dir.resolve() / "builds"
    args = [(p, str(builds / p.slug), backends, hub) for p in todo]
    def crashed(i, exc):  # the worker process died under the point: a failed record, retried by a rerun
        return {"format": FORMAT, "key": todo[i].key, "settings": todo[i].settings(), "build": args[i][1],
                "status": "failed", "error": f"the Ray worker died while running the point: {type(exc).__name__}"}

    for i, rec in parallel.as_completed(engine, run_point, args, crashed):
        rec["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _append(path, rec)
        records[rec["key"]] = rec
        if on_done:
            on_done(todo[i], rec)
    return records
