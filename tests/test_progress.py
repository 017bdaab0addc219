"""edgevlm.progress: items done, ETA at the mean time per item, silent without a reporter."""
from edgevlm import progress


def test_track_reports_each_item_and_is_silent_without_reporter():
    assert list(progress.track([1, 2, 3], "x")) == [1, 2, 3]  # no reporter: a plain iteration
    seen = []
    with progress.reporting(lambda label, done, total, elapsed: seen.append((label, done, total))):
        assert list(progress.track(iter("ab"), "calibration", total=2)) == ["a", "b"]
        progress.report("child", 1, 4, 2.0)
    assert seen == [("calibration", 0, 2), ("calibration", 1, 2), ("calibration", 2, 2), ("child", 1, 4)]
    assert list(progress.track([1], "after")) == [1] and len(seen) == 4  # the reporter is gone after the block


def test_eta_and_format():
    assert progress.eta_s(0, 8, 5.0) is None
    assert progress.eta_s(2, 8, 10.0) == 30.0  # 5 s per item, 6 left
    assert progress.eta_s(8, 8, 40.0) == 0.0
    assert [progress.fmt_s(s) for s in (42, 185, 3720)] == ["42 s", "3 min 05 s", "1 h 02 min"]
