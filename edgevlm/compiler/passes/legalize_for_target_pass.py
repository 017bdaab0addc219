"""Legalize a graph for its target: rewrite ops the target lacks, reject the rest.

Rewrites are data: ``RULES`` maps an ATen op name to a function that replaces
one node with ops the target accepts.  After rewriting, any op still outside
``target.supported_ops`` raises UnsupportedOpError naming the op, the target
and the model source line that produced it.  Integer-only targets also reject
half-precision tensors.

    scaled_dot_product_attention(q, k, v, m) -> masked_softmax(q @ k^T * scale, m) @ v
    x & y, x | y, ~x (bool)              -> logical_and / logical_or / logical_not
    x[i0, i1] (indices known statically) -> reshape(index_select(reshape(x, -1), flat index))
    rms_norm(x, shape, w, eps)           -> x * rsqrt(mean(pow(x, 2)) + eps) * w
    linalg_vector_norm(x, 2, dims)       -> sqrt(sum(x * x, dims))
    repeat_interleave(x, r, d)           -> reshape(expand(unsqueeze(x, d+1)))
    view(x, shape)                       -> reshape(x, shape)   (only after a rewrite)

On integer-only targets, whatever ops they have (every tensor is quantized per tensor):

    softmax(s + mask)                    -> masked_softmax(s, mask)
    masked_softmax(s, m)                 =  exp(s - max(s)) * w / sum(exp(s - max(s)) * w),
                                            w = float(m) for a bool m (or where(m, 0, finfo.min)),
                                            exp(max(m, -1e4)) for an additive m
    c <= -1e8 (finfo.min, -inf) as a scalar argument -> -1e4
    batch_norm(x) (no conv to fold into) -> conv2d(x, s[C,1,1,1], beta - mean * s, groups=C)
"""
import math

import torch

from edgevlm.compiler.passes.base import PassResult, add_constant, fresh_copy, get_constant, op_name
from edgevlm.compiler.passes.fold_batchnorm_pass import _bn_params
from edgevlm.errors import UnsupportedOpError
from edgevlm.ops import CONV_OPS

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
            causal = torch.ones(qs[-2], ks[-2], dtype=torch.bool).tril()
            mask = g.get_attr(add_constant(gm, "causal_mask", causal))
            mask.meta["val"] = causal
        probs = g.call_function(aten.softmax.int, (scores, -1)) if mask is None else _masked_softmax(g, scores, mask)
        out = g.call_function(aten.matmul.default, (probs, v))
    node.replace_all_uses_with(out)
    g.erase_node(node)
    return True


# A mask constant at or below this is "minus infinity" (finfo.min, -inf, -1e9 ...): clamped to
# MASK_MIN, where exp() is already 0 in float32, so no tensor of the graph holds a value whose
# per-tensor quantization range swamps everything else (or overflows to -inf when two add up).
MASK_NEG_INF = -1e8
MASK_MIN = -1e4


def _masked_softmax(g, scores, mask):
    """softmax(scores + mask) (or masked by a bool mask) as exp(scores - max) * w / sum(...).

    w is the bool mask as 0/1, or exp(mask) of an additive one: mathematically
    the same softmax, but the scores keep their own small range for per-tensor
    quantization instead of sharing it with a huge negative constant, and no
    float Where is left for an integer-only NPU.
    """
    val = mask.meta.get("val") if isinstance(mask, torch.fx.Node) else mask
    if _is_where_mask(g.owning_module, mask):  # where(keep, 0, finfo.min): the bool itself is the weight
        mask, val = mask.args[0], mask.args[0].meta.get("val")
    if isinstance(val, torch.Tensor) and val.dtype == torch.bool:
        weight = g.call_function(aten._to_copy.default, (mask,), {"dtype": torch.float32})
    else:
        weight = g.call_function(aten.exp.default, (g.call_function(aten.clamp_min.default, (mask, MASK_MIN)),))
    peak = g.call_function(aten.amax.default, (scores, [-1], True))
    e = g.call_function(aten.exp.default, (g.call_function(aten.sub.Tensor, (scores, peak)),))
    e = g.call_function(aten.mul.Tensor, (e, weight))
    return g.call_function(aten.div.Tensor, (e, g.call_function(aten.sum.dim_IntList, (e, [-1], True))))


