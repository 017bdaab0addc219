"""onnxruntime CPU sessions that run a QDQ model with the model's own arithmetic, on any x86 CPU.

Not a quantizing module (tests/test_layering.py): the backends load their
artifacts through it, and the quantizers measure through it.
"""
import functools
import platform
from pathlib import Path

import onnxruntime as ort


@functools.cache
def u8s8_saturates() -> bool:
    """True on an x86 CPU without VNNI (AVX2 or AVX-512F only), where onnxruntime's fused uint8 x int8
    kernels (QLinearConv/MatMulInteger from DQ -> op -> Q) sum byte pairs into int16 with saturation:
    measured on an AMD EPYC with AVX2 only, a w8a8 conv + attention test model gave 17.0 dB there
    against >= 30 dB with VNNI (OpenVINO documents the same overflow for pre-VNNI CPUs), and the
    LFM2-VL-450M-shaped cpu-x86_64 build's encoder 11.2 dB against 28.1 dB (its final tensor in the
    QDQ model's own arithmetic)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" not in flags and "avx_vnni" not in flags


def cpu_session_options(threads: int = 0) -> ort.SessionOptions:
    """Session options for running a QDQ model on onnxruntime's CPU EP with the model's own arithmetic.

    Where ``u8s8_saturates()``, basic optimizations only: they do not fuse QDQ, so each op runs as
    dequantize, float op, quantize (ONNX semantics, as on a VNNI CPU or the NPU) rather than on this
    CPU's saturating int8 kernels.  Elsewhere onnxruntime's defaults (the fused int8 kernels).
    """
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    if u8s8_saturates():
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return opts
