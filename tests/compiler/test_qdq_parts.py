"""edgevlm.compiler.qdq_parts: a QDQ model cut between its blocks computes, part after part, what it computes whole.

Metric: max |difference| of the chained parts' outputs vs the whole model's,
both run by onnxruntime's CPU EP on the same input: 0 (re-quantizing an
on-grid tensor gives back the same integers).
"""
import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from edgevlm.compiler.qdq_parts import (activation_elements, cut_points, dequantize_after_quantize, plan_parts,
                                        write_parts)
from edgevlm.quant.onnx_qdq import quantize_onnx


class Blocks(nn.Module):
    """Residual MLP blocks on tokens, with a second output made mid-graph (as an LLM stage's KV caches are)."""

    def __init__(self, d=32, n=4):
        super().__init__()
        self.fc1 = nn.ModuleList(nn.Linear(d, 2 * d) for _ in range(n))
        self.fc2 = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(n))

    def forward(self, x):
        early = None
        for i, (a, b) in enumerate(zip(self.fc1, self.fc2)):
            x = x + b(torch.nn.functional.gelu(a(x)))
            if i == 0:
                early = x * 2.0
        return x, early


def _qdq(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(1, 16, 32)
    float_path, qdq_path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    torch.onnx.export(Blocks().eval(), (x,), str(float_path), input_names=["x"], output_names=["y", "early"],
                      dynamo=False, opset_version=17)
    quantize_onnx(float_path, qdq_path, "w8a16", [(torch.randn(1, 16, 32),) for _ in range(4)], "sa8295p",
                  weight_algo="rtn")
    return qdq_path


def _run_chain(parts, feed):
    values = dict(feed)
    for path, part in parts:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        values.update(zip(part.outputs, sess.run(None, {n: values[n] for n in part.inputs})))
    return values


def test_parts_chain_reproduces_the_whole_model_exactly(tmp_path):
    qdq_path = _qdq(tmp_path)
    model = onnx.load(str(qdq_path))
    dequantize_after_quantize(model)
    model.graph.value_info.extend(onnx.shape_inference.infer_shapes(model).graph.value_info)
    total = sum(activation_elements(model))
    assert len(cut_points(model)) >= 4  # at least one between every two blocks
    parts = write_parts(qdq_path, tmp_path, "m", total // 3)
    assert len(parts) >= 3
    for path, part in parts:  # each part is a QDQ graph of its own: float in, float out
        m = onnx.load(str(path))
        onnx.checker.check_model(m)
        assert [i.name for i in m.graph.input] == part.inputs
    feed = {"x": np.random.default_rng(1).standard_normal((1, 16, 32)).astype(np.float32)}
    whole = ort.InferenceSession(str(qdq_path), providers=["CPUExecutionProvider"])
    chained = _run_chain(parts, feed)
    for out, ref in zip(whole.get_outputs(), whole.run(None, feed)):
        assert np.abs(chained[out.name] - ref).max() == 0.0, out.name


def test_a_model_within_the_budget_stays_whole(tmp_path):
    qdq_path = _qdq(tmp_path)
    assert write_parts(qdq_path, tmp_path, "m", 10**12) == []
    model = onnx.load(str(qdq_path))
    parts = plan_parts(model, 10**12)
    assert len(parts) == 1 and parts[0].outputs == ["y", "early"]


def test_twin_dequantizes_are_carried_as_one_tensor(tmp_path):
    """htp_forms' MatMul split leaves a QuantizeLinear read by two identical DequantizeLinears.  Carried across a
    cut as two tensors, the Q was copied twice (QNN: "two nodes with same node name"), and once that was
    fixed the part graph and its EPContext node disagreed on outputs (QNN: "Inconsistent output sizes").
    The twins are merged before cutting: one carried tensor.  Metric as above: max |chained - whole| == 0."""
    from onnx import TensorProto, helper

    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.05])
    zero = helper.make_tensor("z", TensorProto.UINT16, [], [32768])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["r_q"], name="r_Q"),
             helper.make_node("DequantizeLinear", ["r_q", "s", "z"], ["r_dq"], name="r_DQ1"),
             helper.make_node("DequantizeLinear", ["r_q", "s", "z"], ["r_dq2"], name="r_DQ2"),
             helper.make_node("Mul", ["r_dq", "r_dq2"], ["y"], name="mul")]
    value = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 8])  # noqa: E731
    graph = helper.make_graph(nodes, "g", [value("x")], [value("y")], [scale, zero])
    path = tmp_path / "twins.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    parts = write_parts(path, tmp_path, "m", 10)  # 8 elements a node: the one cut, after the DQ
    assert [part.inputs for _, part in parts] == [["x"], ["r_dq"]] and parts[0][1].outputs == ["r_dq"]
    for p, _ in parts:
        m = onnx.load(str(p))
        onnx.checker.check_model(m, full_check=True)
        assert len({n.name for n in m.graph.node}) == len(m.graph.node)
    feed = {"x": np.linspace(-3, 3, 8, dtype=np.float32).reshape(1, 8)}
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.abs(_run_chain(parts, feed)["y"] - ref).max() == 0.0
