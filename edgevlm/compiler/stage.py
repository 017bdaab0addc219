"""A stage after capture: what the passes, quantizers and backends work on.

The stage description itself (:class:`edgevlm.core.stage.Stage`, its names
and kinds) lives in the core, so models can build stages without importing
the compiler.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edgevlm.core.stage import Stage

if TYPE_CHECKING:  # annotations only: importing a stage description needs no torch
    import torch


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
