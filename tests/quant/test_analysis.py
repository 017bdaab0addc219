"""Per-stage and per-layer SQNR of QDQ models, sensitivity ranking, scheme comparison."""
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from edgevlm.quant import analysis, onnx_files
from edgevlm.quant.analysis import compare_schemes, layer_sqnr, sensitivity, stage_sqnr
from edgevlm.quant.onnx_qdq import quantize_onnx

logging.getLogger().setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def w4a16(conv_attention_onnx, calib, tmp_path_factory):
    out = tmp_path_factory.mktemp("w4") / "q.onnx"
    quantize_onnx(conv_attention_onnx, out, "w4a16", calib, "sa8295p")
    return out


def test_stage_sqnr_identical_models_is_infinite(conv_attention_onnx, heldout):
    r = stage_sqnr(conv_attention_onnx, conv_attention_onnx, heldout)
    assert r["sqnr_db"] == math.inf and r["max_abs_err"] == 0.0 and r["samples"] == 4


def test_layer_sqnr_covers_the_graph_in_order(conv_attention_onnx, w4a16, calib):
    rows = layer_sqnr(conv_attention_onnx, w4a16, calib)  # in-range data: noise, not clipping
    names = [r["tensor"] for r in rows]
    assert names[0] == "image" and names[-1] == "logits"
    assert {"Conv", "Gelu", "LayerNormalization", "Softmax", "Gemm"} <= {r["op"] for r in rows}
    # Bound: the graph input is quantized to uint16 only: >= 80 dB; every later tensor carries
    # int4 weight noise, so none is above 60 dB; the accumulated error is finite everywhere.
    assert rows[0]["sqnr_db"] >= 80.0
    assert all(r["sqnr_db"] < 60.0 for r in rows[1:] if r["op"] not in ("Reshape", "Transpose"))
    assert rows[-1]["sqnr_db"] == pytest.approx(stage_sqnr(conv_attention_onnx, w4a16, calib)["sqnr_db"], abs=0.5)
    # The Relu folded into the first Conv's quantization range has no local figure.
    assert next(r for r in rows if r["op"] == "Relu")["local_sqnr_db"] is None


def _reference_errors(float_path, qdq_path, samples, tmp):
    """onnxruntime's own per-tensor errors: qdq_loss_debug augments, runs and matches both models."""
    from onnxruntime.quantization import qdq_loss_debug

    acts = []
    for path in map(Path, (float_path, qdq_path)):
        augmented = tmp / f"{path.stem}.augmented.onnx"
        qdq_loss_debug.modify_model_output_intermediate_tensors(str(path), str(augmented))
        acts.append(qdq_loss_debug.collect_activations(str(augmented), iter(samples)))
    matched = qdq_loss_debug.create_activation_matching(acts[1], acts[0])
    for m in matched.values():
        m.setdefault("float", [])
    return qdq_loss_debug.compute_activation_error(matched, err_func=analysis._concat_sqnr)


@pytest.mark.parametrize("chunk_bytes", [None, 4096], ids=["one-pass", "chunks"])
def test_layer_sqnr_matches_onnxruntimes_qdq_loss_debug(conv_attention_onnx, w4a16, calib, chunk_bytes, tmp_path):
    """Whether the activations come in one pass or a chunk at a time (several on this graph), every tensor's
    accumulated and local SQNR equals the one qdq_loss_debug computes on its own augmented models (abs 1e-9 dB)."""
    ref = _reference_errors(conv_attention_onnx, w4a16, calib[:2], tmp_path)
    rows = layer_sqnr(conv_attention_onnx, w4a16, calib[:2], chunk_bytes=chunk_bytes)
    assert {r["tensor"] for r in rows} == set(ref)
    for r in rows:
        assert r["sqnr_db"] == pytest.approx(ref[r["tensor"]].get("xmodel_err"), abs=1e-9)
        if r["local_sqnr_db"] is not None:
            assert r["local_sqnr_db"] == pytest.approx(ref[r["tensor"]]["qdq_err"], abs=1e-9)


def test_layer_sqnr_never_loads_the_weights_of_a_stage_with_external_data(conv_attention_onnx, w4a16, calib,
                                                                           tmp_path, monkeypatch):
    """A stage past 2 GB keeps its weights in a data file; its per-layer pass reads the graph only and lets
    onnxruntime read the file (a copy of the weights in the process took a 1.2B-parameter llm-decode to OOM)."""
    import onnx

    for path in map(Path, (conv_attention_onnx, w4a16)):
        onnx_files.save(onnx.load(str(path)), tmp_path / path.name, external=True)
    float_x, qdq_x = tmp_path / Path(conv_attention_onnx).name, tmp_path / Path(w4a16).name
    assert onnx_files.has_external_data(float_x)  # the QDQ graph's int4 weights stay under the threshold
    expected = {r["tensor"]: r["sqnr_db"] for r in layer_sqnr(conv_attention_onnx, w4a16, calib[:2])}

    def no_weights(*args, **kwargs):
        raise AssertionError("the weights were loaded into the Python process")

    monkeypatch.setattr(onnx, "load_external_data_for_model", no_weights)
    rows = layer_sqnr(float_x, qdq_x, calib[:2])
    assert {r["tensor"]: r["sqnr_db"] for r in rows} == pytest.approx(expected, abs=1e-9)


