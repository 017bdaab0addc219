"""fastvithd: FastViTHD, the hybrid conv/attention encoder of FastVLM, built on timm's FastVit.

RepMixer (reparameterizable depthwise-conv token mixing) stages at high
resolution, attention stages with conditional positional encoding at low
resolution, and a final MobileOne conv that widens the channels (the features
FastVLM's projector reads).  ``mci3`` is timm's ``fastvit_mci3`` (FastViTHD,
five stages, 64x downsampling: 1024 px -> 16x16 tokens of 3072 channels).
The demo sizes are narrower and shallower, with BatchNorm (foldable into the
convolutions) instead of mci3's LayerNorm2d; ``nano`` has four stages (32x).
"""
from functools import partial

from edgevlm.models.arch.encoders.base import EncoderFamily, EncoderSize, VisionEncoder

_CPE = "cpe"  # marks a stage that gets timm's RepConditionalPosEnc (7x7 depthwise conv)

SIZES = {
    "nano": EncoderSize(128, dict(
        layers=(1, 1, 2, 1),
        embed_dims=(16, 32, 64, 128),
        mlp_ratios=(3, 3, 3, 3),
        pos_embs=(None, None, _CPE, _CPE),
        token_mixers=("repmixer", "repmixer", "attention", "attention"),
        downsamples=(False, True, True, True),
        cls_ratio=2.0,
    )),
    "small": EncoderSize(512, dict(
        layers=(1, 2, 4, 2, 1),
        embed_dims=(32, 64, 128, 256, 512),
        mlp_ratios=(3, 3, 3, 3, 3),
        pos_embs=(None, None, None, _CPE, _CPE),
        token_mixers=("repmixer", "repmixer", "repmixer", "attention", "attention"),
        downsamples=(False, True, True, True, True),
        cls_ratio=2.0,
    )),
    "mci3": EncoderSize(1024, dict(timm_name="fastvit_mci3"), "timm fastvit_mci3 (FastViTHD of FastVLM)"),
}


class FastViTTokenEncoder(VisionEncoder):
    """timm FastVit stem + stages + final_conv -> tokens [B, (H/s)*(W/s), C]."""


def build(cfg: dict, image_size: int) -> VisionEncoder:
    """Build FastViTHD from timm's classes (classifier head removed: ``num_classes=0``)."""
    from edgevlm._compat import import_timm

    timm = import_timm()
    from timm.models import fastvit

    if "timm_name" in cfg:
        backbone = timm.create_model(cfg["timm_name"], pretrained=False, num_classes=0)
    else:
        cpe = partial(fastvit.RepConditionalPosEnc, spatial_shape=(7, 7))
        cfg["pos_embs"] = tuple(cpe if p == _CPE else None for p in cfg["pos_embs"])
        backbone = fastvit.FastVit(num_classes=0, lkc_use_act=True, se_downsamples=(False,) * len(cfg["layers"]), **cfg)
    return FastViTTokenEncoder(backbone, backbone.num_features)


FAMILY = EncoderFamily(
    name="fastvithd",
    description="FastViTHD (RepMixer + attention stages, 64x downsampling), timm-backed",
    sizes=SIZES,
    build=build,
    mean=(0.48145466, 0.4578275, 0.40821073),  # OPENAI_CLIP_MEAN/STD, as timm's fastvit_mci3 config
    std=(0.26862954, 0.26130258, 0.27577711),
    divisor=64,
    checkpoint_ignore=("head.",),
)
