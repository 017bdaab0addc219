"""`edgevlm eval BUILD --n N --shards K` / `--ray-address ADDR`: one evaluation split across workers.

Sample ``i`` of the shapes set depends only on (seed, i) (edgevlm.data.shapes.make_sample), so
shard ``k`` answers a contiguous index range on its own BuildRunner; the driver then scores the
answers in index order through the same ``evaluate`` as the serial run.  Same samples, same
answers, same result; each shard also reports its throughput (answers per second, after loading).
"""
from __future__ import annotations

import os
import socket
import time

from edgevlm import parallel


def split(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous [start, stop) ranges covering 0..n-1, sizes differing by at most one."""
    shards = max(1, min(shards, n))
    base, extra = divmod(n, shards)
    out, start = [], 0
    for k in range(shards):
        stop = start + base + (k < extra)
        out.append((start, stop))
        start = stop
    return out


def answer_shard(build_dir: str, backend: str | None, seed: int, image_size: int, start: int, stop: int) -> dict:
    """The build's answers to samples start..stop-1, with load and answer times."""
    from edgevlm.data.shapes import make_sample
    from edgevlm.runner import BuildRunner

    t0 = time.perf_counter()
    runner = BuildRunner(build_dir, threads=1, backend=backend)
    t1 = time.perf_counter()
    answers = []
    for i in range(start, stop):
        s = make_sample(seed, i, image_size)
        answers.append((s.prompt, runner.answer(s.image, s.prompt).text))
    t2 = time.perf_counter()
    return {"start": start, "stop": stop, "answers": answers, "load_s": t1 - t0, "answer_s": t2 - t1,
            "host": socket.gethostname(), "pid": os.getpid(), "vision_backend": runner.backend}


def evaluate_sharded(build_dir, backend: str | None, n: int, seed: int, image_size: int, engine: parallel.Engine,
                     shards: int | None = None, dataset: str = "shapes", on_shard=None) -> dict:
    """``evaluate``'s result for the build over ``n`` samples, computed in ``shards`` pieces (default: the
    engine's CPUs), plus ``shards``: per-shard samples, seconds and samples/s, in index order."""
    from edgevlm.data.evaluate import evaluate

    ranges = split(n, shards or engine.workers)
    args = [(str(build_dir), backend, seed, image_size, a, b) for a, b in ranges]
    t0 = time.perf_counter()
    results: list[dict | None] = [None] * len(ranges)
    for k, res in parallel.as_completed(engine, answer_shard, args):
        results[k] = res
        if on_shard:
            on_shard(k, len(ranges), res)
    wall = time.perf_counter() - t0
    answers = [a for res in results for a in res["answers"]]
    it = iter(answers)

    def replay(image, prompt):
        want, got = next(it)
        if want != prompt:  # cannot happen while make_sample is deterministic; never score misaligned answers
            raise RuntimeError(f"shard answers out of order: {want!r} vs {prompt!r}")
        return got

    result = evaluate(replay, dataset, n=n, seed=seed, image_size=image_size)
    result["shards"] = [{"shard": k, "start": r["start"], "stop": r["stop"], "samples": r["stop"] - r["start"],
                         "load_s": round(r["load_s"], 3), "answer_s": round(r["answer_s"], 3),
                         "samples_per_s": round((r["stop"] - r["start"]) / r["answer_s"], 3) if r["answer_s"] > 0 else None,
                         "host": r["host"], "pid": r["pid"]} for k, r in enumerate(results)]
    result["engine"] = engine.describe()
    result["wall_s"] = round(wall, 3)
    return result
