"""Pipeline contracts: build layout, report keys, manifest hashes, determinism, atomic builds."""
import hashlib
import json

import pytest
import torch
from torch import nn

import edgevlm
from edgevlm.errors import InputError, UnsupportedOpError


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_default_model_build_layout(default_build):
    result, tmp_path = default_build
    from edgevlm.models import DEFAULT_MODEL

    assert (tmp_path / result.build_dir).resolve() == (tmp_path / "build" / f"{DEFAULT_MODEL}-sa8295p").resolve()
    build = tmp_path / result.build_dir
    report = json.loads((build / "report.json").read_text())
    assert report["model"] == DEFAULT_MODEL and report["target"] == "sa8295p"
    for stage in report["stages"]:
        assert {"name", "artifacts"} <= stage.keys()
        for art in stage["artifacts"]:
            assert {"backend", "path", "parity"} <= art.keys()
            assert {"metric", "value"} <= art["parity"].keys()
    manifest = json.loads((build / "manifest.json").read_text())
    assert manifest["artifacts"]
    for entry in manifest["artifacts"]:
        assert _sha(build / entry["path"]) == entry["sha256"]
    assert "<html" in (tmp_path / result.build_dir / "report.html").read_text()
    assert not [p for p in (tmp_path / "build").iterdir() if p.name.startswith(".")], "temporary dirs left behind"
    for stage in report["stages"]:  # every stage carries its target estimate, labelled as one
        assert stage["estimate"]["label"] == "estimated" and stage["estimate"]["total_ms"] > 0
    runtime = report["runtime"]
    assert runtime["info"]["gguf_type"] == "q4_0"  # sa8295p's LLM scheme is w4a16
    assert {"llm.gguf", "vlm.json", "tokenizer.json"} <= {e["path"] for e in manifest["artifacts"]}


def test_compiling_twice_gives_identical_artifacts(tmp_path):
    a = edgevlm.compile("tinyconv", target="sa8295p", out=tmp_path / "a", backends=["onnx"])
    b = edgevlm.compile("tinyconv", target="sa8295p", out=tmp_path / "b", backends=["onnx"])
    ma = json.loads((a.build_dir / "manifest.json").read_text())
    mb = json.loads((b.build_dir / "manifest.json").read_text())
    assert ma == mb
    for entry in ma["artifacts"]:
        assert (a.build_dir / entry["path"]).read_bytes() == (b.build_dir / entry["path"]).read_bytes()


def test_weight_algo_reaches_the_quantizer_and_the_report(tmp_path, monkeypatch):
    """GPTQ is the default weight rounding; ``rtn`` gives round-to-nearest, and the two weights differ."""
    gptq = edgevlm.compile("tinyconv", target="sa8295p", out=tmp_path / "g", backends=["onnx"])
    rtn = edgevlm.compile("tinyconv", target="sa8295p", out=tmp_path / "r", backends=["onnx"], weight_algo="rtn")
    (g_art,), (r_art,) = (st["artifacts"] for st in gptq.report["stages"] + rtn.report["stages"])
    assert g_art["info"]["quant"]["weights"]["weight_algo"] == "gptq" and g_art["info"]["quant"]["weights"]["layers"] > 0
    assert r_art["info"]["quant"]["weights"] == {"weight_algo": "rtn"}
    assert (gptq.build_dir / g_art["path"]).read_bytes() != (rtn.build_dir / r_art["path"]).read_bytes()
    from edgevlm.compiler import pipeline

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the weight algorithm was checked")

    monkeypatch.setattr(pipeline, "_as_bundle", no_model)  # a bad name stops the compile before any export
    with pytest.raises(InputError, match="unknown weight algorithm 'awq2'"):
        edgevlm.compile("tinyconv", target="sa8295p", out=tmp_path / "x", backends=["onnx"], weight_algo="awq2")


def test_awq_reaches_the_quantizer_and_the_report(tmp_path):
    """``weight_algo="awq"`` rescales the float model (edgevlm.quant.awq), then rounds to nearest; the report says so."""
    build = edgevlm.compile("tinyconv", target="sa8295p", out=tmp_path / "a", backends=["onnx"], weight_algo="awq")
    (art,) = build.report["stages"][0]["artifacts"]
    weights = art["info"]["quant"]["weights"]
    assert weights["weight_algo"] == "awq" and weights["rounding"] == "rtn" and "groups" in weights


