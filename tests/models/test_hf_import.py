"""Hugging Face checkpoint import: transformers' own classes, random small configs, saved as safetensors.

Metric: max abs err (fp32) vs transformers, bound 1e-4, of the vision
tower's features (VLMs, from pixels), of the prefill logits (VLMs: the image
spliced into the prompt) and of 16 greedy decode steps through the explicit
state.
"""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

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


def _lfm2_vl(tmp_path, num_patches=16, tile_size=None):
    vision = dict(model_type="siglip2_vision_model", hidden_size=24, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=2, num_channels=3, num_patches=num_patches, patch_size=4)
    cfg = transformers.Lfm2VlConfig(vision_config=vision, text_config=_text_config().to_dict(), image_token_id=5,
                                    projector_hidden_size=40, downsample_factor=2)
    hf = transformers.Lfm2VlForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path)
    if tile_size:
        (tmp_path / "preprocessor_config.json").write_text(json.dumps({"tile_size": tile_size}))
    return hf


def _check_vlm(bundle, hf_vision, hf_forward, num_image_tokens):
    """Vision features, prefill logits and 16 decode steps of ``bundle`` vs transformers, from one random image."""
    vlm = bundle.modules["vlm"]
    assert [s.name for s in bundle.stages] == ["encoder", "projector", "llm-prefill", "llm-decode"]
    assert "not_supported" not in bundle.meta
    assert vlm.num_image_tokens == bundle.meta["image_tokens"] == num_image_tokens
    pixels = torch.randn(1, 3, vlm.image_size, vlm.image_size, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[1, 7] + [5] * num_image_tokens + [8, 9, 10]])
    with torch.no_grad():
        ref_features, got_features = hf_vision(pixels), vlm.encoder(pixels)
        assert ref_features.abs().max().item() > 0.1  # a live tower, not one initialised to ~0
        assert (got_features - ref_features).abs().max().item() < BOUND
        ref = hf_forward(ids, pixels)
        embeds = vlm.splice(ids, vlm.image_embeds(pixels))
        logits, state = vlm.lm.prefill(embeds=embeds, state=vlm.lm.init_state(ids.shape[1] + DECODE_STEPS + 1))
        assert (logits - ref.logits).abs().max().item() < BOUND

        def hf_step(tok, cache):
            out = hf_forward(tok[:, None], None, cache=cache)
            return out.logits[:, -1], out.cache

        assert _compare_decode(hf_step, vlm.lm, ref.cache, ref.logits, state) < BOUND
    encoder = bundle.stages[0]
    program = torch.export.export(encoder.module, encoder.example_inputs, strict=False)
    assert tuple(program.module()(pixels).shape) == tuple(got_features.shape)


# (position table, image side): the native 4x4 grid, a grid upsampled 4x4 -> 8x8, one shrunk 8x8 -> 4x4 (antialiased).
@pytest.mark.parametrize("num_patches,tile_size,side", [(16, None, 16), (16, 32, 32), (64, 16, 16)])
def test_lfm2_vl_full_model_matches_transformers(tmp_path, num_patches, tile_size, side):
    from transformers.models.lfm2_vl.image_processing_lfm2_vl import convert_image_to_patches

    hf = _lfm2_vl(tmp_path, num_patches, tile_size)
    bundle = from_pretrained(tmp_path)
    assert bundle.meta["image_size"] == side
    grid = side // 4

    def nf_inputs(pixels):  # transformers' NaFlex inputs for one image, every patch valid
        return dict(pixel_values=convert_image_to_patches(pixels, 4), spatial_shapes=torch.tensor([[grid, grid]]),
                    pixel_attention_mask=torch.ones(1, grid * grid, dtype=torch.bool))

    def hf_forward(ids, pixels, cache=None):
        extra = nf_inputs(pixels) if pixels is not None else {}
        return hf(input_ids=ids, cache=cache, use_cache=True, **extra)

    _check_vlm(bundle, lambda px: hf.model.vision_tower(**nf_inputs(px)).last_hidden_state, hf_forward, (grid // 2) ** 2)


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


def _fast_vlm(tmp_path):
    # FastViTHD (timm fastvit_mci3, reparameterized as released) shrunk to one block and <= 64 channels per stage.
    args = dict(layers=[1, 1, 1, 1, 1], embed_dims=[8, 16, 32, 32, 64], inference_mode=True)
    vision = dict(model_type="timm_wrapper", architecture="fastvit_mci3", hidden_size=128, do_pooling=False, model_args=args)
    text = dict(model_type="qwen2", vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    hf = transformers.FastVlmForConditionalGeneration(
        transformers.FastVlmConfig(vision_config=vision, text_config=text, image_token_id=5)).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # transformers initialises the reparameterized tower to ~0 outputs; give it live weights
        for p in hf.model.vision_tower.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    hf.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"crop_size": {"height": 128, "width": 128}}))
    return hf


