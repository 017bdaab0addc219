"""Stand-alone encoder models for ``edgevlm compile``: every encoder family at its ``nano`` size.

Each named model ``enc-<family>-nano`` is one ``encoder`` stage mapping
``pixel_values`` to ``tokens``.  Weights are a seeded random init
(``torch.manual_seed(0)``), so compiles are reproducible without a
checkpoint; a checkpoint directory passed as ``weights_dir`` holds the
family's reference weights (timm's or the paper's naming) as safetensors.
"""
from functools import partial

import torch

from edgevlm.core.stage import Stage, StageKind, StageName
from edgevlm.models.arch.encoders import ENCODER_NAMES, build_encoder, get_family
from edgevlm.models.arch.flops import count_macs, count_params
from edgevlm.models.registry import ModelBundle, ModelEntry

SIZE = "nano"


def build_encoder_model(name: str, weights_dir=None) -> ModelBundle:
    """Build ``enc-<name>-nano``: one encoder stage with a fixed example input."""
    torch.manual_seed(0)
    encoder = build_encoder(name, SIZE, pretrained_dir=weights_dir)
    side = encoder.image_size
    example = (torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(1)),)
    stage = Stage(StageName.ENCODER, encoder, example, kind=StageKind.ENCODER, input_names=("pixel_values",),
                  output_names=("tokens",))
    meta = dict(
        encoder=name,
        size=SIZE,
        image_size=side,
        tokens=encoder.num_tokens,
        out_dim=encoder.out_dim,
        params=count_params(encoder),
        macs=count_macs(encoder, *example),
        mean=list(encoder.mean),
        std=list(encoder.std),
    )
    return ModelBundle(f"enc-{name}-{SIZE}", [stage], {"encoder": encoder}, meta)


MODELS = [
    ModelEntry(
        f"enc-{name}-{SIZE}",
        f"{get_family(name).description}; {SIZE} size, encoder only",
        partial(build_encoder_model, name),
        family="encoder",
    )
    for name in ENCODER_NAMES
]
