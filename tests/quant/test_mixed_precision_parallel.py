"""Mixed precision's candidates as Ray tasks: the same search as the serial one (steps, overrides, model)."""
import logging

import pytest

from edgevlm.quant.analysis import stage_sqnr
from edgevlm.quant.mixed_precision import search_mixed_precision

logging.getLogger().setLevel(logging.ERROR)


def test_ray_search_equals_serial(conv_attention_onnx, calib, tmp_path):
    pytest.importorskip("ray")
    import ray

    serial = search_mixed_precision(conv_attention_onnx, tmp_path / "s.onnx", "w8a8", calib, "sa8295p",
                                    min_sqnr_db=200.0, max_steps=3, workers=0, search="linear")
    assert len(serial.steps) == 4 and not serial.met  # the base model and three raised layers: three candidates
    on_ray = search_mixed_precision(conv_attention_onnx, tmp_path / "r.onnx", "w8a8", calib, "sa8295p",
                                    min_sqnr_db=200.0, max_steps=3, workers=2, search="linear")
    assert not ray.is_initialized()  # the Ray it started for the candidates is stopped again
    assert on_ray.steps == serial.steps and on_ray.overrides == serial.overrides and on_ray.achieved == serial.achieved
    # The model left at out_path is the chosen candidate, as the serial search leaves it.
    assert stage_sqnr(conv_attention_onnx, tmp_path / "r.onnx", calib)["sqnr_db"] == pytest.approx(on_ray.achieved)
    assert (tmp_path / "r.onnx").read_bytes() == (tmp_path / "s.onnx").read_bytes()


@pytest.mark.slow  # 45 s; Ray's search equal to the serial one stays in make test (above)
def test_ray_search_stops_at_the_first_candidate_that_meets(conv_attention_onnx, calib, tmp_path):
    pytest.importorskip("ray")
    serial = search_mixed_precision(conv_attention_onnx, tmp_path / "s.onnx", "w8a8", calib, "sa8295p",
                                    min_sqnr_db=200.0, max_steps=3, workers=0, search="linear")
    goal = serial.steps[2]["sqnr_db"]  # met after the second raised layer (if the figures rise)
    s2 = search_mixed_precision(conv_attention_onnx, tmp_path / "s2.onnx", "w8a8", calib, "sa8295p", min_sqnr_db=goal, workers=0, search="linear")
    r2 = search_mixed_precision(conv_attention_onnx, tmp_path / "r2.onnx", "w8a8", calib, "sa8295p", min_sqnr_db=goal, workers=2, search="linear")
    assert r2.met and r2.steps == s2.steps and r2.overrides == s2.overrides
