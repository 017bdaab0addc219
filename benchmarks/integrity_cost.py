"""What the sha256 check of a build's files costs `edgevlm run/eval/profile` and `edgevlm inspect`.

    python benchmarks/integrity_cost.py build/autoneural-nano-sa8295p [--runs 20] [--threads 2] [--backend qnn]

Measures, on this machine, the median over ``--runs`` of: the check BuildRunner
does before loading (the files it loads: vlm.json, tokenizer.json, llm.gguf,
the encoder and projector artifacts of its vision backend), a whole
BuildRunner load with that check (what `edgevlm run` pays before the first
image), and `edgevlm inspect`'s check of every file in manifest.json.  The
page cache is warm (each file was read before the timed runs).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def _median_ms(fn, runs: int) -> float:
    fn()  # warm: page cache, imports
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backend", default=None, help="vision artifacts the runner loads (default: its own choice)")
    args = ap.parse_args(argv)

    from edgevlm.compiler import integrity
    from edgevlm.runner import BuildRunner

    build = Path(args.build)
    manifest = integrity.read_manifest(build)
    runner = BuildRunner(build, threads=args.threads, backend=args.backend)
    loaded = {e["path"] for e in runner.verified}
    loaded_bytes = sum(e["bytes"] for e in manifest["artifacts"] if e["path"] in loaded)
    all_bytes = sum(e["bytes"] for e in manifest["artifacts"])

    check_loaded = _median_ms(lambda: integrity.verify_entries(build, manifest, lambda e: e["path"] in loaded), args.runs)
    runner_load = _median_ms(lambda: BuildRunner(build, threads=args.threads, backend=args.backend), args.runs)
    check_all = _median_ms(lambda: integrity.problems(build, manifest["artifacts"]), args.runs)
    result = {
        "build": str(build), "backend": runner.backend, "runs": args.runs, "where": "this machine, warm page cache",
        "loaded_files": len(loaded), "loaded_bytes": loaded_bytes,
        "check_loaded_ms": round(check_loaded, 2), "runner_load_ms": round(runner_load, 2),
        "check_share_of_load": round(check_loaded / runner_load, 3),
        "manifest_files": len(manifest["artifacts"]), "manifest_bytes": all_bytes, "check_all_ms": round(check_all, 2),
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
