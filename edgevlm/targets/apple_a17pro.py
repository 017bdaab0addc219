"""Apple A17 Pro: Neural Engine through Core ML."""
from edgevlm.core.stage import KV_CACHE, StageKind
from edgevlm.targets.base import Roofline, Target

TARGET = Target(
    name="apple-a17pro",
    description="Apple A17 Pro: 16-core Neural Engine through Core ML (iOS 17+)",
    kind="npu",
    backends=("coreml", "onnx"),
    activation_dtypes=("int8", "fp16"),
    weight_dtypes=("int4", "int8", "fp16"),
    kv_dtypes=("int8", "fp16"),
    weight_granularities=("per-tensor", "per-channel", "per-group"),
    float_graphs=True,  # the ANE computes in fp16
    roofline=Roofline(
        int8_macs_per_s=17.5e12,  # 35 TOPS, nominal
        int16_macs_per_s=8.75e12,
        float_macs_per_s=8.75e12,
        dram_gb_per_s=51.2,  # LPDDR5-6400, nominal
        onchip_bytes=32 * 1024 * 1024,
        source="nominal SoC figures (vendor keynote); not measured",
    ),
    memory_bytes=2 * 1024**3,
    # The ANE has no int16 activations, so "w4a16" does not exist here; LLM weights default to 8-bit.
    default_quant={StageKind.ENCODER: "w8a8", StageKind.PROJECTOR: "w8a8", StageKind.LLM: "w8a8",
                   KV_CACHE: "kv8"},
    constraints=("ML Program, iOS 17 deployment target", "4-bit palettized or linear weights"),
    order=2,
)
