"""mobilenetv5: the MobileNetV5 vision encoder (Gemma 3n), built on timm's implementation.

Stages of universal inverted residual (UIR) and fused inverted residual
blocks, Mobile multi-query attention (MQA) in the late stages, and the
multi-scale fusion adapter (MSFA) that concatenates the last two stage outputs
(upsampled to the stride-16 grid), mixes them with a UIR feed-forward and
pools to the output grid.  All blocks are timm's (``MobileNetV5Encoder``,
``decode_arch_def``), so timm checkpoints load unchanged; the small sizes are
our own arch defs with a narrower MSFA.  Sizes:

* ``nano``/``small``: demo sizes with symmetric padding (no dynamic "same"
  padding, which NPU compilers handle poorly);
* ``300m``: timm's ``mobilenetv5_300m_enc`` exactly (Gemma 3n's encoder).
"""
from functools import partial

from edgevlm.models.arch.encoders.base import EncoderFamily, EncoderSize, VisionEncoder

_NANO_ARCH = [
    ["er_r1_k3_s2_e4_c24"],
    ["uir_r1_a3_k5_s2_e4_c48", "uir_r1_a3_k0_s1_e4_c48"],
    ["uir_r1_a5_k5_s2_e4_c96", "uir_r1_a0_k0_s1_e2_c96", "mqa_r1_k3_h4_v2_s1_d24_c96", "uir_r1_a0_k0_s1_e2_c96"],
    ["uir_r1_a5_k5_s2_e4_c160", "mqa_r1_k3_h4_s1_d32_c160", "uir_r1_a0_k0_s1_e2_c160"],
]
_SMALL_ARCH = [
    ["er_r1_k3_s2_e4_c48", "er_r1_k3_s1_e4_c48"],
    ["uir_r1_a3_k5_s2_e6_c96", "uir_r1_a5_k0_s1_e4_c96", "uir_r1_a3_k0_s1_e4_c96"],
    [
        "uir_r1_a5_k5_s2_e6_c192", "uir_r1_a5_k0_s1_e4_c192", "uir_r1_a0_k0_s1_e1_c192",
        "mqa_r1_k3_h4_v2_s1_d48_c192", "uir_r1_a0_k0_s1_e2_c192",
        "mqa_r1_k3_h4_v2_s1_d48_c192", "uir_r1_a0_k0_s1_e2_c192",
    ],
    [
        "uir_r1_a5_k5_s2_e6_c384", "mqa_r1_k3_h8_s1_d48_c384", "uir_r1_a0_k0_s1_e2_c384",
        "mqa_r1_k3_h8_s1_d48_c384", "uir_r1_a0_k0_s1_e2_c384",
    ],
]

SIZES = {
    "nano": EncoderSize(128, dict(arch=_NANO_ARCH, stem=16, msfa_dim=128, msfa_stride=32)),
    "small": EncoderSize(256, dict(arch=_SMALL_ARCH, stem=32, msfa_dim=384, msfa_stride=32)),
    "300m": EncoderSize(768, dict(timm_name="mobilenetv5_300m_enc", msfa_stride=48), "timm mobilenetv5_300m_enc (Gemma 3n)"),
}


class MobileNetV5TokenEncoder(VisionEncoder):
    """timm MobileNetV5Encoder (stem, blocks, MSFA) -> tokens [B, (H/s)*(W/s), msfa_dim]."""


def build(cfg: dict, image_size: int) -> VisionEncoder:
    """Build a MobileNetV5 encoder whose MSFA pools to ``image_size // msfa_stride`` per side."""
    from edgevlm._compat import import_timm

    timm = import_timm()
    from timm.layers import RmsNorm2d
    from timm.models import mobilenetv5 as mnv5
    from timm.models._efficientnet_builder import decode_arch_def, efficientnet_init_weights, round_channels

    out_res = max(1, image_size // cfg["msfa_stride"])
    if "timm_name" in cfg:
        backbone = timm.create_model(cfg["timm_name"], pretrained=False, msfa_output_resolution=out_res)
    else:
        backbone = mnv5.MobileNetV5Encoder(
            block_args=decode_arch_def(cfg["arch"]),
            stem_size=cfg["stem"],
            fix_stem=True,
            round_chs_fn=partial(round_channels, multiplier=1.0),
            norm_layer=RmsNorm2d,
            act_layer=mnv5._GELU,
            layer_scale_init_value=1e-5,
            msfa_output_resolution=out_res,
        )
        # timm fixes the MSFA width at Gemma 3n's 2048; the demo sizes use a narrower adapter.
        backbone.msfa = mnv5.MobileNetV5MultiScaleFusionAdapter(
            in_chs=backbone.msfa_in_chs,
            out_chs=cfg["msfa_dim"],
            output_resolution=out_res,
            norm_layer=RmsNorm2d,
            act_layer=mnv5._GELU,
        )
        efficientnet_init_weights(backbone.msfa)
        backbone.num_features = backbone.head_hidden_size = cfg["msfa_dim"]
    return MobileNetV5TokenEncoder(backbone, backbone.num_features)


FAMILY = EncoderFamily(
    name="mobilenetv5",
    description="MobileNetV5 (UIR + Mobile MQA + multi-scale fusion adapter), timm-backed",
    sizes=SIZES,
    build=build,
    mean=(0.0, 0.0, 0.0),  # timm mobilenetv5_300m_enc: pixels in [0, 1]
    std=(1.0, 1.0, 1.0),
)
