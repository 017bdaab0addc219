"""Graph forms that Qualcomm's HTP executes correctly: ONNX rewrites applied before QDQ quantization.

A QDQ graph can be right on onnxruntime's CPU and wrong on the HTP: the
HTP runs some quantized ops with less range or precision than their float
definition suggests.  Each rule below was found by running the quantized
graph on QNN's HTP backend (onnxruntime-qnn, HTP simulation) against float
PyTorch; the tests in tests/quant/test_htp_forms.py check each one there
with its dB bound.

Rules are data (onnxscript rewrite rules, applied by one ``apply``), each
stating its equation:

    Mul(Mul(x, Reciprocal(Sqrt(ReduceMean(Pow(x, 2), [-1]) + eps))), w)
        -> SimplifiedLayerNormalization(x, w, axis=-1)           (QNN RmsNorm)
    Mul(Mul(x, Reciprocal(Sqrt(ReduceMean(Pow(x, 2), [1]) + eps))), w[1,C,1,1])
        -> Transpose(SimplifiedLayerNormalization(Transpose(x, NHWC), w[C], axis=-1), NCHW)
    Mul(x, Reciprocal(y)) -> Div(x, y)

The first maps an RMSNorm over the last axis to the op QNN lowers to its
native RmsNorm (onnxscript's fusion rule); the second does the same for an
RMSNorm over the channels of an NCHW tensor (timm's RmsNorm2d).  The third
covers what is left: a 16-bit quantized Reciprocal of a small range (1/sqrt
of a mean square) loses nearly all precision on the HTP (autoneural-nano's
encoder: 42 dB on onnxruntime CPU, 5 dB on HTP v68), its Div keeps it.

Before the rules, constants are folded (``Cast(w) -> w'``: onnxruntime
inlines GroupNormalization-21 into a body that casts its float weights,
float ops outside the integer graph).  Beside the graph forms,
``INPUT_QTYPES`` names the quantization types the HTP demands of an op's
weights (LayerNormalization's scale, PRelu's slope), ``EIGHT_BIT_OPS``
the ops it computes wrongly at 16 bits (Log) and ``MIN_INPUT_RANGE`` the
ops it computes wrongly on a too narrow 16-bit input range (Softmax).

One form needs the quantized grids, so it rewrites the QDQ model after
quantization (``split_wide_matmuls``):

    MatMul(a, b) -> MatMul(a, Q8(b)) + MatMul(a, Q8(b - Q8(b)))     (a, b dynamic 16-bit)
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnxruntime.quantization import QuantType
from onnxscript import optimizer
from onnxscript.rewriter import _ir_utils, pattern
from onnxscript.rewriter.ort_fusions.rms_normalization import rms_normalization_rules

from edgevlm.quant import onnx_files


class _ChannelRmsNorm(pattern.RewriteRuleClassBase):
    """RMSNorm over the channel axis of an NCHW tensor (timm's RmsNorm2d) as QNN's native RmsNorm.

    QNN's HTP RmsNorm takes the last axis only, so the channels are moved
    there and back by two Transposes (exact in QDQ: data movement only).
    """

    def __init__(self, name: str, scale_first: bool):
        super().__init__(name)
        self._scale_first = scale_first

    def pattern(self, op, x, axes, epsilon, scale):
        mean_square = op.ReduceMean(op.Pow(x, 2.0), axes, keepdims=1, noop_with_empty_axes=0)
        normalized = op.Mul(x, op.Reciprocal(op.Sqrt(op.Add(mean_square, epsilon))))
        return op.Mul(scale, normalized) if self._scale_first else op.Mul(normalized, scale)

    def check(self, op, x, axes, epsilon, scale, **_) -> pattern.MatchResult:
        result = pattern.MatchResult()
        shape = x.shape
        if shape is None or len(shape) != 4 or not isinstance(shape[1], int):
            return result.fail("input is not a static-channel rank-4 tensor", x)
        if axes.const_value is None or [int(a) % 4 for a in axes.const_value.numpy().ravel()] != [1]:
            return result.fail("not a reduction over the channel axis", axes)
        if not isinstance(_ir_utils.get_singleton_value(epsilon), float):
            return result.fail("epsilon is not a float scalar", epsilon)
        if scale.const_value is None or scale.const_value.numpy().size != shape[1]:
            return result.fail("scale is not a per-channel constant", scale)
        return result

    def rewrite(self, op, x, epsilon, scale, **_):
        weight = scale.const_value.numpy().reshape(-1).astype(np.float32)
        n, c, h, w = x.shape
        xt = op.Transpose(x, perm=[0, 2, 3, 1])
        y = op.SimplifiedLayerNormalization(xt, op.Constant(value=ir.tensor(weight)), axis=-1,
                                            epsilon=_ir_utils.get_singleton_value(epsilon), stash_type=1)
        # Typed, so that calibration (which reads the types) sees these tensors: onnx's shape
        # inference does not know SimplifiedLayerNormalization.
        for value in (xt, y):
            value.dtype, value.shape = x.dtype, ir.Shape([n, h, w, c])
        return op.Transpose(y, perm=[0, 3, 1, 2])


def _mul_reciprocal(op, x, y):
    return op.Mul(x, op.Reciprocal(y))


def _reciprocal_mul(op, x, y):
    return op.Mul(op.Reciprocal(y), x)


def _div(op, x, y):
    return op.Div(x, y)


# Applied in this order, each list to a fixed point before the next: a fusion
# must see its whole pattern before a later rule rewrites part of it.
RULES = [
    rms_normalization_rules + [_ChannelRmsNorm.rule("ChannelRmsNorm1", scale_first=True),
                               _ChannelRmsNorm.rule("ChannelRmsNorm2", scale_first=False)],
    [pattern.RewriteRule(_mul_reciprocal, _div), pattern.RewriteRule(_reciprocal_mul, _div)],
]


# Quantization types the HTP requires of an op's initializer input, by (op type, input index):
# onnxruntime TensorQuantOverrides that win over the scheme's weight type.
#   LayerNormalization scale: QNN HTP v68 refuses (backendValidateOpConfig error 3110) a
#   symmetric int8 scale beside the int32 bias onnxruntime gives it, so a w8a16 ViT/SigLIP
#   tower is refused whole; an asymmetric uint8 scale (still 8 bits) is accepted.  One
#   LayerNorm over 64 channels, uint16 activations, on HTP v68 vs float: 56 dB.
#   PRelu slope: with the slope at the activations' uint16, QNN fails to finalize the graph on
#   HTP v68 (QNN_COMMON_ERROR_MEM_ALLOC, code 1002); at uint8 it runs.
INPUT_QTYPES = {
    ("LayerNormalization", 1): {"quant_type": QuantType.QUInt8, "symmetric": False},
    ("PRelu", 1): {"quant_type": QuantType.QUInt8, "symmetric": False},
}


# Ops the HTP computes wrongly at 16 bits, so their input and output activations are 8-bit.
#   Log: log(|x| + 1) on HTP v68 at uint16 is 0.0 dB vs float (onnxruntime CPU: 86 dB); at uint8 41.7 dB.
EIGHT_BIT_OPS = {"Log"}


# Smallest calibrated range (rmax - rmin) of a 16-bit input the HTP computes an op on correctly;
# narrower ranges are widened around their centre (cheap at 16 bits).  Softmax: attention scores
# of a random-init network span little (MobileNetV5's MQA blocks: +-0.07, +-0.002), and below a
# range of about 0.2 (a uint16 scale near 3e-6) QNN's Softmax returns nearly its mean.  One
# Softmax over 16 keys, HTP v68 vs float: input range 0.14 -> 17.6 dB, 0.2 -> 60.1 dB, 0.5 ->
# 74.3 dB (onnxruntime CPU 83 dB throughout); over 64 keys 0.14 -> 23.5 dB, 0.5 .. 32 -> 65 dB.
# QNN takes a scalar Mul/Div before the Softmax into it (the 1/sqrt(d) of attention), so the
# Mul's input is widened to the range that gives the Softmax's input this width.
# enc-mobilenetv5-nano (w8a16, GPTQ weights, HTP v68 / onnxruntime CPU, worst of 2 samples):
# no widening 32.3 / 35.2 dB; the Softmax's input only 32.3 / 35.2 dB; the Mul's input too
# 34.2 / 34.6 dB.  8-bit inputs are not widened (not measured; their scale is 256x larger).
MIN_INPUT_RANGE = {"Softmax": 1.0}


def widen_input_ranges(model: onnx.ModelProto, ranges: dict, dtypes: dict[str, str], default_dtype: str):
    """``ranges`` with the 16-bit inputs of ``MIN_INPUT_RANGE`` ops widened, and ``{tensor: [lo, hi]}`` widened.

    Softmax(Mul(x, c)) also widens x to ``MIN_INPUT_RANGE / |c|`` (Div: ``* |c|``), c a scalar constant.
    """
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}

    def scalar(name):
        if name not in inits:
            return None
        value = onnx.numpy_helper.to_array(inits[name])
        return float(value.reshape(())) if value.size == 1 and value.reshape(()) != 0 else None

    wanted: dict[str, float] = {}
    for node in model.graph.node:
        need = MIN_INPUT_RANGE.get(node.op_type)
        if need is None or not node.input:
            continue
        wanted[node.input[0]] = max(wanted.get(node.input[0], 0.0), need)
        p = producer.get(node.input[0])
        if p is not None and p.op_type in ("Mul", "Div") and len(p.input) == 2:
            for x, c in ((p.input[0], scalar(p.input[1])), (p.input[1], scalar(p.input[0]) if p.op_type == "Mul" else None)):
                if c is not None and x not in inits:
                    width = need / abs(c) if p.op_type == "Mul" else need * abs(c)
                    wanted[x] = max(wanted.get(x, 0.0), width)
    out, widened = dict(ranges), {}
    for name, need in wanted.items():
        if name not in out or not dtypes.get(name, default_dtype).endswith("16"):
            continue
        lo, hi = (float(v) for v in out[name])
        if hi - lo < need:
            mid = (lo + hi) / 2
            out[name] = (mid - need / 2, mid + need / 2)
            widened[name] = [lo, hi]
    return out, widened


def quant_overrides(model: onnx.ModelProto) -> dict[str, list[dict]]:
    """onnxruntime TensorQuantOverrides for the tensors whose type the HTP dictates.

    Initializers named by ``INPUT_QTYPES``; the activations around ``EIGHT_BIT_OPS``.
    """
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        for idx, name in enumerate(node.input):
            spec = INPUT_QTYPES.get((node.op_type, idx))
            if spec is not None and name in inits:
                out[name] = [dict(spec)]
        if node.op_type in EIGHT_BIT_OPS:
            for name in (node.input[0], node.output[0]):
                if name not in inits:
                    out[name] = [{"quant_type": QuantType.QUInt8}]
    return out


def apply(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """``model`` in the HTP's forms and the count of each op type the rules removed or added.

    The counts go into the build's report, so a reader sees what was
    rewritten (e.g. ``{"Reciprocal": -31, "Div": 31}``).
    """
    ir_model = ir.serde.deserialize_model(model)
    forms = _rewrite(ir_model)
    return ir.serde.serialize_model(ir_model), forms


def apply_file(src, dst) -> dict[str, int]:
    """:func:`apply` from the model file ``src`` (with external data) to ``dst`` (weights in ``<dst>.data``);
    nothing is written when no rule applies.  The counts, as apply's.

    The weights stay in ``src``'s data file while the rules run (onnx_ir reads a weight only when a rule
    needs its value) and are copied to ``dst``'s one at a time: with the model in memory, its deserialized
    and serialized copies took 3.4x the weights at the peak (a 3-layer LFM2-350M llm-prefill, 0.48 GB of
    weights: +1.65 GB).  ``dst`` is the file :func:`apply` + onnx_files.save would write.
    """
    from pathlib import Path

    ir_model = ir.load(src)
    forms = _rewrite(ir_model)
    if forms:
        model = ir.serde.serialize_model(ir_model)  # the weights still referring to src's data file
        del ir_model
        onnx_files.save_from(model, Path(src).parent, dst)
    return forms


def _rewrite(ir_model: ir.Model) -> dict[str, int]:
    """The rules applied to ``ir_model`` in place; the change in the count of each op type."""
    before = _op_counts(ir_model.graph)
    # Casts and shape arithmetic on constants (what onnxruntime leaves of an inlined function
    # op such as GroupNormalization-21) are folded: a Cast of a float weight is a float op the
    # HTP would run outside the integer graph, and the rules match the folded form.
    optimizer.fold_constants(ir_model)
    for rules in RULES:
        pattern.RewriteRuleSet(rules).apply_to_model(ir_model)
    # onnxruntime's quantizer quantizes initializers as weights, Constant nodes not at all.
    ir.passes.common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(ir_model)
    ir.passes.common.IdentityEliminationPass()(ir_model)
    ir_model.graph.sort()
    after = _op_counts(ir_model.graph)
    delta = {op: after.get(op, 0) - before.get(op, 0) for op in sorted(set(before) | set(after))}
    return {op: d for op, d in delta.items() if d}


def _op_counts(graph: ir.Graph) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


# MatMul of two dynamic 16-bit inputs: HTP v68 computes it at about 8-bit precision (one uint16 x
# uint16 q @ k^T, HTP vs float: 43.2 dB, onnxruntime CPU 86.1 dB; a symmetric uint16 second operand,
# which onnxruntime-qnn passes without its Convert, 42.2 dB), while uint16 x uint8 is the HTP's a16w8
# kernel.  So the second operand b is split into two 8-bit halves on the QDQ graph (their ranges
# cannot come from calibration: the float model has no rounding to measure):
#     MatMul(a, b) -> MatMul(a, hi) + MatMul(a, lo),  hi = Q8(b),  lo = Q8(b - hi)
# hi on b's range at 256 steps, lo the rounding residual on +-LO_MARGIN hi steps (b - hi on b's own
# 16-bit grid, hi moved there exactly).  Measured on HTP v68 vs float: that q @ k^T 56.2 dB (CPU 75.7);
# softmax(q k^T / 4) v 39.2 -> 56.6 dB; LO_MARGIN 1, 2, 4 alike (what is left is the a16w8 MatMul
# itself: 56 dB against the exact product of its own inputs).  enc-mobilenetv5-nano, HTP's MatMul
# output vs the exact product of its HTP inputs: softmax @ V 51.7 -> 68.2 dB, q @ k^T 40.5 -> 43.5 dB.
LO_MARGIN = 1.0
# In the names of the tensors a split adds: each half alone departs from onnxruntime CPU's (lo makes up
# for the HTP's own rounding of hi), only their sum is comparable; the per-layer HTP view leaves them out.
SPLIT_TAG = "/split_"
_QTYPES = {onnx.TensorProto.UINT16: (0, 65535), onnx.TensorProto.INT16: (-32768, 32767)}


_BOOLEAN_OPS = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor"}
_DATA_MOVEMENT = {"QuantizeLinear", "DequantizeLinear", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Expand",
                  "Flatten", "Slice", "Gather", "Tile"}


def _from_boolean(name: str, producer: dict) -> bool:
    """Whether tensor ``name`` is a Cast of a comparison or logical op, through data movement only."""
    seen = set()
    while name in producer and name not in seen:
        seen.add(name)
        node = producer[name]
        if node.op_type == "Cast":
            source = producer.get(node.input[0])
            return source is not None and source.op_type in _BOOLEAN_OPS
        if node.op_type not in _DATA_MOVEMENT:
            return False
        name = node.input[0]
    return False


def split_wide_matmuls(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` (a QDQ model) with every MatMul of two dynamic 16-bit inputs split as above; the count split."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = onnx_files.consumers(model.graph)
    candidates = _wide_matmuls(model, producer, consumers)
    if not candidates:
        return model, 0
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in onnx.shape_inference.infer_shapes(onnx_files.structure(model)).graph.value_info}
    shapes.update({vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input})

    new_inits, count = [], 0
    for node, a, b in candidates:
        k = (shapes.get(node.input[1]) or [0, 0])[-2]
        if not k:
            continue
        prefix = f"{node.name or node.output[0]}{SPLIT_TAG}"
        consts = _split_constants(k, a, b)
        new_inits += [onnx.numpy_helper.from_array(np.array(value), prefix + key) for key, value in consts.items()]
        dq_b = producer[node.input[1]]
        halves = _split_nodes(node, prefix, producer[node.input[0]], dq_b, consumers[node.output[0]][0])
        idx = list(model.graph.node).index(node)
        del model.graph.node[idx]
        for i, n in enumerate(halves):
            model.graph.node.insert(idx + i, n)
        # b's own DequantizeLinear is left to MatMul's other users, or dropped when it has none.
        if all(x is node for x in consumers.get(node.input[1], [])):
            model.graph.node.remove(dq_b)
        count += 1
    model.graph.initializer.extend(new_inits)
    return model, count


def _wide_matmuls(model: onnx.ModelProto, producer: dict, consumers: dict) -> list:
    """(MatMul, a's and b's (scale, zero point, type)) for each MatMul of two dynamic 16-bit inputs.

    Each input comes from a per-tensor DequantizeLinear, the output goes to
    one QuantizeLinear; a 0/1 mask as b is left alone (exact at 8 bits already).
    """
    inits = {t.name: t for t in model.graph.initializer}

    def qparams(dq):
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in inits or len(dq.input) < 3:
            return None
        scale, zero = inits.get(dq.input[1]), inits.get(dq.input[2])
        if scale is None or zero is None or zero.data_type not in _QTYPES:
            return None
        s, z = onnx.numpy_helper.to_array(scale), onnx.numpy_helper.to_array(zero)
        if s.size != 1:
            return None
        return float(s.reshape(())), int(z.reshape(())), zero.data_type

    candidates = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        a, b = (qparams(producer.get(name)) for name in node.input[:2])
        outs = consumers.get(node.output[0], [])
        if a is None or b is None or len(outs) != 1 or outs[0].op_type != "QuantizeLinear":
            continue
        if _from_boolean(node.input[1], producer):
            continue
        candidates.append((node, a, b))
    return candidates


def _split_constants(k: int, a: tuple, b: tuple) -> dict[str, np.generic]:
    """The grids of hi, lo and a @ lo for a MatMul of inner size ``k``; ``a``, ``b``: (scale, zero point, type)."""
    (sa, za, ta), (sb, zb, tb) = a, b
    lo_a, hi_a = _QTYPES[ta]
    lo_b, hi_b = _QTYPES[tb]
    s8 = sb * (hi_b - lo_b) / 255.0
    z8 = int(np.clip(round((zb - lo_b) / (hi_b - lo_b) * 255.0), 0, 255))
    s_lo = 2.0 * LO_MARGIN * s8 / 255.0
    # |a @ lo| <= k * max|a| * max|lo|: a bound, not a calibration, for the 16-bit partial product.
    a_max = sa * max(za - lo_a, hi_a - za)
    y2_half = max(k * a_max * LO_MARGIN * s8, 1e-6)
    return {
        "s8": np.float32(s8), "z8": np.uint8(z8), "s_lo": np.float32(s_lo), "z_lo": np.uint8(128),
        "s_y2": np.float32(2 * y2_half / 65535.0), "z_y2": np.uint16(32768),
    }


def _split_nodes(node, prefix: str, dq_a, dq_b, q_y) -> list:
    """The nodes computing MatMul ``node``'s output as MatMul(a, hi) + MatMul(a, lo); names start with ``prefix``.

    ``dq_a``, ``dq_b``: the DequantizeLinear of its inputs; ``q_y``: the QuantizeLinear of its output.
    """
    t = {x: prefix + x for x in ("b_f", "b_f2", "hi_q", "hi_mm", "hi_f", "hi16_q", "hi16_f", "lo", "lo_q", "lo_f",
                                 "a_f2", "y1", "y1_q", "y1_f", "y2", "y2_q", "y2_f")}
    c = {key: prefix + key for key in ("s8", "z8", "s_lo", "z_lo", "s_y2", "z_y2")}
    h = onnx.helper
    nodes = [
        h.make_node("DequantizeLinear", list(dq_b.input), [t["b_f"]]),
        h.make_node("QuantizeLinear", [t["b_f"], c["s8"], c["z8"]], [t["hi_q"]]),
        h.make_node("DequantizeLinear", [t["hi_q"], c["s8"], c["z8"]], [t["hi_mm"]]),
        h.make_node("DequantizeLinear", [t["hi_q"], c["s8"], c["z8"]], [t["hi_f"]]),
        h.make_node("QuantizeLinear", [t["hi_f"], dq_b.input[1], dq_b.input[2]], [t["hi16_q"]]),
        h.make_node("DequantizeLinear", [t["hi16_q"], dq_b.input[1], dq_b.input[2]], [t["hi16_f"]]),
        h.make_node("DequantizeLinear", list(dq_b.input), [t["b_f2"]]),
        h.make_node("Sub", [t["b_f2"], t["hi16_f"]], [t["lo"]]),
        h.make_node("QuantizeLinear", [t["lo"], c["s_lo"], c["z_lo"]], [t["lo_q"]]),
        h.make_node("DequantizeLinear", [t["lo_q"], c["s_lo"], c["z_lo"]], [t["lo_f"]]),
        h.make_node("MatMul", [node.input[0], t["hi_mm"]], [t["y1"]]),
        h.make_node("QuantizeLinear", [t["y1"], q_y.input[1], q_y.input[2]], [t["y1_q"]]),
        h.make_node("DequantizeLinear", [t["y1_q"], q_y.input[1], q_y.input[2]], [t["y1_f"]]),
        h.make_node("DequantizeLinear", list(dq_a.input), [t["a_f2"]]),
        h.make_node("MatMul", [t["a_f2"], t["lo_f"]], [t["y2"]]),
        h.make_node("QuantizeLinear", [t["y2"], c["s_y2"], c["z_y2"]], [t["y2_q"]]),
        h.make_node("DequantizeLinear", [t["y2_q"], c["s_y2"], c["z_y2"]], [t["y2_f"]]),
        h.make_node("Add", [t["y1_f"], t["y2_f"]], [node.output[0]]),
    ]
    for n in nodes:
        n.name = f"{n.output[0]}/node" if n.op_type != "Add" else prefix + "add"
    return nodes
