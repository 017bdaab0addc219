"""quantize_onnx: QDQ models through onnxruntime.quantization, per target and scheme."""
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgevlm.errors import InputError
from edgevlm.quant.analysis import stage_sqnr
from edgevlm.quant.onnx_qdq import quantize_onnx

logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs advice at WARNING


def _qtypes(path) -> tuple[set, set]:
    """(activation Q output types, weight DQ input types) of a QDQ model."""
    m = onnx.load(str(path))
    inits = {t.name: t.data_type for t in m.graph.initializer}
    acts = {inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear"}
    weights = {inits[n.input[0]] for n in m.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in inits and not n.input[0].endswith("bias_quantized")}
    return acts, weights


@pytest.mark.parametrize("target,scheme,act,weight,min_sqnr", [
    ("sa8295p", "w8a16", TensorProto.UINT16, TensorProto.INT8, 40.0),
    ("sa8295p", "w8a8", TensorProto.UINT8, TensorProto.INT8, 30.0),
    ("sa8295p", "w4a16", TensorProto.UINT16, TensorProto.INT4, 15.0),
    ("cpu-x86_64", "w8a8", TensorProto.UINT8, TensorProto.INT8, 30.0),
])
def test_quantize_types_integer_only_and_sqnr(conv_attention_onnx, calib, heldout, tmp_path,
                                              target, scheme, act, weight, min_sqnr):
    out = tmp_path / "q.onnx"
    info = quantize_onnx(conv_attention_onnx, out, scheme, calib, target)
    acts, weights = _qtypes(out)
    # On HTP targets a MatMul of two 16-bit activations is split into two 8-bit halves of its
    # second operand (htp_forms.split_wide_matmuls): those halves are the only uint8 activations.
    split = {TensorProto.UINT8} if info["htp_split_matmuls"] else set()
    # Under w8a8 on a CPU target the attention's Softmax output is 16-bit (onnx_qdq.softmax_outputs_at_16).
    softmax16 = {TensorProto.UINT16} if (target, act) == ("cpu-x86_64", TensorProto.UINT8) else set()
    assert acts == {act} | split | softmax16 and weight in weights
    assert info["htp_split_matmuls"] == 0 or target == "sa8295p"
    assert info["integer_only"] and info["offending_ops"] == []
    assert info["calibration_samples"] == 8 and info["nodes_quantized"] >= 8
    assert info["qnn_config"] == (target == "sa8295p")
    m = onnx.load(str(out))
    assert {n.domain for n in m.graph.node} == {""}  # standard Q/DQ ops, no com.microsoft contrib ops
    assert info["qdq_domains"] == ["ai.onnx"]
    if act == TensorProto.UINT16 or weight == TensorProto.INT4:
        assert info["opset"] >= 21
    # Metric: worst-output SQNR vs float on held-out inputs; bound per scheme (>= 40 dB at w8a16).
    assert stage_sqnr(conv_attention_onnx, out, heldout)["sqnr_db"] >= min_sqnr


@pytest.mark.parametrize("scheme,min_sqnr", [("w4a16", 20.0), ("w8a16", 40.0)])
def test_llm_like_stage_with_token_ids_and_state(tiny_lm_onnx, tmp_path, scheme, min_sqnr):
    gen = torch.Generator().manual_seed(0)
    calib = [(torch.randint(0, 50, (1, 8), generator=gen), torch.randn(1, 1, 16, generator=gen)) for _ in range(8)]
    out = tmp_path / "q.onnx"
    info = quantize_onnx(tiny_lm_onnx, out, scheme, calib, "sa8295p")
    assert info["integer_only"], info["offending_ops"]
    # Metric: per-output SQNR vs float on the calibration inputs (measured 23.6 / 44.4 dB for logits).
    r = stage_sqnr(tiny_lm_onnx, out, calib)
    assert set(r["outputs"]) == {"logits", "new_state"} and r["sqnr_db"] >= min_sqnr


@pytest.mark.parametrize("target", ["cpu-x86_64", "snapdragon-8-gen3"])
def test_per_group_weights_block_the_reduction_axis(tiny_lm_onnx, tmp_path, target):
    gen = torch.Generator().manual_seed(0)
    calib = [(torch.randint(0, 50, (1, 8), generator=gen), torch.randn(1, 1, 16, generator=gen)) for _ in range(4)]
    out = tmp_path / "q.onnx"
    info = quantize_onnx(tiny_lm_onnx, out, "w4a16-g8", calib, target)
    assert info["weight_granularity"] == "per-group" and info["integer_only"]
    m = onnx.load(str(out))
    inits = {t.name: t for t in m.graph.initializer}
    mm_weights = {n.input[1] for n in m.graph.node if n.op_type == "MatMul"}
    blocked = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in mm_weights]
    assert blocked
    for dq in blocked:
        attrs = {a.name: a.i for a in dq.attribute}
        k, n = inits[dq.input[0]].dims
        assert attrs == {"axis": 0, "block_size": 8}
        assert tuple(inits[dq.input[1]].dims) == (k // 8, n)  # one scale per 8 inputs, per output channel
    assert stage_sqnr(tiny_lm_onnx, out, calib)["sqnr_db"] >= 20.0  # bound: at least plain w4a16's level


def test_kv_style_override_lowers_state_tensors_to_8_bit(tiny_lm_onnx, tmp_path):
    gen = torch.Generator().manual_seed(0)
    calib = [(torch.randint(0, 50, (1, 8), generator=gen), torch.randn(1, 1, 16, generator=gen)) for _ in range(4)]
    out = tmp_path / "q.onnx"
    info = quantize_onnx(tiny_lm_onnx, out, "w4a16", calib, "sa8295p", overrides={"state": 8, "new_state": 8})
    assert info["overrides"] == {"state": 8, "new_state": 8} and info["integer_only"]
    m = onnx.load(str(out))
    inits = {t.name: t for t in m.graph.initializer}
    q_types = {n.input[0]: inits[n.input[2]].data_type for n in m.graph.node if n.op_type == "QuantizeLinear"}
    assert q_types["state"] == TensorProto.UINT8
    assert q_types["new_state_QuantizeLinear_Input"] == TensorProto.UINT8
    assert TensorProto.UINT16 in q_types.values()  # the rest stays 16-bit


def test_conv_weights_are_per_channel_symmetric(conv_attention_onnx, calib, tmp_path):
    out = tmp_path / "q.onnx"
    quantize_onnx(conv_attention_onnx, out, "w8a16", calib, "sa8295p")
    m = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    dq = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "conv.weight_quantized")
    assert inits[dq.input[1]].shape == (8,)  # one scale per output channel
    assert np.all(inits[dq.input[2]] == 0)  # symmetric
    q_in = next(n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "image")
    assert inits[q_in.input[2]].dtype == np.uint16  # asymmetric unsigned activations


