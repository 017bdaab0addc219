"""The C runtime under AddressSanitizer + UndefinedBehaviorSanitizer.

Builds the library and the C test driver (edgevlm/runtime/tests/ev_test_driver.c)
with -fsanitize=address,undefined in a temporary directory, then runs the
bad-file corpus and short decodes (F32, Q8_0, Q4_0; greedy and sampled).  Any
sanitizer report, crash or wrong error code fails the test.
"""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gguf_corpus import corpus, mutations, truncations

ROOT = Path(__file__).resolve().parents[2]
SAN_FLAGS = "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if not shutil.which("cmake") or not shutil.which("cc"):
        pytest.skip("cmake and a C compiler are needed to build the sanitizer driver")
    build = tmp_path_factory.mktemp("asan-build")
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Debug",
                    f"-DCMAKE_C_FLAGS={SAN_FLAGS}", f"-DCMAKE_EXE_LINKER_FLAGS=-fsanitize=address,undefined"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "ev_test_driver", "ev_fuzz_model_load", "-j2"],
                   check=True, capture_output=True)
    return build / "edgevlm" / "runtime" / "ev_test_driver"


def run(driver, *args):
    env = dict(os.environ, **SAN_ENV)
    p = subprocess.run([str(driver), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
    assert "Sanitizer" not in p.stderr and "runtime error" not in p.stderr, p.stderr[-3000:]
    return p


def test_bad_files_under_sanitizers(driver, tmp_path):
    files, want = [], {}
    for name, data, code in corpus():
        f = tmp_path / f"{name}.gguf"
        f.write_bytes(data)
        files.append(f)
        want[str(f)] = code
    for i, data in enumerate(truncations(step=3)):
        f = tmp_path / f"cut{i}.gguf"
        f.write_bytes(data)
        files.append(f)
    p = run(driver, "load", *files)
    assert p.returncode == 0, p.stderr[-3000:]
    got = dict(line.split(" ")[:2] for line in p.stdout.splitlines())
    assert len(got) == len(files)
    for f, code in want.items():
        assert got[f] == code, f
    assert all(v != "EV_OK" for v in got.values())


def test_mutated_headers_under_sanitizers(driver, tmp_path):
    # 300 files with random header bytes overwritten: any status is fine, a sanitizer report or crash is not
    files = []
    for i, data in enumerate(mutations()):
        f = tmp_path / f"mut{i}.gguf"
        f.write_bytes(data)
        files.append(f)
    p = run(driver, "load", *files)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(p.stdout.splitlines()) == len(files)


def test_fuzz_target_replays_its_seeds_under_sanitizers(driver, tmp_path):
    # the gguf_model fuzz target (edgevlm/runtime/tests/fuzz_model_load.c) built as a replay program: every
    # seed of benchmarks/fuzz.py (valid files of each writer, then the bad-file corpus) loads, and what
    # loads runs a session, so a crash input fixed since stays fixed without clang or libFuzzer
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
    from seeds import gguf_seeds

    files = []
    for name, data in gguf_seeds(ROOT / "benchmarks" / "_work" / "fuzz" / "seedwork").items():
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    p = run(driver.parent / "ev_fuzz_model_load", *files)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == [x for f in files for x in (str(f), "ok")]


@pytest.mark.parametrize("qtype", ["f32", "q8_0", "q4_0"])
def test_decode_under_sanitizers(driver, tmp_path, qtype):
    from edgevlm.runtime.gguf_export import export_lfm2_gguf

    sd, cfg = _state_dict_from_corpus_model(np.random.default_rng(0))
    path = export_lfm2_gguf(tmp_path / f"m-{qtype}.gguf", cfg, sd, qtype=qtype)
    for temp in ("0", "0.8"):
        p = run(driver, "decode", path, 12, temp)
        assert p.returncode == 0, p.stderr[-3000:]
        assert len(p.stdout.split()) == 12


def _state_dict_from_corpus_model(rng):
    """HF-named random weights with the corpus model's shapes (so the writer path is exercised too)."""
    from gguf_corpus import E, FF, HEAD_DIM, HEADS, KV_HEADS, L_CACHE, VOCAB

    cfg = {"vocab_size": VOCAB, "hidden_size": E, "intermediate_size": FF, "num_hidden_layers": 2,
           "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS, "layer_types": ["conv", "full_attention"],
           "block_auto_adjust_ff_dim": False, "conv_L_cache": L_CACHE, "max_position_embeddings": 128}
    w = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.3  # noqa: E731
    sd = {"model.embed_tokens.weight": w(VOCAB, E), "model.embedding_norm.weight": 1 + w(E)}
    for i in range(2):
        p = f"model.layers.{i}."
        sd.update({p + "operator_norm.weight": 1 + w(E), p + "ffn_norm.weight": 1 + w(E),
                   p + "feed_forward.w1.weight": w(FF, E), p + "feed_forward.w3.weight": w(FF, E),
                   p + "feed_forward.w2.weight": w(E, FF)})
    sd.update({"model.layers.0.conv.conv.weight": w(E, 1, L_CACHE), "model.layers.0.conv.in_proj.weight": w(3 * E, E),
               "model.layers.0.conv.out_proj.weight": w(E, E)})
    q, k = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    sd.update({"model.layers.1.self_attn.q_proj.weight": w(q, E), "model.layers.1.self_attn.k_proj.weight": w(k, E),
               "model.layers.1.self_attn.v_proj.weight": w(k, E), "model.layers.1.self_attn.out_proj.weight": w(E, q),
               "model.layers.1.self_attn.q_layernorm.weight": 1 + w(HEAD_DIM),
               "model.layers.1.self_attn.k_layernorm.weight": 1 + w(HEAD_DIM)})
    return sd, cfg
