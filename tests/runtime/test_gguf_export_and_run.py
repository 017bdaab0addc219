"""GGUF writer (llama.cpp's lfm2 names and keys, vocab) and the edgevlm-run program."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgevlm.errors import CheckpointError, InputError
from edgevlm.runtime import Model
from edgevlm.runtime.gguf_export import export_lfm2_gguf
from lfm2_reference import small_bpe_tokenizer
from test_sanitizers import _state_dict_from_corpus_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def weights():
    return _state_dict_from_corpus_model(np.random.default_rng(1))


@pytest.fixture(scope="module")
def bpe_tokenizer(weights):
    return small_bpe_tokenizer(weights[1]["vocab_size"] * 20)


def test_writer_uses_llama_cpp_names(weights, tmp_path):
    from gguf import GGUFReader

    sd, cfg = weights
    path = export_lfm2_gguf(tmp_path / "m.gguf", cfg, sd, qtype="q8_0")
    r = GGUFReader(path)
    assert r.fields["general.architecture"].contents() == "lfm2"
    assert r.fields["lfm2.attention.head_count_kv"].contents() == [0, 1]
    assert r.fields["lfm2.shortconv.l_cache"].contents() == 3
    assert r.fields["lfm2.block_count"].contents() == 2
    t = {x.name: x for x in r.tensors}
    assert list(t["blk.0.shortconv.conv.weight"].shape) == [3, 32]          # ggml order: [L, hidden]
    assert list(t["blk.0.shortconv.in_proj.weight"].shape) == [32, 96]
    assert t["blk.0.ffn_gate.weight"].tensor_type.name == "Q8_0"
    assert t["token_embd_norm.weight"].tensor_type.name == "F32"
    assert "output.weight" not in t   # tied embeddings, as llama.cpp writes them
    assert {"blk.1.attn_q_norm.weight", "blk.1.attn_k_norm.weight", "blk.1.attn_output.weight"} <= set(t)


def test_writer_refuses_bad_input(weights, tmp_path):
    sd, cfg = weights
    with pytest.raises(InputError):
        export_lfm2_gguf(tmp_path / "x.gguf", cfg, sd, qtype="q5_k")
    partial = {k: v for k, v in sd.items() if "attn_q" not in k and "q_proj" not in k}
    with pytest.raises(CheckpointError, match="q_proj"):
        export_lfm2_gguf(tmp_path / "x.gguf", cfg, partial)
    assert not list(tmp_path.iterdir())   # nothing half-written


@pytest.fixture(scope="module")
def vocab_model(weights, bpe_tokenizer, tmp_path_factory):
    sd, cfg = weights
    cfg = dict(cfg, vocab_size=bpe_tokenizer.get_vocab_size(), bos_token_id=0, eos_token_id=1)
    sd = dict(sd, **{"model.embed_tokens.weight": np.random.default_rng(2).standard_normal(
        (cfg["vocab_size"], 32)).astype(np.float32)})
    return export_lfm2_gguf(tmp_path_factory.mktemp("vocab") / "v.gguf", cfg, sd, qtype="f16", tokenizer=bpe_tokenizer)


def test_vocab_is_written_and_read(vocab_model, bpe_tokenizer):
    m = Model.load(vocab_model)
    assert m.info["tokenizer"] == "gpt2" and m.info["bos_token"] == 0 and m.info["eos_token"] == 1
    hello = bpe_tokenizer.token_to_id("hello")
    assert hello is not None and m.token_text(hello) == b"hello"
    # token types: special tokens are control (3), so runtimes can keep them out of printed text
    assert m.token_type(bpe_tokenizer.token_to_id("</s>")) == 3 and m.token_type(hello) == 1
    assert m.token_type(-1) == 0 and m.token_type(m.n_vocab) == 0


@pytest.fixture(scope="module")
def edgevlm_run(tmp_path_factory):
    if not shutil.which("cmake"):
        pytest.skip("cmake is needed to build edgevlm-run")
    build = tmp_path_factory.mktemp("run-build")
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "edgevlm-run", "-j2"], check=True, capture_output=True)
    return build / "edgevlm" / "runtime" / "edgevlm-run"


def test_edgevlm_run_text_and_ids(edgevlm_run, vocab_model):
    path = vocab_model
    # generated text is arbitrary bytes (random weights): decode leniently
    p = subprocess.run([str(edgevlm_run), str(path), "-p", "hello world", "-n", "8", "-t", "1"],
                       capture_output=True, text=True, errors="replace", timeout=120)
    assert p.returncode == 0, p.stderr
    assert "prompt 3 tokens" in p.stderr and "t/s" in p.stderr   # <s> hello Ġworld
    p = subprocess.run([str(edgevlm_run), str(path), "-i", "0,5,6", "-n", "4", "--temp", "0.7", "--seed", "3"],
                       capture_output=True, text=True, errors="replace", timeout=120)
    assert p.returncode == 0 and "prompt 3 tokens" in p.stderr, p.stderr


def test_edgevlm_run_bad_input_exits_2(edgevlm_run, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"nope")
    p = subprocess.run([str(edgevlm_run), str(bad), "-i", "1"], capture_output=True, text=True)
    assert p.returncode == 2 and "not a GGUF file" in p.stderr
    p = subprocess.run([str(edgevlm_run)], capture_output=True, text=True)
    assert p.returncode == 2 and "usage" in p.stderr


@pytest.mark.parametrize("qtype,type_id,embd", [("f32", 0, "F32"), ("f16", 1, "F16"), ("q8_0", 8, "Q8_0"), ("q4_0", 2, "Q8_0")])
def test_each_type_loads(weights, tmp_path, qtype, type_id, embd):
    from gguf import GGUFReader

    sd, cfg = weights
    path = export_lfm2_gguf(tmp_path / "m.gguf", cfg, sd, qtype=qtype)
    assert Model.load(path).info["weight_type"] == type_id
    t = {x.name: x for x in GGUFReader(path).tensors}
    assert t["token_embd.weight"].tensor_type.name == embd   # q4_0 keeps the tied head at Q8_0
    assert t["blk.0.shortconv.conv.weight"].tensor_type.name == "F32"


def test_k_quantizers_fit_like_ggml_types():
    """export's own Q4_K / Q6_K quantizers, read back by gguf-py's dequantizers.  Metric: RMS error over
    the RMS of N(0, 1) rows; bounds a little above what they measure (0.077, 0.019) and, for Q4_K, below
    gguf-py's Q4_0 on the same data (0.086)."""
    import gguf
    from gguf.quants import dequantize, quantize

    from edgevlm.runtime.gguf_export import quantize_q4_k, quantize_q6_k

    T = gguf.GGMLQuantizationType
    x = np.random.default_rng(3).standard_normal((64, 1024)).astype(np.float32)
    x[0] = 0.0   # all-zero blocks: scale 0, no division by zero
    x[1, :256] += 5.0   # an all-positive block: min 0

    def rel(a, t):
        return float(np.sqrt(((dequantize(a, t).reshape(x.shape) - x) ** 2).mean() / (x ** 2).mean()))

    q4k, q6k, q40 = rel(quantize_q4_k(x), T.Q4_K), rel(quantize_q6_k(x), T.Q6_K), rel(quantize(x, T.Q4_0), T.Q4_0)
    assert q4k < 0.085 and q4k < q40 and q6k < 0.022, (q4k, q6k, q40)
    assert np.array_equal(dequantize(quantize_q4_k(x[:1]), T.Q4_K), np.zeros((1, 1024), np.float32))


