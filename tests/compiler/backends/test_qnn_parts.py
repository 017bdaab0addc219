"""A stage past the qnn backend's PART_MAX_ACTIVATIONS: prepared as several QNN graphs, one context binary each,
chained in one EPContext model and verified over the chain on the HTP (onnxruntime-qnn's HTP v68 simulation).

Metric: SQNR (dB) of the chain's outputs on the HTP vs float PyTorch (the artifact's parity in
report.json), and vs the same QDQ model prepared whole on the HTP.
"""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import edgevlm
from edgevlm import progress
from edgevlm.core.metrics import sqnr_db
from edgevlm.targets import get_target

pytest.importorskip("onnxruntime_qnn", reason="needs onnxruntime-qnn (pip install 'edgevlm[qnn]'; Linux x86_64)")
from edgevlm.compiler.backends import qnn_backend  # noqa: E402


class Blocks(nn.Module):
    """Pre-norm residual MLP blocks on tokens (a transformer's layer structure, without attention)."""

    def __init__(self, d=32, n=4):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(n))
        self.fc1 = nn.ModuleList(nn.Linear(d, 2 * d) for _ in range(n))
        self.fc2 = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(n))

    def forward(self, x):
        for norm, a, b in zip(self.norms, self.fc1, self.fc2):
            x = x + b(torch.nn.functional.gelu(a(norm(x))))
        return x


def _compile(out):
    torch.manual_seed(0)
    calibration = [(torch.randn(1, 16, 32),) for _ in range(2)]
    return edgevlm.compile(Blocks().eval(), calibration[0], target="sa8295p", out=out, backends=["qnn"],
                           calibration=calibration, name="blocks")


@pytest.mark.slow  # 2 x 6 part preparations and the HTP runs: 70 s at load 18
def test_stage_prepared_in_parts_runs_as_one_chain_on_the_htp(tmp_path, monkeypatch):
    monkeypatch.setattr(qnn_backend, "PART_MAX_ACTIVATIONS", 6000)  # ~one block of this model per part
    seen = []
    with progress.reporting(lambda label, done, total, _s: seen.append((label, done, total))):
        result = _compile(tmp_path / "a")
    qnn = result.report["stages"][0]["artifacts"][0]
    assert qnn["backend"] == "qnn" and qnn["path"] == "model.htp.onnx"
    bins = [f for f in qnn["files"] if f.endswith("_qnn.bin")]
    assert len(bins) >= 3, qnn["files"]  # one context binary a part
    info = qnn_backend.describe(tmp_path / "a" / "model.htp.onnx")
    assert len(info["graphs"]) == len(bins) == qnn["info"]["qnn_graphs"] and info["htp_arch"] == "68"
    steps = [(done, total) for label, done, total in seen if label.startswith("QNN preparation")]
    assert steps[0] == (0, len(bins)) and steps[-1] == (len(bins), len(bins))  # progress a part, in a log too
    parity = qnn["parity"]
    assert "QNN HTP simulation" in parity["reference"] and parity["metric"] == "sqnr_db"
    assert parity["value"] >= 50.0, parity  # measured 57.1 dB (6 parts)

    # The chain computes what the whole graph computes on the HTP.
    htp = get_target("sa8295p").htp
    x = np.random.default_rng(3).standard_normal((1, 16, 32)).astype(np.float32)
    chained = qnn_backend.run_on_htp(tmp_path / "a" / "model.htp.onnx", htp, [[x]], 300)[0][0]
    whole = qnn_backend.run_on_htp(tmp_path / "a" / "model.onnx", htp, [[x]], 300)[0][0]
    assert sqnr_db(whole, chained) >= 60.0  # measured 72.4 dB

    # Byte-identical on rebuild, every part's binary included, each listed in the manifest with its sha256.
    _compile(tmp_path / "b")
    manifest = {e["path"]: e["sha256"] for e in json.loads((tmp_path / "a" / "manifest.json").read_text())["artifacts"]}
    for name in qnn["files"]:
        data = (tmp_path / "a" / name).read_bytes()
        assert data == (tmp_path / "b" / name).read_bytes(), name
        assert manifest[name] == hashlib.sha256(data).hexdigest()


