"""Mixed precision: raising sensitive layers until a quality target is met."""
import logging

import pytest

from edgevlm.errors import InputError
from edgevlm.quant.analysis import stage_sqnr
from edgevlm.quant.mixed_precision import search_mixed_precision

logging.getLogger().setLevel(logging.ERROR)


def test_raises_int4_weights_until_sqnr_target(conv_attention_onnx, calib, tmp_path):
    out = tmp_path / "q.onnx"
    base = search_mixed_precision(conv_attention_onnx, out, "w4a16", calib, "sa8295p", min_sqnr_db=0.0)
    assert base.met and base.overrides == {} and len(base.steps) == 1
    goal = base.achieved + 6.0  # ask for 6 dB more than plain w4a16
    r = search_mixed_precision(conv_attention_onnx, out, "w4a16", calib, "sa8295p", min_sqnr_db=goal)
    assert r.met and r.achieved >= goal
    assert r.overrides and set(r.overrides.values()) == {8}  # only weights raised: activations are already 16-bit
    assert r.steps[-1]["sqnr_db"] == r.achieved and len(r.steps) >= 2
    # The figure is the model on disk's figure (stage SQNR on the calibration data).
    assert stage_sqnr(conv_attention_onnx, out, calib)["sqnr_db"] == pytest.approx(r.achieved)
    assert r.info["integer_only"]
    assert r.info["mixed_precision"]["achieved"] == r.achieved and r.info["overrides"] == r.overrides


def test_raises_activations_on_w8a8(conv_attention_onnx, calib, tmp_path):
    r = search_mixed_precision(conv_attention_onnx, tmp_path / "q.onnx", "w8a8", calib, "sa8295p",
                               min_sqnr_db=200.0, max_steps=2)
    assert not r.met and len(r.steps) == 3  # the base model and two raised layers, then stopped
    assert set(r.overrides.values()) == {16}
    assert r.steps[-1]["sqnr_db"] > r.steps[0]["sqnr_db"]


def test_accuracy_drop_callable(conv_attention_onnx, calib, tmp_path):
    seen = []

    def drop(path):
        seen.append(path)
        return 0.5

    r = search_mixed_precision(conv_attention_onnx, tmp_path / "q.onnx", "w8a8", calib, "sa8295p",
                               accuracy_drop=drop, max_accuracy_drop=1.0)
    assert r.met and r.metric == "accuracy_drop" and r.achieved == 0.5 and seen == [tmp_path / "q.onnx"]


def test_needs_exactly_one_target(conv_attention_onnx, calib, tmp_path):
    with pytest.raises(InputError, match="exactly one"):
        search_mixed_precision(conv_attention_onnx, tmp_path / "q.onnx", "w8a8", calib, "sa8295p")