# onnxruntime's entropy search is a Python loop per tensor (~20 s on this model): slow-marked.
@pytest.mark.parametrize("observer", ["percentile", pytest.param("entropy", marks=pytest.mark.slow), "mse"])
def test_every_observer_gives_a_usable_model(conv_attention_onnx, calib, heldout, tmp_path, observer):
    out = tmp_path / "q.onnx"
    info = quantize_onnx(conv_attention_onnx, out, "w8a8", calib, "cpu-x86_64", observer=observer)
    assert info["observer"] == observer
    # Bound: >= 25 dB output SQNR at w8a8 (minmax gives ~38 dB on this model).
    assert stage_sqnr(conv_attention_onnx, out, heldout)["sqnr_db"] >= 25.0


def test_overrides_raise_single_tensors(conv_attention_onnx, calib, tmp_path):
    out = tmp_path / "q.onnx"
    info = quantize_onnx(conv_attention_onnx, out, "w4a8", calib, "sa8295p",
                         overrides={"gelu": 16, "conv2.weight": 8})
    assert info["overrides"] == {"gelu": 16, "conv2.weight": 8}
    m = onnx.load(str(out))
    inits = {t.name: t for t in m.graph.initializer}
    q_gelu = [n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0].startswith("gelu")]
    assert any(inits[n.input[2]].data_type == TensorProto.UINT16 for n in q_gelu)
    assert inits["conv2.weight_quantized"].data_type == TensorProto.INT8
    assert inits["conv.weight_quantized"].data_type == TensorProto.INT4
    assert info["integer_only"]
    with pytest.raises(InputError, match="'nope' names no tensor"):
        quantize_onnx(conv_attention_onnx, out, "w4a8", calib, "sa8295p", overrides={"nope": 16})


def test_scheme_not_allowed_by_target(conv_attention_onnx, calib, tmp_path):
    with pytest.raises(InputError, match="w16a16.*sa8295p"):
        quantize_onnx(conv_attention_onnx, tmp_path / "q.onnx", "w16a16", calib, "sa8295p")
    with pytest.raises(InputError, match="per-group"):
        quantize_onnx(conv_attention_onnx, tmp_path / "q.onnx", "w4a16-g8", calib, "sa8295p")


