"""What every vision encoder shares: the token-grid contract and timm checkpoint loading.

An encoder maps normalized ``pixel_values`` [B, 3, H, W] to a token grid
[B, N, C].  Families wrap a ``backbone`` whose parameter names are those of
the reference implementation (timm's for timm-backed families), so a
reference checkpoint loads into ``backbone`` unchanged.
"""
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from edgevlm.errors import InputError


@dataclass(frozen=True)
class EncoderSize:
    """One buildable size of a family: default input size, the family's config kwargs, and
    (if it differs from the family's) the number every input side must be a multiple of."""

    image_size: int
    config: dict = field(default_factory=dict)
    note: str = ""
    divisor: int | None = None


@dataclass(frozen=True)
class EncoderFamily:
    """An encoder family: its sizes and ``build(size_cfg, image_size) -> VisionEncoder``.

    An input side must be a multiple of ``divisor`` (unless the size says
    otherwise).  ``checkpoint_ignore`` lists key
    prefixes of the reference checkpoint that the encoder does not use (a
    classifier head), dropped when loading.
    """

    name: str
    description: str
    sizes: dict
    build: Callable[[dict, int], "VisionEncoder"]
    mean: tuple
    std: tuple
    divisor: int = 32
    checkpoint_ignore: tuple = ()


class VisionEncoder(nn.Module):
    """Base class: ``forward(pixel_values) -> tokens [B, N, C]`` over a ``backbone`` feature map."""

    def __init__(self, backbone: nn.Module, out_dim: int):
        super().__init__()
        self.backbone = backbone
        self.out_dim = out_dim
        # Filled by build_encoder once the family and size are known.
        self.encoder_name = ""
        self.size = ""
        self.image_size = 0
        self.num_tokens = 0
        self.mean = (0.0, 0.0, 0.0)
        self.std = (1.0, 1.0, 1.0)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The backbone's output feature map [B, C, h, w] (or tokens [B, N, C] for token backbones)."""
        return self.backbone.forward_features(pixel_values)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        y = self.features(pixel_values)
        if y.dim() == 4:
            y = y.flatten(2).transpose(1, 2)
        return y


def check_image_size(family: EncoderFamily, size: str, image_size: int) -> None:
    """Refuse an input size the size's strides cannot divide."""
    divisor = family.sizes[size].divisor or family.divisor
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0 or image_size % divisor:
        raise InputError(
            f"image_size {image_size!r} is not valid for encoder '{family.name}' size '{size}'",
            f"use a positive multiple of {divisor}",
        )
