"""Interop with llama.cpp, when a llama.cpp source tree / build is at hand.

- llama.cpp's own convert_hf_to_gguf.py converts a transformers LFM2
  checkpoint; the runtime loads that file and matches PyTorch (F32: max abs
  logit error < 1e-3).
- llama.cpp's llama-bench loads and runs a GGUF written by gguf_export.
- the same for a transformers Qwen2 checkpoint (architecture "qwen2");
- llama.cpp's llama-quantize makes Q4_0, Q4_K_S, Q4_K_M, Q5_K_M, Q6_K and
  Q8_0 files (its own tensor-type mixtures, e.g. Q6_K heads) from an F16
  export; the runtime loads and runs each, logits against PyTorch's F32
  within a bound per type.
- the same six types at Qwen2-0.5B's widths (hidden 896, not whole
  256-blocks), where llama-quantize falls back to Q5_0 / Q5_1 / Q8_0.

Set EDGEVLM_LLAMA_CPP_DIR to a llama.cpp source tree (and
EDGEVLM_LLAMA_BENCH to a llama-bench binary); otherwise the copy the runtime
benchmark unpacks under benchmarks/_work is used if present, else these skip.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgevlm.runtime import Model
from edgevlm.runtime.gguf_export import export_lfm2_gguf
from lfm2_reference import full_logits, reference_model, small_bpe_tokenizer

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "benchmarks" / "_work"


def _llama_src() -> Path | None:
    env = os.environ.get("EDGEVLM_LLAMA_CPP_DIR")
    cands = [Path(env)] if env else sorted(WORK.glob("llama_cpp_python-*/vendor/llama.cpp"))
    return next((c for c in cands if (c / "convert_hf_to_gguf.py").is_file()), None)


def _llama_tool(name: str, env_var: str) -> Path | None:
    """A llama.cpp binary: $env_var, else the benchmark's builds under benchmarks/_work."""
    env = os.environ.get(env_var)
    cands = [Path(env)] if env else [WORK / b / "bin" / name for b in ("llama-build-noamx", "llama-build")]
    return next((c for c in cands if c.is_file() and os.access(c, os.X_OK)), None)


def _llama_bench() -> Path | None:
    return _llama_tool("llama-bench", "EDGEVLM_LLAMA_BENCH")


# The random test model has no tokenizer files, which the converter's
# set_vocab needs: convert without a vocab (the path llama.cpp's own
# LFM2.5 audio tokenizer export uses).
CONVERT = """
import sys
sys.path.insert(0, sys.argv[1])
import convert_hf_to_gguf as c
from conversion.lfm2 import LFM2Model
LFM2Model.set_vocab = lambda self: self._set_vocab_none()
sys.argv = ["convert_hf_to_gguf.py", sys.argv[2], "--outfile", sys.argv[3], "--outtype", sys.argv[4]]
c.main()
"""