def test_bad_calibration_data(conv_attention_onnx, calib, tmp_path):
    out = tmp_path / "q.onnx"
    with pytest.raises(InputError, match="empty"):
        quantize_onnx(conv_attention_onnx, out, "w8a8", [], "sa8295p")
    with pytest.raises(InputError, match="missing: image"):
        quantize_onnx(conv_attention_onnx, out, "w8a8", [{"img": calib[0]["image"]}], "sa8295p")
    with pytest.raises(InputError, match="shape"):
        quantize_onnx(conv_attention_onnx, out, "w8a8", [np.zeros((1, 3, 8, 8), np.float32)], "sa8295p")
    nan = calib[0]["image"].copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="'image' contains NaN.*sample 1"):
        quantize_onnx(conv_attention_onnx, out, "w8a8", [calib[1], nan], "sa8295p")
    assert not out.exists()  # nothing half-written


def _matmul_model(path, weight: np.ndarray, op: str = "MatMul") -> str:
    """y = op(x, W) (+ a Log node for the NaN-activation case)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),
             helper.make_node(op, ["mm"], ["y"], name="act")]
    graph = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(weight.astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), str(path))
    return str(path)


def _x(n=4, k=4, seed=0):
    return [{"x": np.random.default_rng(seed + i).normal(size=(1, k)).astype(np.float32)} for i in range(n)]


def test_nan_or_inf_weight_is_named(tmp_path):
    w = np.ones((4, 3), np.float32)
    w[1, 2] = np.inf
    with pytest.raises(InputError, match="'w' contains Inf.*weight initializer"):
        quantize_onnx(_matmul_model(tmp_path / "f.onnx", w, "Relu"), tmp_path / "q.onnx", "w8a8", _x(), "sa8295p")


def test_nan_activation_is_named(tmp_path):
    # Log of negative values: NaN appears inside the graph, not in the inputs.
    w = np.eye(4, 3, dtype=np.float32)
    with pytest.raises(InputError, match="'y' contains NaN"):
        quantize_onnx(_matmul_model(tmp_path / "f.onnx", w, "Log"), tmp_path / "q.onnx", "w8a8", _x(), "sa8295p")


def test_underflowing_weight_scale_is_named(tmp_path):
    w = np.full((4, 3), 1e-39, np.float32)  # subnormal: scale = max/127 underflows float32
    with pytest.raises(InputError, match="weight 'w' is too small"):
        quantize_onnx(_matmul_model(tmp_path / "f.onnx", w, "Relu"), tmp_path / "q.onnx", "w8a8", _x(), "sa8295p")


def test_underflowing_activation_scale_is_named(tmp_path):
    f = _matmul_model(tmp_path / "f.onnx", np.eye(4, 3, dtype=np.float32), "Relu")
    tiny_inputs = [{"x": (s["x"] * 1e-38).astype(np.float32)} for s in _x()]  # range / 255 < float32 normals
    with pytest.raises(InputError, match="activation 'mm'.*'x' .*'y'.*underflows"):
        quantize_onnx(f, tmp_path / "q.onnx", "w8a8", tiny_inputs, "cpu-x86_64")


def test_ranges_below_qnn_minimum_are_reported(tmp_path):
    f = _matmul_model(tmp_path / "f.onnx", np.eye(4, 3, dtype=np.float32), "Relu")
    small = [{"x": (s["x"] * 1e-6).astype(np.float32)} for s in _x()]
    info = quantize_onnx(f, tmp_path / "q.onnx", "w8a16", small, "sa8295p")
    assert {"x", "mm"} <= set(info["range_widened"])  # widened to QNN's 1e-4 minimum: precision lost, said so
    info = quantize_onnx(f, tmp_path / "q.onnx", "w8a16", _x(), "sa8295p")
    assert info["range_widened"] == {}


@pytest.mark.parametrize("target", ["sa8295p", "cpu-x86_64"])
def test_zero_range_tensors_quantize_exactly(tmp_path, target):
    # An all-zero weight column and an all-zero activation (x * 0): exact zeros, finite scales.
    w = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    w[:, 1] = 0.0
    f = _matmul_model(tmp_path / "f.onnx", w, "Relu")
    out = tmp_path / "q.onnx"
    zeros = [{"x": np.zeros((1, 4), np.float32)} for _ in range(3)]
    quantize_onnx(f, out, "w8a16", zeros + _x(), target)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y0 = sess.run(None, zeros[0])[0]
    assert np.all(y0 == 0.0)
    ys = [sess.run(None, s)[0] for s in _x(seed=50)]
    assert all(np.all(np.isfinite(y)) and np.all(y[:, 1] == 0.0) for y in ys)
    m = onnx.load(str(out))
    scales = [numpy_helper.to_array(t) for t in m.graph.initializer if t.name.endswith("_scale")]
    assert all(np.all(np.isfinite(s)) and np.all(s > 0) for s in scales)


@pytest.mark.parametrize("target", ["sa8295p", "cpu-x86_64"])
def test_empty_state_passed_through_quantizes(tmp_path, target):
    # A [0, ...] state input that an Identity hands back (as a conv-only LM exported its KV cache before its
    # stages left empty state parts out): calibration sees no value in it, and its kv override must still
    # get quantization parameters (onnxruntime refused it: "Quantization parameters are not specified").
    f = _matmul_model(tmp_path / "f.onnx", np.eye(4, 3, dtype=np.float32), "Relu")
    m = onnx.load(f)
    m.graph.input.append(helper.make_tensor_value_info("cache", TensorProto.FLOAT, [0, 1, 2, 8, 4]))
    m.graph.output.append(helper.make_tensor_value_info("cache_out", TensorProto.FLOAT, [0, 1, 2, 8, 4]))
    m.graph.node.append(helper.make_node("Identity", ["cache"], ["cache_out"], name="pass"))
    onnx.save(m, f)
    calib = [{**s, "cache": np.zeros((0, 1, 2, 8, 4), np.float32)} for s in _x()]
    out = tmp_path / "q.onnx"
    quantize_onnx(f, out, "w8a16", calib, target, overrides={"cache": 8, "cache_out": 8})
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y, cache = sess.run(None, calib[0])
    assert cache.shape == (0, 1, 2, 8, 4)
    ref = np.maximum(calib[0]["x"] @ np.eye(4, 3, dtype=np.float32), 0)
    assert np.max(np.abs(y - ref)) < 0.02  # max abs error of 16-bit activations on O(1) values


@pytest.mark.parametrize("bad_scale", [np.nan, 0.0, 1e-40])
def test_final_scale_check_names_the_tensor(bad_scale):
    from edgevlm.quant.onnx_qdq import check_scales

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(bad_scale, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")])
    with pytest.raises(InputError, match="scale of tensor 'x'"):
        check_scales(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))


class _SpreadAttention(torch.nn.Module):
    """Attention over 1024 keys with small logits: every probability near 1/1024, below uint8's 1/255."""

    def forward(self, q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2) * 0.05, dim=-1) @ v


