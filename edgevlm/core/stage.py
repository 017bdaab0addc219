"""Stages: the units the compiler captures, quantizes and lowers.

A VLM is split into stages (encoder, projector, llm-prefill, llm-decode), each
an nn.Module with static-shape example inputs.  A user's own module is one
stage.  The names of a VLM's stages and the kinds that pick a quantization
scheme are defined once here (:class:`StageName`, :class:`StageKind`).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing a stage description needs no torch
    import torch


class _StrEnum(str, enum.Enum):
    """Members are their string value in ==, hashing, str(), f-strings and JSON (enum.StrEnum is 3.11+;
    the package supports 3.10), so build files, report keys and dict lookups by plain string are unchanged."""

    def __str__(self) -> str:
        return str.__str__(self)

    __format__ = str.__format__


class StageKind(_StrEnum):
    """What a stage is, which selects the target's default quantization scheme for it."""

    ENCODER = "encoder"
    PROJECTOR = "projector"
    LLM = "llm"


# The quantization slot of the LLM's KV cache: a key of Target.default_quant and of
# per-kind scheme specs beside the stage kinds, but not a stage.
KV_CACHE = "kv"


class StageName(_StrEnum):
    """The stages a VLM is split into, in the order they run."""

    ENCODER = "encoder"
    PROJECTOR = "projector"
    LLM_PREFILL = "llm-prefill"
    LLM_DECODE = "llm-decode"

    @property
    def kind(self) -> StageKind:
        """The stage kind of this VLM stage (both LLM stages are ``llm``)."""
        return StageKind.LLM if self in (StageName.LLM_PREFILL, StageName.LLM_DECODE) else StageKind(self.value)


# The stages whose artifacts run outside the C runtime (the runtime bundle holds the LLM).
VISION_STAGES = (StageName.ENCODER, StageName.PROJECTOR)

# Added to a stage output's name where it repeats an input's (see Stage.graph_output_names).
STATE_OUTPUT_SUFFIX = "_out"


@dataclass
class Stage:
    """One graph to compile.

    ``kind`` selects the target's default quantization scheme (a
    :class:`StageKind`: ``encoder``, ``projector``, ``llm``).  ``calibration``
    is an optional list of input tuples, each shaped like ``example_inputs``.
    """

    name: str
    module: torch.nn.Module
    example_inputs: tuple
    kind: str = StageKind.ENCODER
    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    calibration: list | None = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.example_inputs, tuple):
            self.example_inputs = (self.example_inputs,)
        if self.input_names is None:
            self.input_names = tuple(f"input_{i}" for i in range(len(self.example_inputs)))

    def graph_output_names(self) -> list[str] | None:
        """``output_names`` as a compiled graph names them: ``STATE_OUTPUT_SUFFIX`` added where one repeats an input name.

        A state-passing stage (llm-decode: conv_state in, conv_state out) names
        both sides alike, but an ONNX graph may define each name only once and a
        Core ML function may not give an input's name to an output.  None when
        the stage names no outputs.
        """
        if not self.output_names:
            return None
        inputs = set(self.input_names)
        return [f"{n}{STATE_OUTPUT_SUFFIX}" if n in inputs else n for n in self.output_names]
