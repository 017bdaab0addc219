"""Generic AArch64 CPU (NEON dotprod), e.g. a phone's big cores or an automotive SoC's CPU."""
from edgevlm.core.stage import KV_CACHE, StageKind
from edgevlm.targets.base import Roofline, Target

TARGET = Target(
    name="cpu-arm64",
    description="AArch64 CPU, 4 big cores with NEON dotprod",
    kind="cpu",
    backends=("executorch", "onnx", "tvm"),
    activation_dtypes=("int8", "int16", "fp16", "fp32"),
    weight_dtypes=("int4", "int8", "fp16", "fp32"),
    kv_dtypes=("int8", "fp16", "fp32"),
    weight_granularities=("per-tensor", "per-channel", "per-group"),
    float_graphs=True,
    roofline=Roofline(
        int8_macs_per_s=4 * 2.8e9 * 64,  # 4 cores x 2.8 GHz x 4 SDOT pipes x 16 MAC, nominal
        int16_macs_per_s=4 * 2.8e9 * 16,
        float_macs_per_s=4 * 2.8e9 * 16,
        dram_gb_per_s=30.0,
        onchip_bytes=8 * 1024 * 1024,
        source="nominal figures for a Cortex-A78-class cluster; not measured",
    ),
    memory_bytes=4 * 1024**3,
    # LLM w4a8, not w4a16: the first backend, ExecuTorch's XNNPACK, runs int8 activations only;
    # the C runtime's Q4_0 path also quantizes activations to 8 bits.
    default_quant={StageKind.ENCODER: "w8a8", StageKind.PROJECTOR: "w8a8", StageKind.LLM: "w4a8",
                   KV_CACHE: "kv8"},
    order=4,
)
