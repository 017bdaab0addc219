"""Integer-only checker: QDQ around every compute op, float only at graph edges."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgevlm.quant.checker import check_integer_only, count_quantized_ops


def _q(name, out):
    return helper.make_node("QuantizeLinear", [name, "s", "z"], [out])


def _dq(name, out):
    return helper.make_node("DequantizeLinear", [name, "s", "z"], [out])


def _model(nodes, extra_inits=()):
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z"),
             *extra_inits]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def test_fully_wrapped_graph_passes_and_data_movement_is_transparent():
    nodes = [
        _q("x", "xq"), _dq("xq", "xd"),
        helper.make_node("Relu", ["xd"], ["r"], name="relu"), _q("r", "rq"), _dq("rq", "rd"),
        # Reshape between DQ and the next op, Transpose between the op and Q: both transparent.
        helper.make_node("Reshape", ["rd", "shape"], ["rr"], name="reshape"),
        helper.make_node("Sigmoid", ["rr"], ["sg"], name="sigmoid"),
        helper.make_node("Transpose", ["sg"], ["st"], name="transpose", perm=[0, 1]),
        _q("st", "yq"), _dq("yq", "y"),
    ]
    model = _model(nodes, [numpy_helper.from_array(np.array([1, 4], np.int64), "shape")])
    assert check_integer_only(model) == (True, [])
    assert count_quantized_ops(model) == 2


def test_catches_a_float_op_between_quantized_ones():
    nodes = [
        _q("x", "xq"), _dq("xq", "xd"),
        helper.make_node("Relu", ["xd"], ["r"], name="relu"),  # output not re-quantized
        helper.make_node("Softmax", ["r"], ["sm"], name="softmax"),  # runs in float
        _q("sm", "yq"), _dq("yq", "y"),
    ]
    ok, offending = check_integer_only(_model(nodes))
    assert not ok
    assert "Relu 'relu': output 'r' is used as float (by Softmax 'softmax')" in offending
    assert "Softmax 'softmax': input 'r' is float (from float Relu 'relu')" in offending


def test_catches_float_graph_input_output_and_weight():
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["m"], name="mul"),  # float graph input and float weight
        _q("m", "mq"), _dq("mq", "md"),
        helper.make_node("Tanh", ["md"], ["y"], name="tanh"),  # float graph output
    ]
    ok, offending = check_integer_only(_model(nodes, [numpy_helper.from_array(np.ones((1, 4), np.float32), "w")]))
    assert not ok
    assert offending == [
        "Mul 'mul': input 'x' is float (from graph input)",
        "Mul 'mul': input 'w' is float (from float initializer)",
        "Tanh 'tanh': output 'y' is used as float (by graph output)",
    ]


def test_reads_a_path(tmp_path):
    nodes = [_q("x", "xq"), _dq("xq", "xd"), helper.make_node("Abs", ["xd"], ["a"], name="abs"), _q("a", "aq"), _dq("aq", "y")]
    onnx.save(_model(nodes), str(tmp_path / "m.onnx"))
    assert check_integer_only(tmp_path / "m.onnx") == (True, [])
