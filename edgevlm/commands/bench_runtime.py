"""`edgevlm bench-runtime`: prompt-processing and generation speed of the C runtime, llama-bench style.

Tests match llama-bench's: ``pp<P>`` processes P random prompt tokens in one
prefill from an empty context; ``tg<N>`` generates N tokens one step at a
time from an empty context.  Each test runs once to warm up, then
``--repetitions`` timed times; ``avg_ts``/``stddev_ts`` are the mean and
sample standard deviation of tokens per second over the timed runs.
Timing brackets only the runtime calls (one C call per prefill or step).
"""
import json
import statistics
import time
from pathlib import Path

import numpy as np

from edgevlm.errors import InputError

NAME = "bench-runtime"
HELP = "benchmark the C runtime on a GGUF file: prefill (ppN) and decode (tgN) tokens/s, llama-bench style"
ORDER = 60


def add_arguments(parser):
    parser.add_argument("model", help="LFM2 GGUF file")
    parser.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens for the pp test (0: skip; default 512)")
    parser.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens for the tg test (0: skip; default 128)")
    parser.add_argument("-t", "--threads", type=int, default=2, help="threads (default 2)")
    parser.add_argument("-r", "--repetitions", type=int, default=5, help="timed runs per test (default 5)")
    parser.add_argument("-o", "--output", choices=("md", "json"), default="md", help="output format (default md)")


def _check(args) -> None:
    if not Path(args.model).is_file():
        raise InputError(f"model file '{args.model}' does not exist", "pass the path of an LFM2 .gguf file")
    for name, v, lo in (("--n-prompt", args.n_prompt, 0), ("--n-gen", args.n_gen, 0),
                        ("--threads", args.threads, 1), ("--repetitions", args.repetitions, 1)):
        if v < lo:
            raise InputError(f"{name} {v} is below {lo}", f"pass {name} >= {lo}")
    if args.n_prompt == 0 and args.n_gen == 0:
        raise InputError("both --n-prompt and --n-gen are 0: nothing to measure", "pass -p N and/or -n N")


def _time_prefill(session, ids) -> float:
    session.reset()
    t0 = time.perf_counter()
    session.prefill(ids=ids)
    return time.perf_counter() - t0


def _time_generation(session, ids) -> float:
    session.reset()
    step = session.step
    t0 = time.perf_counter()
    for tok in ids:
        step(int(tok))
    return time.perf_counter() - t0


def measure(model_path, n_prompt: int, n_gen: int, threads: int, repetitions: int) -> list[dict]:
    """Run the pp/tg tests; returns llama-bench-style result rows."""
    from edgevlm.runtime import Model

    model = Model.load(model_path, threads=threads)
    session = model.session(n_ctx=max(n_prompt, n_gen) + 1)
    rng = np.random.default_rng(0)
    rows = []
    for test, n, fn in (("pp", n_prompt, _time_prefill), ("tg", n_gen, _time_generation)):
        if n == 0:
            continue
        ids = rng.integers(0, model.n_vocab, size=n, dtype=np.int32)
        fn(session, ids)  # warm-up: page in the weights, size the scratch buffers
        secs = [fn(session, ids) for _ in range(repetitions)]
        ts = [n / s for s in secs]
        rows.append({
            "model": Path(model_path).name, "test": f"{test}{n}",
            "n_prompt": n if test == "pp" else 0, "n_gen": n if test == "tg" else 0, "n_threads": threads,
            "avg_ts": statistics.fmean(ts), "stddev_ts": statistics.stdev(ts) if len(ts) > 1 else 0.0,
            "samples_ts": ts,
        })
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a llama-bench-like markdown table."""
    out = ["| model | threads | test | t/s |", "| --- | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['model']} | {r['n_threads']} | {r['test']} | {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} |")
    return "\n".join(out)


def run(args) -> int:
    _check(args)
    rows = measure(args.model, args.n_prompt, args.n_gen, args.threads, args.repetitions)
    print(json.dumps(rows, indent=2) if args.output == "json" else markdown(rows))
    return 0
