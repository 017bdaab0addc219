"""Every encoder family: builds by name, returns a token grid, exports at static shape, rejects bad names."""
import pytest
import torch

from edgevlm.errors import InputError, UnknownNameError
from edgevlm.models.arch.encoders import ENCODER_NAMES, build_encoder, get_family, list_encoders


def randomize_norms(module: torch.nn.Module) -> None:
    """Random norm scales/shifts and BN statistics: zero-initialised residual branches must not hide a mismatch."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.fixture(scope="module", params=ENCODER_NAMES)
def nano(request):
    torch.manual_seed(0)
    encoder = build_encoder(request.param, "nano")
    randomize_norms(encoder)
    return encoder


def test_nano_returns_token_grid_with_declared_attributes(nano):
    x = torch.randn(2, 3, nano.image_size, nano.image_size)
    with torch.no_grad():
        y = nano(x)
    assert y.shape == (2, nano.num_tokens, nano.out_dim)
    assert torch.isfinite(y).all()
    assert len(nano.mean) == len(nano.std) == 3
    assert nano.size == "nano" and nano.encoder_name in ENCODER_NAMES
    params = sum(p.numel() for p in nano.parameters())
    assert 100_000 <= params <= 2_500_000, f"nano should be tiny, has {params} params"


def test_nano_exports_and_matches_eager(nano):
    """torch.export at static shape; metric: max abs err of the exported module vs eager <= 1e-5."""
    x = torch.randn(1, 3, nano.image_size, nano.image_size, generator=torch.Generator().manual_seed(1))
    program = torch.export.export(nano, (x,))
    with torch.no_grad():
        err = (program.module()(x) - nano(x)).abs().max().item()
    assert err <= 1e-5


def test_image_size_override_changes_token_count():
    torch.manual_seed(0)
    enc = build_encoder("mobilenetv5", "nano", image_size=256)
    assert enc.image_size == 256 and enc.num_tokens == 4 * build_encoder("mobilenetv5", "nano").num_tokens
    with torch.no_grad():
        assert enc(torch.randn(1, 3, 256, 256)).shape[1] == enc.num_tokens


def test_unknown_name_and_size_list_the_valid_ones():
    with pytest.raises(UnknownNameError, match="mobilenetv5"):
        build_encoder("resnet50")
    with pytest.raises(UnknownNameError, match="nano"):
        build_encoder("mobilenetv5", "huge")
    with pytest.raises(InputError, match="multiple of"):
        build_encoder("mobilenetv5", "nano", image_size=100)


def test_every_family_has_demo_sizes_and_list_encoders_covers_them():
    rows = list_encoders(sizes=("nano", "small"))
    for name in ENCODER_NAMES:
        assert {"nano", "small"} <= set(get_family(name).sizes)
    assert {(r["name"], r["size"]) for r in rows} == {(n, s) for n in ENCODER_NAMES for s in ("nano", "small")}
    for r in rows:
        assert r["params"] > 0 and r["macs"] > 0 and r["tokens"] > 0 and r["out_dim"] > 0
    nano = {r["name"]: r for r in rows if r["size"] == "nano"}
    small = {r["name"]: r for r in rows if r["size"] == "small"}
    assert all(small[n]["params"] > nano[n]["params"] for n in ENCODER_NAMES)


def test_mac_count_of_a_conv_and_a_linear_is_exact():
    from edgevlm.models.arch.flops import count_macs

    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    assert count_macs(conv, torch.zeros(1, 8, 10, 10)) == 16 * 8 * 9 * 10 * 10
    lin = torch.nn.Linear(32, 24)
    assert count_macs(lin, torch.zeros(5, 32)) == 5 * 32 * 24


def test_encoder_models_are_deterministic_single_stage_bundles():
    from edgevlm.models import build_model, list_models

    names = {m.name for m in list_models() if m.name.startswith("enc-")}
    assert names == {f"enc-{n}-nano" for n in ENCODER_NAMES}
    a, b = build_model("enc-casvit-nano"), build_model("enc-casvit-nano")
    (stage,) = a.stages
    assert stage.kind == "encoder" and stage.input_names == ("pixel_values",) and stage.output_names == ("tokens",)
    assert torch.equal(stage.example_inputs[0], b.stages[0].example_inputs[0])
    for (k, v), (_, w) in zip(a.modules["encoder"].state_dict().items(), b.modules["encoder"].state_dict().items()):
        assert torch.equal(v, w), k
    assert a.meta["macs"] > 0 and a.meta["tokens"] == stage.module.num_tokens
