"""An imported VLM calibrates on images with prompts (--calib DIR, or the built-in set) propagated through the float model."""
import pytest
import torch
from PIL import Image

from edgevlm._compat import import_timm
from edgevlm.compiler.pipeline import _vlm_calibration
from edgevlm.data.calibration_set import BUILTIN_SAMPLES
from edgevlm.models import from_pretrained

import_timm()
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_lfm2_vl(tmp_path_factory):
    path = tmp_path_factory.mktemp("lfm2vl")
    torch.manual_seed(0)
    text = transformers.Lfm2Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, block_multiple_of=8,
                                   layer_types=["conv", "full_attention"], max_position_embeddings=128)
    vision = dict(model_type="siglip2_vision_model", hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                  num_attention_heads=2, num_channels=3, num_patches=16, patch_size=4)
    cfg = transformers.Lfm2VlConfig(vision_config=vision, text_config=text.to_dict(), image_token_id=5,
                                    projector_hidden_size=40, downsample_factor=2)
    transformers.Lfm2VlForConditionalGeneration(cfg).eval().save_pretrained(path)
    return path


def test_calib_dir_feeds_every_stage_with_the_float_models_inputs(tiny_lfm2_vl, tmp_path):
    for name, color in (("a.png", "red"), ("b.png", "blue")):
        Image.new("RGB", (40, 30), color).save(tmp_path / name)
    (tmp_path / "a.txt").write_text("what color is this picture, tell me in many many words please")
    bundle = from_pretrained(tiny_lfm2_vl)
    vlm = bundle.modules["vlm"]
    source = _vlm_calibration(bundle, tmp_path, limit=8)
    assert source.startswith("2 images from") and "hashed token ids" in source  # this checkpoint has no tokenizer
    enc, proj, pre, dec = bundle.stages
    assert [len(s.calibration) for s in bundle.stages] == [2, 2, 2, 2]
    with torch.no_grad():  # each stage's samples are what the float model feeds it (max abs err 0)
        px = vlm.pixel_values(Image.new("RGB", (40, 30), "blue"))
        assert torch.equal(enc.calibration[1][0], px)
        tokens = vlm.encoder(px)
        assert torch.equal(proj.calibration[1][0], tokens)
        assert torch.equal(pre.calibration[1][0][:, 1:1 + vlm.num_image_tokens], vlm.projector(tokens))
    # The long prompt was cut to the prefill room; the zeroed state is one tensor shared by the samples.
    assert int(pre.calibration[0][1]) <= vlm.prefill_len
    assert pre.calibration[0][2] is pre.calibration[1][2]
    assert enc.example_inputs[0] is enc.calibration[0][0]


def test_builtin_set_when_no_dir_and_zoo_models_keep_theirs(tiny_lfm2_vl):
    bundle = from_pretrained(tiny_lfm2_vl)
    assert _vlm_calibration(bundle, None, limit=32).startswith(f"built-in set: {BUILTIN_SAMPLES}")
    assert len(bundle.stages[2].calibration) == BUILTIN_SAMPLES
    from edgevlm.models import build_model

    zoo = build_model("autoneural-nano")
    before = [len(s.calibration) for s in zoo.stages]
    assert _vlm_calibration(zoo, None, limit=32) is None and [len(s.calibration) for s in zoo.stages] == before
