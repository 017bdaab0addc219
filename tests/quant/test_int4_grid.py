"""Symmetric int4 weights on scale max|w| / 7: weights on that grid (as --qat-int4 trains them) quantize exactly."""
import logging

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from edgevlm.models.train import snap_int4_
from edgevlm.quant.onnx_qdq import quantize_onnx

logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs advice at WARNING


def _dequantized_weights(path) -> dict[str, tuple[np.ndarray, int | None]]:
    """{float weight name: (dequantized values, axis)} of the int4 weights of a QDQ model."""
    m = onnx.load(str(path))
    inits = {t.name: t for t in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == TensorProto.INT4:
            q = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            s = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            axis = next((a.i for a in n.attribute if a.name == "axis"), None) if s.size > 1 else None
            shape = [-1 if d == axis else 1 for d in range(q.ndim)] if axis is not None else []
            out[n.input[0].removesuffix("_quantized")] = (q * (s.reshape(shape) if shape else s), axis)
    return out


def _save(path, nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), str(path))
    return path


def _samples(shape, n=4):
    return [{"x": np.random.default_rng(i).normal(size=shape).astype(np.float32)} for i in range(n)]


def test_snapped_conv_weights_quantize_exactly_per_channel(tmp_path):
    w = torch.randn(8, 16, 1, 1, generator=torch.Generator().manual_seed(0)) * torch.logspace(-2, 0, 8).view(8, 1, 1, 1)
    snap_int4_(w)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 1, 1])
    path = _save(tmp_path / "f.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])], [x], [y], {"w": w.numpy()})
    info = quantize_onnx(path, tmp_path / "q.onnx", "w4a16", _samples((2, 16, 1, 1)), "sa8295p")
    assert info["integer_only"]
    deq, axis = _dequantized_weights(tmp_path / "q.onnx")["w"]
    assert axis == 0  # per output channel, as QNN quantizes Conv weights
    err = np.abs(deq - w.numpy()).max() / np.abs(w.numpy()).max()
    assert err <= 1e-6, f"max relative err {err}"  # float rounding only


def test_one_hot_matmul_constant_stays_one(tmp_path):
    """A one-hot selection matrix (per-tensor MatMul weight under QNN) keeps its 1.0 exactly (was 14/15)."""
    select = np.eye(3, dtype=np.float32)[:, 1:]  # [3, 2]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])
    path = _save(tmp_path / "f.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])], [x], [y], {"w": select})
    quantize_onnx(path, tmp_path / "q.onnx", "w4a16", _samples((4, 3)), "sa8295p")
    deq, axis = _dequantized_weights(tmp_path / "q.onnx")["w"]
    assert axis is None
    assert np.array_equal(deq, select)  # max abs err 0


def test_fake_quant_rounds_forward_and_passes_gradient_straight_through():
    from edgevlm.models.train import fake_quant_int4

    w = torch.tensor([[0.7, -0.35, 0.1, 0.04], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    out = fake_quant_int4(w)
    # Row 0: scale 0.7 / 7 = 0.1, so -0.35 -> -4 (half to even), 0.04 -> 0; the all-zero row stays zero.
    assert torch.allclose(out.detach(), torch.tensor([[0.7, -0.4, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0]]), atol=1e-6)
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
