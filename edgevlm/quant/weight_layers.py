"""The quantized Conv/MatMul weights of a QDQ model, each with its grid and its float original.

What re-rounds weights on the grid onnxruntime's quantizer chose reads
them from here: GPTQ (edgevlm.quant.gptq) and the MSE-clipped scales
(edgevlm.quant.weight_scales).  A weight is viewed as [G, R, K] (G groups
sharing one input, R output rows, K inputs), the layout both work on.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from edgevlm.quant import onnx_files


class WeightLayer:
    """One quantized weight of the QDQ model and how it maps to GPTQ's [G, R, K] view."""

    def __init__(self, node, qinit, dq, inits, float_init, base_dir: str = ""):
        self.node, self.qinit, self.op = node, qinit, node.op_type
        self.act, self.float_w_name = node.input[0], node.input[1]
        self.float_init, self.base_dir, self.w_shape = float_init, base_dir, tuple(float_init.dims)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dq.attribute}
        q = numpy_helper.to_array(qinit)
        self.q_dtype = q.dtype
        scale = numpy_helper.to_array(inits[dq.input[1]]).astype(np.float32)
        zp = (numpy_helper.to_array(inits[dq.input[2]]) if len(dq.input) > 2 and dq.input[2]
              else np.zeros(scale.shape, q.dtype))
        self.scale = _expand(scale, q.shape, attrs.get("axis", 1), attrs.get("block_size", 0))
        self.zp = _expand(zp.astype(np.int64), q.shape, attrs.get("axis", 1), attrs.get("block_size", 0))
        lo, hi = _type_range(qinit.data_type)
        # Symmetric weights stay on [-qmax, qmax], as QNN's symmetric encodings (and onnxruntime's
        # restricted int8 rule) use them: GPTQ never picks the extra negative code RTN would not.
        self.qmin, self.qmax = (-hi, hi) if lo < 0 and not np.any(self.zp) else (lo, hi)
        if self.op == "Conv":
            na = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            self.groups = int(na.get("group", 1))
            nd = q.ndim - 2
            self.kernel = tuple(q.shape[2:])
            self.strides = tuple(na.get("strides", [1] * nd))
            self.dilations = tuple(na.get("dilations", [1] * nd))
            self.pads = tuple(na.get("pads", [0] * 2 * nd))
            self.auto_pad = na.get("auto_pad", b"NOTSET")
        else:
            self.groups = 1

    def to_grk(self, a: np.ndarray) -> np.ndarray:
        if self.op == "MatMul":  # [K, N] -> [1, N, K]
            return a.T[None]
        o = a.shape[0]
        return a.reshape(self.groups, o // self.groups, -1)

    def from_grk(self, a: np.ndarray) -> np.ndarray:
        if self.op == "MatMul":
            return a[0].T
        return a.reshape(self.w_shape)

    @property
    def float_w(self) -> np.ndarray:
        """The float weight, read when needed (from the model's data file when it has one): holding every
        layer's at once cost a copy of the stage's weights (1.4 GB for LFM2-350M)."""
        return np.array(numpy_helper.to_array(self.float_init, self.base_dir), np.float32)  # writable, for torch

    @property
    def hessian_key(self) -> tuple:
        """Layers with equal keys see the same input columns, hence share one Hessian."""
        if self.op == "MatMul":
            return (self.act, "MatMul")
        return (self.act, "Conv", self.groups, self.kernel, self.strides, self.dilations, self.pads)

    @property
    def k(self) -> int:
        return self.w_shape[0] if self.op == "MatMul" else int(np.prod(self.w_shape[1:]))

    def columns(self, x: np.ndarray) -> torch.Tensor:
        """The layer's input as GPTQ columns: [G, rows, K] (im2col for a convolution)."""
        t = torch.as_tensor(np.asarray(x, np.float32))
        if self.op == "MatMul":
            return t.reshape(1, -1, t.shape[-1])
        if t.ndim == 3:  # Conv1d as a 2-D convolution of height 1
            t = t[:, :, None, :]
            kernel, strides, dilations = (1, *self.kernel), (1, *self.strides), (1, *self.dilations)
            pads = (0, self.pads[0], 0, self.pads[1])
        else:
            kernel, strides, dilations, pads = self.kernel, self.strides, self.dilations, self.pads
        # ONNX pads are [top, left, bottom, right]; F.pad takes (left, right, top, bottom).
        t = torch.nn.functional.pad(t, (pads[1], pads[3], pads[0], pads[2]))
        cols = torch.nn.functional.unfold(t, kernel, dilation=dilations, stride=strides)  # [B, C*kk, L]
        b, ck, n = cols.shape
        cols = cols.reshape(b, self.groups, ck // self.groups, n).permute(1, 0, 3, 2)
        return cols.reshape(self.groups, b * n, ck // self.groups)


def _type_range(data_type: int) -> tuple[int, int]:
    return {onnx.TensorProto.INT4: (-8, 7), onnx.TensorProto.UINT4: (0, 15), onnx.TensorProto.INT8: (-128, 127),
            onnx.TensorProto.UINT8: (0, 255), onnx.TensorProto.INT16: (-32768, 32767),
            onnx.TensorProto.UINT16: (0, 65535)}[data_type]


def _expand(param: np.ndarray, shape, axis: int, block_size: int) -> np.ndarray:
    """A DequantizeLinear scale or zero point broadcast to the full weight shape."""
    if param.ndim == 0 or param.size == 1:
        return np.broadcast_to(param.reshape(()), shape)
    axis = axis % len(shape)
    if block_size:
        return np.repeat(param, block_size, axis=axis)[tuple(slice(0, d) for d in shape)]
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return np.broadcast_to(param.reshape(view), shape)


def weight_layers(float_model: onnx.ModelProto, qdq_model: onnx.ModelProto, skip: set[str], base_dir: str = "") -> list[WeightLayer]:
    """Conv/MatMul weights that the QDQ model stores quantized, with their consumer in the float model.

    Left out: weights in ``skip``, computed or shared weights, ones left float, MatMul weights that are
    not 2-D and Conv weights with auto_pad.  ``base_dir``: where the float model's external data is.
    """
    f_inits = {t.name: t for t in float_model.graph.initializer}
    q_inits = {t.name: t for t in qdq_model.graph.initializer}
    f_nodes = {n.name: n for n in float_model.graph.node if n.name}
    consumers = onnx_files.consumers(float_model.graph)
    dq_of = {n.output[0]: n for n in qdq_model.graph.node if n.op_type == "DequantizeLinear"}
    layers = []
    for qn in qdq_model.graph.node:
        if qn.op_type not in ("Conv", "MatMul") or len(qn.input) < 2 or qn.name not in f_nodes:
            continue
        fnode = f_nodes[qn.name]
        wname = fnode.input[1]
        dq = dq_of.get(qn.input[1])
        if (wname in skip or wname not in f_inits or dq is None or dq.input[0] not in q_inits
                or len(consumers.get(wname, [])) != 1):
            continue  # a computed or shared weight, or one left float: not GPTQ's to round
        if fnode.op_type == "MatMul" and len(f_inits[wname].dims) != 2:
            continue
        layer = WeightLayer(fnode, q_inits[dq.input[0]], dq, q_inits, f_inits[wname], base_dir)
        if layer.op == "Conv" and layer.auto_pad not in (b"NOTSET", "NOTSET"):
            continue
        layers.append(layer)
    return layers
