"""Stages: the units the compiler captures, quantizes and lowers.

A VLM is split into stages (encoder, projector, llm-prefill, llm-decode), each
an nn.Module with static-shape example inputs.  A user's own module is one
stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing a stage description needs no torch
    import torch


@dataclass
class Stage:
    """One graph to compile.

    ``kind`` selects the target's default quantization scheme (``encoder``,
    ``projector``, ``llm``).  ``calibration`` is an optional list of input
    tuples, each shaped like ``example_inputs``.
    """

    name: str
    module: torch.nn.Module
    example_inputs: tuple
    kind: str = "encoder"
    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    calibration: list | None = field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.example_inputs, tuple):
            self.example_inputs = (self.example_inputs,)
        if self.input_names is None:
            self.input_names = tuple(f"input_{i}" for i in range(len(self.example_inputs)))


@dataclass
class CapturedStage:
    """A stage after capture and the pass pipeline.

    ``program`` is the torch.export ExportedProgram of ``graph_module`` (the
    rewritten graph, an ordinary nn.Module) at the stage's example inputs.
    """

    stage: Stage
    graph_module: torch.fx.GraphModule
    program: "torch.export.ExportedProgram"
    pass_log: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.stage.name
