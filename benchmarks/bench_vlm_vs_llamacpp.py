"""edgevlm's cpu-x86_64 build vs llama.cpp's llama-mtmd-cli on one LFM2-VL checkpoint, image, prompt and threads.

What each side runs (steps cached under benchmarks/_work/vlm/, gitignored):
- edgevlm: `edgevlm run BUILD --image IMG --prompt TEXT --json`, BUILD being
  `edgevlm compile --model CKPT --target cpu-x86_64 --backends onnx` (vision
  encoder + projector in onnxruntime, the language model in edgevlm's C
  runtime from the build's GGUF); compiled here when --build does not exist
  (at 450M that needs the big-memory lock: run this script under
  `flock /tmp/edgevlm-bigmem.lock` then, or pass a build made earlier);
- llama.cpp: llama-mtmd-cli from the llama.cpp vendored in the
  llama-cpp-python sdist, built by benchmarks/bench_runtime_vs_llamacpp.py's
  code (AMX off, the CPU's other instruction sets on), with the text GGUF and
  the mmproj GGUF written by that llama.cpp's own convert_hf_to_gguf.py: the
  mmproj from the checkpoint with --mmproj, the text GGUF from the language
  model written out as an Lfm2ForCausalLM directory (the converter refuses
  the VLM directory for it).  The text GGUF gets the weight type of the
  build's llm.gguf; the mmproj gets --mmproj-types (f16: what llama.cpp
  publishes; q8_0: the same 8 bits as the build's w8a8 vision).

Figures, per process (a fresh CLI process each, as a user runs it):
- time to first token: image in (edgevlm: the image file opened; llama.cpp:
  the log line written just before it loads the image file) to the first
  answer token sampled.  edgevlm's runner reports the first token after the C
  generator has also run its decode step (ttft_ms); the comparable figure is
  image_read_ms + image_to_logits_ms (+ a greedy argmax), and both are kept;
- decode tokens/s: wall clock from the first to the last answer token, over
  (tokens - 1), for both (llama.cpp's own eval rate is kept beside it);
- peak RSS of the whole process (/usr/bin/time -v), which for both includes
  loading the model files;
- where the time goes: edgevlm's preprocess / encoder / projector / prefill
  timings; llama.cpp's "mtmd batch encoding done in N ms" (clip: encoder +
  projector) and its log clock before and after it.
llama-mtmd-cli runs with --log-jsonl --log-timestamps so every log entry,
the streamed answer tokens included, carries llama.cpp's own microsecond
clock (llama_perf's summary is not logged by mtmd-cli at this version).  Rounds alternate the two engines so background load hits both alike.

Usage: python benchmarks/bench_vlm_vs_llamacpp.py --ckpt DIR --build DIR
       [-t 2] [-n 64] [-r 3] [--prompt TEXT] [--image IMG] [--mmproj-types f16,q8_0]
       [--out-name NAME] [--render RESULTS.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_runtime_vs_llamacpp as rt  # noqa: E402  (llama.cpp's build, ISA options, machine facts)
from _results import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORK = rt.WORK / "vlm"
RESULTS = rt.RESULTS
DEFAULT_PROMPT = "What is in this image?"
# Text that llama-mtmd-cli logs right before it reads the image file (mtmd-cli.cpp, single-turn path).
IMAGE_IN_MARK = "For normal use cases, please use the standard llama-cli"
# The converter's run, with one change: the random-weight checkpoint's tokenizer is a BPE trained here, so
# the converter's fingerprint of the tokenizer (a hash of how it splits a fixed text, matched against the
# published tokenizers it knows) matches none.  Its pre-tokenizer is LFM2's split (benchmarks/hf_checkpoints.py),
# which llama.cpp calls "lfm2"; the fingerprint is only used to pick that name.
CONVERT = """
import sys
sys.path.insert(0, sys.argv[1])
import convert_hf_to_gguf as c
from conversion.base import TextModel
TextModel.get_vocab_base_pre = lambda self, tokenizer: "lfm2"
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
c.main()
"""


# ---------------------------------------------------------------- llama.cpp's side

def build_mtmd_cli() -> tuple[Path, list[str]]:
    """llama-mtmd-cli in the build tree of bench_runtime_vs_llamacpp (same sources, same AMX-free options)."""
    bench, _, isa = rt.build_llama_bench()
    build = bench.parent.parent
    exe = build / "bin" / "llama-mtmd-cli"
    if not exe.exists():
        rt.sh(["cmake", "--build", str(build), "--target", "llama-mtmd-cli", "-j2"], capture_output=True)
    return exe, isa


def llama_src() -> Path:
    return rt.WORK / f"llama_cpp_python-{rt.LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"


def write_text_checkpoint(ckpt: Path, out: Path) -> Path:
    """The checkpoint's language model as an Lfm2ForCausalLM directory (config, weights, tokenizer files).

    Tensors `model.language_model.X` become `model.X` (both transformers layouts name them so); the
    output head is tied to the embedding, as in the checkpoint.
    """
    from safetensors import safe_open
    from safetensors.numpy import save_file

    if (out / "model.safetensors").exists():
        return out
    cfg = json.loads((ckpt / "config.json").read_text())
    if cfg.get("model_type") != "lfm2_vl":
        sys.exit(f"bench: {ckpt} is a {cfg.get('model_type')!r} checkpoint; this benchmark compares LFM2-VL (lfm2_vl)")
    text = dict(cfg["text_config"], architectures=["Lfm2ForCausalLM"], model_type="lfm2",
                tie_word_embeddings=cfg.get("tie_word_embeddings", True))
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    prefix = "model.language_model."
    state = {}
    for shard in sorted(ckpt.glob("*.safetensors")):
        with safe_open(str(shard), "np") as f:
            state.update({"model." + k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)})
    if not state:
        sys.exit(f"bench: {ckpt} has no '{prefix}*' tensors")
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(text, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
                 "special_tokens_map.json"):
        if (ckpt / name).exists():
            shutil.copy2(ckpt / name, tmp / name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def convert(src: Path, out: Path, outtype: str, mmproj: bool = False) -> Path:
    """convert_hf_to_gguf.py SRC --outfile OUT --outtype T [--mmproj], cached."""
    if out.exists():
        return out
    tmp = out.with_name(out.name + ".part")
    args = [str(src), "--outfile", str(tmp), "--outtype", outtype] + (["--mmproj"] if mmproj else [])
    print("[bench] $ convert_hf_to_gguf.py " + " ".join(args), flush=True)
    p = subprocess.run([sys.executable, "-c", CONVERT, str(llama_src()), *args], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench: convert_hf_to_gguf.py {' '.join(args)} failed:\n{p.stderr[-3000:]}")
    tmp.rename(out)
    return out


def gguf_weight_type(path: Path) -> str:
    """The converter's --outtype for a GGUF: the type of most of its 2-D weights (q8_0, f16, f32)."""
    counts = rt.tensor_types(path)
    kind = max((k for k in counts if k not in ("F32",)), key=lambda k: counts[k], default="F32")
    return kind.lower()


