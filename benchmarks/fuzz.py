"""Coverage-guided fuzzing of edgevlm's loaders: each target for a given time, one at a time.

Targets (TARGETS below):
  gguf_model       C, libFuzzer + ASan + UBSan (clang): edgevlm/runtime/tests/fuzz_model_load.c,
                   ev_model_load + session + prefill/step/generate on whatever loads
  runtime_binding  Python, atheris: tests/fuzz/fuzz_runtime_binding.py, the same through the CPython binding
  build_files      Python, atheris: tests/fuzz/fuzz_build_files.py, vlm.json / manifest.json /
                   tokenizer.json / prompt as `edgevlm run` reads them
  image            Python, atheris: tests/fuzz/fuzz_image.py, an image file as `edgevlm run --image` reads it

Seeds (tests/fuzz/seeds.py): valid GGUFs from edgevlm's writer and llama.cpp's
converter (when benchmarks/_work holds a llama.cpp tree, as the runtime
benchmark unpacks it), the bad-file corpus, a compiled build's files, and a
shapes image in many formats.  Everything runs under benchmarks/_work/fuzz
(gitignored): seeds/, corpus/ (kept between runs, so later runs start from
what earlier ones found) and crashes/ per target.  A crash restarts the
fuzzer on the remaining time; a crash input seen three times ends the target.

Results (executions, coverage, corpus, crashes per target, with machine and
command) go to benchmarks/results/fuzz.{json,md} (--out-name to change).

Usage: python benchmarks/fuzz.py [--seconds 60] [--target-seconds gguf_model=900,...] [--targets gguf_model,image] [--nice 10]
       [--source DIR] [--build DIR] [--out-name fuzz | --out FILE.json]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _results import write_results

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work" / "fuzz"
RESULTS = ROOT / "benchmarks" / "results"
FUZZ_DIR = ROOT / "tests" / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))

SAN_FLAGS = "-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1:symbolize=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
MAX_REPEATS = 3   # the same crash input found this many times ends the target's run


class Unavailable(Exception):
    """A target's tools are missing here (the reason says which and how to install them)."""


@dataclass(frozen=True)
class Target:
    name: str
    engine: str        # "libfuzzer" (C) or "atheris" (Python)
    entry: str         # the harness, relative to the repository
    max_len: int       # libFuzzer -max_len
    timeout_s: int     # one input slower than this is reported (libFuzzer -timeout)


TARGETS = [
    Target("gguf_model", "libfuzzer", "edgevlm/runtime/tests/fuzz_model_load.c", 192 << 10, 10),
    Target("runtime_binding", "atheris", "tests/fuzz/fuzz_runtime_binding.py", 192 << 10, 20),
    Target("build_files", "atheris", "tests/fuzz/fuzz_build_files.py", 16 << 10, 20),
    Target("image", "atheris", "tests/fuzz/fuzz_image.py", 64 << 10, 20),
]


def clang_with_libfuzzer() -> str:
    """Path of a clang that links -fsanitize=fuzzer, or Unavailable."""
    cc = shutil.which("clang")
    if not cc:
        raise Unavailable("clang not found (Debian: apt-get install clang libclang-rt-14-dev)")
    probe = WORK / "probe"
    probe.mkdir(parents=True, exist_ok=True)
    src = probe / "p.c"
    src.write_text("#include <stdint.h>\n#include <stddef.h>\n"
                   "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
    p = subprocess.run([cc, "-fsanitize=fuzzer,address,undefined", str(src), "-o", str(probe / "p")],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise Unavailable(f"clang cannot link libFuzzer (Debian: apt-get install libclang-rt-14-dev): {p.stderr.strip()[-300:]}")
    return cc


def build_c_target(source: Path, build_dir: Path) -> Path:
    """The libFuzzer binary of ev_fuzz_model_load, built with ASan + UBSan from source's C runtime."""
    cc = clang_with_libfuzzer()
    if not shutil.which("cmake"):
        raise Unavailable("cmake not found")
    subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), f"-DCMAKE_C_COMPILER={cc}", "-DCMAKE_BUILD_TYPE=Debug",
                    "-DEV_FUZZ_ENGINE=libfuzzer", f"-DCMAKE_C_FLAGS={SAN_FLAGS}",
                    "-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined"], check=True, capture_output=True)
    p = subprocess.run(["cmake", "--build", str(build_dir), "--target", "ev_fuzz_model_load", "-j2"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"building the fuzz target failed:\n{(p.stdout + p.stderr)[-3000:]}")
    return build_dir / "edgevlm" / "runtime" / "ev_fuzz_model_load"


def require_atheris() -> None:
    p = subprocess.run([sys.executable, "-c", "import atheris"], capture_output=True)
    if p.returncode != 0:
        raise Unavailable(f"atheris is not installed in {sys.executable} (pip install atheris; `make fuzz-deps`)")


def default_build(work: Path) -> Path:
    """A VLM build for build_files: `edgevlm compile --target sa8295p --backends onnx`, compiled once under work."""
    build = work / "build" / "autoneural-nano-sa8295p"
    if not (build / "vlm.json").is_file():
        print("[fuzz] compiling the default model for build_files (once, ~2 min)", flush=True)
        (work).mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "edgevlm.cli", "compile", "--target", "sa8295p", "--backends", "onnx"],
                       cwd=work, check=True, capture_output=True)
    return build


