"""fold_constants_pass: weight-only subgraphs become constants (outputs exact), random ops stay."""
import torch
from torch import nn

from edgevlm.compiler.capture import capture
from edgevlm.compiler.passes import fold_constants_pass
from edgevlm.compiler.passes.base import lint, op_name
from edgevlm.core.stage import Stage


class BiasTable(nn.Module):
    """EfficientViT-style attention bias: a table gathered by fixed indices."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(2, 7))
        self.register_buffer("idx", torch.randint(0, 7, (4, 4)), persistent=False)

    def forward(self, x):
        return x + self.table[:, self.idx] * 2.0


def _ops(gm):
    return [op_name(n) for n in gm.graph.nodes if n.op == "call_function"]


def test_index_on_constants_is_folded_exactly():
    model = BiasTable().eval()
    x = torch.randn(1, 2, 4, 4)
    gm = capture(Stage("s", model, (x,)))
    assert "index" in _ops(gm)
    result = fold_constants_pass.run(gm, None)
    lint(result.graph_module)
    assert result.changed and _ops(result.graph_module) == ["add"]
    with torch.no_grad():
        assert torch.equal(result.graph_module(x), model(x))  # max abs err 0: same arithmetic
    assert not fold_constants_pass.run(result.graph_module, None).changed


def test_input_dependent_and_random_ops_are_kept():
    class Noisy(nn.Module):
        def forward(self, x):
            return x * 3.0 + torch.rand(3)

    gm = capture(Stage("s", Noisy(), (torch.randn(3),)))
    before = _ops(gm)
    result = fold_constants_pass.run(gm, None)
    assert _ops(result.graph_module) == before