# ---------------------------------------------------------------- parsing (pure; tests/test_bench_vlm_vs_llamacpp.py)

def peak_rss_mib(time_v_stderr: str) -> float:
    """Peak RSS in MiB from /usr/bin/time -v's 'Maximum resident set size (kbytes): N'."""
    m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", time_v_stderr)
    if not m:
        raise ValueError("no 'Maximum resident set size' line in /usr/bin/time -v output")
    return int(m.group(1)) / 1024


def parse_mtmd_log(text: str, n_predict: int) -> dict:
    """Timings from llama-mtmd-cli's --log-jsonl --log-timestamps output (stdout and stderr, any order).

    Every entry is {"type": "log", "time": us, "level": ..., "msg": ...}, timed by llama.cpp's own clock.
    mtmd-cli's single-turn path logs, in order: IMAGE_IN_MARK (then it reads the image file, tokenizes
    with the image preprocessed, decodes the text before the image), "encoding mtmd batch",
    "mtmd batch encoding done in N ms" (clip: tower + projector), a bare "\n" once the image embeddings
    and the text after them are decoded, one level-"none" entry per answer token (printed as sampled,
    before its decode step), "\n" if it stopped at an end-of-generation token, and "\n\n" at exit.
    """
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(e, dict) and e.get("type") == "log" and isinstance(e.get("time"), int):
            entries.append(e)
    entries.sort(key=lambda e: e["time"])  # stable: entries of one instant keep their order
    msgs = [e.get("msg", "") for e in entries]

    def find(pred, start=0) -> int:
        return next((i for i in range(start, len(entries)) if pred(msgs[i])), -1)

    i_in = find(lambda m: IMAGE_IN_MARK in m)
    i_start = find(lambda m: m.startswith("encoding mtmd batch"), max(i_in, 0))
    i_enc = find(lambda m: "mtmd batch encoding done in" in m, max(i_start, 0))
    if min(i_in, i_start, i_enc) < 0:
        raise ValueError("llama-mtmd-cli's log has no image-in line or no 'mtmd batch encoding' lines: "
                         "was it run with --image, --log-jsonl and --log-timestamps?")
    i_nl = find(lambda m: m == "\n", i_enc)
    if i_nl < 0 or entries[i_nl].get("level") != "none":
        raise ValueError("llama-mtmd-cli's log has no end-of-prompt line after the image encoding")
    toks = [i for i in range(i_nl + 1, len(entries)) if entries[i].get("level") == "none"]
    if toks and msgs[toks[-1]] == "\n\n":  # main()'s last line
        toks.pop()
    if toks and msgs[toks[-1]] == "\n" and len(toks) <= n_predict and len(toks) != n_predict:
        toks.pop()  # generate_response() stopped at an end-of-generation token
    if not toks:
        raise ValueError("llama-mtmd-cli's log has no answer tokens")
    t = [entries[i]["time"] for i in (i_in, i_start, i_enc, i_nl)]
    span = entries[toks[-1]]["time"] - entries[toks[0]]["time"]
    return {
        "ttft_ms": (entries[toks[0]]["time"] - t[0]) / 1e3,
        "before_encode_ms": (t[1] - t[0]) / 1e3,  # image file read + preprocessing + text before the image
        "encode_ms": float(re.search(r"done in (\d+) ms", msgs[i_enc]).group(1)),
        "prefill_after_encode_ms": (t[3] - t[2]) / 1e3,  # LM prefill of the image embeddings + text after them
        "new_tokens": len(toks),
        "answer": "".join(msgs[i] for i in toks),
        "decode_tokens_per_s": (len(toks) - 1) / (span / 1e6) if len(toks) > 1 and span > 0 else None,
    }


