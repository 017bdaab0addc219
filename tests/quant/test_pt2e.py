"""pt2e recipes: XNNPACKQuantizer for CPU, QnnQuantizer for HTP targets, via torchao prepare/convert."""
import sys

import numpy as np
import pytest
import torch
from torch import nn

from edgevlm.core.metrics import sqnr_db
from edgevlm.errors import BackendUnavailableError, InputError
from edgevlm.quant import pt2e


class ConvLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    model = ConvLinear().eval()
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(1, 3, 8, 8, generator=gen),) for _ in range(8)]
    return model, data


def _quant_dtypes(gm) -> set:
    """Integer dtypes of the quantize_per_tensor nodes (activations) of a converted graph."""
    return {str(n.args[-1]) for n in gm.graph.nodes
            if n.op == "call_function" and "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target)}


def _sqnr(model, gm, data) -> float:
    with torch.no_grad():
        ref = np.concatenate([model(*d).numpy().ravel() for d in data])
        got = np.concatenate([gm(*d).numpy().ravel() for d in data])
    return sqnr_db(ref, got)


@pytest.mark.parametrize("target,scheme,dtype,min_sqnr", [
    ("cpu-x86_64", "w8a8", "torch.int8", 30.0),
    ("sa8295p", "w8a16", "torch.int32", 35.0),  # QNN carries 16-bit activations in int32 with a uint16 range
    ("sa8295p", "w8a8", "torch.uint8", 30.0),
])
def test_quantize_pt2e_per_target(model_and_data, target, scheme, dtype, min_sqnr):
    model, data = model_and_data
    q = pt2e.quantizer_for(target, scheme)
    assert type(q).__name__ == ("QnnQuantizer" if target == "sa8295p" else "XNNPACKQuantizer")
    gm = pt2e.quantize_pt2e(model, data[0], q, data)
    assert dtype in _quant_dtypes(gm)
    # Metric: output SQNR vs float over the calibration inputs; bound per scheme.
    assert _sqnr(model, gm, data) >= min_sqnr


def test_exported_program_input_and_mse_observer(model_and_data):
    model, data = model_and_data
    program = torch.export.export(model, data[0], strict=False)
    gm = pt2e.quantize_pt2e(program, data[0], pt2e.quantizer_for("cpu-x86_64", "w8a8", observer="mse"), data)
    assert _sqnr(model, gm, data) >= 30.0


def test_kv_cache_annotation_is_registered():
    q = pt2e.quantizer_for("sa8295p", "w4a16", kv_cache_8bit=True)
    assert [f.__name__ for f in q.custom_quant_annotations] == ["annotate_kv_8bit"]


def test_refusals():
    with pytest.raises(InputError, match="XNNPACK cannot run scheme w8a16"):
        pt2e.quantizer_for("cpu-x86_64", "w8a16")
    with pytest.raises(InputError, match="w16a16.*sa8295p"):
        pt2e.quantizer_for("sa8295p", "w16a16")
    with pytest.raises(InputError, match="no pt2e equivalent"):
        pt2e.quantizer_for("sa8295p", "w8a16", observer="entropy")
    with pytest.raises(InputError, match="no pt2e quantizer for target apple-a17pro"):
        pt2e.quantizer_for("apple-a17pro", "w8a8")


def test_bad_calibration(model_and_data):
    model, data = model_and_data
    q = pt2e.quantizer_for("cpu-x86_64", "w8a8")
    with pytest.raises(InputError, match="empty"):
        pt2e.quantize_pt2e(model, data[0], q, [])
    with pytest.raises(InputError, match="sample 1 contains NaN"):
        pt2e.quantize_pt2e(model, data[0], q, [data[0], (torch.full((1, 3, 8, 8), float("nan")),)])


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.quantization.pt2e", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edgevlm\[executorch\]'"):
        pt2e.quantizer_for("cpu-x86_64", "w8a8")


@pytest.mark.parametrize("user_setting", [True, False])
def test_qnn_quantizer_leaves_onednn_as_the_caller_had_it(monkeypatch, user_setting):
    """ExecuTorch's QnnQuantizer turns oneDNN off process-wide on AMD hosts, which made every later
    convolution of a compile ~20x slower.  Pretend this host is AMD so the check runs on any CPU."""
    from executorch.backends.qualcomm.utils import qnn_sdk_setup

    monkeypatch.setattr(qnn_sdk_setup, "_vendor_is_amd", True)
    before = torch.backends.mkldnn.enabled
    try:
        torch.backends.mkldnn.enabled = user_setting
        with pt2e.qnn_sdk_guard():
            qnn_sdk_setup.disable_mkldnn_on_amd()
            assert torch.backends.mkldnn.enabled is False  # the guard really is ExecuTorch's switch
        assert torch.backends.mkldnn.enabled is user_setting
        pt2e.quantizer_for("sa8295p", "w8a16")
        assert torch.backends.mkldnn.enabled is user_setting
    finally:
        torch.backends.mkldnn.enabled = before
