"""A checkpoint's tokenizer, chat template and image processing (edgevlm.models.hf.processing) vs transformers' processor.

Checkpoints: benchmarks/hf_checkpoints.py's tiny LFM2-VL-450M and FastVLM-0.5B
(same structure, tokenizer and processors as the published sizes, small dims).
Metrics: prompt ids equal transformers' (processor(images, apply_chat_template(...)));
pixel values max abs err <= 1e-6 vs the processor's at the build's image size.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgevlm._compat import import_timm
from edgevlm.errors import CheckpointError
from edgevlm.models import from_pretrained

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import hf_checkpoints  # noqa: E402

import_timm()  # the torchvision shim transformers' image processors need here
transformers = pytest.importorskip("transformers")

NAMES = ("lfm2-vl-450m", "fastvlm-0.5b")


@pytest.fixture(scope="module", params=NAMES)
def tiny(request, tmp_path_factory):
    return hf_checkpoints.write_checkpoint(request.param, tmp_path_factory.mktemp(request.param) / "ckpt", tiny=True)


def _image(side, seed=0, shape=None):
    h, w = shape or (side, side)
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def _hf_inputs(ckpt, image, prompt, system=None):
    proc = transformers.AutoProcessor.from_pretrained(ckpt)
    conv = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    return proc(images=[image], text=text, return_tensors="pt")


@pytest.mark.parametrize("prompt,system", [("What is in this image?", None), ("Count the circles, then say 1, 2 or 3.", None),
                                           ("Describe it.", "You are a careful assistant.")])
def test_prompt_ids_equal_transformers_processor(tiny, prompt, system):
    bundle = from_pretrained(tiny)
    processing, n = bundle.modules["processing"], bundle.meta["image_tokens"]
    want = _hf_inputs(tiny, _image(bundle.meta["image_size"]), prompt, system)["input_ids"][0].tolist()
    assert processing.prompt_ids(prompt, n, system) == want
    assert want.count(processing.tokenizer.image_id) == n


def test_pixels_equal_transformers_processor(tiny):
    """At the build's size: max abs err <= 1e-6 (LFM2-VL compared as the processor's 16 px patches)."""
    bundle = from_pretrained(tiny)
    side, image = bundle.meta["image_size"], _image(bundle.meta["image_size"], seed=3)
    ours = bundle.modules["processing"].image(image)
    ref = _hf_inputs(tiny, image, "hi")["pixel_values"].numpy()
    if bundle.meta["model_type"] == "lfm2_vl":
        from transformers.models.lfm2_vl.image_processing_lfm2_vl import convert_image_to_patches
        import torch

        ours = convert_image_to_patches(torch.from_numpy(ours), 16).numpy()
        ref = ref[:, : ours.shape[1]]
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-6


def test_fastvlm_crops_a_non_square_image_as_clip_does(tmp_path):
    """Shortest edge to the crop size, then the centre crop (bicubic): max abs err vs CLIPImageProcessor <= 0.02
    (PIL's and torchvision's bicubic differ by a few grey levels at most; the crop window must be the same)."""
    ckpt = hf_checkpoints.write_checkpoint("fastvlm-0.5b", tmp_path / "c", tiny=True)
    bundle = from_pretrained(ckpt)
    image = _image(0, seed=5, shape=(200, 300))
    ours = bundle.modules["processing"].image(image)
    ref = _hf_inputs(ckpt, image, "hi")["pixel_values"].numpy()
    assert ours.shape == ref.shape == (1, 3, 128, 128)
    assert np.abs(ours - ref).max() <= 0.02


def test_both_tensor_layouts_give_one_model(tmp_path):
    """--layout transformers4 (tower under vision_model. / without timm_model.) loads to the same weights."""
    import torch

    for name in NAMES:
        a = from_pretrained(hf_checkpoints.write_checkpoint(name, tmp_path / name, tiny=True))
        b = from_pretrained(hf_checkpoints.write_checkpoint(name, tmp_path / (name + "-t4"), tiny=True, layout="transformers4"))
        sa, sb = a.modules["vlm"].state_dict(), b.modules["vlm"].state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_published_configs_have_the_published_shapes():
    """The three configs as published: LFM2-350M / 1.2B text (attention at 2,5,8,10,12,14), SigLIP2 base / so400m,
    Qwen2-0.5B under FastViTHD."""
    c450 = hf_checkpoints.lfm2_vl_config("lfm2-vl-450m", tiny=False)
    c16 = hf_checkpoints.lfm2_vl_config("lfm2-vl-1.6b", tiny=False)
    attn = [i for i, t in enumerate(c450["text_config"]["layer_types"]) if t == "full_attention"]
    assert attn == [2, 5, 8, 10, 12, 14] and c450["text_config"]["hidden_size"] == 1024
    assert c450["vision_config"]["hidden_size"] == 768 and c16["vision_config"]["hidden_size"] == 1152
    assert c16["text_config"]["hidden_size"] == 2048
    fv = hf_checkpoints.fast_vlm_config(False, 151936, 151646)
    assert fv["text_config"]["hidden_size"] == 896 and fv["vision_config"]["architecture"] == "fastvit_mci3"


# -- bad input: one CheckpointError naming the file and the fix -------------------------------------------------

def _break(ckpt: Path, what: str):
    if what == "tokenizer garbage":
        (ckpt / "tokenizer.json").write_text("{not json")
    elif what == "no chat template":
        (ckpt / "chat_template.jinja").unlink()
        for name in ("tokenizer_config.json", "processor_config.json"):
            if (ckpt / name).is_file():
                cfg = json.loads((ckpt / name).read_text())
                cfg.pop("chat_template", None)
                (ckpt / name).write_text(json.dumps(cfg))
    elif what == "template syntax":
        (ckpt / "chat_template.jinja").write_text("{% for m in messages %}{{ m['role'] }")
    elif what == "preprocessor garbage":
        (ckpt / "preprocessor_config.json").write_text("[1, 2")
    elif what == "preprocessor std zero":
        cfg = json.loads((ckpt / "preprocessor_config.json").read_text())
        cfg["image_std"] = [0.5, 0.0, 0.5]
        (ckpt / "preprocessor_config.json").write_text(json.dumps(cfg))
    elif what == "no eos token":
        cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
        cfg["eos_token"] = "<|no_such_token|>"
        (ckpt / "tokenizer_config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("what,match", [
    ("tokenizer garbage", r"cannot read tokenizer .*tokenizer\.json.*fix: restore the checkpoint's tokenizer\.json"),
    ("no chat template", r"has no chat template.*fix: copy the model's chat_template\.jinja"),
    ("template syntax", r"chat template .* is not valid jinja.*fix: restore"),
    ("preprocessor garbage", r"cannot read .*preprocessor_config\.json.*fix: fix or remove preprocessor_config\.json"),
    ("preprocessor std zero", r"image_std \[0\.5, 0\.0, 0\.5\] has a zero"),
    ("no eos token", r"has no eos token '<\|no_such_token\|>'.*fix: use the checkpoint's original tokenizer"),
])
def test_broken_processing_files_name_cause_and_fix(tmp_path, what, match):
    ckpt = hf_checkpoints.write_checkpoint("lfm2-vl-450m", tmp_path / "c", tiny=True)
    _break(ckpt, what)
    with pytest.raises(CheckpointError, match=match):
        from_pretrained(ckpt)


def test_without_tokenizer_the_bundle_says_why_it_has_no_runtime_package(tmp_path):
    ckpt = hf_checkpoints.write_checkpoint("fastvlm-0.5b", tmp_path / "c", tiny=True)
    (ckpt / "tokenizer.json").unlink()
    bundle = from_pretrained(ckpt)
    assert "tokenizer" not in bundle.modules
    assert "has no tokenizer.json" in bundle.meta["runtime_bundle"]["cause"]


def test_max_context_too_small_for_the_image_is_an_input_error(tiny):
    from edgevlm.errors import InputError

    bundle = from_pretrained(tiny, max_context=40)
    assert bundle.meta["max_context"] == 40 and bundle.modules["vlm"].max_len == 40
    with pytest.raises(InputError, match=r"--max-context 5 does not fit .*use --max-context >= \d+"):
        from_pretrained(tiny, max_context=5)
