"""SmoothQuant (NNCF's scales, folded into the producing norm): w8a8 with activation outlier channels."""
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgevlm.core.metrics import sqnr_db
from edgevlm.errors import InputError
from edgevlm.quant.onnx_qdq import quantize_onnx
from edgevlm.quant.smooth_quant import smooth_model, smooth_onnx_file

logging.getLogger().setLevel(logging.ERROR)
D, H, T = 32, 64, 16


def _block(norm: str, rng) -> onnx.ModelProto:
    """norm -> MatMul(D, H) -> Relu -> MatMul(H, D), the norm's gain x40 on 3 channels (trained LLMs'
    outlier channels come from such gains) whose fc1 rows are /40."""
    gamma = np.ones(D, np.float32)
    gamma[[3, 11, 20]] = 40.0
    w1 = rng.standard_normal((D, H)) / np.sqrt(D)
    w1[[3, 11, 20]] /= 40.0  # the outliers' weights small, so every channel carries signal (a trained model's case)
    inits = [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(w1.astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((H, D)) / np.sqrt(H)).astype(np.float32), "w2")]
    if norm == "layernorm":
        inits.append(numpy_helper.from_array(np.full(D, 0.1, np.float32), "beta"))
        nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], axis=-1, name="ln")]
    else:  # RMSNorm as torch's exporter writes it: x * rsqrt(mean(x^2) + eps) * gamma
        inits.append(numpy_helper.from_array(np.array([1e-5], np.float32), "eps"))
        nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]),
                 helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1], keepdims=1),
                 helper.make_node("Add", ["ms", "eps"], ["mse"]),
                 helper.make_node("Sqrt", ["mse"], ["rms"]),
                 helper.make_node("Div", ["x", "rms"], ["xn"]),
                 helper.make_node("Mul", ["xn", "gamma"], ["n"], name="rms_weight")]
    nodes += [helper.make_node("MatMul", ["n", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["a"]),
              helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, D])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(path, samples):
    from edgevlm.quant.analysis import _session  # the QDQ model's arithmetic also on a CPU without VNNI

    sess = _session(path)
    return [sess.run(None, {"x": s})[0] for s in samples]


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_smooth_quant_folds_and_lifts_w8a8(norm, tmp_path):
    rng = np.random.default_rng(0)
    model = _block(norm, rng)
    calib = [rng.standard_normal((1, T, D)).astype(np.float32) for _ in range(8)]
    held = [rng.standard_normal((1, T, D)).astype(np.float32) for _ in range(4)]
    plain = tmp_path / "float.onnx"
    onnx.save(model, str(plain))
    smooth = tmp_path / "smooth.onnx"
    onnx.save(model, str(smooth))
    record = smooth_onnx_file(smooth, [(c,) for c in calib], alpha=0.5)
    # NNCF scales both MatMuls' inputs: fc1's (after the norm) is folded into it, fc2's (after Relu) undone
    assert (record["folded"], record["reverted"], record["unfolded"]) == (1, 1, [])
    assert [n.op_type for n in onnx.load(str(smooth)).graph.node] == [n.op_type for n in model.graph.node]
    ref = _run(plain, held)
    # Metric: SQNR of the smoothed float model vs the original; bound 80 dB (float32 re-association only).
    assert min(sqnr_db(r, t) for r, t in zip(ref, _run(smooth, held))) > 80.0
    before, after = tmp_path / "q_plain.onnx", tmp_path / "q_smooth.onnx"
    quantize_onnx(plain, before, "w8a8", [(c,) for c in calib], "cpu-x86_64")
    quantize_onnx(smooth, after, "w8a8", [(c,) for c in calib], "cpu-x86_64")
    db_before = min(sqnr_db(r, t) for r, t in zip(ref, _run(before, held)))
    db_after = min(sqnr_db(r, t) for r, t in zip(ref, _run(after, held)))
    # Metric: w8a8 output SQNR vs float on held-out inputs (worst sample); bound: smoothing gains >= 12 dB
    # (measured 11.7 -> 33.3 dB layernorm, 11.3 -> 31.8 dB rmsnorm).
    assert db_after >= db_before + 12.0, (db_before, db_after)


def test_smooth_quant_rejects_bad_alpha():
    with pytest.raises(InputError, match="alpha"):
        smooth_model(_block("layernorm", np.random.default_rng(0)), [], alpha=1.5)
