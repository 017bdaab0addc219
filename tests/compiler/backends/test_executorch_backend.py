"""ExecuTorch backend: .pte lowering and executorch.runtime parity.

Float: max abs err <= 1e-4 vs PyTorch.  Quantized (XNNPACK int8, QnnQuantizer
8a8w/16a8w without the QNN SDK): SQNR >= 30 dB vs the float model.
"""
import os

import pytest
import torch

from edgevlm.compiler.backends import get_backend
from edgevlm.compiler.backends import executorch_backend as etb
from edgevlm.core.metrics import compare
from edgevlm.errors import BackendUnavailableError, InputError
from edgevlm.quant.schemes import get_scheme

pytest.importorskip("executorch")


def run_and_compare(stage, plan, metric):
    backend = get_backend("executorch")
    artifact = backend.lower(stage, plan)
    assert (plan.out_dir / artifact.path).is_file() and artifact.path == "tiny.pte"
    outputs = backend.execute(artifact, plan.out_dir, [x.numpy() for x in stage.stage.example_inputs])
    with torch.no_grad():
        reference = [stage.stage.module(*stage.stage.example_inputs).numpy()]
    return artifact, compare(metric, reference, outputs)


def test_float_xnnpack_parity(tiny_stage, make_plan):
    artifact, err = run_and_compare(tiny_stage, make_plan("cpu-x86_64"), "max_abs_err")
    assert err <= 1e-4
    assert artifact.info["delegate"] == "XnnpackBackend"
    assert "convolution" in artifact.info["delegated_ops"]


def test_channels_last_example_inputs(capture, make_plan):
    # The program must read the contiguous tensors it is fed, whatever memory
    # layout the example inputs had at capture (a channels-last one broke it).
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(8 * 8 * 8, 16))
    x = torch.randn(1, 3, 8, 8).to(memory_format=torch.channels_last)
    stage = capture(module, (x,))
    plan = make_plan("cpu-x86_64")
    backend = get_backend("executorch")
    artifact = backend.lower(stage, plan)
    outputs = backend.execute(artifact, plan.out_dir, [x.numpy()])
    with torch.no_grad():
        assert compare("max_abs_err", [module(x).numpy()], outputs) <= 1e-4


def test_int8_xnnpack_sqnr(tiny_stage, make_plan):
    artifact, sqnr = run_and_compare(tiny_stage, make_plan("cpu-x86_64", {"encoder": get_scheme("w8a8")}), "sqnr_db")
    assert sqnr >= 30.0
    assert artifact.info["delegate"] == "XnnpackBackend"
    assert artifact.quant.calibration_samples == 16


@pytest.mark.parametrize("scheme", ["w8a8", "w8a16"])
def test_htp_without_sdk_quantizes_with_qnn_and_runs_portable(tiny_stage, make_plan, monkeypatch, scheme):
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    artifact, sqnr = run_and_compare(tiny_stage, make_plan("sa8295p", {"encoder": get_scheme(scheme)}), "sqnr_db")
    assert sqnr >= 30.0
    assert artifact.notes["qnn"].startswith("QNN SDK not found (set QNN_SDK_ROOT")
    assert "SA8295" in artifact.quant.facts["quantizer"]
    assert artifact.info["delegate"] == "portable"
    assert "quantize_per_tensor" in artifact.info["ops"]
    assert "QNN_SDK_ROOT" not in os.environ  # the SDK-free path leaves no empty QNN_SDK_ROOT behind


def test_htp_with_sdk_routes_to_qnn_for_the_targets_soc(tiny_stage, make_plan, monkeypatch):
    # No real SDK here: pretend one is found, keep ExecuTorch's own SDK lookup
    # off (empty QNN_SDK_ROOT), and record what the QNN lowering is asked for.
    monkeypatch.setenv("QNN_SDK_ROOT", "")
    monkeypatch.setattr(etb, "qnn_sdk_root", lambda: "/opt/qnn")
    seen = {}

    def fake_lower(program, soc, example_inputs, keep_rms_norm_decomposed=False):
        seen["soc"] = soc
        return etb._lower_portable(program)  # an edge program manager, as the QNN path returns

    monkeypatch.setattr(etb, "_lower_qnn", fake_lower)
    for target, soc in (("sa8295p", "SA8295"), ("snapdragon-8-gen3", "SM8650")):
        artifact = get_backend("executorch").lower(tiny_stage, make_plan(target, {"encoder": get_scheme("w8a16")}))
        assert seen["soc"] == soc and soc in artifact.notes["qnn"]


def test_sdk_root_without_host_libraries_is_ignored(tiny_stage, make_plan, monkeypatch, tmp_path):
    # ExecuTorch's annotation passes abort the process on such an SDK; we must not get there.
    monkeypatch.setenv("QNN_SDK_ROOT", str(tmp_path))
    artifact = get_backend("executorch").lower(tiny_stage, make_plan("sa8295p", {"encoder": get_scheme("w8a8")}))
    assert artifact.notes["qnn"].startswith("QNN SDK not found")
    assert os.environ["QNN_SDK_ROOT"] == str(tmp_path)