def _is_where_mask(gm, node) -> bool:
    """Is ``node`` where(bool, 0, c) with c at or below MASK_MIN (transformers' additive mask from a bool one)?"""
    if op_name(node) != "where" or len(node.args) != 3:
        return False
    cond, keep, drop = node.args
    keep, drop = _static_value(gm, keep), _static_value(gm, drop)
    as_float = [float(v.max()) if isinstance(v, torch.Tensor) and v.numel() else v for v in (keep, drop)]
    return (getattr(cond.meta.get("val"), "dtype", None) == torch.bool and as_float[0] == 0.0
            and isinstance(as_float[1], (int, float)) and as_float[1] <= MASK_MIN)


def _is_mask(node) -> bool:
    """Is ``node`` an attention mask: computed from a bool tensor or a 'minus infinity' constant alone?

    Tensors that depend on a matmul, linear or convolution are activations, not masks.
    """
    seen, stack, masky = set(), [node], False
    while stack:
        n = stack.pop()
        if not isinstance(n, torch.fx.Node) or n in seen:
            continue
        seen.add(n)
        if op_name(n) in _COMPUTE:
            return False
        val = n.meta.get("val")
        masky |= isinstance(val, torch.Tensor) and val.dtype == torch.bool
        masky |= any(isinstance(a, (int, float)) and a <= MASK_MIN for a in n.args)
        stack.extend(n.all_input_nodes)
    return masky


_COMPUTE = {"matmul", "mm", "bmm", "linear", "addmm", "baddbmm", "embedding"} | CONV_OPS


def _rewrite_softmax(gm, node):
    """softmax(x + mask, -1) -> the multiplicative masked softmax (see ``_masked_softmax``)."""
    x, dim, *_ = node.args
    shape = _shape(node)
    if shape is None or dim % len(shape) != len(shape) - 1 or op_name(x) != "add" or len(x.users) != 1:
        return False
    a, b = x.args[:2]
    scores, mask = (a, b) if _is_mask(b) else (b, a) if _is_mask(a) else (None, None)
    if mask is None:
        return False
    with gm.graph.inserting_before(node):
        out = _masked_softmax(gm.graph, scores, mask)
    node.replace_all_uses_with(out)
    gm.graph.erase_node(node)
    return True


def _clamp_neg_inf(gm, node):
    """finfo.min / -inf scalars of mask arithmetic -> MASK_MIN (see MASK_NEG_INF)."""
    if not any(isinstance(a, float) and a <= MASK_NEG_INF for a in node.args):
        return False
    node.args = tuple(MASK_MIN if isinstance(a, float) and a <= MASK_NEG_INF else a for a in node.args)
    return True


def _rewrite_bool_op(logical):
    """x & y, x | y, ~x on bool tensors -> logical_and/or/not (the ops HTP targets list, same on bools)."""
    def rewrite(gm, node):
        if getattr(node.meta.get("val"), "dtype", None) != torch.bool:
            return False
        node.target = logical
        return True
    return rewrite


def _static_value(gm, node, depth=0):
    """The value of ``node`` if it depends on no graph input (constants, arange, ...), else None."""
    if not isinstance(node, torch.fx.Node):
        return node
    const = get_constant(gm, node)
    if const is not None or node.op != "call_function" or depth > 32:
        return const
    if not isinstance(node.target, torch._ops.OpOverload) or torch.Tag.nondeterministic_seeded in node.target.tags:
        return None
    values = {n: _static_value(gm, n, depth + 1) for n in node.all_input_nodes}
    if any(v is None for v in values.values()):
        return None
    args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: values[n])
    with torch.no_grad():
        return node.target(*args, **kwargs)


