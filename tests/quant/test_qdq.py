"""QuantizeLinear/DequantizeLinear reference vs the ONNX spec and onnxruntime.

Metric: bit-exact equality (every integer identical; dequantized floats
identical) over values chosen to hit ties, saturation and extreme zero points.
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from edgevlm.errors import InputError
from edgevlm.quant.qdq import QTYPES, dequantize_linear, qparams_for_range, quantize_linear, qrange

ONNX_TYPE = {
    "int4": TensorProto.INT4, "uint4": TensorProto.UINT4, "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8, "int16": TensorProto.INT16, "uint16": TensorProto.UINT16,
}


def _values(scale: float, qmin: int, qmax: int, huge: bool = False) -> np.ndarray:
    """Exact ties (k + 0.5) * scale, values past both ends of the range, and random values.

    ``huge`` adds +-3e38, whose x / scale overflows to inf: the ONNX reference
    evaluator casts that to int32 (undefined), so only onnxruntime is checked there.
    """
    rng = np.random.default_rng(0)
    ties = (np.arange(-40, 40) + 0.5) * scale
    span = (qmax - qmin) * scale
    far = [-3 * span, 3 * span, -1e8 * scale, 1e8 * scale, 0.0, -0.0] + ([-3e38, 3e38] if huge else [])
    far = np.array(far)
    rand = rng.uniform(-1.5 * span, 1.5 * span, 300)
    return np.concatenate([ties, far, rand]).astype(np.float32)


def _zero_points(dtype: str) -> list[int]:
    qmin, qmax = qrange(dtype)
    return sorted({qmin, qmax, 0 if qmin < 0 else (qmin + qmax + 1) // 2, qmin + 1})


def _qdq_model(dtype: str, scale: float, zero: int, dequantize_too: bool) -> onnx.ModelProto:
    qt = ONNX_TYPE[dtype]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])]
    out_type, out = qt, "q"
    if dequantize_too:
        nodes.append(helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"]))
        out_type, out = TensorProto.FLOAT, "y"
    graph = helper.make_graph(
        nodes, "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info(out, out_type, [None])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]), helper.make_tensor("z", qt, [], [zero])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


CASES = [(d, s, z) for d in QTYPES for s in (0.5, 0.0137) for z in _zero_points(d)]


@pytest.mark.parametrize("dtype,scale,zero", CASES)
def test_quantize_matches_onnx_reference_bit_exact(dtype, scale, zero):
    x = _values(scale, *qrange(dtype))
    (expected,) = ReferenceEvaluator(_qdq_model(dtype, scale, zero, False)).run(None, {"x": x})
    got = quantize_linear(x, scale, zero, dtype)
    np.testing.assert_array_equal(got.astype(np.int64), expected.astype(np.int64))
    (expected_deq,) = ReferenceEvaluator(_qdq_model(dtype, scale, zero, True)).run(None, {"x": x})
    np.testing.assert_array_equal(dequantize_linear(got, scale, zero), expected_deq)


@pytest.mark.parametrize("dtype,scale,zero", CASES)
def test_qdq_matches_onnxruntime_bit_exact(dtype, scale, zero):
    x = _values(scale, *qrange(dtype), huge=True)
    got = quantize_linear(x, scale, zero, dtype)
    if not dtype.endswith("4"):  # onnxruntime's Python API has no numpy type for packed 4-bit outputs
        sess = ort.InferenceSession(_qdq_model(dtype, scale, zero, False).SerializeToString())
        np.testing.assert_array_equal(sess.run(None, {"x": x})[0], got)
    sess = ort.InferenceSession(_qdq_model(dtype, scale, zero, True).SerializeToString())
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], dequantize_linear(got, scale, zero))


def test_round_half_to_even_and_saturation():
    q = quantize_linear(np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1000, -1000], np.float32), 1.0, 0, "int8")
    assert q.tolist() == [0, 2, 2, 0, -2, 127, -128]
    q4 = quantize_linear(np.array([7.5, 8.0, -8.5, -9.0], np.float32), 1.0, 0, "int4")
    assert q4.tolist() == [7, 7, -8, -8]
    qu16 = quantize_linear(np.array([-1.0, 70000.0], np.float32), 1.0, 65535, "uint16")
    assert qu16.tolist() == [65534, 65535]


def test_per_axis_and_blocked_match_onnx_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 8)).astype(np.float32)
    # Scales cover each row / block, so nothing saturates and the error bound below holds.
    scale_axis = (np.abs(x).max(axis=1) / 120).astype(np.float32)
    zero_axis = np.array([0, 1, -3, 7], np.int8)
    scale_block = (np.abs(x).reshape(4, 2, 4).max(axis=2) / 127).astype(np.float32)
    zero_block = np.zeros((4, 2), np.int8)
    for attrs, s, z in (({"axis": 0}, scale_axis, zero_axis), ({"axis": 1, "block_size": 4}, scale_block, zero_block)):
        node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs)
        graph = helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
            [helper.make_tensor_value_info("q", TensorProto.INT8, x.shape)],
            [onnx.numpy_helper.from_array(s, "s"), onnx.numpy_helper.from_array(z, "z")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
        (expected,) = ReferenceEvaluator(model).run(None, {"x": x})
        got = quantize_linear(x, s, z, "int8", axis=attrs["axis"], block_size=attrs.get("block_size", 0))
        np.testing.assert_array_equal(got, expected)
        back = dequantize_linear(got, s, z, axis=attrs["axis"], block_size=attrs.get("block_size", 0))
        assert np.max(np.abs(back - x)) <= np.max(s) / 2 + 1e-7  # bound: half a step of the coarsest scale


def test_qparams_cover_the_range_and_zero():
    scale, zero = qparams_for_range(-1.0, 3.0, "uint8", symmetric=False)
    assert scale == pytest.approx(4.0 / 255) and zero == 64
    scale, zero = qparams_for_range(-0.5, 2.0, "int8", symmetric=True)
    assert scale == pytest.approx(4.0 / 255) and zero == 0
    assert qparams_for_range(0.0, 0.0, "uint16", False) == (np.float32(1.0), 0)


def test_unknown_type_and_mismatched_axis_raise_input_error():
    with pytest.raises(InputError, match="int3"):
        quantize_linear(np.zeros(3, np.float32), 1.0, 0, "int3")
    with pytest.raises(InputError, match="per-axis"):
        quantize_linear(np.zeros((2, 3), np.float32), np.ones(4, np.float32), 0, "int8", axis=1)