def test_broken_sdk_is_a_clear_error(tiny_stage, make_plan, monkeypatch):
    monkeypatch.setenv("QNN_SDK_ROOT", "")
    monkeypatch.setattr(etb, "qnn_sdk_root", lambda: "/opt/qnn")

    def broken(*args, **kwargs):
        raise RuntimeError("libQnnHtp.so: cannot open shared object file")

    monkeypatch.setattr(etb, "_lower_qnn", broken)
    with pytest.raises(BackendUnavailableError, match="libQnnHtp.so"):
        get_backend("executorch").lower(tiny_stage, make_plan("sa8295p", {"encoder": get_scheme("w8a16")}))


def test_xnnpack_rejects_16_bit_activations(tiny_stage, make_plan):
    with pytest.raises(InputError, match="w8a16"):
        get_backend("executorch").lower(tiny_stage, make_plan("cpu-x86_64", {"encoder": get_scheme("w8a16")}))


def test_missing_executorch_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_executorch(name, *args, **kwargs):
        if name.startswith("executorch"):
            raise ImportError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_executorch)
    ok, why = get_backend("executorch").available()
    assert not ok and "pip install 'edgevlm[executorch]'" in why


def test_pte_is_deterministic(tiny_stage, make_plan, tmp_path):
    backend = get_backend("executorch")
    a = backend.lower(tiny_stage, make_plan("cpu-x86_64"))
    first = (tmp_path / a.path).read_bytes()
    backend.lower(tiny_stage, make_plan("cpu-x86_64"))
    assert (tmp_path / a.path).read_bytes() == first


class ChannelRMSNorm(torch.nn.Module):
    """conv -> RMS norm over channels (NCHW, as MobileNetV5's RMSNorm2d) -> conv."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.gamma = torch.nn.Parameter(torch.rand(1, 8, 1, 1) + 0.5)
        self.conv2 = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv1(x)
        y = y * torch.rsqrt(y.pow(2).mean(dim=1, keepdim=True) + 1e-6) * self.gamma
        return self.conv2(y)


def test_htp_channel_rms_norm_quantizes(capture, make_plan, monkeypatch):
    # ExecuTorch's QNN RecomposeRmsNorm turns a channel norm into a last-dim
    # rms_norm and calibration fails; the backend keeps such norms decomposed.
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    torch.manual_seed(0)
    stage = capture(ChannelRMSNorm(), (torch.randn(1, 3, 8, 8),), [(torch.randn(1, 3, 8, 8),) for _ in range(8)])
    assert etb.has_channel_rms_norm(stage.program)
    artifact, sqnr = run_and_compare(stage, make_plan("sa8295p", {"encoder": get_scheme("w8a16")}), "sqnr_db")
    assert sqnr >= 30.0 and "decomposed" in artifact.notes["qnn_rms_norm"]


def test_tanh_gelu_parity(capture, make_plan):
    # XNNPACK would run tanh-approximated GELU as exact GELU (5e-4 error per op).
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(approximate="tanh"))
    stage = capture(module, (torch.randn(1, 4, 64) * 3,))
    artifact, err = run_and_compare(stage, make_plan("cpu-x86_64"), "max_abs_err")
    assert err <= 1e-4 and "tanh" in artifact.info["delegated_ops"]


def test_reference_kernels_verify_in_a_child_within_the_budget(tiny_stage, make_plan, monkeypatch):
    """An HTP program on the portable kernels: verified on calibration samples in a child process that stops at
    the budget (no latency runs); its outputs equal the in-process runtime's (max abs err 0)."""
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    backend = get_backend("executorch")
    plan = make_plan("sa8295p", {"encoder": get_scheme("w8a16")})
    artifact = backend.lower(tiny_stage, plan)
    samples, budget = backend.verify_samples(tiny_stage.stage, plan)
    assert budget == etb.REFERENCE_KERNELS_BUDGET_S and len(samples) == etb.REFERENCE_KERNELS_MAX_SAMPLES
    assert "portable" in backend.reference(plan)
    arrays = [[x.numpy() for x in s] for s in samples]
    run = backend.load(artifact, plan.out_dir)
    assert len(backend.run_samples(artifact, plan.out_dir, arrays, budget)) == len(samples)  # small: in-process
    monkeypatch.setattr(etb, "CHILD_ABOVE_BYTES", 0)  # as a large program: in a child process
    got = backend.run_samples(artifact, plan.out_dir, arrays, budget)
    assert len(got) == len(samples)
    assert max(compare("max_abs_err", run(a), g) for a, g in zip(arrays, got)) == 0.0
    assert backend.run_samples(artifact, plan.out_dir, arrays, 0.0) == []  # killed before its first sample
    float_plan = make_plan("cpu-x86_64")
    assert backend.verify_samples(tiny_stage.stage, float_plan)[1] is None  # XNNPACK: example inputs, with latency
