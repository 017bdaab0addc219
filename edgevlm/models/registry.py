"""Named models: a registry that model files join.

Each module of edgevlm.models.zoo defines ``MODELS``, a list of
:class:`ModelEntry`.  ``build_model(name)`` returns a :class:`ModelBundle`:
the model's stages, ready for the compiler.
"""
from dataclasses import dataclass, field
from typing import Callable

from edgevlm.core.stage import Stage


@dataclass
class ModelBundle:
    """A built model: its stages in pipeline order, plus what later steps need.

    ``modules`` holds the whole-model objects (e.g. ``{"vlm": vlm}``) for
    evaluation and for writing the runtime's GGUF; ``meta`` is JSON-safe
    information for the report (params, MACs, config).
    """

    name: str
    stages: list[Stage]
    modules: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelEntry:
    """A named model: ``build(weights_dir=None) -> ModelBundle``."""

    name: str
    description: str
    build: Callable[..., ModelBundle]
    family: str = "encoder"  # "encoder" | "vlm" | "llm"
