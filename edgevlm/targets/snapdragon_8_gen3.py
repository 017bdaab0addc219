"""Qualcomm Snapdragon 8 Gen 3 (phones): Hexagon HTP v75."""
from edgevlm.core.stage import KV_CACHE, StageKind
from edgevlm.targets.base import HTP_OPS, Htp, Roofline, Target

TARGET = Target(
    name="snapdragon-8-gen3",
    description="Qualcomm Snapdragon 8 Gen 3: Hexagon HTP v75 NPU",
    kind="npu",
    backends=("qnn", "onnx", "executorch"),  # qnn lowers onnx's QDQ model
    activation_dtypes=("int8", "int16", "fp16"),
    weight_dtypes=("int4", "int8"),
    kv_dtypes=("int8", "int16"),
    weight_granularities=("per-tensor", "per-channel", "per-group"),
    float_graphs=True,  # v75 runs fp16 graphs, slower than integer ones
    roofline=Roofline(
        int8_macs_per_s=22.5e12,  # ~45 TOPS int8, nominal
        int16_macs_per_s=11.25e12,
        float_macs_per_s=5.6e12,
        dram_gb_per_s=77.0,  # LPDDR5X-4800, nominal
        onchip_bytes=8 * 1024 * 1024,
        source="nominal SoC figures (vendor product brief); not measured",
    ),
    memory_bytes=3 * 1024**3,
    supported_ops=HTP_OPS,
    htp=Htp(arch=75, soc_model=57, soc_name="SM8650", vtcm_mb=8),
    default_quant={StageKind.ENCODER: "w8a16", StageKind.PROJECTOR: "w8a16", StageKind.LLM: "w4a16",
                   KV_CACHE: "kv8"},
    constraints=("per-block (per-group) int4 weights", "fp16 allowed but slower", "8 MB VTCM"),
    order=1,
)