def _rewrite_index(gm, node):
    """x[i0, i1, ...] with indices known at compile time -> index_select(x.flatten(), flat index).reshape(...)."""
    x, indices = node.args[:2]
    shape = _shape(x)
    if shape is None or any(i is None for i in indices):
        return False
    values = [_static_value(gm, i) for i in indices]
    if any(not isinstance(v, torch.Tensor) for v in values):
        return False
    strides = torch.tensor(shape).flip(0).cumprod(0).flip(0).tolist()[1:] + [1]
    flat = sum(v.long() * strides[k] for k, v in enumerate(values))
    rest = list(shape[len(values):])
    out_shape = list(flat.shape) + rest
    g = gm.graph
    with g.inserting_before(node):
        src = g.call_function(aten.reshape.default, (x, [-1] + rest))
        idx = g.get_attr(add_constant(gm, "index_flat", flat.reshape(-1)))
        y = g.call_function(aten.index_select.default, (src, 0, idx))
        y = g.call_function(aten.reshape.default, (y, out_shape))
    node.replace_all_uses_with(y)
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
        # x^2 as pow(x, 2): the form htp_forms maps to QNN's native RmsNorm.
        ms = g.call_function(aten.mean.dim, (g.call_function(aten.pow.Tensor_Scalar, (x, 2)), dims, True))
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
    "__and__": _rewrite_bool_op(aten.logical_and.default),
    "__or__": _rewrite_bool_op(aten.logical_or.default),
    "bitwise_and": _rewrite_bool_op(aten.logical_and.default),
    "bitwise_or": _rewrite_bool_op(aten.logical_or.default),
    "__invert__": _rewrite_bool_op(aten.logical_not.default),
    "bitwise_not": _rewrite_bool_op(aten.logical_not.default),
    "index": _rewrite_index,
    "repeat_interleave": _rewrite_repeat_interleave,
    "scaled_dot_product_attention": _rewrite_sdpa,
    "rms_norm": _rewrite_rms_norm,
    "linalg_vector_norm": _rewrite_vector_norm,
}

def _rewrite_batch_norm(gm, node):
    """An inference BatchNorm with no conv to fold into -> depthwise 1x1 conv (see fold_batchnorm_pass).

    Its scale becomes a per-channel int8 weight (one value per channel: exact) and
    its shift an int32 bias; as a BatchNormalization op its mean and variance
    would stay float initializers.
    """
    shape = _shape(node.args[0])
    params = _bn_params(gm, node)
    if shape is None or len(shape) != 4 or params is None:
        return False
    if op_name(node) != "batch_norm" and any(u.args[1] != 0 and u.users for u in node.users):
        return False  # batch statistics are used downstream: not an inference BatchNorm
    gamma, beta, mean, var, eps = params
    scale = gamma / torch.sqrt(var + eps)
    g = gm.graph
    with g.inserting_before(node):
        w = g.get_attr(add_constant(gm, f"{node.name}_dw_weight", scale.reshape(-1, 1, 1, 1)))
        b = g.get_attr(add_constant(gm, f"{node.name}_dw_bias", beta - mean * scale))
        conv = g.call_function(aten.conv2d.default, (node.args[0], w, b, [1, 1], [0, 0], [1, 1], shape[1]))
    if op_name(node) == "batch_norm":
        node.replace_all_uses_with(conv)
    else:  # tuple output: getitem(bn, 0) is the normalized tensor
        for user in list(node.users):
            if user.args[1] == 0:
                user.replace_all_uses_with(conv)
            g.erase_node(user)
    g.erase_node(node)
    return True


# Forms for integer-only targets, applied whether or not the target has the op: every tensor is
# quantized per tensor there, so a mask's huge constants must not reach the scores' range, and
# no parameter may stay a float initializer.
INTEGER_RULES = {"softmax": _rewrite_softmax, "_softmax": _rewrite_softmax,
                 "batch_norm": _rewrite_batch_norm, "_native_batch_norm_legit_no_training": _rewrite_batch_norm}

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
        if name is None:
            continue
        if target.integer_only:
            changed |= _clamp_neg_inf(gm, node) if name not in INTEGER_RULES else INTEGER_RULES[name](gm, node)
        if not target.supports_op(name) and name in RULES:
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
