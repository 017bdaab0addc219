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

    def calibration_inputs(self) -> list[tuple]:
        """Calibration input tuples: the stage's calibration set, else its example inputs."""
        return list(self.stage.calibration) if self.stage.calibration else [tuple(self.stage.example_inputs)]

    def contiguous_program(self) -> tuple["torch.export.ExportedProgram", tuple]:
        """The program and example inputs, re-exported at contiguous inputs if needed.

        A torch.export program lowered to ExecuTorch or Core ML keeps the memory
        layout (dim order) of the example inputs it was exported with; a
        channels-last example makes a program that misreads the contiguous tensors
        it is fed (measured: max abs err 1.4 on a MobileNetV5 encoder, and a failed
        XNNPACK shape check on a projector).
        """
        import torch

        from edgevlm.compiler.capture import export_static

        example = tuple(x.contiguous() if isinstance(x, torch.Tensor) else x for x in self.stage.example_inputs)
        if all(a is b for a, b in zip(example, self.stage.example_inputs)):
            return self.program, example
        return export_static(self.graph_module, example, f"stage {self.name} at contiguous inputs"), example
