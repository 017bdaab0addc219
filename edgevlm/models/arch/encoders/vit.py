"""vit: a SigLIP-style plain ViT, the quantization-brittle baseline, built on timm's VisionTransformer.

Conv patch embedding, learned position embedding, no CLS token, pre-LN
transformer blocks (multi-head attention, GELU MLP) and a final LayerNorm;
the token grid is every patch token.  Its LayerNorms, softmax and
outlier-heavy activations are what integer-only NPUs handle worst, which is
why it is here.  ``base`` and ``so400m`` are timm's SigLIP towers
(``vit_base_patch16_siglip_224``, ``vit_so400m_patch14_siglip_224``); their
attention-pooling head is not part of the token encoder.
"""
from edgevlm.models.arch.encoders.base import EncoderFamily, EncoderSize, VisionEncoder

SIZES = {
    "nano": EncoderSize(128, dict(patch_size=16, embed_dim=128, depth=4, num_heads=4)),
    "small": EncoderSize(224, dict(patch_size=16, embed_dim=256, depth=6, num_heads=4)),
    "base": EncoderSize(224, dict(timm_name="vit_base_patch16_siglip_224"), "timm vit_base_patch16_siglip_224 (SigLIP B/16)"),
    "so400m": EncoderSize(224, dict(timm_name="vit_so400m_patch14_siglip_224"), "timm vit_so400m_patch14_siglip_224 (SigLIP So400m/14)", divisor=14),
}


def build(cfg: dict, image_size: int) -> VisionEncoder:
    """Build a SigLIP-style ViT for ``image_size`` (static position embedding, no pooling head)."""
    from edgevlm._compat import import_timm

    timm = import_timm()
    from timm.models.vision_transformer import VisionTransformer

    common = dict(img_size=image_size, num_classes=0, global_pool="", class_token=False)
    if "timm_name" in cfg:
        backbone = timm.create_model(cfg.pop("timm_name"), pretrained=False, **common)
    else:
        backbone = VisionTransformer(**common, **cfg)
    return VisionEncoder(backbone, backbone.num_features)


FAMILY = EncoderFamily(
    name="vit",
    description="SigLIP-style ViT (patch conv, learned pos-emb, pre-LN, no CLS), timm-backed",
    sizes=SIZES,
    build=build,
    mean=(0.5, 0.5, 0.5),  # SigLIP normalization: pixels to [-1, 1]
    std=(0.5, 0.5, 0.5),
    divisor=16,
    checkpoint_ignore=("attn_pool.", "head.", "fc_norm."),
)