def test_spread_chunks_keeps_what_fits_from_first_to_last():
    assert analysis.spread_chunks(16, 10.0, None) == list(range(16))
    assert analysis.spread_chunks(16, 10.0, 200.0) == list(range(16))  # 20 fit
    assert analysis.spread_chunks(16, 40.0, 200.0) == [0, 4, 8, 11, 15]  # 5 fit, first and last among them
    assert analysis.spread_chunks(16, 1000.0, 200.0) == [0, 15]  # at least the two ends


def test_layer_sqnr_past_its_budget_keeps_chunks_spread_over_the_graph(conv_attention_onnx, w4a16, calib, monkeypatch):
    """When the first chunk takes 2/3 of the budget, the rows come from the first and the last chunk and equal
    the whole pass's there (abs 1e-9 dB); coverage says how many ran, and nothing starts past the budget."""
    whole = {r["tensor"]: r for r in layer_sqnr(conv_attention_onnx, w4a16, calib[:2])}
    clock, with_outputs = [0.0], analysis._with_outputs

    def slow_with_outputs(*args):  # twice a chunk: each chunk "takes" 1000 s
        clock[0] += 500.0
        return with_outputs(*args)

    monkeypatch.setattr(analysis, "_with_outputs", slow_with_outputs)
    monkeypatch.setattr(analysis.time, "perf_counter", lambda: clock[0])
    coverage = {}
    rows = layer_sqnr(conv_attention_onnx, w4a16, calib[:2], chunk_bytes=4096, budget_s=1500.0, coverage=coverage)
    assert coverage["chunks"] > 2 and coverage["chunks_run"] == 2 and coverage["budget_s"] == 1500.0
    assert 0 < len(rows) < len(whole) and coverage["tensors_of"] >= len(whole)
    names = [r["tensor"] for r in rows]
    assert names[0] == "image" and names[-1] == "logits"  # both ends of the graph
    for r in rows:
        assert r["sqnr_db"] == pytest.approx(whole[r["tensor"]]["sqnr_db"], abs=1e-9)
    clock[0], coverage = 0.0, {}
    layer_sqnr(conv_attention_onnx, w4a16, calib[:2], chunk_bytes=4096, budget_s=900.0, coverage=coverage)
    assert coverage["chunks_run"] == 1  # the first chunk always runs; the last would start past the budget


def test_sensitivity_ranks_the_layers_that_lose_most(conv_attention_onnx, w4a16, calib):
    ranking = sensitivity(conv_attention_onnx, w4a16, calib)
    drops = [r["drop_db"] for r in ranking]
    assert drops == sorted(drops, reverse=True)
    # The first layer turns an ~90 dB input into a ~25 dB tensor (int4 weights): it ranks first,
    # with the Conv weight folded into it as the tensor to raise.
    assert ranking[0]["weights"] == ["conv.weight"] and ranking[0]["drop_db"] > 30.0


def test_compare_schemes_is_one_call(conv_attention_onnx, calib, heldout, tmp_path):
    r = compare_schemes(conv_attention_onnx, calib, "sa8295p", ("w8a8", "w8a16"), out_dir=tmp_path)
    assert set(r) == {"w8a8", "w8a16"} and (tmp_path / "conv_attention.w8a16.onnx").exists()
    # Bounds: w8a16 >= 40 dB, and 16-bit activations gain >= 3 dB over 8-bit on this model
    # (measured 48.0 vs 43.2 dB: the int8 weights then dominate the noise).
    assert r["w8a16"]["sqnr_db"] >= 40.0
    assert r["w8a16"]["sqnr_db"] >= r["w8a8"]["sqnr_db"] + 3.0
    assert r["w8a16"]["quant"]["activation_type"] == "uint16"


def test_layer_sqnr_rows_do_not_follow_onnxruntimes_tensor_order(two_inputs_onnx, tmp_path, monkeypatch):
    """onnxruntime's per-tensor errors come in the order of its calibration tensor set, which follows the
    per-process hash seed (PYTHONHASHSEED): the rows, a build record, must not.  Here the errors are taken
    in onnxruntime's order and reversed; the rows must be the same list, tensor for tensor."""
    rng = np.random.default_rng(0)
    calib = [{"a": rng.normal(size=(1, 8)).astype(np.float32), "b": rng.normal(size=(1, 8)).astype(np.float32)}
             for _ in range(4)]
    qdq = tmp_path / "two_inputs.qdq.onnx"
    quantize_onnx(two_inputs_onnx, qdq, "w8a16", calib, "sa8295p")
    as_given = layer_sqnr(two_inputs_onnx, qdq, calib[:2])
    errors = analysis.qdq_loss_debug.compute_activation_error
    monkeypatch.setattr(analysis.qdq_loss_debug, "compute_activation_error",
                        lambda *a, **k: dict(reversed(list(errors(*a, **k).items()))))
    reversed_in = layer_sqnr(two_inputs_onnx, qdq, calib[:2])
    assert [r["op"] for r in as_given][:2] == ["input", "input"]  # the two rows graph order leaves tied
    assert [r["tensor"] for r in reversed_in] == [r["tensor"] for r in as_given]
