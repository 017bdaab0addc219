"""A tiny conv+linear stage, captured with torch.export, shared by the backend tests."""
import pytest
import torch
from torch import nn

from edgevlm.compiler.backends.base import Plan
from edgevlm.compiler.stage import CapturedStage
from edgevlm.core.stage import Stage
from edgevlm.targets import get_target


class ConvLinear(nn.Module):
    """conv -> relu -> flatten -> linear: small, well conditioned, quantizes cleanly."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 16)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def capture_stage(module: nn.Module, example_inputs: tuple, calibration=None, kind="encoder") -> CapturedStage:
    """A CapturedStage straight from torch.export (no passes): what the pipeline hands a backend."""
    module.eval()
    stage = Stage("tiny", module, example_inputs, kind=kind, output_names=("out",), calibration=calibration)
    program = torch.export.export(module, example_inputs, strict=False)
    return CapturedStage(stage, program.module(), program)


@pytest.fixture
def tiny_stage():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    calibration = [(torch.randn(1, 3, 8, 8),) for _ in range(16)]
    return capture_stage(ConvLinear(), (x,), calibration)


@pytest.fixture
def capture():
    return capture_stage


@pytest.fixture
def make_plan(tmp_path):
    def make(target: str, quant=None, **options) -> Plan:
        return Plan(target=get_target(target), out_dir=tmp_path, quant=quant, options=options)

    return make
