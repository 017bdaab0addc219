"""efficientvit-m: EfficientViT (Liu et al., CVPR 2023) with cascaded group attention, on timm's EfficientVitMsra.

Each block is a sandwich: depthwise conv + FFN, then cascaded group attention
(each head sees a different channel split, added to the previous head's
output), then depthwise conv + FFN.  A 16x patch embedding and subsampling
stages give 64x downsampling for m0..m5 (224 px -> 4x4 tokens); ``nano`` has
two stages (32x: 128 px -> 4x4 tokens), ``small`` two wider, deeper stages
(256 px -> 8x8 tokens).

timm caches the gathered attention-bias table per device in eval mode; the
cache survives ``load_state_dict`` and would capture a fake tensor under
``torch.export``, so every attention here recomputes it (a gather on a tiny
table) instead.
"""
from edgevlm.models.arch.encoders.base import EncoderFamily, EncoderSize, VisionEncoder

_TIMM_SIZES = {f"m{i}": f"efficientvit_m{i}" for i in range(6)}

SIZES = {
    "nano": EncoderSize(128, dict(
        embed_dim=(48, 96), key_dim=(16, 16), depth=(1, 2), num_heads=(3, 3),
        window_size=(8, 4), kernels=(5, 5, 5, 5), down_ops=(("", 1), ("subsample", 2)),
    )),
    "small": EncoderSize(256, dict(
        embed_dim=(96, 192), key_dim=(16, 16), depth=(2, 4), num_heads=(3, 4),
        window_size=(8, 8), kernels=(7, 5, 3, 3), down_ops=(("", 1), ("subsample", 2)),
    )),
    **{size: EncoderSize(224, dict(timm_name=name), f"timm {name}") for size, name in _TIMM_SIZES.items()},
}


class EfficientViTTokenEncoder(VisionEncoder):
    """timm EfficientVitMsra patch embedding + stages -> tokens [B, (H/s)*(W/s), C]."""


def _uncached_attention_class(timm_cga):
    class UncachedCascadedGroupAttention(timm_cga):
        def get_attention_biases(self, device):
            return self.attention_biases[:, self.attention_bias_idxs]

    return UncachedCascadedGroupAttention


def build(cfg: dict, image_size: int) -> VisionEncoder:
    """Build EfficientViT-M from timm's classes (classifier head removed: ``num_classes=0``)."""
    from edgevlm._compat import import_timm

    timm = import_timm()
    from timm.models import efficientvit_msra

    if "timm_name" in cfg:
        backbone = timm.create_model(cfg["timm_name"], pretrained=False, num_classes=0, img_size=image_size)
    else:
        backbone = efficientvit_msra.EfficientVitMsra(img_size=image_size, num_classes=0, **cfg)
    uncached = _uncached_attention_class(efficientvit_msra.CascadedGroupAttention)
    for module in backbone.modules():
        if type(module) is efficientvit_msra.CascadedGroupAttention:
            module.__class__ = uncached
    return EfficientViTTokenEncoder(backbone, backbone.num_features)


FAMILY = EncoderFamily(
    name="efficientvit-m",
    description="EfficientViT-M (cascaded group attention, sandwich blocks), timm-backed",
    sizes=SIZES,
    build=build,
    mean=(0.485, 0.456, 0.406),  # IMAGENET_DEFAULT_MEAN/STD, as timm's efficientvit_m* configs
    std=(0.229, 0.224, 0.225),
    checkpoint_ignore=("head.",),
)