def test_k_quant_export_runs(tmp_path):
    """qtype q4_k: Q4_K matrices and a Q6_K head (llama-quantize's Q4_K_M choice); the runtime runs the file
    like the same weights dequantized to F32 by gguf-py (max abs logit diff < 0.3: activation rounding)."""
    from gguf import GGUFReader

    from lfm2_reference import reference_model
    from test_llama_cpp_interop import _dequantized_copy, _logits
    import torch

    cfg, model = reference_model(hidden=256, ffn=512, init_std=0.05)
    path = export_lfm2_gguf(tmp_path / "k.gguf", cfg, model.state_dict(), qtype="q4_k")
    types = {x.name: x.tensor_type.name for x in GGUFReader(path).tensors}
    assert types["token_embd.weight"] == "Q6_K" and types["blk.0.ffn_gate.weight"] == "Q4_K"
    assert types["blk.0.shortconv.conv.weight"] == "F32"
    assert Model.load(path).info["weight_type"] == 12
    ids = torch.randint(0, cfg.vocab_size, (24,), generator=torch.Generator().manual_seed(7))
    got, ref = _logits(path, ids), _logits(_dequantized_copy(path, tmp_path / "f32.gguf"), ids)
    assert np.abs(got - ref).max() < 0.3


def test_k_quant_export_falls_back_like_llama_quantize(weights, tmp_path):
    """Rows that are not whole 256-blocks: q4_k -> Q5_0, q6_k -> Q8_0 (the corpus model is 32 wide)."""
    from gguf import GGUFReader

    sd, cfg = weights
    for qtype, want, type_id in (("q4_k", "Q5_0", 6), ("q6_k", "Q8_0", 8)):
        path = export_lfm2_gguf(tmp_path / f"{qtype}.gguf", cfg, sd, qtype=qtype)
        t = {x.name: x.tensor_type.name for x in GGUFReader(path).tensors}
        assert t["blk.0.ffn_gate.weight"] == want
        assert Model.load(path).info["weight_type"] == type_id


def test_bundle_reports_the_written_tensor_types(weights, tmp_path):
    """runtime_bundle's report info lists the types the file really holds (fallbacks included)."""
    from edgevlm.compiler.runtime_bundle import _tensor_types

    sd, cfg = weights
    types = _tensor_types(export_lfm2_gguf(tmp_path / "m.gguf", cfg, sd, qtype="q4_k"))
    assert types.get("Q5_0") and "Q4_K" not in types   # 32-wide rows: llama-quantize's Q4_K fallback