def test_softmax_outputs_are_16_bit_under_w8a8_on_cpu(tmp_path):
    """cpu-x86_64 w8a8: the Softmax output's Q is uint16 (everything else uint8); metric: SQNR of the attention
    output vs float on held-out inputs, >= 10 dB above the same model with that output forced back to 8 bits."""
    gen = torch.Generator().manual_seed(0)
    shapes = ((1, 16, 32), (1, 1024, 32), (1, 1024, 32))
    sample = lambda: [torch.randn(s, generator=gen) for s in shapes]  # noqa: E731
    path = str(tmp_path / "attn.onnx")
    torch.onnx.export(_SpreadAttention(), tuple(sample()), path, dynamo=True, input_names=["q", "k", "v"],
                      output_names=["out"], external_data=False, verbose=False)
    calib = [{n: x.numpy() for n, x in zip("qkv", sample())} for _ in range(4)]
    heldout = [{n: x.numpy() for n, x in zip("qkv", sample())} for _ in range(2)]
    softmax = next(n.output[0] for n in onnx.load(str(path)).graph.node if n.op_type == "Softmax")
    quantize_onnx(path, tmp_path / "q16.onnx", "w8a8", calib, "cpu-x86_64")
    quantize_onnx(path, tmp_path / "q8.onnx", "w8a8", calib, "cpu-x86_64", overrides={softmax: 8})
    assert _qtypes(tmp_path / "q16.onnx")[0] == {TensorProto.UINT8, TensorProto.UINT16}
    assert _qtypes(tmp_path / "q8.onnx")[0] == {TensorProto.UINT8}
    db16 = stage_sqnr(path, tmp_path / "q16.onnx", heldout)["sqnr_db"]
    db8 = stage_sqnr(path, tmp_path / "q8.onnx", heldout)["sqnr_db"]
    assert db16 >= db8 + 10.0, (db16, db8)
