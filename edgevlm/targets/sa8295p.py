"""Qualcomm SA8295P (automotive cockpit SoC): Hexagon HTP v68, integer only."""
from edgevlm.core.stage import KV_CACHE, StageKind
from edgevlm.targets.base import HTP_OPS, Htp, Roofline, Target

TARGET = Target(
    name="sa8295p",
    description="Qualcomm SA8295P ADP: Hexagon HTP v68 NPU, integer graphs only",
    kind="npu",
    backends=("qnn", "onnx", "executorch"),  # qnn lowers onnx's QDQ model
    activation_dtypes=("int8", "int16"),
    weight_dtypes=("int4", "int8"),
    # The KV cache is the second input of QK^T and PV.  QNN accepts a 16-bit second
    # matmul operand on v68 but does not compute it at 16 bits (measured, onnxruntime-qnn
    # 2.7.0 HTP simulation: one uint16 x uint16 MatMul 43 dB vs float, 85 dB on onnxruntime
    # CPU; autoneural-nano llm-decode with kv16 37 dB on HTP vs 72 dB on CPU, with kv8 35.6
    # dB on both), so the cache is 8-bit: what it is on the device is what verification sees.
    kv_dtypes=("int8",),
    weight_granularities=("per-tensor", "per-channel"),  # no per-block weights on v68
    float_graphs=False,
    roofline=Roofline(
        int8_macs_per_s=15.0e12,  # ~30 TOPS int8, nominal
        int16_macs_per_s=7.5e12,
        float_macs_per_s=None,
        dram_gb_per_s=67.0,  # LPDDR4X, nominal
        onchip_bytes=8 * 1024 * 1024,  # VTCM
        source="nominal SoC figures (vendor product brief); not measured",
    ),
    memory_bytes=4 * 1024**3,
    supported_ops=HTP_OPS,
    htp=Htp(arch=68, soc_model=39, soc_name="SA8295", vtcm_mb=8),
    default_quant={StageKind.ENCODER: "w8a16", StageKind.PROJECTOR: "w8a16", StageKind.LLM: "w4a16",
                   KV_CACHE: "kv8"},
    constraints=(
        "no fp16 graphs",
        "weights per-channel (no per-block)",
        "KV cache 8-bit (a 16-bit second matmul input runs at far less than 16-bit precision)",
        "8 MB VTCM",
    ),
    order=0,
)
