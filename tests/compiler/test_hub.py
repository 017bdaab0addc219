"""Qualcomm AI Hub jobs: job construction (pure), the missing-credential and
network-failure paths (one line, local build intact), and merging measured
latencies into the report.  The real service is used only when credentials exist."""
import io
import sys
import types

import pytest
from rich.console import Console

from edgevlm.compiler import hub
from edgevlm.errors import InputError
from edgevlm.targets import get_target


def _report(tmp_path, qdq_stages=("encoder",), float_stages=("projector",)):
    stages = []
    for name in (*qdq_stages, *float_stages):
        (tmp_path / f"{name}.onnx").write_bytes(b"onnx")
        ops = ["QuantizeLinear", "DequantizeLinear", "Conv"] if name in qdq_stages else ["Conv", "Relu"]
        stages.append({"name": name, "artifacts": [
            {"backend": "executorch", "path": f"{name}.pte", "info": {}},
            {"backend": "onnx", "path": f"{name}.onnx", "info": {"ops": ops}},
        ]})
    return {"model": "m", "target": "sa8295p", "stages": stages}


def _console():
    buf = io.StringIO()
    return Console(file=buf, width=200), buf


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("QAI_HUB_API_TOKEN", raising=False)
    monkeypatch.setenv("QAIHUB_CLIENT_INI", str(tmp_path / "absent" / "client.ini"))


def test_jobs_for_quantized_onnx_stages(tmp_path):
    jobs = hub.build_hub_jobs(tmp_path, _report(tmp_path), get_target("sa8295p"))
    assert [j.stage for j in jobs] == ["encoder"]  # the float stage cannot run on the integer-only HTP
    job = jobs[0]
    assert job.device == "SA8295P ADP"
    assert job.compile_options == "--target_runtime qnn_context_binary"
    assert job.model_path == str(tmp_path / "encoder.onnx")
    other = hub.build_hub_jobs(tmp_path, _report(tmp_path), "sa8295p", runtime="precompiled_qnn_onnx")
    assert other[0].compile_options == "--target_runtime precompiled_qnn_onnx"


def test_job_construction_errors(tmp_path):
    with pytest.raises(InputError, match="no Qualcomm AI Hub device"):
        hub.build_hub_jobs(tmp_path, _report(tmp_path), get_target("apple-a17pro"))
    with pytest.raises(InputError, match="target runtime"):
        hub.build_hub_jobs(tmp_path, _report(tmp_path), "sa8295p", runtime="tflite")
    report = _report(tmp_path)
    (tmp_path / "encoder.onnx").unlink()
    with pytest.raises(InputError, match="missing"):
        hub.build_hub_jobs(tmp_path, report, "sa8295p")


def test_missing_credentials_is_one_line_and_keeps_the_report(tmp_path, no_credentials):
    ok, why = hub.hub_available()
    assert not ok and "client.ini" in why and "QAI_HUB_API_TOKEN" in why
    report = _report(tmp_path)
    console, buf = _console()
    result = hub.run_hub(tmp_path, report, "sa8295p", console)
    assert result["status"] == "skipped" and report["hub"] is result
    assert len(buf.getvalue().strip().splitlines()) == 1 and "AI Hub: skipped" in buf.getvalue()
    assert all("device_latency" not in s for s in report["stages"])


class _FakeJob:
    def __init__(self, job_id, model=None, profile=None):
        self.job_id, self._model, self._profile = job_id, model, profile

    def get_target_model(self):
        return self._model

    def download_profile(self):
        return self._profile


def _fake_qai_hub(monkeypatch, fail_with=None):
    calls = []

    class Client:
        def __init__(self, config=None):
            pass

        def submit_compile_job(self, model, device, name, options):
            if fail_with:
                raise fail_with
            calls.append(("compile", model, device.name, options))
            return _FakeJob("jc1", model="target-model")

        def submit_inference_job(self, model, device, inputs, name, options, profile):
            calls.append(("profile", model, device.name, profile))
            return _FakeJob("jp1", profile={"execution_summary": {"estimated_inference_time": 2500,
                                                                   "estimated_inference_peak_memory": 1 << 20}})

    fake = types.SimpleNamespace(Client=Client, ClientConfig=lambda api_token: None,
                                 Device=lambda name: types.SimpleNamespace(name=name))
    monkeypatch.setitem(sys.modules, "qai_hub", fake)
    monkeypatch.setenv("QAI_HUB_API_TOKEN", "test-token")
    return calls


def test_measured_latency_is_merged(tmp_path, monkeypatch):
    calls = _fake_qai_hub(monkeypatch)
    report = _report(tmp_path)
    console, buf = _console()
    result = hub.run_hub(tmp_path, report, "sa8295p", console)
    assert calls == [("compile", str(tmp_path / "encoder.onnx"), "SA8295P ADP", "--target_runtime qnn_context_binary"),
                     ("profile", "target-model", "SA8295P ADP", True)]
    latency = report["stages"][0]["device_latency"]
    assert latency["latency_ms"] == 2.5 and latency["source"] == hub.MEASURED
    assert latency["device"] == "SA8295P ADP" and latency["profile_job"] == "jp1"
    assert result["status"] == "ok" and "1/1 stages measured on device" in buf.getvalue()


def test_network_failure_is_one_line(tmp_path, monkeypatch):
    _fake_qai_hub(monkeypatch, fail_with=ConnectionError("Max retries exceeded with url: /api/v1/models"))
    report = _report(tmp_path)
    console, buf = _console()
    result = hub.run_hub(tmp_path, report, "sa8295p", console)
    assert result["status"] == "failed" and "ConnectionError" in result["reason"]
    assert len(buf.getvalue().strip().splitlines()) == 1 and "local build complete" in buf.getvalue()
    assert all("device_latency" not in s for s in report["stages"])


@pytest.mark.slow
@pytest.mark.skipif(not hub.hub_available()[0], reason="needs Qualcomm AI Hub credentials and network")
def test_real_service_profiles_a_quantized_stage(tmp_path):
    import torch

    import edgevlm

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval()
    result = edgevlm.compile(model, (torch.randn(1, 3, 32, 32),), target="sa8295p", out=tmp_path / "b", backends=["onnx"])
    console, buf = _console()
    outcome = hub.run_hub(result.build_dir, result.report, "sa8295p", console)
    assert outcome["status"] == "ok", buf.getvalue()
    assert result.report["stages"][0]["device_latency"]["latency_ms"] > 0
