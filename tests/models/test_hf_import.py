"""Hugging Face checkpoint import: transformers' own classes, random small configs, saved as safetensors.

Metric: max abs err of fp32 logits vs transformers, bound 1e-4, for the
prefill and for 16 greedy decode steps through the explicit state.
"""
import json

import pytest
import torch

from edgevlm._compat import import_timm
from edgevlm.errors import CheckpointError
from edgevlm.models import build_model, from_pretrained

import_timm()  # installs the torchvision shim transformers' image utilities need on this CPU build
transformers = pytest.importorskip("transformers")

BOUND = 1e-4
DECODE_STEPS = 16


def _text_config(**kw):
    cfg = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, layer_types=["conv", "full_attention", "conv", "full_attention"],
               block_multiple_of=8, max_position_embeddings=128)
    cfg.update(kw)
    return transformers.Lfm2Config(**cfg)


def _compare_decode(hf_step, ours_lm, first_cache, first_logits, state):
    """Run 16 greedy steps in both; returns the max abs err over all steps."""
    worst, cache, tok = 0.0, first_cache, first_logits[:, -1].argmax(-1)
    for _ in range(DECODE_STEPS):
        ref_logits, cache = hf_step(tok, cache)
        got, state = ours_lm.decode(tok, state)
        worst = max(worst, (got - ref_logits).abs().max().item())
        tok = ref_logits.argmax(-1)
    return worst


@pytest.mark.parametrize("tied", [True, False])
def test_lfm2_causal_lm_matches_transformers(tmp_path, tied):
    hf = transformers.Lfm2ForCausalLM(_text_config(tie_word_embeddings=tied)).eval()
    hf.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors"))
    bundle = from_pretrained(tmp_path)
    lm = bundle.modules["lm"]
    assert [s.name for s in bundle.stages] == ["llm-prefill", "llm-decode"]
    ids = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        ref = hf(ids, use_cache=True)
        logits, state = lm.prefill(ids=ids, state=lm.init_state(32))
        assert (logits - ref.logits).abs().max().item() < BOUND

        def hf_step(tok, cache):
            out = hf(tok[:, None], cache=cache, use_cache=True)
            return out.logits[:, -1], out.cache

        assert _compare_decode(hf_step, lm, ref.cache, ref.logits, state) < BOUND


def _lfm2_vl(tmp_path):
    vision = dict(model_type="siglip2_vision_model", hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=2, num_channels=3, num_patches=16, patch_size=4)
    cfg = transformers.Lfm2VlConfig(vision_config=vision, text_config=_text_config().to_dict(), image_token_id=5,
                                    projector_hidden_size=40, downsample_factor=2)
    hf = transformers.Lfm2VlForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path)
    return hf


def test_lfm2_vl_language_model_and_projector_match_transformers(tmp_path):
    hf = _lfm2_vl(tmp_path)
    bundle = from_pretrained(tmp_path)
    vlm = bundle.modules["vlm"]
    assert "vision tower" in bundle.meta["not_supported"]
    # One 16x16 image = a 4x4 grid of 4x4 patches (NaFlex inputs with every patch valid) -> 2x2 = 4 image tokens.
    pixel_values = torch.randn(1, 16, 3 * 4 * 4)
    spatial_shapes = torch.tensor([[4, 4]])
    pixel_mask = torch.ones(1, 16, dtype=torch.bool)
    ids = torch.tensor([[1, 7, 5, 5, 5, 5, 8, 9, 10]])
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=pixel_values, spatial_shapes=spatial_shapes,
                 pixel_attention_mask=pixel_mask, use_cache=True)
        features = hf.model.vision_tower(pixel_values=pixel_values, spatial_shapes=spatial_shapes,
                                         pixel_attention_mask=pixel_mask).last_hidden_state
        embeds = vlm.splice(ids, vlm.projector(features))
        logits, state = vlm.lm.prefill(embeds=embeds, state=vlm.lm.init_state(32))
        assert (logits - ref.logits).abs().max().item() < BOUND

        def hf_step(tok, cache):
            out = hf(input_ids=tok[:, None], cache=cache, use_cache=True)
            return out.logits[:, -1], out.cache

        assert _compare_decode(hf_step, vlm.lm, ref.cache, ref.logits, state) < BOUND


def test_mismatched_shape_names_the_tensor(tmp_path):
    hf = transformers.Lfm2ForCausalLM(_text_config()).eval()
    hf.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"tensor 'model\.layers\.0\.feed_forward\.w1\.weight' has shape"):
        from_pretrained(tmp_path)


def test_unknown_model_type_lists_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="model_type .llama..*supported model_type values: lfm2, lfm2_vl, fast_vlm"):
        build_model(str(tmp_path))


def test_pickle_checkpoint_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "lfm2"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match="refusing pickle"):
        from_pretrained(tmp_path)


def test_fast_vlm_language_model_and_projector_match_transformers(tmp_path):
    # A small timm tower (resnet10t) stands in for FastViTHD: its features feed our projector + Qwen2 LM.
    vision = dict(model_type="timm_wrapper", architecture="resnet10t", hidden_size=512, do_pooling=False, model_args={})
    text = dict(model_type="qwen2", vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    hf = transformers.FastVlmForConditionalGeneration(
        transformers.FastVlmConfig(vision_config=vision, text_config=text, image_token_id=5)).eval()
    hf.save_pretrained(tmp_path)
    bundle = from_pretrained(tmp_path)
    vlm = bundle.modules["vlm"]
    assert "vision tower" in bundle.meta["not_supported"]
    pixel_values = torch.randn(1, 3, 64, 64)  # -> 2x2 feature map -> 4 image tokens
    ids = torch.tensor([[1, 7, 5, 5, 5, 5, 8, 9, 10]])
    with torch.no_grad():
        ref = hf(input_ids=ids, pixel_values=pixel_values, use_cache=True)
        features = hf.model.vision_tower(pixel_values).last_hidden_state.flatten(2).transpose(1, 2)
        logits, state = vlm.lm.prefill(embeds=vlm.splice(ids, vlm.projector(features)), state=vlm.lm.init_state(32))
        assert (logits - ref.logits).abs().max().item() < BOUND

        def hf_step(tok, cache):
            out = hf(input_ids=tok[:, None], cache=cache, use_cache=True)
            return out.logits[:, -1], out.cache

        assert _compare_decode(hf_step, vlm.lm, ref.cache, ref.logits, state) < BOUND
