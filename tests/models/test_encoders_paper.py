"""casvit and lsnet, written here from their papers: parameter counts match the papers' tables, SKA is exact."""
import pytest
import torch
import torch.nn.functional as F

from edgevlm.models.arch.encoders import casvit, lsnet


def _params(module):
    return sum(p.numel() for p in module.parameters())


def test_casvit_xs_matches_paper_parameter_count():
    """CAS-ViT-XS: 3.20M params (paper Table 1 / reference model zoo), counted as the reference
    classifier: 1000-class head plus its distillation head (the reference default)."""
    model = casvit.CASViT(**casvit.SIZES["xs"].config, num_classes=1000, distillation=True)
    assert round(_params(model) / 1e6, 2) == 3.20


def test_lsnet_t_matches_paper_parameter_count():
    """LSNet-T: 11.4M params (paper Table / reference README), counted with its 1000-class BN+Linear head."""
    model = lsnet.LSNet(**lsnet.SIZES["t"].config, num_classes=1000)
    assert round(_params(model) / 1e6, 1) == 11.4


def test_small_kernel_aggregation_equals_per_pixel_dynamic_conv():
    """SKA (9 shifted slices) vs an unfold reference of the per-pixel 3x3 dynamic conv; metric max abs err <= 1e-5."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 5, 7, generator=g)
    w = torch.randn(2, 2, 9, 5, 7, generator=g)  # 2 kernel groups: channel c uses kernel c mod 2
    patches = F.unfold(x, 3, padding=1).view(2, 16, 9, 5, 7)
    want = (patches * w[:, torch.arange(16) % 2]).sum(2)
    assert (lsnet.small_kernel_aggregation(x, w) - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family,size", [(casvit, "xs"), (lsnet, "t")])
def test_reference_variant_runs_at_224(family, size):
    torch.manual_seed(0)
    enc = family.FAMILY.build(dict(family.SIZES[size].config), 224).eval()
    with torch.no_grad():
        y = enc(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 49 if family is casvit else 16, enc.out_dim) and torch.isfinite(y).all()
