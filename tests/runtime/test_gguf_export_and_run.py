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
