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
    """A deep copy, so a pass never mutates its input."""
    return copy.deepcopy(gm)


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
    gm.register_buffer(name, value.detach().clone().contiguous())
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
