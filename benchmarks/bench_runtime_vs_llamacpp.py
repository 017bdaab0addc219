"""edgevlm's C runtime vs llama.cpp (llama-bench) on the same GGUF files and threads.

Steps (each cached under benchmarks/_work/, which is gitignored):
1. an LFM2-350M-shaped model with random weights (hidden 1024, 16 layers with
   attention at 2, 5, 8, 10, 12, 14 and gated short convs elsewhere, ffn 4608,
   16 heads, 8 KV heads, vocab 65536, tied embeddings) written as GGUF in F16,
   Q8_0 and Q4_0 by edgevlm.runtime.gguf_export (llama.cpp's LFM2 names; the
   Q4_0 file keeps the tied embedding/output head in Q8_0, the exporter's
   default, like llama.cpp's quantizer treats the output head);
2. llama-bench and llama-quantize built from llama.cpp as vendored in
   llama-cpp-python's source distribution on PyPI, with AMX off: ggml's AMX
   path crashes on VMs whose CPU lists AMX without the kernel enabling its
   tile state, and GGML_NATIVE=ON (-march=native) would turn it on.  The
   build takes the CPU's other instruction sets from /proc/cpuinfo
   (GGML_NATIVE=OFF, GGML_AVX2/AVX512/AVX512_VNNI/... as listed), OpenMP on;
   K-quant files (q4_k_m, q6_k, and q4_0_default: Q4_0 with llama.cpp's own
   choice of a Q6_K head) are made by that llama-quantize from the F16 file;
3. benchmarks/c/bench_memory (the runtime's thread pool and weight arena)
   for memory read bandwidth: once over 1 GiB, and after each edgevlm run
   over a buffer the size of the file's weights (the decode share is taken
   against that one: same size, same cache effects, same moment);
4. per file, `edgevlm bench-runtime` and `llama-bench` with the same -p/-n/-t/-r,
   alternating so that background load hits both alike.
Results go to benchmarks/results/runtime_vs_llamacpp.{md,json} with machine,
date, threads and the load average around each run.  Decode bandwidth is the
bytes of every weight tensor (each is read once per generated token; the
tied embedding once, as the output head) times tg tokens/s.

Usage: python benchmarks/bench_runtime_vs_llamacpp.py [-t 2] [-p 128] [-n 64] [-r 5]
       [--types q8_0,q4_0,f16,q4_k_m,q6_k,q4_0_default]
       [--out-name NAME] [--render RESULTS.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np

from _results import write_results

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
RESULTS = ROOT / "benchmarks" / "results"
LLAMA_CPP_PYTHON = "0.3.36"
ATTN_LAYERS = (2, 5, 8, 10, 12, 14)
# files llama-quantize makes from the F16 export: bench type -> llama-quantize type
LLAMA_QUANTIZED = {"q4_k_m": "Q4_K_M", "q6_k": "Q6_K", "q4_0_default": "Q4_0"}
# /proc/cpuinfo flag -> ggml CMake option for the AMX-free llama.cpp build
GGML_ISA = {"sse4_2": "GGML_SSE42", "avx": "GGML_AVX", "avx2": "GGML_AVX2", "fma": "GGML_FMA", "f16c": "GGML_F16C",
            "bmi2": "GGML_BMI2", "avx_vnni": "GGML_AVX_VNNI", "avx512f": "GGML_AVX512",
            "avx512vbmi": "GGML_AVX512_VBMI", "avx512_vnni": "GGML_AVX512_VNNI", "avx512_bf16": "GGML_AVX512_BF16"}


def lfm2_350m_config() -> dict:
    return {
        "vocab_size": 65536, "hidden_size": 1024, "intermediate_size": 4608, "num_hidden_layers": 16,
        "num_attention_heads": 16, "num_key_value_heads": 8, "max_position_embeddings": 128000,
        "norm_eps": 1e-5, "tie_word_embeddings": True, "rope_theta": 1000000.0, "conv_L_cache": 3,
        "block_auto_adjust_ff_dim": False,
        "layer_types": ["full_attention" if i in ATTN_LAYERS else "conv" for i in range(16)],
    }


def random_state_dict(cfg: dict, seed: int = 0) -> dict:
    """HF Lfm2ForCausalLM names, N(0, 0.02) matrices, norms near 1."""
    rng = np.random.default_rng(seed)
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)

    sd = {"model.embed_tokens.weight": mat(v, h), "model.embedding_norm.weight": norm(h)}
    for i, kind in enumerate(cfg["layer_types"]):
        p = f"model.layers.{i}."
        sd.update({p + "operator_norm.weight": norm(h), p + "ffn_norm.weight": norm(h),
                   p + "feed_forward.w1.weight": mat(f, h), p + "feed_forward.w2.weight": mat(h, f),
                   p + "feed_forward.w3.weight": mat(f, h)})
        if kind == "conv":
            sd.update({p + "conv.conv.weight": rng.standard_normal((h, 1, cfg["conv_L_cache"]), dtype=np.float32) * 0.3,
                       p + "conv.in_proj.weight": mat(3 * h, h), p + "conv.out_proj.weight": mat(h, h)})
        else:
            sd.update({p + "self_attn.q_proj.weight": mat(h, h), p + "self_attn.k_proj.weight": mat(kv, h),
                       p + "self_attn.v_proj.weight": mat(kv, h), p + "self_attn.out_proj.weight": mat(h, h),
                       p + "self_attn.q_layernorm.weight": norm(hd), p + "self_attn.k_layernorm.weight": norm(hd)})
    return sd


def word_tokenizer(vocab_size: int):
    """A word-level vocab of placeholder words: llama.cpp refuses a GGUF
    without tokenizer keys, and the benchmark feeds random token ids anyway."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    return Tokenizer(WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))


