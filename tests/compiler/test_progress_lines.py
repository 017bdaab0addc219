"""Compile progress in a log or pipe: a long step's items done with an ETA, peak RSS on each finished step."""
import re

from edgevlm import progress
from edgevlm.compiler import pipeline


def test_item_lines_with_eta_and_finished_lines_with_peak_rss(capfd, monkeypatch):
    monkeypatch.setattr(pipeline._Progress, "ITEM_LINE_EVERY_S", 0.0)  # every item gets its line
    bar = pipeline._Progress(verbose=True, total=1)
    assert bar.lines  # captured stdout is no terminal
    bar.step("llm-prefill: lower onnx")
    for _ in progress.track(range(4), "calibration"):
        pass
    bar.finished("llm-prefill", "onnx lowered", 1.5)
    bar.close()
    for _ in progress.track(range(2), "after close"):  # the reporter is gone with the compile
        pass
    out = capfd.readouterr().out.splitlines()
    assert out[0].startswith("edgevlm: llm-prefill: lower onnx: calibration 1/4 in 0 s, ETA ")
    assert out[3] == "edgevlm: llm-prefill: lower onnx: calibration 4/4 in 0 s"  # done: no ETA
    assert re.fullmatch(r"edgevlm: llm-prefill onnx lowered: 1\.50 s \(total \d+\.\d s, peak RSS \d+\.\d GB\)", out[4])
    assert len(out) == 5


def test_short_steps_get_no_item_lines(capfd):
    bar = pipeline._Progress(verbose=True, total=1)
    bar.step("encoder: lower onnx")
    for _ in progress.track(range(3), "calibration"):  # well under ITEM_LINE_MIN_S
        pass
    bar.close()
    assert capfd.readouterr().out == ""
