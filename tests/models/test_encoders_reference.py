"""Reference sizes (timm's and the papers'): build for real, check parameter counts, run once. Slow: up to 400M params."""
import pytest
import torch

from edgevlm._compat import import_timm
from edgevlm.models.arch.encoders import build_encoder, get_family, list_encoders

TIMM_NAMES = {
    ("mobilenetv5", "300m"): "mobilenetv5_300m_enc",
    ("fastvithd", "mci3"): "fastvit_mci3",
    **{("efficientvit-m", f"m{i}"): f"efficientvit_m{i}" for i in range(6)},
    ("vit", "base"): "vit_base_patch16_siglip_224",
    ("vit", "so400m"): "vit_so400m_patch14_siglip_224",
}
# The papers' figures (classifier heads included) are checked in test_encoders_paper.py.
PAPER_SIZES = [("casvit", s) for s in ("xs", "s", "m", "t")] + [("lsnet", s) for s in ("t", "s", "b")]
CASES = list(TIMM_NAMES) + PAPER_SIZES


@pytest.mark.slow
@pytest.mark.parametrize("name,size", CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_reference_size_builds_and_param_count_matches(name, size):
    torch.manual_seed(0)
    default_side = get_family(name).sizes[size].image_size
    # mobilenetv5/fastvithd parameters do not depend on the input size: run them at 256 px to keep this minutes, not hours.
    side = 256 if default_side > 256 else default_side
    enc = build_encoder(name, size, image_size=side)
    params = sum(p.numel() for p in enc.parameters())
    listed = next(r for r in list_encoders(sizes=(size,)) if r["name"] == name)
    assert params == listed["params"]
    if (name, size) in TIMM_NAMES:
        ref = import_timm().create_model(TIMM_NAMES[name, size], pretrained=False, num_classes=0)
        skip = get_family(name).checkpoint_ignore
        assert params == sum(p.numel() for k, p in ref.named_parameters() if not k.startswith(skip))
    with torch.no_grad():
        y = enc(torch.randn(1, 3, side, side))
    assert y.shape == (1, enc.num_tokens, enc.out_dim) and torch.isfinite(y).all()