@pytest.mark.skipif(_llama_src() is None, reason="no llama.cpp source tree (set EDGEVLM_LLAMA_CPP_DIR)")
# Q8_0 bound: quantization alone gives ~0.2 on this random model (measured); a wrong layout gives O(1)
@pytest.mark.parametrize("outtype,bound", [("f32", 1e-3), ("q8_0", 0.5)])
def test_runtime_loads_llama_cpp_conversion(tmp_path, outtype, bound):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg, model = reference_model()
        model.save_pretrained(tmp_path / "hf", safe_serialization=True)
        out = tmp_path / f"llama-{outtype}.gguf"
        p = subprocess.run([sys.executable, "-c", CONVERT, str(_llama_src()), str(tmp_path / "hf"), str(out), outtype],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        ids = torch.randint(0, cfg.vocab_size, (24,), generator=torch.Generator().manual_seed(5))
        want = full_logits(model, ids).numpy()
    finally:
        torch.set_num_threads(n)
    s = Model.load(out).session(32)
    errs = [np.abs(s.prefill(ids=ids[:16].numpy()) - want[15]).max()]
    errs += [np.abs(s.step(int(ids[t])) - want[t]).max() for t in range(16, 24)]
    assert max(errs) < bound


@pytest.mark.skipif(_llama_bench() is None, reason="no llama-bench binary (set EDGEVLM_LLAMA_BENCH)")
@pytest.mark.parametrize("qtype,with_vocab", [("f16", False), ("q8_0", False), ("q4_0", False), ("q8_0", True)])
def test_llama_cpp_runs_our_gguf(tmp_path, qtype, with_vocab):
    tok = small_bpe_tokenizer() if with_vocab else None
    cfg, model = reference_model(vocab=tok.get_vocab_size() if tok else 512)
    path = export_lfm2_gguf(tmp_path / f"ours-{qtype}.gguf", cfg, model.state_dict(), qtype=qtype, tokenizer=tok)
    p = subprocess.run([str(_llama_bench()), "-m", str(path), "-p", "8", "-n", "4", "-t", "1", "-r", "1", "-o", "json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    assert '"n_gen": 4' in p.stdout


CONVERT_QWEN2 = CONVERT.replace("from conversion.lfm2 import LFM2Model", "from conversion.qwen import Qwen2Model as LFM2Model")


@pytest.mark.skipif(_llama_src() is None, reason="no llama.cpp source tree (set EDGEVLM_LLAMA_CPP_DIR)")
@pytest.mark.parametrize("tied", [True, False])
def test_runtime_loads_llama_cpp_qwen2_conversion(tmp_path, tied):
    """convert_hf_to_gguf.py's qwen2 file: F32 logits vs transformers, max abs < 1e-3."""
    from qwen2_reference import qwen2_reference

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg, model = qwen2_reference(tied=tied)
        model.save_pretrained(tmp_path / "hf", safe_serialization=True)
        out = tmp_path / "llama-qwen2-f32.gguf"
        p = subprocess.run([sys.executable, "-c", CONVERT_QWEN2, str(_llama_src()), str(tmp_path / "hf"), str(out), "f32"],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        ids = torch.randint(0, cfg.vocab_size, (24,), generator=torch.Generator().manual_seed(5))
        want = full_logits(model, ids).numpy()
    finally:
        torch.set_num_threads(n)
    m = Model.load(out)
    assert m.info["arch"] == "qwen2"
    s = m.session(32)
    errs = [np.abs(s.prefill(ids=ids[:16].numpy()) - want[15]).max()]
    errs += [np.abs(s.step(int(ids[t])) - want[t]).max() for t in range(16, 24)]
    assert max(errs) < 1e-3


def _llama_quantize() -> Path | None:
    return _llama_tool("llama-quantize", "EDGEVLM_LLAMA_QUANTIZE")


@pytest.fixture(scope="module")
def kquant_reference(tmp_path_factory):
    """A random LFM2 with rows that are whole 256-blocks, its F16 export, and PyTorch logits."""
    d = tmp_path_factory.mktemp("kquant")
    cfg, model = reference_model(hidden=256, ffn=512, init_std=0.05)
    f16 = export_lfm2_gguf(d / "f16.gguf", cfg, model.state_dict(), qtype="f16")
    ids = torch.randint(0, cfg.vocab_size, (24,), generator=torch.Generator().manual_seed(7))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = full_logits(model, ids).numpy()
    finally:
        torch.set_num_threads(n)
    return d, f16, ids, want


def _dequantized_copy(src: Path, dst: Path, arch: str = "lfm2") -> Path:
    """src with every tensor dequantized to F32 by gguf-py (gguf.quants): the same weights, no quantized kernels."""
    import gguf
    from gguf.quants import dequantize

    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), arch)
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        w.add_key_value(f.name, f.contents(), f.types[0], f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None)
    for t in r.tensors:
        a = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a.reshape([int(x) for x in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def _logits(path: Path, ids) -> np.ndarray:
    s = Model.load(path).session(32)
    return np.stack([s.prefill(ids=ids[:16].numpy())] + [s.step(int(ids[t])) for t in range(16, 24)])


@pytest.mark.skipif(_llama_quantize() is None, reason="no llama-quantize binary (set EDGEVLM_LLAMA_QUANTIZE)")
@pytest.mark.parametrize("ftype", ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q4_0"])
def test_runtime_runs_llama_quantize_files(kquant_reference, ftype):
    """llama-quantize's file against the same weights dequantized by gguf-py into an F32 file, both run by
    the runtime (prefill 16 + 8 steps): max abs logit difference < 0.3, the activations' int8 rounding
    (measured 0.11 for Q8_0, 0.13-0.16 for the K mixtures on this model; logits up to ~3, std 0.8).  A
    wrong block layout or scale differs by the logits' own size.  Against PyTorch's F32 logits the error
    is the weights' quantization (measured 0.17 Q8_0 ... 1.4 Q4_K_S): only bounded loosely, < 2."""
    import gguf

    d, f16, ids, want = kquant_reference
    out = d / f"{ftype}.gguf"
    p = subprocess.run([str(_llama_quantize()), str(f16), str(out), ftype, "1"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    types = {t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    if ftype != "Q8_0":   # llama-quantize's mixtures: K-quant (or Q6_K head) tensors are in the file
        assert types & {"Q4_K", "Q5_K", "Q6_K"}, types
    got = _logits(out, ids)
    ref = _logits(_dequantized_copy(out, d / f"{ftype}-f32.gguf"), ids)
    assert np.abs(got - ref).max() < 0.3, f"{ftype} ({sorted(types)}): {np.abs(got - ref).max():.3f}"
    assert np.abs(got - want[15:24]).max() < 2.0


def _qwen2_f16_gguf(d, **shape):
    """(config, path) of convert_hf_to_gguf's F16 file of a random transformers Qwen2 (qwen2_reference(**shape))."""
    from qwen2_reference import qwen2_reference

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg, model = qwen2_reference(**shape)
        model.save_pretrained(d / "hf", safe_serialization=True)
        f16 = d / "qwen2-f16.gguf"
        p = subprocess.run([sys.executable, "-c", CONVERT_QWEN2, str(_llama_src()), str(d / "hf"), str(f16), "f16"],
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    finally:
        torch.set_num_threads(n)
    return cfg, f16


@pytest.mark.skipif(_llama_src() is None or _llama_quantize() is None,
                    reason="needs a llama.cpp source tree and llama-quantize")
@pytest.mark.parametrize("hidden,want_types", [(256, {"Q4_K", "Q6_K"}), (320, {"Q5_0", "Q8_0"})])
def test_runtime_runs_llama_quantize_qwen2(tmp_path, hidden, want_types):
    """convert_hf_to_gguf (F16) then llama-quantize Q4_K_M of a transformers Qwen2; at hidden 320 the
    rows are not whole 256-blocks and llama-quantize falls back to Q5_0 / Q8_0 (as for Qwen2-0.5B's
    896).  Metric: max abs logit difference to the same weights dequantized by gguf-py, < 0.3."""
    import gguf

    cfg, f16 = _qwen2_f16_gguf(tmp_path, hidden=hidden, ffn=512, init_std=0.05)
    out = tmp_path / "qwen2-q4_k_m.gguf"
    p = subprocess.run([str(_llama_quantize()), str(f16), str(out), "Q4_K_M", "1"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    types = {t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert want_types <= types, types
    ids = torch.randint(0, cfg.vocab_size, (24,), generator=torch.Generator().manual_seed(9))
    got, ref = _logits(out, ids), _logits(_dequantized_copy(out, tmp_path / "f32.gguf", "qwen2"), ids)
    assert np.abs(got - ref).max() < 0.3, f"{sorted(types)}: {np.abs(got - ref).max():.3f}"


@pytest.fixture(scope="module")
def qwen2_05b_shaped(tmp_path_factory):
    """convert_hf_to_gguf's F16 file of a random Qwen2 with Qwen2-0.5B's widths (hidden 896 = 3.5 blocks
    of 256, 14 heads / 2 KV heads of 64, ffn 4864 = 19 blocks), 2 layers and a small vocab."""
    d = tmp_path_factory.mktemp("qwen2-05b")
    cfg, f16 = _qwen2_f16_gguf(d, hidden=896, ffn=4864, layers=2, heads=14, kv_heads=2, init_std=0.02)
    return d, f16, cfg


@pytest.mark.skipif(_llama_src() is None or _llama_quantize() is None,
                    reason="needs a llama.cpp source tree and llama-quantize")
# the fallback types llama-quantize writes for the 896-wide rows (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0)
@pytest.mark.parametrize("ftype,fallback", [("Q4_0", "Q8_0"), ("Q4_K_S", "Q5_0"), ("Q4_K_M", "Q5_0"),
                                            ("Q5_K_M", "Q5_1"), ("Q6_K", "Q8_0"), ("Q8_0", "Q8_0")])
def test_runtime_runs_llama_quantize_qwen2_05b_shape(qwen2_05b_shaped, ftype, fallback):
    """Every llama-quantize type at Qwen2-0.5B's widths (FastVLM-0.5B's language model) loads, runs and
    generates.  Metric: max abs logit difference (prefill 16 + 8 steps) to the same weights dequantized
    by gguf-py into an F32 file, < 0.3 (the activations' int8 rounding; a wrong block layout, scale or
    min is off by the logits' own size); 8 greedy tokens generated."""
    import gguf

    d, f16, cfg = qwen2_05b_shaped
    out = d / f"{ftype}.gguf"
    p = subprocess.run([str(_llama_quantize()), str(f16), str(out), ftype, "1"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    types = {t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert fallback in types, sorted(types)
    ids = torch.randint(0, cfg.vocab_size, (24,), generator=torch.Generator().manual_seed(11))
    got, ref = _logits(out, ids), _logits(_dequantized_copy(out, d / f"{ftype}-f32.gguf", "qwen2"), ids)
    assert np.abs(got - ref).max() < 0.3, f"{ftype} {sorted(types)}: {np.abs(got - ref).max():.3f}"
    toks = list(Model.load(out).generate(ids[:4].numpy(), max_new_tokens=8, stop_at_eos=False))
    assert len(toks) == 8 and all(0 <= t < cfg.vocab_size for t in toks)