def test_each_part_has_the_whole_preparation_budget_and_the_first_past_it_stops_the_stage(tmp_path, monkeypatch):
    """The budget is per QNN graph: a deep stage has more parts, not larger ones, so each part gets all of it.
    A part past it (its prepare_context returns False) ends the stage: parts not started are not prepared, the
    stage gives None and leaves no context file.  QNN itself is replaced by a recorder here."""
    from edgevlm.quant.onnx_qdq import quantize_onnx

    torch.manual_seed(0)
    x = torch.randn(1, 16, 32)
    float_path, qdq_path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    torch.onnx.export(Blocks(n=6).eval(), (x,), str(float_path), input_names=["x"], output_names=["y"], dynamo=False,
                      opset_version=17)
    quantize_onnx(float_path, qdq_path, "w8a16", [(torch.randn(1, 16, 32),) for _ in range(2)], "sa8295p",
                  weight_algo="rtn")
    monkeypatch.setattr(qnn_backend, "PART_MAX_ACTIVATIONS", 6000)
    monkeypatch.setattr(qnn_backend, "PREPARE_WORKERS", 1)  # in order, so which parts start is certain
    started = []

    def recorder(source, context_path, htp, what, budget_s):
        started.append((what, budget_s))
        context_path.write_bytes(b"")
        return len(started) < 2  # part 2 runs past its budget

    monkeypatch.setattr(qnn_backend, "prepare_context", recorder)
    out = tmp_path / "out"
    out.mkdir()
    graphs = qnn_backend.prepare_stage(qdq_path, out / "model.htp.onnx", get_target("sa8295p").htp, "stage 'model'",
                                       budget_s=600.0)
    assert graphs is None
    assert [b for _, b in started] == [600.0, 600.0]  # the full budget each; nothing after the failed part
    total = int(started[0][0].split("/")[1].split()[0])
    assert total >= 4 and started[1][0].startswith(f"part 2/{total} of stage 'model'")
    assert list(out.iterdir()) == []


def test_a_chain_runs_one_part_session_at_a_time(tmp_path, monkeypatch):
    """HtpRunner on a chain: each part's session is released before the next loads (the HTP simulation holds
    about 115 MB of context binaries a process; the 450M encoder's 19 parts are 225 MB), the tensors pass from
    part to part, and the scratch dir with the parts' models goes at exit.  QNN is replaced by a fake session
    that adds its part number to its input."""
    import onnx
    from onnx import TensorProto, helper

    names = ["x", "h1", "h2", "y"]
    nodes = [helper.make_node("EPContext", [names[i]], [names[i + 1]], name=f"ctx{i}", domain="com.microsoft",
                              ep_cache_context=f"m.part{i}.htp_qnn.bin", embed_mode=0, main_context=1)
             for i in range(3)]
    info = {n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in names}
    graph = helper.make_graph(nodes, "chain", [info["x"]], [info["y"]], value_info=[info["h1"], info["h2"]])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]), tmp_path / "m.htp.onnx")
    for i in range(3):
        (tmp_path / f"m.part{i}.htp_qnn.bin").write_bytes(bytes([i]))
    live, most, scratch = [0], [], []  # live[0]: sessions not yet released

    class FakeSession:
        def __init__(self, path):
            part = onnx.load(str(path))
            live[0] += 1
            attr = {a.name: a for a in part.graph.node[0].attribute}
            binary = Path(path).parent / attr["ep_cache_context"].s.decode()
            self.add = binary.read_bytes()[0] + 1  # read through the scratch dir's link
            most.append(live[0])
            scratch.append(Path(path).parent)

        def run(self, _outputs, feed):
            return [next(iter(feed.values())) + self.add]

        def __del__(self):
            live[0] -= 1

    monkeypatch.setattr(qnn_backend, "htp_session", lambda path, htp, threads=0, what="": FakeSession(path))
    with qnn_backend.HtpRunner(tmp_path / "m.htp.onnx", get_target("sa8295p").htp) as run:
        assert run.inputs == ["x"]
        (y,) = run({"x": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(y, [6.0, 6.0])  # 1 + 2 + 3: every part ran, in order
    assert max(most) == 1 and live[0] == 0
    assert not scratch[0].exists()
