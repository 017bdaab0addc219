"""QNN backend: context binaries prepared and run by Qualcomm's QNN HTP (onnxruntime-qnn's HTP simulation).

Metric: SQNR (dB) of the context binary's outputs on the HTP simulation vs
float PyTorch, over the stage's calibration samples.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

import edgevlm
from edgevlm.errors import UnsupportedOpError
from edgevlm.targets import get_target

pytest.importorskip("onnxruntime_qnn", reason="needs onnxruntime-qnn (pip install 'edgevlm[qnn]'; Linux x86_64)")
from edgevlm.compiler.backends import qnn_backend  # noqa: E402


class ConvNormNet(nn.Module):
    """conv -> RMSNorm over channels (NCHW) -> tokens -> linear -> RMSNorm over the last axis.

    Both norms are written as x * rsqrt(mean(x^2) + eps), which exports to a
    Reciprocal that the HTP computes with almost no precision unless
    edgevlm.quant.htp_forms rewrites it.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, 32)
        self.w = nn.Parameter(torch.linspace(0.5, 1.5, 32))

    def forward(self, x):
        h = self.conv(x)
        h = h * torch.rsqrt(h.pow(2).mean(1, keepdim=True) + 1e-5)
        t = self.fc(h.flatten(2).transpose(1, 2))
        return self.w * (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5))


