"""C runtime logits vs transformers' Qwen2ForCausalLM (architecture "qwen2").

Metrics and bounds: F32 GGUF (edgevlm's exporter, llama.cpp's names) max abs
logit error < 1e-3 over a 32-token prefill and 16 decode steps, tied and
untied output head; Q8_0 greedy next-token agreement over 256 steps
(teacher-forced on PyTorch's greedy sequence) >= 99% on a briefly trained
model.  The file written by llama.cpp's own converter is checked in
test_llama_cpp_interop.py.
"""
import numpy as np
import pytest
import torch

from edgevlm.runtime import Model
from edgevlm.runtime.gguf_export import export_qwen2_gguf
from lfm2_reference import full_logits, greedy_agreement
from qwen2_reference import qwen2_reference, trained_qwen2


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("tied", [True, False])
def test_f32_prefill_and_decode_match_transformers(tmp_path, tied):
    cfg, model = qwen2_reference(tied=tied)
    path = export_qwen2_gguf(tmp_path / "q.gguf", cfg, model.state_dict(), qtype="f32")
    rm = Model.load(path, threads=1)
    assert rm.info["arch"] == "qwen2" and rm.info["n_attn_layers"] == cfg.num_hidden_layers
    ids = torch.randint(0, cfg.vocab_size, (48,), generator=torch.Generator().manual_seed(1))
    want = full_logits(model, ids).numpy()
    assert np.abs(want).max() > 1.0   # the bound is meaningful only for non-tiny logits
    s = rm.session(n_ctx=64)
    errs = [np.abs(s.prefill(ids=ids[:32].numpy()) - want[31]).max()]
    errs += [np.abs(s.step(int(ids[t])) - want[t]).max() for t in range(32, 48)]
    assert max(errs) < 1e-3, f"max abs logit error {max(errs):.2e}"


def test_q8_0_greedy_agrees_with_transformers(tmp_path):
    cfg, model = trained_qwen2()
    rm = Model.load(export_qwen2_gguf(tmp_path / "q8.gguf", cfg, model.state_dict(), qtype="q8_0"), threads=1)
    rate = greedy_agreement(model, rm, torch.tensor([1, 20, 33, 100, 7, 81, 150, 2]), 256)
    assert rate >= 0.99, f"q8_0 greedy agreement {rate:.3f}"


def test_rope_scaling_is_refused(tmp_path):
    from edgevlm.runtime import RuntimeLoadError
    import gguf

    cfg, model = qwen2_reference(layers=1)
    path = export_qwen2_gguf(tmp_path / "q.gguf", cfg, model.state_dict(), qtype="f32")
    r = gguf.GGUFReader(str(path))
    w = gguf.GGUFWriter(str(tmp_path / "yarn.gguf"), "qwen2")
    for f in r.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.architecture":
            continue
        w.add_key_value(f.name, f.contents(), f.types[0], f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None)
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data), raw_shape=list(reversed([int(x) for x in t.shape])), raw_dtype=t.tensor_type)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(RuntimeLoadError, match="rope.scaling.type"):
        Model.load(tmp_path / "yarn.gguf")
