"""Zoo VLMs: four stages at static shape, splicing, stateful generation, save/load, shipped weights."""
import json

import pytest
import torch

from edgevlm.errors import CheckpointError
from edgevlm.models import DEFAULT_MODEL, build_model
from edgevlm.models.zoo.vlms import save_model


@pytest.fixture(scope="module")
def bundle():
    return build_model("autoneural-nano")


def test_bundle_stages_and_modules(bundle):
    assert [(s.name, s.kind) for s in bundle.stages] == [
        ("encoder", "encoder"), ("projector", "projector"), ("llm-prefill", "llm"), ("llm-decode", "llm")]
    assert set(bundle.modules) == {"vlm", "tokenizer"}
    vlm = bundle.modules["vlm"]
    enc, proj, pre, dec = bundle.stages
    assert enc.example_inputs[0].shape == (1, 3, vlm.image_size, vlm.image_size)
    assert proj.example_inputs[0].shape == (1, vlm.num_image_tokens, vlm.encoder.out_dim)
    assert pre.example_inputs[0].shape == (1, vlm.prefill_len, vlm.lm.hidden_size)
    assert dec.example_inputs[0].shape == (1, 1)
    assert all(len(s.calibration) == 8 for s in bundle.stages)
    assert len(pre.input_names) == len(pre.example_inputs) and len(dec.output_names) == 5


def test_llm_stages_export(bundle):
    # metric: exported vs eager outputs, max abs err 0 (same kernels)
    for stage in bundle.stages[2:]:
        program = torch.export.export(stage.module, stage.example_inputs, strict=False)
        for got, want in zip(program.module()(*stage.example_inputs), stage.module(*stage.example_inputs)):
            assert torch.equal(got, want)


def test_splice_places_image_tokens_in_order(bundle):
    vlm = bundle.modules["vlm"]
    n, h = vlm.num_image_tokens, vlm.lm.hidden_size
    image = torch.randn(1, n, h)
    ids = torch.tensor([[1] + [vlm.image_token_id] * n + [7, 8]])
    out = vlm.splice(ids, image)
    assert torch.equal(out[0, 1:1 + n], image[0])
    assert torch.equal(out[0, n + 1:], vlm.lm.embed(torch.tensor([7, 8])))


def test_generation_agrees_with_teacher_forced_forward(bundle):
    # Greedy tokens from prefill + decode (explicit state) are the argmax of the stateless forward.
    from edgevlm.data.shapes import make_sample

    vlm, tok = bundle.modules["vlm"], bundle.modules["tokenizer"]
    s = make_sample(7, 0, vlm.image_size)
    px = vlm.pixel_values(s.image)
    ids = vlm.prompt_ids(tok.encode(s.prompt), tok.bos_id)
    with torch.no_grad():
        out = vlm.generate(vlm.image_embeds(px), ids, tok.eos_id)
        full = vlm(px, torch.tensor([ids + out]))
    assert full[0, len(ids) - 1:].argmax(-1).tolist()[: len(out)] == out


def test_save_and_load_roundtrip(bundle, tmp_path):
    vlm, tok = bundle.modules["vlm"], bundle.modules["tokenizer"]
    save_model(vlm, bundle.meta["config"], tmp_path / "m", tok)
    again = build_model(str(tmp_path / "m"))
    px, ids = torch.rand(1, 3, vlm.image_size, vlm.image_size), torch.tensor([[1] + [3] * vlm.num_image_tokens + [9]])
    with torch.no_grad():
        assert torch.equal(again.modules["vlm"](px, ids), vlm(px, ids))


def test_bad_saved_models(bundle, tmp_path):
    vlm, tok = bundle.modules["vlm"], bundle.modules["tokenizer"]
    d = save_model(vlm, bundle.meta["config"], tmp_path / "m", tok)
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read weights"):
        build_model(str(d))
    d = save_model(vlm, bundle.meta["config"], tmp_path / "n", tok)
    cfg = json.loads((d / "config.json").read_text())
    del cfg["encoder"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model config lacks or mistypes 'encoder'"):
        build_model(str(d))


def test_shipped_default_model_is_trained():
    # metric: exact-match accuracy of greedy answers on 50 samples of a seed not used in training (4242).
    # Bound: the 0.90 (the shipped fp16 weights measured 1.000 on seed 12345 and on seed 4242, n=500;
    # an untrained model answers almost none).
    from edgevlm.data.evaluate import evaluate
    from edgevlm.models.arch.vlm import make_answerer

    assert DEFAULT_MODEL == "autoneural-nano"
    default = build_model()
    assert default.meta["trained"]
    result = evaluate(make_answerer(default.modules["vlm"], default.modules["tokenizer"]), n=50, seed=4242,
                      image_size=default.modules["vlm"].image_size)
    assert result["exact_match"] >= 0.90, result