def seeds_for(target: Target, build: Path | None) -> dict[str, bytes]:
    import seeds

    if target.name in ("gguf_model", "runtime_binding"):
        return seeds.gguf_seeds(WORK / "seedwork")
    if target.name == "build_files":
        return seeds.build_files_seeds(build)
    return seeds.image_seeds()


STATUS = re.compile(r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
STAT = re.compile(r"^stat::(\w+):\s+(\d+)")
ARTIFACT = re.compile(r"Test unit written to (\S+)")


def parse_log(text: str) -> dict:
    """Executions, coverage and the last report of one libFuzzer/atheris run's output."""
    out = {"executions": 0, "cov": 0, "ft": 0, "corpus": 0, "stats": {}, "artifacts": [], "error": None}
    for line in text.splitlines():
        m = STATUS.match(line)
        if m:
            out.update(executions=int(m[1]), cov=int(m[3]), ft=int(m[4]), corpus=int(m[5]))
        m = STAT.match(line)
        if m:
            out["stats"][m[1]] = int(m[2])
        m = ARTIFACT.search(line)
        if m:
            out["artifacts"].append(m[1])
        if out["error"] is None and re.search(r"ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|libFuzzer)|"
                                               r"runtime error:|=== Uncaught Python exception|API promise broken", line):
            out["error"] = line.strip()[:300]
    if "number_of_executed_units" in out["stats"]:
        out["executions"] = max(out["executions"], out["stats"]["number_of_executed_units"])
    return out


def crash_summary(text: str) -> str:
    """One line naming the bug: the Python exception, or the sanitizer report and its first frame in edgevlm."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "=== Uncaught Python exception" in line:
            tail = [x for x in lines[i + 1:i + 60] if x and not x.startswith(" ")]
            exc = next((x for x in tail if re.match(r"^\w[\w.]*(Error|Exception|Exit|Interrupt)\b", x)), None)
            where = [x.strip() for x in lines[i + 1:i + 60] if x.strip().startswith("File ")]
            return f"{exc or 'Python exception'} at {where[-1] if where else '?'}"[:300]
    for i, line in enumerate(lines):
        if re.search(r"ERROR: (AddressSanitizer|libFuzzer)|runtime error:|API promise broken", line):
            frame = next((x.strip() for x in lines[i:i + 40] if "edgevlm/runtime" in x and " in " in x), "")
            return f"{line.strip()} {frame}"[:300]
    return "crash (see log)"


def _children_cpu_s() -> float:
    """User + system CPU seconds of the finished child processes (the fuzzers) so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _rel(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run_target(target: Target, seconds: float, exe: list[str], env: dict, nice: int, tdir: Path) -> dict:
    """Run one target for `seconds` of wall time (restarting after each crash); its figures and crashes."""
    corpus, seed_dir, crashes = tdir / "corpus", tdir / "seeds", tdir / "crashes"
    for d in (corpus, crashes):
        d.mkdir(parents=True, exist_ok=True)
    runs, found, seen = [], [], {}
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 3:
        log = tdir / f"run{len(runs)}.log"
        cmd = (["nice", "-n", str(nice)] if nice else []) + exe + [
            str(corpus), str(seed_dir), f"-max_total_time={int(left)}", f"-max_len={target.max_len}",
            f"-timeout={target.timeout_s}", "-rss_limit_mb=2048", "-print_final_stats=1",
            f"-artifact_prefix={crashes}/"]
        t0, cpu0 = time.monotonic(), _children_cpu_s()
        # libFuzzer ends the process with C exit(): Python's atexit never runs, so the harness's
        # scratch files go in a TMPDIR of this run's own, removed here.
        scratch = tdir / "tmp"
        scratch.mkdir(exist_ok=True)
        with open(log, "w") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(env, TMPDIR=str(scratch)),
                                cwd=tdir).returncode
        shutil.rmtree(scratch, ignore_errors=True)
        text = log.read_text(errors="replace")
        r = parse_log(text)
        r.update(rc=rc, seconds=round(time.monotonic() - t0, 1), cpu_seconds=round(_children_cpu_s() - cpu0, 1),
                 log=_rel(log))
        runs.append(r)
        if rc == 0:
            break
        if not r["artifacts"]:
            raise RuntimeError(f"{target.name} exited with {rc} and no crash input; see {log}:\n{text[-2000:]}")
        for a in r["artifacts"]:
            key = Path(a).name
            seen[key] = seen.get(key, 0) + 1
            if seen[key] == 1:
                found.append({"input": _rel(Path(a)), "bytes": Path(a).stat().st_size,
                              "summary": crash_summary(text), "log": _rel(log)})
        if max(seen.values()) >= MAX_REPEATS:
            break
    return {
        "target": target.name, "engine": target.engine, "harness": target.entry,
        "seconds": round(sum(r["seconds"] for r in runs), 1), "cpu_seconds": round(sum(r["cpu_seconds"] for r in runs), 1),
        "restarts": len(runs) - 1,
        "executions": sum(r["executions"] for r in runs),
        "exec_per_s": round(sum(r["executions"] for r in runs) / max(1e-9, sum(r["seconds"] for r in runs)), 1),
        "coverage_edges": max((r["cov"] for r in runs), default=0),
        "coverage_features": max((r["ft"] for r in runs), default=0),
        "corpus_units": len(list(corpus.iterdir())),
        "peak_rss_mb": max((r["stats"].get("peak_rss_mb", 0) for r in runs), default=0),
        "crashes": found, "runs": runs,
    }


def prepare(target: Target, tdir: Path, source: Path, c_build: Path, build: Path | None) -> tuple[list[str], dict]:
    """Build / check what the target needs and write its seeds to tdir/seeds; (command, environment).

    source, c_build: C sources and build directory of the libFuzzer binary; build: the VLM build
    build_files runs (None: compile one under benchmarks/_work/fuzz)."""
    env = dict(os.environ, **SAN_ENV)
    if target.engine == "libfuzzer":
        exe = [str(build_c_target(source.resolve(), c_build.resolve()))]
    else:
        require_atheris()
        exe = [sys.executable, str(ROOT / target.entry)]
        if target.name == "build_files":
            build = build.resolve() if build else default_build(WORK)
            env["EDGEVLM_FUZZ_BUILD"] = str(build)
    seed_dir = tdir / "seeds"
    shutil.rmtree(seed_dir, ignore_errors=True)
    import seeds

    seeds.write(seeds_for(target, build), seed_dir)
    return exe, env


def cpu_name() -> str:
    """The CPU's model name, as the runtime benchmark (a sibling script) reports it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_runtime_vs_llamacpp import cpu_name as name  # noqa: E402 - a sibling script

    return name()


def git_commit() -> str:
    p = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return p.stdout.strip() or "?"


def markdown(meta: dict, rows: list[dict]) -> str:
    out = [f"# Fuzzing, {meta['date']}", "",
           f"`{meta['command']}` at {meta['commit']} on {meta['machine']['cpu']} ({meta['machine']['logical_cpus']} "
           f"logical CPUs), one target at a time, nice {meta['nice']}.  Coverage: libFuzzer's `cov` (edges) and "
           "`ft` (features); for atheris targets these count the instrumented Python code (edgevlm, and PIL for image).",
           "", "| target | engine | seconds | CPU seconds | executions | exec/s | cov | ft | corpus | crashes |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "skipped" in r:
            out.append(f"| {r['target']} | {r['engine']} | skipped: {r['skipped']} | | | | | | | |")
            continue
        out.append(f"| {r['target']} | {r['engine']} | {r['seconds']:.0f} | {r['cpu_seconds']:.0f} | {r['executions']} | "
                   f"{r['exec_per_s']:.0f} | "
                   f"{r['coverage_edges']} | {r['coverage_features']} | {r['corpus_units']} | {len(r['crashes'])} |")
    done = [r for r in rows if "skipped" not in r]
    out += ["", f"Total: {sum(r['seconds'] for r in done):.0f} s wall, {sum(r['cpu_seconds'] for r in done):.0f} CPU seconds, "
                f"{sum(r['executions'] for r in done)} executions, {sum(len(r['crashes']) for r in done)} crashes."]
    crashes = [(r["target"], c) for r in rows for c in r.get("crashes", [])]
    if crashes:
        out += ["", "## Crashes", ""] + [f"- {t}: {c['summary']} (`{c['input']}`)" for t, c in crashes]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60, help="wall time per target (default 60)")
    ap.add_argument("--target-seconds", default="", metavar="NAME=S,...", help="per-target wall time overriding --seconds")
    ap.add_argument("--targets", default=",".join(t.name for t in TARGETS), help="comma-separated subset of targets")
    ap.add_argument("--nice", type=int, default=10, help="niceness of the fuzzers (default 10; 0: none)")
    ap.add_argument("--source", default=str(ROOT), help="source tree whose C runtime gguf_model fuzzes (default: this one)")
    ap.add_argument("--c-build", default=str(ROOT / "build-fuzz"), help="build directory of the libFuzzer binary")
    ap.add_argument("--build", help="VLM build for build_files (default: compile one under benchmarks/_work/fuzz)")
    ap.add_argument("--out-name", default="fuzz", help="results name in benchmarks/results (without .json/.md)")
    ap.add_argument("--out", help="results .json path instead (the .md goes beside it)")
    args = ap.parse_args(argv)
    names = args.targets.split(",")
    unknown = sorted(set(names) - {t.name for t in TARGETS})
    if unknown:
        sys.exit(f"fuzz: unknown target(s) {unknown}; known: {[t.name for t in TARGETS]}")
    seconds = {t.name: args.seconds for t in TARGETS}
    seconds.update({k: float(v) for k, v in (kv.split("=") for kv in args.target_seconds.split(",") if kv)})
    commit = git_commit()  # at the start: the tree the fuzzers are built from, not whatever HEAD is at the end
    rows = []
    for target in (t for t in TARGETS if t.name in names):
        try:
            exe, env = prepare(target, WORK / target.name, Path(args.source), Path(args.c_build),
                               Path(args.build) if args.build else None)
        except Unavailable as exc:
            print(f"[fuzz] {target.name}: skipped: {exc}", flush=True)
            rows.append({"target": target.name, "engine": target.engine, "skipped": str(exc)})
            continue
        print(f"[fuzz] {target.name}: {seconds[target.name]:.0f} s", flush=True)
        r = run_target(target, seconds[target.name], exe, env, args.nice, WORK / target.name)
        print(f"[fuzz] {target.name}: {r['executions']} executions ({r['exec_per_s']}/s), cov {r['coverage_edges']}, "
              f"ft {r['coverage_features']}, corpus {r['corpus_units']}, crashes {len(r['crashes'])}", flush=True)
        for c in r["crashes"]:
            print(f"[fuzz]   crash: {c['summary']} ({c['input']})", flush=True)
        rows.append(r)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python benchmarks/fuzz.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "commit": commit, "nice": args.nice, "seconds_per_target": {n: seconds[n] for n in names},
            "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "platform": platform.platform()}}
    out = Path(args.out) if args.out else RESULTS / f"{args.out_name}.json"
    write_results(out, {"meta": meta, "targets": rows}, markdown(meta, rows), echo=False)
    print(f"[fuzz] results: {out}", flush=True)
    return 1 if any(r.get("crashes") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
