"""LFM2-style LM: stateful prefill/decode equal the stateless forward, padding leaves no trace, stages export."""
import pytest
import torch

from edgevlm.errors import CheckpointError
from edgevlm.models.arch.lfm2 import DecodeStage, Lfm2Config, Lfm2ForCausalLM, PrefillStage


def _lm(**kw):
    cfg = dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, layer_types=["conv", "full_attention", "conv", "full_attention"], block_multiple_of=8)
    cfg.update(kw)
    return Lfm2ForCausalLM(Lfm2Config(**cfg)).eval()


def test_prefill_then_decode_equals_full_forward():
    # metric: max abs err of logits, bound 1e-5 (fp32)
    lm = _lm()
    ids = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        full = lm(lm.embed(ids))
        logits, state = lm.prefill(ids=ids[:, :7], state=lm.init_state(16, batch=2))
        assert (logits - full[:, :7]).abs().max() < 1e-5
        for t in range(7, 12):
            step, state = lm.decode(ids[:, t], state)
            assert (step - full[:, t]).abs().max() < 1e-5
    assert int(state.pos) == 12


def test_padded_prefill_matches_unpadded():
    # A prompt right-padded to the compiled length S with n_valid set gives the same logits and state.
    lm = _lm()
    ids = torch.randint(0, 50, (1, 10))
    with torch.no_grad():
        ref, ref_state = lm.prefill(ids=ids[:, :6], state=lm.init_state(24))
        last, state = lm.prefill(ids=ids, state=lm.init_state(24), n_valid=torch.tensor([6]), last_only=True)
        assert (last - ref[:, -1]).abs().max() < 1e-5
        assert (state.conv - ref_state.conv).abs().max() < 1e-6 and int(state.pos) == 6
        a, _ = lm.decode(torch.tensor([3]), ref_state)
        b, _ = lm.decode(torch.tensor([3]), state)
        assert (a - b).abs().max() < 1e-5


def test_state_shapes_are_fixed():
    lm = _lm()
    state = lm.init_state(20)
    assert state.conv.shape == (2, 1, 32, 2) and state.key.shape == (2, 1, 2, 20, 8) and state.pos.shape == (1,)
    _, after = lm.prefill(ids=torch.zeros(1, 5, dtype=torch.long), state=state)
    assert [t.shape for t in after] == [t.shape for t in state]


def test_untied_head_and_all_conv_layers():
    lm = _lm(tie_word_embeddings=False, layer_types=["conv"] * 4)
    assert "lm_head.weight" in lm.state_dict()
    logits, state = lm.prefill(ids=torch.zeros(1, 3, dtype=torch.long), state=lm.init_state(8))
    assert logits.shape == (1, 3, 50) and state.key.shape[0] == 0


def test_stages_export_at_static_shape():
    # metric: exported program vs eager, max abs err 0 (same kernels)
    lm = _lm()
    state = lm.init_state(24)
    prefill_in = (torch.randn(1, 8, 32), torch.tensor([5]), *state)
    ep = torch.export.export(PrefillStage(lm), prefill_in, strict=False)
    ref = PrefillStage(lm)(*prefill_in)
    for got, want in zip(ep.module()(*prefill_in), ref):
        assert torch.equal(got, want)
    decode_in = (torch.tensor([[4]]), *ref[1:])
    ep = torch.export.export(DecodeStage(lm), decode_in, strict=False)
    for got, want in zip(ep.module()(*decode_in), DecodeStage(lm)(*decode_in)):
        assert torch.equal(got, want)


def test_bad_configs_are_clear():
    with pytest.raises(CheckpointError, match="layer_types has 2 entries"):
        Lfm2Config(num_hidden_layers=3, layer_types=["conv", "conv"])
    with pytest.raises(CheckpointError, match="unsupported LFM2 layer type"):
        Lfm2Config(num_hidden_layers=1, layer_types=["mamba"])
    with pytest.raises(CheckpointError, match="rope_type 'yarn'"):
        Lfm2Config.from_dict({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1.0}})
    cfg = Lfm2Config.from_dict({"num_hidden_layers": 3, "full_attn_idxs": [1], "block_ff_dim": 99, "tie_embedding": False})
    assert cfg.layer_types == ["conv", "full_attention", "conv"] and cfg.intermediate_size == 99 and not cfg.tie_word_embeddings
