"""Interop with llama.cpp, when a llama.cpp source tree / build is at hand.

- llama.cpp's own convert_hf_to_gguf.py converts a transformers LFM2
  checkpoint; the runtime loads that file and matches PyTorch (F32: max abs
  logit error < 1e-3).
- llama.cpp's llama-bench loads and runs a GGUF written by gguf_export.

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


def _llama_bench() -> Path | None:
    env = os.environ.get("EDGEVLM_LLAMA_BENCH")
    cands = [Path(env)] if env else [WORK / "llama-build" / "bin" / "llama-bench"]
    return next((c for c in cands if c.is_file() and os.access(c, os.X_OK)), None)


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
