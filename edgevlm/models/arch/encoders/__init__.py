"""Vision encoder families, one module per family, buildable by name and size.

``build_encoder(name, size)`` returns an nn.Module mapping normalized
``pixel_values`` [B, 3, H, W] to a token grid [B, N, C], with attributes
``out_dim`` (C), ``image_size`` (default square input side), ``num_tokens``
(N at ``image_size``), ``mean``/``std`` (input normalization),
``encoder_name`` and ``size``.  Every family has at least the demo sizes
``nano`` and ``small`` plus its reference sizes.
"""
import functools
import importlib

import torch

from edgevlm.errors import UnknownNameError
from edgevlm.models.arch.encoders.base import EncoderFamily, VisionEncoder, check_image_size

# Family name -> module in this package defining FAMILY.
_MODULES = {
    "mobilenetv5": "mobilenetv5",
    "fastvithd": "fastvithd",
    "efficientvit-m": "efficientvit_m",
    "casvit": "casvit",
    "lsnet": "lsnet",
    "vit": "vit",
}
ENCODER_NAMES = tuple(_MODULES)


def get_family(name: str) -> EncoderFamily:
    """The :class:`EncoderFamily` called ``name``."""
    if name not in _MODULES:
        raise UnknownNameError(f"unknown encoder '{name}'", f"use one of: {', '.join(ENCODER_NAMES)}")
    return importlib.import_module(f"{__name__}.{_MODULES[name]}").FAMILY


def build_encoder(name: str, size: str = "nano", image_size: int | None = None, pretrained_dir=None) -> VisionEncoder:
    """Build encoder ``name`` at ``size``, in eval mode.

    ``image_size`` overrides the size's default input side (it sets the token
    count).  ``pretrained_dir`` is a local directory holding the reference
    implementation's weights as safetensors (for timm-backed families, timm's
    own ``model.safetensors``); classifier-head tensors are ignored, anything
    else missing or mis-shaped raises CheckpointError.  Without it the
    weights are random (seed them with ``torch.manual_seed``).
    """
    family = get_family(name)
    if size not in family.sizes:
        raise UnknownNameError(f"unknown size '{size}' for encoder '{name}'", f"use one of: {', '.join(family.sizes)}")
    spec = family.sizes[size]
    image_size = spec.image_size if image_size is None else image_size
    check_image_size(family, size, image_size)
    encoder = family.build(dict(spec.config), image_size)
    if pretrained_dir is not None:
        _load_reference_weights(encoder, family, pretrained_dir)
    encoder.encoder_name, encoder.size, encoder.image_size = name, size, image_size
    encoder.mean, encoder.std = tuple(family.mean), tuple(family.std)
    encoder.eval()
    encoder.num_tokens = _token_count(encoder, image_size)
    return encoder


def _token_count(encoder: VisionEncoder, image_size: int) -> int:
    # A forward on meta tensors propagates shapes only: free even for the 300M-parameter sizes.
    meta_state = {k: v.to("meta") for k, v in encoder.state_dict(keep_vars=True).items()}
    probe = torch.zeros(1, 3, image_size, image_size, device="meta")
    with torch.no_grad():
        return torch.func.functional_call(encoder, meta_state, (probe,)).shape[1]


def _load_reference_weights(encoder: VisionEncoder, family: EncoderFamily, pretrained_dir) -> None:
    from edgevlm.models import checkpoint

    ckpt = checkpoint.checkpoint_dir(pretrained_dir)
    state = checkpoint.load_state_dict(ckpt)
    if family.checkpoint_ignore:
        state = {k: v for k, v in state.items() if not k.startswith(family.checkpoint_ignore)}
    checkpoint.load_into(encoder.backbone, state, str(ckpt))


@functools.lru_cache(maxsize=None)
def _describe(name: str, size: str) -> dict:
    from edgevlm.models.arch.flops import count_macs, count_params

    # Built on the meta device: shapes only, so even the reference sizes cost no compute or memory.
    with torch.device("meta"):
        encoder = build_encoder(name, size)
        probe = torch.zeros(1, 3, encoder.image_size, encoder.image_size)
        macs = count_macs(encoder, probe)
    return dict(
        name=name,
        size=size,
        image_size=encoder.image_size,
        params=count_params(encoder),
        macs=macs,
        tokens=encoder.num_tokens,
        out_dim=encoder.out_dim,
        note=get_family(name).sizes[size].note,
    )


def list_encoders(sizes=None) -> list[dict]:
    """One dict per (name, size): name, size, image_size, params, macs (at image_size), tokens, out_dim, note.

    ``sizes`` (e.g. ``("nano", "small")``) keeps only those sizes; by default every size is listed.
    """
    return [
        dict(_describe(name, size))
        for name in ENCODER_NAMES
        for size in get_family(name).sizes
        if sizes is None or size in sizes
    ]


__all__ = ["ENCODER_NAMES", "VisionEncoder", "build_encoder", "get_family", "list_encoders"]
