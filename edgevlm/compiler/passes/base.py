"""The Pass interface and graph helpers shared by passes.

A pass is a module in this package defining ``run(gm, target) -> PassResult``:
pure (the input graph module is not modified) and idempotent (running it on
its own output changes nothing).
"""
import copy
from dataclasses import dataclass

import torch

from edgevlm.ops import node_op_name as op_name  # noqa: F401 - the passes' name for it


@dataclass
class PassResult:
    graph_module: torch.fx.GraphModule
    changed: bool


def fresh_copy(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of the graph and its modules, so a pass never mutates its input.

    The tensors are shared, not copied: passes never write one in place (a new
    value joins through :func:`add_constant`).  A deep copy of each weight per
    pass held four copies of an LLM stage's weights at once (LFM2-350M: 2.5 ->
    8.8 GB resident, benchmarks/compile_scale.py).
    """
    memo = {}
    for module in gm.modules():
        for t in (*module._parameters.values(), *module._buffers.values(), *vars(module).values()):
            if isinstance(t, torch.Tensor):
                memo[id(t)] = t
    return copy.deepcopy(gm, memo)


def get_constant(gm: torch.fx.GraphModule, node) -> torch.Tensor | None:
    """The tensor behind a ``get_attr`` node, or None if ``node`` is not a constant."""
    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return None
    obj = gm
    for part in node.target.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, torch.Tensor) else None


def add_constant(gm: torch.fx.GraphModule, base_name: str, value: torch.Tensor) -> str:
    """Register ``value`` as a buffer under a name derived from ``base_name`` (deterministic)."""
    name, i = base_name.replace(".", "_"), 0
    while hasattr(gm, name):
        i += 1
        name = f"{base_name.replace('.', '_')}_{i}"
    # No copy of a value that is already a contiguous tensor: a weight's reshaped view (linear_to_conv's
    # 1x1-conv kernels) shares the float model's memory instead of doubling it.
    gm.register_buffer(name, value.detach().contiguous())
    return name


def lint(gm: torch.fx.GraphModule) -> None:
    """Check graph invariants after a pass, drop unreferenced constants, regenerate code."""
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in list(gm.named_buffers(recurse=False)) + list(gm.named_parameters(recurse=False)):
        if name not in used:
            delattr(gm, name)
    gm.delete_all_unused_submodules()
    gm.recompile()