def test_failed_compile_leaves_previous_build_intact(tmp_path):
    out = tmp_path / "b"
    edgevlm.compile("tinyconv", target="sa8295p", out=out, backends=["onnx"])
    before = (out / "manifest.json").read_text()

    class Bad(nn.Module):
        def forward(self, x):
            return torch.linalg.inv(x)

    with pytest.raises(UnsupportedOpError):
        edgevlm.compile(Bad(), (torch.eye(3)[None],), target="sa8295p", out=out)
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_refuses_to_overwrite_foreign_directory(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an edgevlm build"):
        edgevlm.compile("tinyconv", target="sa8295p", out=out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_module_without_example_inputs_is_an_input_error():
    with pytest.raises(InputError, match="example_inputs"):
        edgevlm.compile(nn.Linear(2, 2), target="cpu-x86_64")


def test_sa8295p_llm_stages_keep_the_kv_cache_at_8_bits(default_build):
    """kv8 (sa8295p's KV scheme): the cache inputs/outputs of both LLM stages are quantized to uint8, the rest uint16."""
    import onnx

    result, cwd = default_build
    build = cwd / result.build_dir
    report = json.loads((build / "report.json").read_text())
    for name in ("llm-prefill", "llm-decode"):
        stage = next(s for s in report["stages"] if s["name"] == name)
        art = stage["artifacts"][0]
        assert art["info"]["quant"]["kv_cache"]["bits"] == 8 and art["integer_only"]
        model = onnx.load(str(build / art["path"]))
        inits = {i.name: i for i in model.graph.initializer}
        zp_type = {n.input[0]: inits[n.input[2]].data_type for n in model.graph.node
                   if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits}
        for out in ("key_cache_out", "value_cache_out"):
            assert zp_type[f"{out}_QuantizeLinear_Input"] == onnx.TensorProto.UINT8
        assert onnx.TensorProto.UINT16 in zp_type.values()


def test_accuracy_runs_onnx_vision_where_the_htp_finished_no_sample():
    """On an HTP target the accuracy runs the QNN context binaries, unless verification finished no sample of
    a vision stage on the HTP simulation within its budget: then the ONNX QDQ artifacts, with the reason."""
    from edgevlm.compiler.backends import get_backend
    from edgevlm.compiler.pipeline import _accuracy_vision_backend
    from edgevlm.core.config import CompileConfig

    def report(encoder_samples):
        art = lambda backend, n: {"backend": backend, "parity": {"metric": "sqnr_db", "samples": n}}  # noqa: E731
        return {"stages": [{"name": "encoder", "kind": "encoder", "artifacts": [art("qnn", encoder_samples), art("onnx", 4)]},
                           {"name": "projector", "kind": "projector", "artifacts": [art("qnn", 4), art("onnx", 4)]},
                           {"name": "llm-decode", "kind": "llm", "artifacts": [art("qnn", 0), art("onnx", 4)]}]}

    chosen = [get_backend("onnx"), get_backend("qnn")]
    assert _accuracy_vision_backend(CompileConfig(), chosen, report(2)) == ("qnn", None)  # an LLM stage's 0 does not count
    backend, why = _accuracy_vision_backend(CompileConfig(), chosen, report(0))
    assert backend == "onnx" and "finished no sample of encoder within its verification budget" in why
    assert _accuracy_vision_backend(CompileConfig(htp_verify=False), chosen, report(0)) == (None, None)
    assert _accuracy_vision_backend(CompileConfig(), [get_backend("onnx")], report(0)) == (None, None)


def test_a_verification_no_sample_could_finish_is_not_started():
    """A budgeted verification (a simulator) whose stage's MAC count, at the backend's measured pace, puts one
    sample past SIMULATION_SKIP_FACTOR budgets is skipped with the estimate; one that may finish runs."""
    from edgevlm.compiler.backends import get_backend
    from edgevlm.compiler.pipeline import SIMULATION_SKIP_FACTOR, _too_slow_to_verify

    qnn, onnx_backend = get_backend("qnn"), get_backend("onnx")
    rate = qnn.simulated_macs_per_s
    samples = [()] * 8
    skipped = _too_slow_to_verify(qnn, int(106.9e9), samples, 120.0)  # the LFM2-VL-450M encoder
    assert skipped["metric"] == "not run" and skipped["samples"] == 0 and skipped["of"] == 8
    assert skipped["estimated_sample_s"] == round(106.9e9 / rate)
    assert "106.9 GMAC" in skipped["reason"] and "QNN HTP simulation" in skipped["reason"] and "120 s" in skipped["reason"]
    assert _too_slow_to_verify(qnn, int(2.68e9), samples, 120.0) is None  # the projector: one sample fits
    assert _too_slow_to_verify(qnn, int(SIMULATION_SKIP_FACTOR * 120.0 * rate), samples, 120.0) is None  # at the bound
    assert _too_slow_to_verify(qnn, None, samples, 120.0) is None  # no MAC count: run it
    assert _too_slow_to_verify(onnx_backend, int(1e15), samples, 120.0) is None  # runs natively: no pace


def test_a_skipped_verification_is_in_the_report(tmp_path, monkeypatch):
    """The whole path on the HTP: a pace that no sample could meet gives a "not run" parity naming the estimate,
    the verification is not started, and the accuracy then takes the ONNX vision path."""
    pytest.importorskip("onnxruntime_qnn", reason="needs onnxruntime-qnn (pip install 'edgevlm[qnn]')")
    from edgevlm.compiler.backends import qnn_backend

    monkeypatch.setattr(qnn_backend.QnnBackend, "simulated_macs_per_s", 1.0)
    monkeypatch.setattr(qnn_backend, "departure_view", lambda *a, **k: qnn_backend._no_departure("not in this test", 0.0))
    monkeypatch.setattr(qnn_backend, "run_on_htp", lambda *a, **k: pytest.fail("the HTP verification was started"))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8)).eval()
    calibration = [(torch.randn(4, 16),) for _ in range(2)]
    result = edgevlm.compile(model, calibration[0], target="sa8295p", out=tmp_path / "b", backends=["qnn"],
                             calibration=calibration, name="mlp")
    qnn = result.report["stages"][0]["artifacts"][0]
    assert qnn["backend"] == "qnn" and qnn["parity"]["metric"] == "not run" and qnn["parity"]["samples"] == 0
    assert qnn["parity"]["reason"].startswith("not run: one sample would take about")
    assert "over 3 times the verification budget of 120 s" in (tmp_path / "b" / "report.html").read_text()
