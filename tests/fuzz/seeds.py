"""Seed inputs of the fuzz targets (benchmarks/fuzz.py writes them to the targets' seed directories).

- GGUF targets: the tiny valid LFM2 of tests/runtime/gguf_corpus.py, the same
  shapes written by edgevlm's writer (gguf_export) in every type it writes,
  with and without a vocab, small Qwen2 files (tied and untied head), a small
  transformers LFM2 converted by
  llama.cpp's convert_hf_to_gguf.py (when a llama.cpp tree is at hand, see
  tests/runtime/test_llama_cpp_interop.py), and every bad file of the corpus.
- build_files: a build's vlm.json, manifest.json and tokenizer.json, and prompts.
- image: a shapes sample in every format PIL writes that `edgevlm run` is likely to get.
"""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(HERE), str(ROOT / "tests" / "runtime")]

MAX_SEED_BYTES = 192 << 10   # libFuzzer mutates small inputs faster; the targets' -max_len


def gguf_seeds(work: Path) -> dict[str, bytes]:
    """name -> bytes: valid GGUFs of every writer at hand, then the bad-file corpus."""
    from gguf_corpus import corpus, valid_model
    from test_sanitizers import _state_dict_from_corpus_model

    from edgevlm.runtime.gguf_export import QTYPES, export_lfm2_gguf
    from lfm2_reference import small_bpe_tokenizer

    work.mkdir(parents=True, exist_ok=True)
    out = {"valid_corpus_model": valid_model().to_bytes()}
    sd, cfg = _state_dict_from_corpus_model(np.random.default_rng(0))
    for q in QTYPES:
        out[f"edgevlm_{q}"] = export_lfm2_gguf(work / f"edgevlm-{q}.gguf", cfg, sd, qtype=q).read_bytes()
    tok = small_bpe_tokenizer()
    n = tok.get_vocab_size()
    sd_vocab = dict(sd, **{"model.embed_tokens.weight": np.random.default_rng(1).standard_normal((n, cfg["hidden_size"]),
                                                                                                 dtype=np.float32)})
    out["edgevlm_q8_0_vocab"] = export_lfm2_gguf(work / "edgevlm-vocab.gguf", dict(cfg, vocab_size=n), sd_vocab,
                                                 qtype="q8_0", tokenizer=tok).read_bytes()
    out.update(qwen2_seeds(work))
    out.update(llama_cpp_seeds(work))
    out.update({f"bad_{name}": data for name, data, _ in corpus()})
    return {k: v for k, v in out.items() if len(v) <= MAX_SEED_BYTES}


def qwen2_seeds(work: Path) -> dict[str, bytes]:
    """Small random Qwen2 files (tied and untied head) from edgevlm's writer, F32 and Q8_0."""
    from qwen2_reference import qwen2_reference

    from edgevlm.runtime.gguf_export import export_qwen2_gguf

    out = {}
    for tied in (True, False):
        cfg, model = qwen2_reference(vocab=64, hidden=32, ffn=64, tied=tied, layers=2)
        for q in ("f32", "q8_0"):
            name = f"edgevlm_qwen2_{q}_{'tied' if tied else 'untied'}"
            out[name] = export_qwen2_gguf(work / f"{name}.gguf", cfg, model.state_dict(), qtype=q).read_bytes()
    return out


def llama_cpp_source() -> Path | None:
    """A llama.cpp tree with convert_hf_to_gguf.py (the one benchmarks/bench_runtime_vs_llamacpp.py unpacks)."""
    from test_llama_cpp_interop import _llama_src

    return _llama_src()


def llama_cpp_seeds(work: Path) -> dict[str, bytes]:
    """A small random LFM2 converted by llama.cpp's converter (F32, Q8_0); {} without a llama.cpp tree."""
    src = llama_cpp_source()
    if src is None:
        return {}
    from lfm2_reference import reference_model
    from test_llama_cpp_interop import CONVERT

    hf = work / "hf-lfm2"
    if not (hf / "config.json").is_file():
        _, model = reference_model(vocab=64, hidden=32, ffn=64)
        model.save_pretrained(hf, safe_serialization=True)
    out = {}
    for outtype in ("f32", "q8_0"):
        path = work / f"llama-cpp-{outtype}.gguf"
        if not path.is_file():
            p = subprocess.run([sys.executable, "-c", CONVERT, str(src), str(hf), str(path), outtype],
                               capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"llama.cpp's converter failed:\n{p.stderr[-2000:]}")
        out[f"llama_cpp_{outtype}"] = path.read_bytes()
    return out


BUILD_FILES = ("vlm.json", "manifest.json", "tokenizer.json")   # input byte 0 picks one; 3 = the prompt
PROMPTS = ("describe the image.", "how many shapes are there?", "what color is the circle?", "", "WHAT?! " * 40,
           "\udcff\udcfe prompt with undecodable bytes")


def build_files_seeds(build: Path) -> dict[str, bytes]:
    out = {f"file{i}_{name}": bytes([i]) + (build / name).read_bytes() for i, name in enumerate(BUILD_FILES)}
    for i, p in enumerate(PROMPTS):
        out[f"prompt{i}"] = bytes([len(BUILD_FILES)]) + p.encode("utf-8", "surrogateescape")
    return out


def image_seeds() -> dict[str, bytes]:
    from PIL import Image

    from edgevlm.data.shapes import make_sample

    im = make_sample(0, 0, 48).image
    variants = {"rgb": im, "gray": im.convert("L"), "palette": im.convert("P"), "rgba": im.convert("RGBA"),
                "i16": im.convert("I;16"), "cmyk": im.convert("CMYK"), "bw": im.convert("1")}
    formats = {"png": ("rgb", "gray", "palette", "rgba", "i16", "bw"), "jpeg": ("rgb", "gray", "cmyk"),
               "gif": ("palette",), "bmp": ("rgb", "bw"), "tiff": ("rgb", "cmyk", "i16"), "webp": ("rgb", "rgba"),
               "ppm": ("rgb",), "ico": ("rgba",), "tga": ("rgb",)}
    out = {}
    for fmt, modes in formats.items():
        for mode in modes:
            buf = io.BytesIO()
            variants[mode].save(buf, format=fmt)
            out[f"{mode}.{fmt}"] = buf.getvalue()
    buf = io.BytesIO()
    im.save(buf, format="png", optimize=True, pnginfo=_png_text())
    out["rgb_text.png"] = buf.getvalue()
    return out


def _png_text():
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "edgevlm seed")
    return info


def write(seeds: dict[str, bytes], out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (out_dir / name).write_bytes(data)
    return len(seeds)
