"""fold_batchnorm_pass: BN disappears, outputs agree (max abs err <= 1e-5), idempotent, pure."""
import torch
from torch import nn

from edgevlm.compiler.capture import capture
from edgevlm.compiler.passes import fold_batchnorm_pass
from edgevlm.compiler.passes.base import lint, op_name
from edgevlm.core.stage import Stage
from edgevlm.targets import get_target


BN_OPS = ("batch_norm", "_native_batch_norm_legit_no_training")


def _ops(gm):
    return [op_name(n) for n in gm.graph.nodes if n.op == "call_function"]


def _n_bn(gm):
    return sum(_ops(gm).count(b) for b in BN_OPS)


class ConvBN(nn.Module):
    def __init__(self, bias: bool):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1, bias=bias)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(8), nn.BatchNorm2d(8)
        for bn in (self.bn1, self.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.5, 0.5)

    def forward(self, x):
        return self.bn2(self.dw(torch.relu(self.bn1(self.conv(x)))))


def _captured(module, channels=4):
    x = torch.randn(2, channels, 16, 16)
    return capture(Stage("s", module.eval(), (x,))), x


def test_folds_all_batchnorms_and_preserves_outputs():
    for bias in (False, True):
        model = ConvBN(bias)
        gm, x = _captured(model)
        assert _n_bn(gm) == 2
        result = fold_batchnorm_pass.run(gm, get_target("sa8295p"))
        lint(result.graph_module)
        assert result.changed
        assert _n_bn(result.graph_module) == 0
        with torch.no_grad():
            err = (result.graph_module(x) - model(x)).abs().max().item()
        assert err <= 1e-5, f"max abs err {err}"


def test_idempotent_and_pure():
    gm, _ = _captured(ConvBN(False))
    before = _ops(gm)
    first = fold_batchnorm_pass.run(gm, None)
    assert _ops(gm) == before, "the pass modified its input graph"
    second = fold_batchnorm_pass.run(first.graph_module, None)
    assert not second.changed
    assert _ops(second.graph_module) == _ops(first.graph_module)


def test_batchnorm_with_other_users_of_conv_is_kept():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # conv output used twice: folding would change the skip path

    gm, x = _captured(Branch(), channels=3)
    result = fold_batchnorm_pass.run(gm, None)
    assert not result.changed
    assert _n_bn(result.graph_module) == 1