def _compile(out, **kwargs):
    torch.manual_seed(0)
    model = ConvNormNet().eval()
    calibration = [(torch.randn(1, 3, 16, 16),) for _ in range(4)]
    return edgevlm.compile(model, (calibration[0][0],), target="sa8295p", out=out, backends=["qnn"],
                           calibration=calibration, name="convnorm", **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("qnn")
    return root, _compile(root / "a")


def test_context_binary_verified_on_the_htp(built):
    _, result = built
    arts = result.report["stages"][0]["artifacts"]
    assert [a["backend"] for a in arts] == ["qnn", "onnx"]  # the deployed artifact first; onnx is its source
    qnn = arts[0]
    assert qnn["path"] == "model.htp.onnx" and "model.htp_qnn.bin" in qnn["files"]
    assert qnn["info"]["htp_arch"] == 68 and qnn["info"]["soc_model"] == 39
    parity = qnn["parity"]
    assert "QNN HTP simulation (HTP v68, soc_model 39)" in parity["reference"]
    assert parity["samples"] == 4
    assert parity["metric"] == "sqnr_db" and parity["value"] >= 35.0, parity  # measured 40+ dB; 5 dB before htp_forms
    assert "latency_ms" not in qnn  # the simulation's speed is no device figure


def test_manifest_lists_the_context_binary_with_its_sha256(built):
    root, result = built
    manifest = json.loads((root / "a" / "manifest.json").read_text())
    entries = {e["path"]: e for e in manifest["artifacts"]}
    for name in ("model.htp.onnx", "model.htp_qnn.bin"):
        data = (root / "a" / name).read_bytes()
        assert entries[name]["sha256"] == hashlib.sha256(data).hexdigest()


def test_context_binaries_are_byte_identical_on_rebuild(built, tmp_path):
    root, _ = built
    _compile(tmp_path / "b", htp_verify=False)
    for name in ("model.htp.onnx", "model.htp_qnn.bin", "model.onnx"):
        assert (root / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_no_htp_verify_says_so(tmp_path):
    result = _compile(tmp_path / "c", htp_verify=False)
    parity = result.report["stages"][0]["artifacts"][0]["parity"]
    assert parity["value"] is None and "--no-htp-verify" in parity["reference"]


def test_describe_reads_what_the_binary_was_prepared_for(built):
    root, _ = built
    info = qnn_backend.describe(root / "a" / "model.htp.onnx")
    assert info["htp_arch"] == "68" and info["soc_model"] == "39" and info["target"] == "sa8295p"
    assert info["qnn_sdk"].startswith("v2.") and len(info["graphs"]) == 1 and info["bytes"] > 1000


def test_loaded_context_binary_runs_like_the_verification(built):
    root, result = built
    from edgevlm.compiler.backends.base import Artifact

    run = qnn_backend.BACKEND.load(Artifact("qnn", "model", "model.htp.onnx"), root / "a")
    torch.manual_seed(1)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.manual_seed(0)
        ref = ConvNormNet().eval()(x).numpy()
    from edgevlm.core.metrics import sqnr_db

    assert sqnr_db(ref, run([x.numpy()])[0]) >= 30.0  # an unseen input, same model


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    import time

    end = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    return not _alive(pid)


def test_an_interrupted_htp_run_stops_its_worker(built, monkeypatch):
    """Ctrl-C (or compile's SIGTERM handler) while waiting on the HTP worker kills the worker and propagates."""
    root, _ = built
    worker = qnn_backend.HtpWorker(root / "a" / "model.htp.onnx", get_target("sa8295p").htp)
    x = {worker.inputs[0]: np.zeros((1, 3, 16, 16), np.float32)}
    assert worker(x)[0].shape == (1, 64, 32)  # it serves; then the next wait is interrupted
    pid = worker._child.pid

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(worker._child.stdout, "readline", interrupted)
    with pytest.raises(KeyboardInterrupt):
        worker(x)
    assert _gone_within(pid, 5.0)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_htp_worker_dies_with_its_parent(built):
    """A parent killed outright (SIGKILL: no handler, no atexit) leaves no HTP simulation running."""
    import subprocess
    import sys

    root, _ = built
    code = ("import sys, time; from edgevlm.compiler.backends.qnn_backend import HtpWorker; "
            "from edgevlm.targets import get_target; "
            f"w = HtpWorker({str(root / 'a' / 'model.htp.onnx')!r}, get_target('sa8295p').htp); "
            "print(w._child.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert _alive(pid)
    finally:
        parent.kill()
        parent.wait()
    assert _gone_within(pid, 5.0)


def test_a_failing_htp_worker_says_why(tmp_path):
    """A model the worker cannot load: one LoweringError naming the model, not a hang on the pipe."""
    from edgevlm.errors import LoweringError

    bad = tmp_path / "bad.htp.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(LoweringError, match="QNN HTP run of the graph failed"):
        qnn_backend.HtpWorker(bad, get_target("sa8295p").htp)


def test_a_refused_graph_names_node_op_and_htp():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="relu_0"),
                               helper.make_node("Hardmax", ["r"], ["y"], name="hardmax_1")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    with pytest.raises(UnsupportedOpError) as err:
        qnn_backend.htp_session(model.SerializeToString(), get_target("sa8295p").htp, what="stage 'x' for sa8295p")
    message = str(err.value)
    assert "node 'hardmax_1' (op Hardmax)" in message and "HTP v68" in message and "sa8295p" in message
    assert "\n" not in message


def test_targets_carry_their_htp():
    assert get_target("sa8295p").htp.arch == 68 and get_target("sa8295p").htp.soc_model == 39
    assert get_target("snapdragon-8-gen3").htp.arch == 75
    assert get_target("cpu-x86_64").htp is None
    assert get_target("sa8295p").backends[0] == "qnn"


def test_qnn_needs_an_htp_target(tmp_path):
    with pytest.raises(edgevlm.errors.EdgeVLMError):
        edgevlm.compile(ConvNormNet().eval(), (torch.randn(1, 3, 16, 16),), target="cpu-x86_64", out=tmp_path / "d",
                        backends=["qnn"])
    assert not (tmp_path / "d").exists()


def test_report_shows_where_the_htp_departs(built):
    root, result = built
    dep = result.report["stages"][0]["artifacts"][0]["info"]["htp_departure"]
    assert dep["samples"] == 1 and len(dep["rows"]) >= 5
    assert all(r["sqnr_db"] >= dep["threshold_db"] for r in dep["rows"])  # after htp_forms no layer departs
    assert dep["first_departure"] is None
    page = (root / "a" / "report.html").read_text()
    assert "Where the HTP departs" in page and "HTP vs onnxruntime CPU per layer" in page


def test_departure_names_the_reciprocal_without_htp_forms(tmp_path, monkeypatch):
    """The per-layer view finds the layer the HTP computes differently: the quantized Reciprocal of an RMSNorm."""
    from edgevlm.quant import htp_forms

    monkeypatch.setattr(htp_forms, "RULES", [])
    result = _compile(tmp_path / "e")
    qnn = result.report["stages"][0]["artifacts"][0]
    first = qnn["info"]["htp_departure"]["first_departure"]
    assert first is not None and first["op"] == "Mul" and first["tensor"].startswith("rsqrt"), first
    assert qnn["parity"]["value"] < 20.0  # measured 5 dB on autoneural-nano's encoder in this form


def test_inspect_lists_the_context_binaries(built):
    from edgevlm.commands.inspect import qnn_contexts

    root, result = built
    (row,) = qnn_contexts(root / "a", result.report)
    assert row["stage"] == "model" and row["htp_arch"] == "68" and row["soc_model"] == "39" and row["bytes"] > 1000


def test_a_stage_past_its_budget_says_so(tmp_path, monkeypatch):
    """A sample the HTP simulation does not finish within the budget is stopped; the report says why."""
    monkeypatch.setattr(qnn_backend, "VERIFY_BUDGET_S", 0.05)
    result = _compile(tmp_path / "f")
    qnn = result.report["stages"][0]["artifacts"][0]
    assert qnn["parity"]["value"] is None and qnn["parity"]["samples"] == 0
    assert "budget of 0.05 s" in qnn["parity"]["reason"]
    assert qnn["info"]["htp_departure"]["rows"] == [] and "within 0.05 s" in qnn["info"]["htp_departure"]["reason"]
    page = (tmp_path / "f" / "report.html").read_text()
    assert "within 0.05 s" in page and "No tensor below" not in page  # the reason, not an empty chart's verdict


def test_a_stage_in_parts_gets_no_whole_graph_departure_view(monkeypatch):
    """The per-layer view prepares the stage as one graph; a stage prepared in parts skips it and says why."""
    def whole_graph(*args, **kwargs):
        raise AssertionError("htp_departure ran for a stage prepared in parts")

    monkeypatch.setattr(qnn_backend, "htp_departure", whole_graph)
    view = qnn_backend.departure_view(Path("unused.onnx"), [], get_target("sa8295p").htp, graphs=3)
    assert view["rows"] == [] and view["samples"] == 0 and "prepared in 3 parts" in view["reason"]


def test_a_preparation_past_its_budget_stops_the_compile_in_one_line(tmp_path, monkeypatch):
    """QNN preparation has a budget too: past it the compile fails naming stage, budget and fixes; no build left."""
    from edgevlm.errors import LoweringError

    monkeypatch.setenv("EDGEVLM_QNN_PREPARE_BUDGET_S", "0.01")
    with pytest.raises(LoweringError) as exc:
        _compile(tmp_path / "p")
    assert "preparation of stage 'model'" in exc.value.cause and "budget of 0.01 s" in exc.value.cause
    assert "EDGEVLM_QNN_PREPARE_BUDGET_S" in exc.value.fix and "--backends onnx" in exc.value.fix
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("raw, budget", [("0", None), ("600", 600.0)])
def test_preparation_budget_from_the_environment(monkeypatch, raw, budget):
    monkeypatch.setenv("EDGEVLM_QNN_PREPARE_BUDGET_S", raw)
    assert qnn_backend.prepare_budget_s() == budget


def test_a_bad_preparation_budget_is_an_input_error(monkeypatch):
    from edgevlm.errors import InputError

    monkeypatch.setenv("EDGEVLM_QNN_PREPARE_BUDGET_S", "soon")
    with pytest.raises(InputError, match="not a number of seconds"):
        qnn_backend.prepare_budget_s()
