"""MSE weight scales: each output channel's scale shrunk to the clipping that minimizes its rounding error.

The quantizer's symmetric scale puts a channel's largest weight on the
grid's end (max|w| / 7 at 4 bits), which spends most of the 15 levels on
the rare large weights.  Here each channel's scale is ``c * s`` for the
ratio ``c`` in CLIP_RATIOS that minimizes ``||w - q(w; c s)||^2`` (the
clipping search of scale estimation, data-free), and the integers are
re-rounded on it.  Measured on the LFM2-VL-450M-shaped LM, all weights at 4
bits (benchmarks/lm_weight_noise.py --mse): logits SQNR -0.9 -> -0.0 dB; with
the residual branches at gain 1, 0.9 -> 2.2 dB.

Written here: onnxruntime's quantizer has no weight-clipping option, and
NNCF's scale estimation writes its own weight-only ONNX format; this keeps
the QDQ model's grid type (per output channel, symmetric: what QNN HTP v68
takes) and changes only each channel's scale and integers (and an int32
bias's, whose scale is input scale x weight scale).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgevlm.quant import onnx_files
from edgevlm.quant.weight_layers import weight_layers

CLIP_RATIOS = np.linspace(0.5, 1.0, 26)  # 0.02 steps; below half of max|w| the clipped tail costs more than it saves


def mse_scales(w: np.ndarray, scale: np.ndarray, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale [rows], integers [rows, K]) minimizing each row's ``||w - q s||^2`` over ``c * scale``, c in CLIP_RATIOS."""
    w = np.asarray(w, np.float64)
    best_err = np.full(w.shape[0], np.inf)
    best_s = np.asarray(scale, np.float64).copy()
    for c in CLIP_RATIOS:
        s = (scale * c)[:, None]
        err = ((np.clip(np.round(w / s), -qmax, qmax) * s - w) ** 2).sum(axis=1)
        better = err < best_err
        best_err[better], best_s[better] = err[better], s[better, 0]
    best_s = best_s.astype(np.float32)
    return best_s, np.clip(np.round(w / best_s[:, None].astype(np.float64)), -qmax, qmax).astype(np.int64)


def apply_mse_scales(float_model_path, qdq_model: onnx.ModelProto) -> dict:
    """Re-scale and re-round (in place) the symmetric per-channel or per-tensor Conv/MatMul weights of
    ``qdq_model``; returns info for the report (layers changed, kept and why)."""
    external = onnx_files.has_external_data(float_model_path)  # then each layer reads its own weight, as in GPTQ
    float_model = onnx.load(str(float_model_path), load_external_data=not external)
    inits = {t.name: t for t in qdq_model.graph.initializer}
    dq_of_q = {n.input[0]: n for n in qdq_model.graph.node if n.op_type == "DequantizeLinear"}
    dq_by_output = {n.output[0]: n for n in qdq_model.graph.node if n.op_type == "DequantizeLinear"}
    f_inits = {t.name: t for t in float_model.graph.initializer}
    users: dict[str, int] = {}
    for n in qdq_model.graph.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    qnodes = {n.name: n for n in qdq_model.graph.node}
    changed, kept = 0, 0
    for layer in weight_layers(float_model, qdq_model, set(), str(Path(float_model_path).parent) if external else ""):
        dq = dq_of_q.get(layer.qinit.name)
        qnode = qnodes.get(layer.node.name)
        scale_init = inits.get(dq.input[1]) if dq is not None else None
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dq.attribute} if dq is not None else {}
        # An int32 bias is dequantized on input scale x weight scale: it is re-quantized on the new scale.
        bias_dq = dq_by_output.get(qnode.input[2]) if qnode is not None and len(qnode.input) > 2 else None
        bias = _bias_tensors(bias_dq, inits, f_inits, users) if bias_dq is not None else None
        if (scale_init is None or users.get(scale_init.name, 0) != 1 or attrs.get("block_size", 0)
                or (bias_dq is not None and bias is None) or layer.qmin != -layer.qmax or np.any(layer.zp)):
            kept += 1
            continue
        grk = layer.to_grk(layer.float_w)  # [G, R, K]: rows are output channels
        g, r, k = grk.shape
        rows = grk.reshape(g * r, k)
        scale = numpy_helper.to_array(scale_init).astype(np.float32)
        per_row = np.broadcast_to(scale.reshape(-1), (g * r,)) if scale.size in (1, g * r) else None
        if per_row is None:
            kept += 1
            continue
        if scale.size == 1:  # one scale for the tensor: search the ratio on the whole tensor
            new_s, _ = mse_scales(rows.reshape(1, -1), scale.reshape(1), layer.qmax)
            new_scale = new_s.reshape(scale.shape)
            q = np.clip(np.round(rows / new_s[0]), -layer.qmax, layer.qmax).astype(np.int64)
        else:
            new_s, q = mse_scales(rows, per_row, layer.qmax)
            new_scale = new_s.reshape(scale.shape)
        layer.qinit.CopyFrom(numpy_helper.from_array(layer.from_grk(q.reshape(g, r, k)).astype(layer.q_dtype),
                                                     layer.qinit.name))
        if bias is not None:
            b_float, b_q, b_scale = bias
            ratio = (new_scale.astype(np.float64) / np.where(scale == 0, 1, scale)).reshape(-1)
            new_b_scale = (numpy_helper.to_array(b_scale).astype(np.float64).reshape(-1) * ratio).astype(np.float32)
            q_b = np.clip(np.round(numpy_helper.to_array(b_float).astype(np.float64).reshape(-1) / new_b_scale),
                          -2**31, 2**31 - 1).astype(np.int32)
            b_q.CopyFrom(numpy_helper.from_array(q_b.reshape(tuple(b_q.dims)), b_q.name))
            b_scale.CopyFrom(numpy_helper.from_array(new_b_scale.reshape(tuple(b_scale.dims)), b_scale.name))
        scale_init.CopyFrom(numpy_helper.from_array(new_scale.astype(np.float32), scale_init.name))
        changed += 1
    return {"weight_algo": "mse", "layers": changed,
            "kept": {"layers": kept, "why": "block-wise, asymmetric or shared weight scales"} if kept else None}


def _bias_tensors(bias_dq, inits, f_inits, users):
    """(float bias, int32 bias, bias scale) initializers of a per-channel int32 bias, or None if it is not one."""
    b_q, b_scale = inits.get(bias_dq.input[0]), inits.get(bias_dq.input[1])
    b_float = f_inits.get(bias_dq.output[0])  # onnxruntime keeps the float bias's name on its DequantizeLinear
    if (b_q is None or b_scale is None or b_float is None or b_q.data_type != onnx.TensorProto.INT32
            or users.get(b_scale.name, 0) != 1 or users.get(b_q.name, 0) != 1):
        return None
    return b_float, b_q, b_scale
