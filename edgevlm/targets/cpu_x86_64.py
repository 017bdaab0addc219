"""Generic x86_64 CPU (AVX2, optionally AVX-512 VNNI), as a host or edge box."""
from edgevlm.core.stage import KV_CACHE, StageKind
from edgevlm.targets.base import Roofline, Target

TARGET = Target(
    name="cpu-x86_64",
    description="x86_64 CPU, 2 cores (AVX2 / AVX-512 VNNI chosen at run time)",
    kind="cpu",
    backends=("onnx", "executorch", "tvm"),
    activation_dtypes=("int8", "int16", "fp16", "fp32"),
    weight_dtypes=("int4", "int8", "fp16", "fp32"),
    kv_dtypes=("int8", "fp16", "fp32"),
    weight_granularities=("per-tensor", "per-channel", "per-group"),
    float_graphs=True,
    roofline=Roofline(
        int8_macs_per_s=2 * 3.0e9 * 128,  # 2 cores x 3 GHz x 2 VNNI ports x 64 MAC, nominal
        int16_macs_per_s=2 * 3.0e9 * 64,
        float_macs_per_s=2 * 3.0e9 * 32,  # 2 FMA ports x 16 fp32 lanes
        dram_gb_per_s=20.0,
        onchip_bytes=32 * 1024 * 1024,  # L3, nominal
        source="nominal per-core peak for a 2-core AVX-512 VNNI server slice; not measured",
    ),
    memory_bytes=8 * 1024**3,
    default_quant={StageKind.ENCODER: "w8a8", StageKind.PROJECTOR: "w8a8", StageKind.LLM: "w8a8",
                   KV_CACHE: "kv8"},
    order=3,
)
