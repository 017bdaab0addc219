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
    Mul(x, Reciprocal(y)) -> Div(x, y)

The first maps an RMSNorm over the last axis to the op QNN lowers to its
native RmsNorm (onnxscript's fusion rule).  The second covers the norms it
cannot take (RMSNorm over the channel axis of an NCHW convolution network):
a 16-bit quantized Reciprocal of a small range (1/sqrt of a mean square)
loses nearly all precision on the HTP (autoneural-nano's encoder: 42 dB on
onnxruntime CPU, 5 dB on HTP v68), while its Div keeps it (42 dB on both).
"""
from __future__ import annotations

import onnx
import onnx_ir as ir
from onnxscript.rewriter import pattern
from onnxscript.rewriter.ort_fusions.rms_normalization import rms_normalization_rules


def _mul_reciprocal(op, x, y):
    return op.Mul(x, op.Reciprocal(y))


def _reciprocal_mul(op, x, y):
    return op.Mul(op.Reciprocal(y), x)


def _div(op, x, y):
    return op.Div(x, y)


# Applied in this order, each list to a fixed point before the next: a fusion
# must see its whole pattern before a later rule rewrites part of it.
RULES = [
    rms_normalization_rules,
    [pattern.RewriteRule(_mul_reciprocal, _div), pattern.RewriteRule(_reciprocal_mul, _div)],
]


def apply(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, int]]:
    """``model`` in the HTP's forms and the count of each op type the rules removed or added.

    The counts go into the build's report, so a reader sees what was
    rewritten (e.g. ``{"Reciprocal": -31, "Div": 31}``).
    """
    before = _op_counts(model)
    ir_model = ir.serde.deserialize_model(model)
    for rules in RULES:
        pattern.RewriteRuleSet(rules).apply_to_model(ir_model)
    ir_model.graph.sort()
    out = ir.serde.serialize_model(ir_model)
    after = _op_counts(out)
    delta = {op: after.get(op, 0) - before.get(op, 0) for op in sorted(set(before) | set(after))}
    return out, {op: d for op, d in delta.items() if d}


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