def build_models(types: list[str], quantize: Path | None) -> dict[str, Path]:
    """edgevlm's exports (f16, q8_0, q4_0), then llama-quantize's files from the F16 one."""
    from edgevlm.runtime.gguf_export import export_lfm2_gguf

    paths = {t: WORK / f"lfm2-350m-random-vocab-{t}.gguf" for t in types}
    own = [t for t in types if t not in LLAMA_QUANTIZED]
    if any(t in LLAMA_QUANTIZED for t in types) and "f16" not in own:
        own.append("f16")
        paths["f16"] = WORK / "lfm2-350m-random-vocab-f16.gguf"
    missing = [t for t in own if not paths[t].exists()]
    if missing:
        cfg = lfm2_350m_config()
        sd = random_state_dict(cfg)
        for t in missing:
            print(f"[bench] writing {paths[t].name}", flush=True)
            export_lfm2_gguf(paths[t], cfg, sd, qtype=t, tokenizer=word_tokenizer(cfg["vocab_size"]),
                             name=f"lfm2-350m-random-{t}")
    for t in types:
        if t in LLAMA_QUANTIZED and not paths[t].exists():
            tmp = paths[t].with_suffix(".part")
            sh([str(quantize), str(paths["f16"]), str(tmp), LLAMA_QUANTIZED[t], "2"], capture_output=True)
            tmp.rename(paths[t])
    return paths