def test_fast_vlm_full_model_matches_transformers(tmp_path):
    hf = _fast_vlm(tmp_path)
    bundle = from_pretrained(tmp_path)
    assert bundle.meta["image_size"] == 128  # 64x downsampling -> a 2x2 feature map -> 4 image tokens

    def hf_forward(ids, pixels, cache=None):
        return hf(input_ids=ids, pixel_values=pixels, cache=cache, use_cache=True)

    def hf_vision(pixels):
        return hf.model.vision_tower(pixels).last_hidden_state.flatten(2).transpose(1, 2)

    _check_vlm(bundle, hf_vision, hf_forward, 4)


@pytest.mark.parametrize("make,key,name", [
    (_lfm2_vl, "model.vision_tower.embeddings.patch_embedding.weight", "embeddings.patch_embedding.weight"),
    (_fast_vlm, "model.vision_tower.timm_model.final_conv.reparam_conv.weight", "backbone.final_conv.reparam_conv.weight"),
], ids=["lfm2_vl", "fast_vlm"])
def test_vision_tower_shape_mismatch_names_the_tensor(tmp_path, make, key, name):
    make(tmp_path)
    path = next(tmp_path.glob("*.safetensors"))
    state = load_file(str(path))
    assert key in state
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
    save_file(state, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"tensor '{name}' has shape"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("make,rename", [
    (_lfm2_vl, lambda k: k.replace("model.vision_tower.", "model.vision_tower.vision_model.")),
    (_fast_vlm, lambda k: k.replace("model.vision_tower.timm_model.", "model.vision_tower.")),
], ids=["lfm2_vl", "fast_vlm"])
def test_vision_tower_pre_transformers5_names_load(tmp_path, make, rename):
    """Checkpoints saved by transformers 4 name the tower's tensors differently; both layouts give one model."""
    make(tmp_path)
    new = from_pretrained(tmp_path).modules["vlm"]
    path = next(tmp_path.glob("*.safetensors"))
    save_file({rename(k): v for k, v in load_file(str(path)).items()}, str(path), metadata={"format": "pt"})
    old = from_pretrained(tmp_path).modules["vlm"]
    pixels = torch.randn(1, 3, new.image_size, new.image_size)
    with torch.no_grad():
        assert torch.equal(old.encoder(pixels), new.encoder(pixels))


@pytest.mark.parametrize("kind", ["fastvlm-qwen2", "lfm2-conv-only"])
def test_llm_stages_leave_out_state_that_holds_nothing(tmp_path, kind):
    """Qwen2 has no short convs (a [0, ...] conv state), an LFM2 of conv layers no KV cache: those parts are
    no stage input or output (QNN refuses a zero-sized tensor), and the stage still computes the LM: its
    outputs equal the LM's own prefill/decode with the full state (max abs err 0: same kernels), eager and
    exported."""
    if kind == "fastvlm-qwen2":
        _fast_vlm(tmp_path)
        gone = {"conv_state"}
    else:
        transformers.Lfm2ForCausalLM(_text_config(num_hidden_layers=2, layer_types=["conv", "conv"])).save_pretrained(tmp_path)
        gone = {"key_cache", "value_cache"}
    bundle = from_pretrained(tmp_path)
    pre, dec = [s for s in bundle.stages if s.name in ("llm-prefill", "llm-decode")]
    for stage, n_lead in ((pre, 2), (dec, 1)):
        assert not gone & {*stage.input_names, *stage.output_names}, stage.input_names
        assert len(stage.input_names) == len(stage.example_inputs) and all(t.numel() for t in stage.example_inputs)
        assert all(len(c) == len(stage.input_names) for c in stage.calibration or [])
        with torch.no_grad():
            outs = stage.module(*stage.example_inputs)
            kept = iter(stage.example_inputs[n_lead:])
            empty = stage.module.empty
            full = [torch.zeros(*empty[i][:1], dtype=empty[i][1]) if i in empty else next(kept) for i in range(4)]
            want = stage.module.stage(*stage.example_inputs[:n_lead], *full)  # PrefillStage / DecodeStage, full state
        assert len(outs) == len(stage.output_names) == len(want) - len(empty)
        assert all(torch.equal(g, w) for g, w in zip(outs, [want[0], *(t for i, t in enumerate(want[1:]) if i not in empty)]))
        program = torch.export.export(stage.module, stage.example_inputs, strict=False)
        assert all(torch.equal(g, w) for g, w in zip(program.module()(*stage.example_inputs), outs))
