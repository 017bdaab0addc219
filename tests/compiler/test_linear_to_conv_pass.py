"""linear_to_conv_pass: linear -> reshape / 1x1 conv2d / reshape on HTP targets (max abs err 1e-5)."""
import torch
from torch import nn

from edgevlm.compiler.capture import capture
from edgevlm.compiler.passes import linear_to_conv_pass
from edgevlm.compiler.passes.base import lint, op_name
from edgevlm.core.stage import Stage
from edgevlm.targets import get_target
from edgevlm.compiler.estimate import count_ops

HTP = get_target("sa8295p")


def _ops(gm):
    return [op_name(n) for n in gm.graph.nodes if n.op == "call_function"]


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(16, 32), nn.Linear(32, 8, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def test_linears_become_1x1_convs_with_same_outputs():
    model, x = MLP().eval(), torch.randn(2, 5, 16)
    gm = capture(Stage("s", model, (x,)))
    result = linear_to_conv_pass.run(gm, HTP)
    lint(result.graph_module)
    assert result.changed
    ops = _ops(result.graph_module)
    assert "linear" not in ops and ops.count("conv2d") == 2
    assert "linear" in _ops(gm)  # pure: the input graph is untouched
    weights = [b for name, b in result.graph_module.named_buffers() if b.dim() == 4]
    assert sorted(tuple(w.shape) for w in weights) == [(8, 32, 1, 1), (32, 16, 1, 1)]
    with torch.no_grad():
        err = (result.graph_module(x) - model(x)).abs().max().item()
    assert err <= 1e-5, f"max abs err {err}"
    assert not linear_to_conv_pass.run(result.graph_module, HTP).changed  # idempotent


def test_targets_without_htp_keep_linear():
    gm = capture(Stage("s", MLP().eval(), (torch.randn(1, 3, 16),)))
    for name in ("cpu-x86_64", "apple-a17pro"):
        result = linear_to_conv_pass.run(gm, get_target(name))
        assert not result.changed and "linear" in _ops(result.graph_module)


def test_every_htp_target_gets_conv():
    """snapdragon-8-gen3 runs float graphs too, but its int4 weights are QNN's: per channel only on Conv."""
    gm = capture(Stage("s", MLP().eval(), (torch.randn(1, 3, 16),)))
    result = linear_to_conv_pass.run(gm, get_target("snapdragon-8-gen3"))
    assert result.changed and "linear" not in _ops(result.graph_module) and "conv2d" in _ops(result.graph_module)


def test_linear_with_computed_weight_is_kept():
    class Gram(nn.Module):
        def forward(self, x, w):
            return nn.functional.linear(x, w * 2.0)

    gm = capture(Stage("s", Gram(), (torch.randn(3, 4), torch.randn(6, 4))))
    result = linear_to_conv_pass.run(gm, HTP)
    assert not result.changed and "linear" in _ops(result.graph_module)


def test_estimator_counts_the_same_macs():
    """The 1x1 convs count M*N*K MACs, as the linears did (exact)."""
    model, x = MLP().eval(), torch.randn(2, 5, 16)
    gm = capture(Stage("s", model, (x,)))
    before = count_ops(gm, (x,))
    after = count_ops(linear_to_conv_pass.run(gm, HTP).graph_module, (x,))
    macs = lambda counts, cls: sum(c.macs for c in counts if c.op_class == cls)  # noqa: E731
    assert macs(before, "matmul") == 10 * (16 * 32 + 32 * 8)
    assert macs(after, "conv") == macs(before, "matmul") and macs(after, "matmul") == 0
