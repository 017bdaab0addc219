"""Reference QuantizeLinear / DequantizeLinear (ONNX opset 21 semantics) in numpy.

    QuantizeLinear:   q = saturate(round_half_to_even(x / scale) + zero_point)
    DequantizeLinear: x = (q - zero_point) * scale

Scale is per tensor (scalar), per axis (1-D, along ``axis``) or per block
(same rank as ``x``, ``block_size`` elements of ``axis`` share one scale).
This is the definition the quantized graphs are checked against; tests hold
it bit-exact to the ONNX reference evaluator and to onnxruntime.  Integer
values are returned in numpy's nearest container (int4 in int8, uint4 in
uint8), since numpy has no 4-bit type.
"""
import numpy as np

from edgevlm.errors import InputError

# name -> (qmin, qmax, numpy container)
QTYPES: dict[str, tuple[int, int, type]] = {
    "int4": (-8, 7, np.int8),
    "uint4": (0, 15, np.uint8),
    "int8": (-128, 127, np.int8),
    "uint8": (0, 255, np.uint8),
    "int16": (-32768, 32767, np.int16),
    "uint16": (0, 65535, np.uint16),
}


def qrange(dtype: str) -> tuple[int, int]:
    """(qmin, qmax) of an integer type name such as ``"uint8"``."""
    if dtype not in QTYPES:
        raise InputError(f"unknown quantized type '{dtype}'", f"use one of {', '.join(QTYPES)}")
    lo, hi, _ = QTYPES[dtype]
    return lo, hi


def _broadcast(param, x_shape: tuple, axis: int, block_size: int) -> np.ndarray:
    """Expand a scalar / per-axis / per-block parameter to ``x_shape``."""
    p = np.asarray(param)
    if p.ndim == 0 or (p.size == 1 and block_size == 0):
        return p.reshape(())
    axis = axis % len(x_shape)
    if block_size == 0:
        if p.ndim != 1 or p.shape[0] != x_shape[axis]:
            raise InputError(f"per-axis parameter of shape {p.shape} does not match axis {axis} of {x_shape}")
        shape = [1] * len(x_shape)
        shape[axis] = p.shape[0]
        return p.reshape(shape)
    expected = list(x_shape)
    expected[axis] = -(-x_shape[axis] // block_size)
    if list(p.shape) != expected:
        raise InputError(f"blocked parameter of shape {p.shape} does not match {x_shape} with block {block_size}")
    return np.repeat(p, block_size, axis=axis).take(range(x_shape[axis]), axis=axis)


def quantize_linear(x, scale, zero_point=0, dtype: str = "uint8", axis: int = 1, block_size: int = 0) -> np.ndarray:
    """ONNX QuantizeLinear for float32 input: round half to even, then saturate to ``dtype``."""
    qmin, qmax = qrange(dtype)
    container = QTYPES[dtype][2]
    x = np.asarray(x, dtype=np.float32)
    s = _broadcast(np.asarray(scale, dtype=np.float32), x.shape, axis, block_size)
    z = _broadcast(np.asarray(zero_point, dtype=np.int64), x.shape, axis, block_size)
    # The division is done in float32 (as the spec's float32 arithmetic and
    # onnxruntime do), then rounded half to even by np.rint.
    with np.errstate(over="ignore"):  # x / scale beyond float32 is inf, which saturates below
        q = np.rint(np.divide(x, s, dtype=np.float32)).astype(np.float64) + z
    return np.clip(q, qmin, qmax).astype(container)


def dequantize_linear(q, scale, zero_point=0, axis: int = 1, block_size: int = 0) -> np.ndarray:
    """ONNX DequantizeLinear to float32: ``(q - zero_point) * scale``."""
    q = np.asarray(q)
    s = _broadcast(np.asarray(scale, dtype=np.float32), q.shape, axis, block_size)
    z = _broadcast(np.asarray(zero_point, dtype=np.int64), q.shape, axis, block_size)
    return ((q.astype(np.int64) - z).astype(np.float32) * s).astype(np.float32)


def qparams_for_range(rmin: float, rmax: float, dtype: str, symmetric: bool) -> tuple[np.float32, int]:
    """(scale, zero_point) that map [rmin, rmax] (widened to include 0) onto ``dtype``.

    Same convention as onnxruntime.quantization: symmetric ranges use the
    mid-point zero (0 for signed, 128/32768 for unsigned types).
    """
    qmin, qmax = qrange(dtype)
    rmin, rmax = min(float(rmin), 0.0), max(float(rmax), 0.0)
    if symmetric:
        rmax = max(abs(rmin), abs(rmax))
        rmin = -rmax
    scale = (rmax - rmin) / (qmax - qmin)
    if scale == 0.0:  # all-zero range: any scale represents it exactly (onnxruntime also uses 1.0, 0)
        return np.float32(1.0), 0
    if symmetric:
        zero = int(round((qmin + qmax) / 2.0))
    else:
        zero = int(np.clip(round(qmin - rmin / scale), qmin, qmax))
    return np.float32(scale), zero


def fake_quantize(x, rmin: float, rmax: float, dtype: str, symmetric: bool = False) -> np.ndarray:
    """Quantize then dequantize ``x`` with the parameters for [rmin, rmax]."""
    scale, zero = qparams_for_range(rmin, rmax, dtype, symmetric)
    return dequantize_linear(quantize_linear(x, scale, zero, dtype), scale, zero)