def tensor_types(model: Path) -> dict[str, int]:
    """ggml type name -> number of tensors of that type in the file."""
    from gguf import GGUFReader

    out: dict[str, int] = {}
    for t in GGUFReader(str(model)).tensors:
        out[t.tensor_type.name] = out.get(t.tensor_type.name, 0) + 1
    return out


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("[bench] $ " + " ".join(map(str, cmd)), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def ggml_isa_options() -> list[str]:
    """-DGGML_*=ON/OFF for the instruction sets this CPU lists, AMX always off."""
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    opts = [f"-D{opt}={'ON' if flag in flags else 'OFF'}" for flag, opt in GGML_ISA.items()]
    return ["-DGGML_NATIVE=OFF", *opts, "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]


def build_llama_bench() -> tuple[Path, Path, list[str]]:
    """(llama-bench, llama-quantize, the ISA options they were built with)."""
    build = WORK / "llama-build-noamx"
    exe, quantize = build / "bin" / "llama-bench", build / "bin" / "llama-quantize"
    isa = ggml_isa_options()
    if exe.exists() and quantize.exists():
        return exe, quantize, isa
    sdist = WORK / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.exists():
        # pip reads the sdist's metadata in an isolated build environment, so
        # --no-binary names only llama-cpp-python: ":all:" would also build
        # that environment's scikit-build-core and cmake from source, and
        # --no-build-isolation fails where the venv has no scikit-build-core
        # (make install builds edgevlm in isolation, so it has none).
        sh([sys.executable, "-m", "pip", "download", "--no-binary", "llama-cpp-python", "--no-deps",
            f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(WORK)])
    src = WORK / f"llama_cpp_python-{LLAMA_CPP_PYTHON}"
    if not src.exists():
        with tarfile.open(sdist) as tar:
            tar.extractall(WORK, filter="data")
    sh(["cmake", "-S", str(src / "vendor" / "llama.cpp"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_OPENSSL=OFF", *isa],
       capture_output=True)
    sh(["cmake", "--build", str(build), "--target", "llama-bench", "llama-quantize", "-j2"], capture_output=True)
    return exe, quantize, isa


def build_bench_memory() -> Path:
    build = WORK / "bench-c"
    sh(["cmake", "-S", str(ROOT / "benchmarks" / "c"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"], capture_output=True)
    sh(["cmake", "--build", str(build), "--target", "bench_memory", "-j2"], capture_output=True)
    return build / "bench_memory"


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def loadavg() -> float:
    return os.getloadavg()[0]


def run_edgevlm(model: Path, p: int, n: int, t: int, r: int) -> list[dict]:
    out = sh([sys.executable, "-m", "edgevlm.cli", "bench-runtime", str(model), "-p", str(p), "-n", str(n), "-t", str(t),
              "-r", str(r), "-o", "json"], capture_output=True, text=True).stdout
    return json.loads(out)


def run_llama(exe: Path, model: Path, p: int, n: int, t: int, r: int) -> list[dict]:
    out = sh([str(exe), "-m", str(model), "-p", str(p), "-n", str(n), "-t", str(t), "-r", str(r), "-o", "json"],
             capture_output=True, text=True).stdout
    return json.loads(out)


def read_bandwidth(exe: Path, threads: int, nbytes: int, reps: int) -> dict:
    """bench_memory's streaming read over ceil(nbytes / MiB) MiB."""
    mib = -(-nbytes // (1 << 20))
    return json_lines(sh([str(exe), "read", str(threads), str(mib), str(reps)], capture_output=True, text=True).stdout)[0]


def weight_bytes(model: Path) -> int:
    from gguf import GGUFReader

    return int(sum(int(t.n_bytes) for t in GGUFReader(str(model)).tensors))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("--types", default="q8_0,q4_0,f16")
    ap.add_argument("--rounds", type=int, default=1, help="alternate edgevlm/llama.cpp this many times per file")
    ap.add_argument("--out-name", default="runtime_vs_llamacpp", help="results file name (without .md/.json)")
    ap.add_argument("--render", metavar="JSON", help="only re-render the markdown from a results .json")
    args = ap.parse_args()
    if args.render:
        data = json.loads(Path(args.render).read_text())
        Path(args.render).with_suffix(".md").write_text(markdown(data["meta"], data["rows"]))
        return 0
    for tool in ("cmake", "c++"):
        if not shutil.which(tool):
            sys.exit(f"bench: '{tool}' not found; install a C/C++ toolchain and cmake")
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    types = args.types.split(",")
    llama, quantize, isa = build_llama_bench()
    models = build_models(types, quantize)
    print(f"[bench] llama.cpp built with AMX off: {' '.join(isa)}", flush=True)
    membw_exe = build_bench_memory()

    from edgevlm.runtime import cpu_features

    load_start = loadavg()
    membw = read_bandwidth(membw_exe, args.threads, 1 << 30, 7)
    rows = []
    for t in types:
        wb = weight_bytes(models[t])
        for rnd in range(args.rounds):
            for engine in ("edgevlm", "llama.cpp"):
                before = loadavg()
                res = (run_edgevlm(models[t], args.n_prompt, args.n_gen, args.threads, args.repetitions) if engine == "edgevlm"
                       else run_llama(llama, models[t], args.n_prompt, args.n_gen, args.threads, args.repetitions))
                after = loadavg()
                same_size = None
                if engine == "edgevlm":
                    same_size = read_bandwidth(membw_exe, args.threads, wb, 5)
                for r in res:
                    test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
                    row = {"type": t, "engine": engine, "round": rnd, "test": test, "n_threads": args.threads,
                           "avg_ts": r["avg_ts"], "stddev_ts": r["stddev_ts"], "load_before": before, "load_after": after,
                           "weight_bytes": wb}
                    if test.startswith("tg"):
                        row["decode_gbps"] = wb * r["avg_ts"] / 1e9
                        if same_size:
                            row["read_same_size"] = same_size
                            row["fraction_of_read_bw"] = row["decode_gbps"] / same_size["best_gbps"]
                    rows.append(row)
                    print(f"[bench] {t} {engine} {test}: {r['avg_ts']:.1f} ± {r['stddev_ts']:.1f} t/s", flush=True)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "runtime_cpu_features": cpu_features(),
                    "platform": platform.platform()},
        "threads": args.threads, "n_prompt": args.n_prompt, "n_gen": args.n_gen, "repetitions": args.repetitions,
        "llama_cpp": f"vendored in llama-cpp-python {LLAMA_CPP_PYTHON} sdist, llama-bench, AMX off "
                     f"({' '.join(o for o in isa if o.endswith('=ON'))}; GGML_NATIVE=OFF, GGML_AMX_*=OFF)",
        "tensor_types": {t: tensor_types(models[t]) for t in types},
        "memory_read": membw, "load_average_start": load_start, "load_average_end": loadavg(),
    }
    write_results(RESULTS / f"{args.out_name}.json", {"meta": meta, "rows": rows}, markdown(meta, rows))
    return 0


def _best(rows, t, engine, test):
    """The round with the highest mean for (type, engine, test): the least disturbed by other load."""
    cand = [r for r in rows if r["type"] == t and r["engine"] == engine and r["test"] == test]
    return max(cand, key=lambda r: r["avg_ts"]) if cand else None


def _round_ratios(rows, t, test) -> str:
    """edgevlm / llama.cpp of each round (the two runs made back to back)."""
    by = {(r["engine"], r.get("round", 0)): r["avg_ts"] for r in rows if r["type"] == t and r["test"] == test}
    rounds = sorted({k[1] for k in by})
    return ", ".join(f"{by[('edgevlm', k)] / by[('llama.cpp', k)]:.2f}" for k in rounds
                     if ("edgevlm", k) in by and ("llama.cpp", k) in by)


def markdown(meta: dict, rows: list[dict]) -> str:
    types = list(dict.fromkeys(r["type"] for r in rows))
    tests = list(dict.fromkeys(r["test"] for r in rows))
    m = meta["memory_read"]
    out = [
        "# edgevlm runtime vs llama.cpp (llama-bench)", "",
        f"Measured {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['logical_cpus']} logical CPUs), "
        f"{meta['threads']} threads, -p {meta['n_prompt']} -n {meta['n_gen']} -r {meta['repetitions']}; "
        f"edgevlm kernels: {', '.join(meta['machine']['runtime_cpu_features'])}. "
        f"llama.cpp: {meta['llama_cpp']}.",
        f"Model: LFM2-350M-shaped, random weights (benchmarks/bench_runtime_vs_llamacpp.py). "
        f"Load average (1 min) {meta['load_average_start']:.1f} before the first run, {meta['load_average_end']:.1f} "
        "at the end (that one counts the benchmark's own threads; per-run loads are in the .json).",
        f"Memory read bandwidth ({m['threads']} threads, {m['mib']} MiB streaming read, bench_memory): "
        f"best {m['best_gbps']:.1f} GB/s, median {m['median_gbps']:.1f} GB/s.", "",
        "| type | test | edgevlm t/s | llama.cpp t/s | edgevlm / llama.cpp | per round | edgevlm decode GB/s (share of read BW) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in types:
        for test in tests:
            e, l = _best(rows, t, "edgevlm", test), _best(rows, t, "llama.cpp", test)
            if not e or not l:
                continue
            bw = f"{e['decode_gbps']:.1f} ({100 * e['fraction_of_read_bw']:.0f}%)" if "decode_gbps" in e else ""
            out.append(f"| {t} | {test} | {e['avg_ts']:.1f} ± {e['stddev_ts']:.1f} | {l['avg_ts']:.1f} ± {l['stddev_ts']:.1f} | "
                       f"{e['avg_ts'] / l['avg_ts']:.2f}x | {_round_ratios(rows, t, test)} | {bw} |")
    if meta.get("tensor_types"):
        out += ["", "Tensor types per file (q4_k_m, q6_k, q4_0_default: llama-quantize from the f16 file; "
                "the others: edgevlm.runtime.gguf_export): "
                + "; ".join(f"{t}: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
                            for t, c in meta["tensor_types"].items()) + "."]
    out += ["", "t/s columns: the round with the highest mean of each engine.  Per round: edgevlm / llama.cpp "
            "of the runs made back to back in each round.",
            "", "Decode GB/s = bytes of all weight tensors in the file (each read once per token) x tg t/s.  "
            "Share of read BW: against bench_memory's streaming read of a buffer the size of the file's weights, "
            "run right after the same edgevlm run (best of 5); both can keep part of their data in the "
            "last-level cache between passes."]
    # Only the load before the first run is other processes' alone: later
    # readings include the decay of the benchmark's own threads.
    loads = [meta["load_average_start"]]
    if max(loads) > 0.5 * meta["machine"]["logical_cpus"]:
        out += ["", f"**Measured under load** (1-min load average {max(loads):.1f} before the first run on "
                f"{meta['machine']['logical_cpus']} logical CPUs: other processes were running).  Both engines "
                "lose time to preemption; llama.cpp's OpenMP threads busy-wait and suffer far more when the "
                "cores are oversubscribed, so the ratios here overstate edgevlm's lead on an idle machine."]
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
