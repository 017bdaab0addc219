"""Rewrite linear layers as 1x1 convolutions on Qualcomm HTP targets.

    linear(x, W, b) -> reshape(conv2d(reshape(x, [M, K, 1, 1]), W[:, :, None, None], b), [..., N])
    x [..., K], W [N, K], M = prod(x.shape[:-1])

Why: Qualcomm's QNN quantizes a MatMul's weight per tensor only, but a
Conv's weight per output channel.  At 4 bits one scale for a whole matrix
loses most layers' small rows; with one scale per output row the int4 grid
fits each row (the 1x1-conv form of linear layers that Qualcomm's own LLM
recipes use).  The result is the same arithmetic: M rows of K inputs, each
meeting N filters of K weights.

Only linears whose weight (and bias, if any) is a graph constant are
rewritten; a linear whose weight is computed at run time is left as it is.
The pass runs for the targets with a Hexagon HTP (``target.htp``), whose
graphs QNN quantizes: on snapdragon-8-gen3, which also allows float graphs,
its int4 LLM stages measured 16.6 / 22.9 dB (prefill / decode, onnxruntime
CPU) without it.  On other targets it changes nothing.
"""
import math

import torch

from edgevlm.compiler.passes.base import PassResult, add_constant, fresh_copy, get_constant, op_name

aten = torch.ops.aten


def applies_to(target) -> bool:
    """True for Hexagon HTP targets (QNN quantizes their Conv weights per channel, MatMul weights per tensor)."""
    return target is not None and target.htp is not None and target.supports_op("conv2d")


def _rewrite_linear(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    x, w_node, *rest = node.args
    b_node = rest[0] if rest else node.kwargs.get("bias")
    weight = get_constant(gm, w_node)
    bias = get_constant(gm, b_node) if b_node is not None else None
    val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
    if weight is None or weight.dim() != 2 or (b_node is not None and bias is None) or not isinstance(val, torch.Tensor):
        return False
    lead = [int(d) for d in val.shape[:-1]]
    k, n = int(val.shape[-1]), weight.shape[0]
    if weight.shape[1] != k:
        return False
    g = gm.graph
    with g.inserting_before(node):
        conv_w = g.get_attr(add_constant(gm, f"{w_node.target}_conv1x1", weight.reshape(n, k, 1, 1)))
        x4 = g.call_function(aten.reshape.default, (x, [math.prod(lead), k, 1, 1]))
        y = g.call_function(aten.conv2d.default, (x4, conv_w, b_node))
        out = g.call_function(aten.reshape.default, (y, lead + [n]))
    node.replace_all_uses_with(out)
    g.erase_node(node)
    return True


def run(gm: torch.fx.GraphModule, target) -> PassResult:
    gm = fresh_copy(gm)
    if not applies_to(target):
        return PassResult(gm, False)
    changed = False
    for node in list(gm.graph.nodes):
        if op_name(node) == "linear":
            changed |= _rewrite_linear(gm, node)
    return PassResult(gm, changed)