def edgevlm_figures(run_json: dict) -> dict:
    """`edgevlm run --json` -> the benchmark's figures (ms, tokens/s)."""
    t = run_json["timings"]
    return {
        "ttft_ms": t["image_read_ms"] + t["image_to_logits_ms"],
        "runner_ttft_ms": t["image_read_ms"] + t["ttft_ms"],
        "decode_tokens_per_s": t.get("decode_tokens_per_s"),
        "new_tokens": t["new_tokens"], "prompt_tokens": t["prompt_tokens"],
        "image_read_ms": t["image_read_ms"], "preprocess_ms": t["preprocess_ms"], "encoder_ms": t["encoder_ms"],
        "projector_ms": t["projector_ms"], "prefill_ms": t["prefill_ms"], "answer": run_json["answer"],
        "token_ids": run_json["token_ids"],
    }


# ---------------------------------------------------------------- running

def timed(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, float]:
    """(the finished process, its peak RSS in MiB) under /usr/bin/time -v."""
    print("[bench] $ " + " ".join(map(str, cmd)), flush=True)
    p = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.exit(f"bench: {Path(cmd[0]).name} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return p, peak_rss_mib(p.stderr)


def run_edgevlm(build: Path, image: Path, prompt: str, n: int, threads: int) -> dict:
    p, rss = timed([sys.executable, "-m", "edgevlm.cli", "run", build, "--image", image, "--prompt", prompt,
                    "--max-new-tokens", str(n), "--threads", str(threads), "--json"], cwd=ROOT)
    out = edgevlm_figures(json.loads(p.stdout.strip().splitlines()[-1]))
    out["peak_rss_mib"] = rss
    return out


def run_llama(exe: Path, text: Path, mmproj: Path, image: Path, prompt: str, n: int, threads: int, ctx: int,
              omp_wait: str = "default") -> dict:
    """One llama-mtmd-cli run; omp_wait "passive" sets OMP_WAIT_POLICY=PASSIVE (its OpenMP threads sleep
    at barriers instead of spinning, which is what keeps it from collapsing on an oversubscribed CPU)."""
    env = dict(os.environ)
    if omp_wait != "default":
        env["OMP_WAIT_POLICY"] = omp_wait.upper()
    p, rss = timed([exe, "-m", text, "--mmproj", mmproj, "--image", image, "-p", prompt, "-n", str(n),
                    "-t", str(threads), "-c", str(ctx), "--temp", "0", "--seed", "0", "--log-jsonl", "--log-timestamps"],
                   env=env)
    out = parse_mtmd_log(p.stdout + "\n" + p.stderr, n)
    out["peak_rss_mib"] = rss
    return out


def bench_image(path: Path, size: int) -> Path:
    """A deterministic photo-like test image at the build's resolution (gradient, shapes, noise)."""
    if path.exists():
        return path
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([xx, yy, 1 - xx * yy], -1) * 200 + rng.normal(0, 12, (size, size, 3))
    im = Image.fromarray(np.clip(rgb, 0, 255).astype("uint8"))
    d = ImageDraw.Draw(im)
    d.ellipse([size * 0.2, size * 0.25, size * 0.55, size * 0.6], fill=(220, 40, 40))
    d.rectangle([size * 0.55, size * 0.5, size * 0.85, size * 0.8], fill=(40, 160, 60))
    im.save(path)
    return path


def compile_build(ckpt: Path, build: Path, calib_samples: int) -> None:
    rt.sh([sys.executable, "-m", "edgevlm.cli", "compile", "--model", str(ckpt), "--target", "cpu-x86_64",
           "--backends", "onnx", "--calib-samples", str(calib_samples), "--out", str(build)], cwd=ROOT)


def _median(runs: list[dict], key: str):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(rows: list[dict]) -> list[dict]:
    """Per (engine, mmproj): medians over rounds of every numeric figure."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["engine"], r.get("mmproj"), r.get("omp_wait")), []).append(r)
    out = []
    for (engine, mmproj, omp_wait), runs in groups.items():
        keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and k != "round"]
        s = {"engine": engine, "mmproj": mmproj, "omp_wait": omp_wait, "rounds": len(runs)}
        s.update({k: _median(runs, k) for k in keys})
        out.append(s)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, help="LFM2-VL checkpoint directory (transformers 4.x tensor names: "
                    "benchmarks/hf_checkpoints.py lfm2-vl-450m --layout transformers4)")
    ap.add_argument("--build", type=Path, help="edgevlm build of --ckpt for cpu-x86_64 (compiled here if absent)")
    ap.add_argument("--calib-samples", type=int, default=2, help="calibration samples when compiling --build here")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", "--max-new-tokens", type=int, default=64)
    ap.add_argument("-r", "--rounds", type=int, default=3, help="alternate the engines this many times")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--image", type=Path, help="image file (default: a generated one at the build's resolution)")
    ap.add_argument("--mmproj-types", default="f16", help="comma-separated --outtype of llama.cpp's mmproj GGUF")
    ap.add_argument("--omp-wait", default="default",
                    help="comma-separated OpenMP wait policies for llama.cpp: default (spin, llama.cpp's own) "
                         "and/or passive (OMP_WAIT_POLICY=PASSIVE; fairer to it when other jobs load the CPU)")
    ap.add_argument("--out-name", default="vlm_vs_llamacpp", help="results file name (without .md/.json)")
    ap.add_argument("--render", metavar="JSON", help="only re-render the markdown from a results .json")
    args = ap.parse_args()
    if args.render:
        data = json.loads(Path(args.render).read_text())
        Path(args.render).with_suffix(".md").write_text(markdown(data["meta"], data["summary"]))
        return 0
    if not args.ckpt or not args.build:
        ap.error("--ckpt and --build are required")
    for tool in ("cmake", "c++", "/usr/bin/time"):
        if not shutil.which(tool):
            sys.exit(f"bench: '{tool}' not found; install it (a C/C++ toolchain, cmake, GNU time)")
    ckpt, build = args.ckpt.resolve(), args.build.resolve()
    work = WORK / ckpt.name
    work.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not (build / "vlm.json").exists():
        compile_build(ckpt, build, args.calib_samples)
    vlm = json.loads((build / "vlm.json").read_text())
    exe, isa = build_mtmd_cli()
    llm_type = gguf_weight_type(build / vlm["gguf"])
    text = convert(write_text_checkpoint(ckpt, work / "text"), work / f"text-{llm_type}.gguf", llm_type)
    mmprojs = {t: convert(ckpt, work / f"mmproj-{t}.gguf", t, mmproj=True) for t in args.mmproj_types.split(",")}
    image = (args.image or bench_image(work / f"bench-{vlm['image_size']}.png", vlm["image_size"])).resolve()

    load_start = rt.loadavg()
    rows = []
    llamas = [(m, w) for m in mmprojs for w in args.omp_wait.split(",")]
    for rnd in range(args.rounds):
        for engine in [None, *llamas]:
            before = rt.loadavg()
            if engine is None:
                res = run_edgevlm(build, image, args.prompt, args.max_new_tokens, args.threads)
                row = {"engine": "edgevlm", "mmproj": None, "omp_wait": None}
            else:
                res = run_llama(exe, text, mmprojs[engine[0]], image, args.prompt, args.max_new_tokens, args.threads,
                                vlm["max_len"], engine[1])
                row = {"engine": "llama.cpp", "mmproj": engine[0], "omp_wait": engine[1]}
            row.update(res, round=rnd, load_before=before, load_after=rt.loadavg())
            rows.append(row)
            rate = row.get("decode_tokens_per_s")
            print(f"[bench] round {rnd} {row['engine']}{f' mmproj {engine[0]} omp {engine[1]}' if engine else ''}: "
                  f"TTFT {row['ttft_ms']:.0f} ms, decode {rate or 0:.1f} t/s, {row['new_tokens']} tokens, "
                  f"peak RSS {row['peak_rss_mib']:.0f} MiB", flush=True)

    from edgevlm.runtime import cpu_features

    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": rt.cpu_name(), "logical_cpus": os.cpu_count(), "runtime_cpu_features": cpu_features(),
                    "platform": platform.platform()},
        "threads": args.threads, "max_new_tokens": args.max_new_tokens, "rounds": args.rounds, "prompt": args.prompt,
        "image": str(image), "image_size": vlm["image_size"], "checkpoint": str(ckpt), "build": str(build),
        "build_gguf_types": rt.tensor_types(build / vlm["gguf"]), "context": vlm["max_len"],
        "llama_text_gguf": {"outtype": llm_type, "types": rt.tensor_types(text)},
        "llama_mmproj_types": {t: rt.tensor_types(p) for t, p in mmprojs.items()}, "omp_wait": args.omp_wait,
        "llama_cpp": f"llama-mtmd-cli, vendored in llama-cpp-python {rt.LLAMA_CPP_PYTHON} sdist, AMX off "
                     f"({' '.join(o for o in isa if o.endswith('=ON'))}; GGML_NATIVE=OFF, GGML_AMX_*=OFF)",
        "load_average_start": load_start, "load_average_end": rt.loadavg(),
    }
    summary = summarize(rows)
    write_results(RESULTS / args.out_name, {"meta": meta, "summary": summary, "rows": rows}, markdown(meta, summary))
    return 0


def _fmt(v, spec=".0f"):
    return "-" if v is None else format(v, spec)


def markdown(meta: dict, summary: list[dict]) -> str:
    e = next(s for s in summary if s["engine"] == "edgevlm")
    out = [
        "# edgevlm (cpu-x86_64 build, `edgevlm run`) vs llama.cpp (llama-mtmd-cli) on LFM2-VL", "",
        f"Measured {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['logical_cpus']} logical CPUs), "
        f"{meta['threads']} threads, {meta['max_new_tokens']} new tokens max, greedy, medians of {meta['rounds']} "
        f"rounds (engines alternating; each run a fresh process).  Checkpoint {meta['checkpoint']} (random weights, "
        f"published config); image {meta['image_size']} px; prompt \"{meta['prompt']}\"; context {meta['context']}.",
        f"edgevlm: build {meta['build']} (vision in onnxruntime, LM in the C runtime; GGUF "
        + ", ".join(f"{n} {k}" for k, n in sorted(meta["build_gguf_types"].items()))
        + f"; kernels {', '.join(meta['machine']['runtime_cpu_features'])}).  "
        f"llama.cpp: {meta['llama_cpp']}; text GGUF by convert_hf_to_gguf --outtype {meta['llama_text_gguf']['outtype']} ("
        + ", ".join(f"{n} {k}" for k, n in sorted(meta["llama_text_gguf"]["types"].items())) + ").",
        f"Load average (1 min) {meta['load_average_start']:.1f} before the first run, {meta['load_average_end']:.1f} "
        "at the end (per-run loads in the .json).", "",
        "| engine | TTFT ms | decode t/s | peak RSS MiB | new tokens | vision ms (enc + proj) | LM prefill ms | "
        "TTFT vs llama.cpp | decode vs llama.cpp |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summary:
        if s["engine"] == "edgevlm":
            vision, prefill = s["encoder_ms"] + s["projector_ms"], s["prefill_ms"]
            name = "edgevlm"
        else:
            vision, prefill = s.get("encode_ms"), s.get("prefill_after_encode_ms")
            name = f"llama.cpp, mmproj {s['mmproj']}" + (f", OMP_WAIT_POLICY={s['omp_wait']}"
                                                           if s.get("omp_wait") not in (None, "default") else "")
        ratio_t = ratio_d = ""
        if s["engine"] != "edgevlm":
            ratio_t = f"{e['ttft_ms'] / s['ttft_ms']:.2f}x"
            if e.get("decode_tokens_per_s") and s.get("decode_tokens_per_s"):
                ratio_d = f"{e['decode_tokens_per_s'] / s['decode_tokens_per_s']:.2f}x"
        out.append(f"| {name} | {_fmt(s['ttft_ms'])} | {_fmt(s.get('decode_tokens_per_s'), '.1f')} | "
                   f"{_fmt(s['peak_rss_mib'])} | {_fmt(s['new_tokens'])} | {_fmt(vision)} | {_fmt(prefill)} | "
                   f"{ratio_t} | {ratio_d} |")
    out += ["", "Ratios: edgevlm's TTFT / llama.cpp's (goal <= 0.8x) and edgevlm's decode t/s / llama.cpp's "
            "(goal >= 1.3x).",
            f"TTFT: image in to the first answer token sampled.  edgevlm: image file read "
            f"({_fmt(e['image_read_ms'], '.1f')} ms) + preprocessing ({_fmt(e['preprocess_ms'], '.1f')} ms) + vision + "
            f"LM prefill of {_fmt(e['prompt_tokens'])} tokens (`image_read_ms + image_to_logits_ms`); `edgevlm run` "
            f"itself reports the first token after the C generator's first decode step "
            f"({_fmt(e['runner_ttft_ms'])} ms).  llama.cpp: from the log entry written right before it reads "
            "the image file to the log entry of the first answer token (llama.cpp's clock, --log-timestamps); "
            "vision = its 'mtmd batch encoding done' figure, LM prefill = from that line to the end of the "
            "prompt (image embeddings + the text after them; the few template tokens before the image are "
            "decoded before the encoding, with the image read and preprocessed).",
            "Decode t/s: wall clock from the first to the last answer token over (tokens - 1), for both.",
            "Peak RSS: /usr/bin/time -v of the whole process, loading included."]
    if meta["load_average_start"] > 0.5 * meta["machine"]["logical_cpus"]:
        out += ["", f"**Measured under load** (1-min load average {meta['load_average_start']:.1f} before the first "
                "run): other processes were running; both engines lose time to preemption."]
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
