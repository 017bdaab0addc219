"""Capture: torch.export each stage at its static example shapes."""
import torch

from edgevlm.core.stage import Stage
from edgevlm.errors import InputError


def export_static(module: torch.nn.Module, example_inputs: tuple, what: str) -> "torch.export.ExportedProgram":
    """torch.export ``module`` at exactly the shapes of ``example_inputs``.

    Capture failures (data-dependent control flow, unsupported Python) become
    an InputError naming the stage and the first line of torch's reason.
    """
    try:
        return torch.export.export(module, tuple(example_inputs), strict=False)
    except Exception as exc:  # torch.export raises many unrelated types; the user needs the reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"torch.export could not capture {what}: {reason}",
            "make forward() traceable at static shapes (no data-dependent Python control flow)",
        ) from None


def capture_module(module, example_inputs: tuple, what: str) -> torch.fx.GraphModule:
    """Export ``module`` (an ExportedProgram is taken as it is) and return its graph as an ordinary GraphModule.

    Parameters and buffers become attributes (``get_attr`` nodes), which is the
    form the passes rewrite.
    """
    if isinstance(module, torch.export.ExportedProgram):
        program = module
    else:
        module.eval()
        program = export_static(module, example_inputs, what)
    # An empty decomposition table only functionalizes: in-place ops (add_, relu_)
    # become their pure forms, every other op keeps its high-level name.
    return program.run_decompositions({}).module()


def capture(stage: Stage) -> torch.fx.GraphModule:
    """A stage's graph as an ordinary GraphModule (see :func:`capture_module`); the pipeline re-exports
    the result after the passes."""
    return capture_module(stage.module, stage.example_inputs, f"stage '{stage.name}'")
