"""Legalize a graph for its target: rewrite ops the target lacks, reject the rest.

Rewrites are data: ``RULES`` maps an ATen op name to a function that replaces
one node with ops the target accepts.  After rewriting, any op still outside
``target.supported_ops`` raises UnsupportedOpError naming the op, the target
and the model source line that produced it.  Integer-only targets also reject
half-precision tensors.

    scaled_dot_product_attention(q, k, v) -> softmax(q @ k^T * scale + mask) @ v
    rms_norm(x, shape, w, eps)           -> x * rsqrt(mean(x^2) + eps) * w
    linalg_vector_norm(x, 2, dims)       -> sqrt(sum(x * x, dims))
    repeat_interleave(x, r, d)           -> reshape(expand(unsqueeze(x, d+1)))
    view(x, shape)                       -> reshape(x, shape)   (only after a rewrite)
"""
import math

import torch

from edgevlm.compiler.passes.base import PassResult, add_constant, fresh_copy, op_name
from edgevlm.errors import UnsupportedOpError

aten = torch.ops.aten


def _shape(node):
    val = node.meta.get("val")
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _rewrite_sdpa(gm, node):
    """Explicit attention; QNN and Core ML have no fused SDPA op."""
    q, k, v, *rest = node.args
    kw = dict(zip(("attn_mask", "dropout_p", "is_causal"), rest)) | dict(node.kwargs)
    if kw.get("dropout_p", 0.0) or kw.get("enable_gqa", False):
        return False
    qs, ks = _shape(q), _shape(k)
    if qs is None or ks is None:
        return False
    scale = kw.get("scale") or 1.0 / math.sqrt(qs[-1])
    g = gm.graph
    with g.inserting_before(node):
        scores = g.call_function(aten.mul.Scalar, (g.call_function(aten.matmul.default, (q, g.call_function(aten.transpose.int, (k, -2, -1)))), scale))
        mask = kw.get("attn_mask")
        if kw.get("is_causal"):
            causal = torch.full((qs[-2], ks[-2]), float("-inf")).triu(1)
            mask = g.get_attr(add_constant(gm, "causal_mask", causal))
        if mask is not None:
            val = mask.meta.get("val") if isinstance(mask, torch.fx.Node) else None
            if val is not None and val.dtype == torch.bool:
                scores = g.call_function(aten.masked_fill.Scalar, (scores, g.call_function(aten.logical_not.default, (mask,)), float("-inf")))
            else:
                scores = g.call_function(aten.add.Tensor, (scores, mask))
        probs = g.call_function(aten.softmax.int, (scores, -1))
        out = g.call_function(aten.matmul.default, (probs, v))
    node.replace_all_uses_with(out)
    g.erase_node(node)
    return True


def _rewrite_rms_norm(gm, node):
    """RMSNorm from elementwise ops and a mean (HTP v68 has no RmsNorm op)."""
    x, normalized_shape, *rest = node.args
    weight = rest[0] if rest else node.kwargs.get("weight")
    eps = (rest[1] if len(rest) > 1 else node.kwargs.get("eps")) or torch.finfo(torch.float32).eps
    dims = list(range(-len(normalized_shape), 0))
    g = gm.graph
    with g.inserting_before(node):
        ms = g.call_function(aten.mean.dim, (g.call_function(aten.mul.Tensor, (x, x)), dims, True))
        y = g.call_function(aten.mul.Tensor, (x, g.call_function(aten.rsqrt.default, (g.call_function(aten.add.Scalar, (ms, eps)),))))
        if weight is not None:
            y = g.call_function(aten.mul.Tensor, (y, weight))
    node.replace_all_uses_with(y)
    g.erase_node(node)
    return True


def _rewrite_vector_norm(gm, node):
    x, *rest = node.args
    ord_ = rest[0] if rest else node.kwargs.get("ord", 2)
    dims = rest[1] if len(rest) > 1 else node.kwargs.get("dim")
    keepdim = rest[2] if len(rest) > 2 else node.kwargs.get("keepdim", False)
    if ord_ != 2 or node.kwargs.get("dtype") is not None:
        return False
    g = gm.graph
    with g.inserting_before(node):
        sq = g.call_function(aten.mul.Tensor, (x, x))
        s = g.call_function(aten.sum.dim_IntList, (sq, dims, keepdim))
        out = g.call_function(aten.sqrt.default, (s,))
    node.replace_all_uses_with(out)
    g.erase_node(node)
    return True


def _rewrite_repeat_interleave(gm, node):
    """GQA key/value head repetition: x[:, :, None].expand(...).reshape(...) (static repeats only)."""
    x, repeats, *rest = node.args
    dim = rest[0] if rest else node.kwargs.get("dim")
    shape = _shape(x)
    if not isinstance(repeats, int) or dim is None or shape is None:
        return False
    dim = dim % len(shape)
    expanded = list(shape[: dim + 1]) + [repeats] + list(shape[dim + 1:])
    out_shape = list(shape)
    out_shape[dim] *= repeats
    g = gm.graph
    with g.inserting_before(node):
        y = g.call_function(aten.unsqueeze.default, (x, dim + 1))
        y = g.call_function(aten.expand.default, (y, expanded))
        y = g.call_function(aten.reshape.default, (y, out_shape))
    node.replace_all_uses_with(y)
    g.erase_node(node)
    return True


RULES = {
    "repeat_interleave": _rewrite_repeat_interleave,
    "scaled_dot_product_attention": _rewrite_sdpa,
    "rms_norm": _rewrite_rms_norm,
    "linalg_vector_norm": _rewrite_vector_norm,
}

_HALF = (torch.float16, torch.bfloat16)


def _where(node) -> str:
    """'model.py:42' of the user code behind a node, if torch.export recorded it."""
    trace = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in trace.splitlines() if ln.strip().startswith("File ")]
    return f" (from {lines[-1]})" if lines else ""


def run(gm: torch.fx.GraphModule, target) -> PassResult:
    gm = fresh_copy(gm)
    changed = False
    for node in list(gm.graph.nodes):
        name = op_name(node)
        if name is None or target.supports_op(name) or name not in RULES:
            continue
        changed |= RULES[name](gm, node)
    if changed:
        # Rewritten ops need not reproduce the eager memory layout (strides) of the
        # ops they replace, so a downstream view() traced against the old strides
        # may no longer apply; reshape() has the same meaning without that assumption.
        for node in gm.graph.nodes:
            if node.op == "call_function" and node.target == aten.view.default:
                node.target = aten.reshape.default
    for node in gm.graph.nodes:
        name = op_name(node)
        if name is None:
            continue
        if not target.supports_op(name):
            raise UnsupportedOpError(
                f"op '{name}' cannot run on {target.name} ({target.description}){_where(node)}",
                f"replace it with ops the target supports, or compile for a CPU target (cpu-x86_64, cpu-arm64)",
            )
        val = node.meta.get("val")
        if not target.float_graphs and isinstance(val, torch.Tensor) and val.dtype in _HALF:
            raise UnsupportedOpError(
                f"op '{name}' computes in {val.dtype} but {target.name} runs no half-precision graphs{_where(node)}",
                "compile the model in float32; edgevlm quantizes it to int8/int16 for this target",
            )
    return PassResult(gm, changed)
