"""Small float ONNX models for the quantization tests, exported once per session."""
import contextlib
import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn


class ConvAttention(nn.Module):
    """Conv-BN-ReLU, strided conv + GELU, then LayerNorm and one self-attention: the op mix of the encoders."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.ln = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, image):
        x = torch.relu(self.bn(self.conv(image)))
        x = nn.functional.gelu(self.conv2(x))
        t = self.ln(x.flatten(2).transpose(1, 2))
        a = torch.softmax(t @ t.transpose(1, 2) / 4.0, dim=-1) @ t
        return self.fc(a.mean(1))


class TinyLM(nn.Module):
    """Token ids (int64) + a float state in, logits + new state out: the shape of an LLM decode stage."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.up = nn.Linear(16, 32)
        self.down = nn.Linear(32, 16)
        self.head = nn.Linear(16, 50)

    def forward(self, ids, state):
        h = self.emb(ids) + state
        h = h + self.down(nn.functional.silu(self.up(h)))
        return self.head(h), h[:, -1:]


class TwoInputs(nn.Module):
    """Two float graph inputs multiplied, then a Linear: two tensors no node of the graph produces."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, a, b):
        return self.fc(a * b)


def export_onnx(module: nn.Module, example: tuple, path, input_names, output_names) -> str:
    """Export like the ONNX backend does (dynamo exporter), quietly."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), example, str(path), dynamo=True, input_names=input_names,
                          output_names=output_names, external_data=False)
    return str(path)


@pytest.fixture(scope="session")
def conv_attention_onnx(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = ConvAttention()
    with torch.no_grad():  # non-trivial BN statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return export_onnx(model, (torch.randn(1, 3, 16, 16),), tmp_path_factory.mktemp("onnx") / "conv_attention.onnx",
                       ["image"], ["logits"])


@pytest.fixture(scope="session")
def tiny_lm_onnx(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return export_onnx(TinyLM(), (torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 1, 16)),
                       tmp_path_factory.mktemp("onnx") / "tiny_lm.onnx", ["ids", "state"], ["logits", "new_state"])


@pytest.fixture(scope="session")
def two_inputs_onnx(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return export_onnx(TwoInputs(), (torch.randn(1, 8), torch.randn(1, 8)),
                       tmp_path_factory.mktemp("onnx") / "two_inputs.onnx", ["a", "b"], ["y"])


def image_samples(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"image": rng.normal(size=(1, 3, 16, 16)).astype(np.float32)} for _ in range(n)]


@pytest.fixture(scope="session")
def calib() -> list[dict]:
    return image_samples(8, seed=0)


@pytest.fixture(scope="session")
def heldout() -> list[dict]:
    return image_samples(4, seed=100)
