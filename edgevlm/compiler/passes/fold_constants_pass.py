"""Evaluate ops whose inputs are all constants and store the result as a constant.

    op(const_a, const_b, literal) -> const_c   (computed once at compile time)

Models compute some tensors from weights alone: attention-bias tables
gathered by fixed indices (EfficientViT, LSNet), rotary tables, masks.  On an
NPU that is wasted work and often an op the target lacks (``index``).
Random and side-effecting ops are never folded; results larger than
``MAX_FOLDED_ELEMENTS`` are left alone so folding cannot bloat the model.
"""
import torch

from edgevlm.compiler.passes.base import PassResult, add_constant, fresh_copy, get_constant

MAX_FOLDED_ELEMENTS = 1 << 22


def _foldable(node: torch.fx.Node) -> bool:
    target = node.target
    if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
        return False
    if torch.Tag.nondeterministic_seeded in target.tags or target._schema.is_mutable:
        return False
    return bool(node.all_input_nodes)  # creation ops with no inputs (arange, zeros) stay: they are cheap


def run(gm: torch.fx.GraphModule, target=None) -> PassResult:
    gm = fresh_copy(gm)
    changed = False
    for node in list(gm.graph.nodes):
        if not _foldable(node):
            continue
        values = {n: get_constant(gm, n) for n in node.all_input_nodes}
        if any(v is None for v in values.values()):
            continue
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
        with torch.no_grad():
            result = node.target(*args, **kwargs)
        if not isinstance(result, torch.Tensor) or result.numel() > MAX_FOLDED_ELEMENTS:
            continue
        with gm.graph.inserting_before(node):
            const = gm.graph.get_attr(add_constant(gm, f"folded_{node.name}", result))
        const.meta = dict(node.meta)
        node.replace_all_uses_with(const)
        gm.graph.erase_node(node)
        changed = True
    return PassResult(gm, changed)
