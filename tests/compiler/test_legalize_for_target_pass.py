"""legalize_for_target_pass: rewrites (outputs within max abs err 1e-5), rejection of unsupported ops."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.compiler.capture import capture
from edgevlm.compiler.passes import legalize_for_target_pass
from edgevlm.compiler.passes.base import lint, op_name
from edgevlm.core.stage import Stage
from edgevlm.errors import UnsupportedOpError
from edgevlm.targets import get_target

HTP = get_target("sa8295p")
CPU = get_target("cpu-x86_64")


def _ops(gm):
    return {op_name(n) for n in gm.graph.nodes if n.op == "call_function"}


class Attention(nn.Module):
    def __init__(self, causal: bool):
        super().__init__()
        self.qkv, self.causal = nn.Linear(16, 48), causal
        self.norm = nn.RMSNorm(16, eps=1e-6)

    def forward(self, x):
        q, k, v = self.qkv(self.norm(x)).view(1, 6, 3, 2, 8).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_and_rmsnorm_rewritten_for_htp(causal):
    model = Attention(causal).eval()
    x = torch.randn(1, 6, 16)
    gm = capture(Stage("s", model, (x,)))
    assert {"scaled_dot_product_attention", "rms_norm"} <= _ops(gm)
    result = legalize_for_target_pass.run(gm, HTP)
    lint(result.graph_module)
    assert result.changed
    ops = _ops(result.graph_module)
    assert "scaled_dot_product_attention" not in ops and "rms_norm" not in ops
    assert all(HTP.supports_op(o) for o in ops)
    with torch.no_grad():
        err = (result.graph_module(x) - model(x)).abs().max().item()
    assert err <= 1e-5, f"max abs err {err}"
    again = legalize_for_target_pass.run(result.graph_module, HTP)
    assert not again.changed


def test_cpu_target_keeps_fused_ops():
    gm = capture(Stage("s", Attention(False).eval(), (torch.randn(1, 6, 16),)))
    result = legalize_for_target_pass.run(gm, CPU)
    assert not result.changed
    assert "scaled_dot_product_attention" in _ops(result.graph_module)


class Inverse(nn.Module):
    def forward(self, x):
        return torch.linalg.inv(x @ x.transpose(-1, -2) + torch.eye(4))


def test_unsupported_op_names_op_and_target():
    gm = capture(Stage("s", Inverse(), (torch.randn(1, 4, 4),)))
    with pytest.raises(UnsupportedOpError) as info:
        legalize_for_target_pass.run(gm, HTP)
    msg = str(info.value)
    assert "linalg_inv" in msg and "sa8295p" in msg
    assert "test_legalize_for_target_pass.py" in msg  # points at the user's source line
    legalize_for_target_pass.run(gm, CPU)  # the CPU target runs it


def test_half_precision_rejected_on_integer_only_target():
    class Half(nn.Module):
        def forward(self, x):
            return (x.half() * 2).float()

    gm = capture(Stage("s", Half(), (torch.randn(4),)))
    with pytest.raises(UnsupportedOpError, match="half-precision"):
        legalize_for_target_pass.run(gm, HTP)


def test_repeat_interleave_becomes_expand_reshape():
    class GQA(nn.Module):
        def forward(self, k):
            return k.repeat_interleave(3, dim=1) * 2.0

    k = torch.randn(1, 2, 5, 4)
    gm = capture(Stage("s", GQA(), (k,)))
    result = legalize_for_target_pass.run(gm, HTP)
    lint(result.graph_module)
    assert "repeat_interleave" not in _ops(result.graph_module)
    assert torch.equal(result.graph_module(k), GQA()(k))  # max abs err 0: pure data movement
