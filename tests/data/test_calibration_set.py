"""Calibration images with prompts: a directory (same-stem .txt prompts) or the built-in set; bad input is one InputError."""
import pytest
from PIL import Image

from edgevlm.data.calibration_set import BUILTIN_SAMPLES, DEFAULT_PROMPTS, calibration_pairs
from edgevlm.errors import InputError


def test_directory_pairs_images_with_their_prompts(tmp_path):
    for name, color in (("a.png", "red"), ("b.jpg", "blue"), ("c.png", "green")):
        Image.new("RGB", (20, 10), color).save(tmp_path / name)
    (tmp_path / "a.txt").write_text("What is red here?\n")
    (tmp_path / "notes.md").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    pairs, source = calibration_pairs(tmp_path, limit=8)
    assert [p for _, p in pairs] == ["What is red here?", DEFAULT_PROMPTS[1], DEFAULT_PROMPTS[2]]
    assert all(im.mode == "RGB" for im, _ in pairs)
    assert "3 images" in source and "1 with their own .txt prompt" in source and "1 unreadable" in source
    assert len(calibration_pairs(tmp_path, limit=2)[0]) == 2


def test_builtin_set_is_deterministic():
    a, source = calibration_pairs(None, limit=32)
    b, _ = calibration_pairs(None, limit=32)
    assert len(a) == BUILTIN_SAMPLES and "built-in" in source
    assert [p for _, p in a] == [p for _, p in b] and a[0][0].tobytes() == b[0][0].tobytes()


def test_bad_directories(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        calibration_pairs(tmp_path / "missing")
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match="no readable images"):
        calibration_pairs(tmp_path)
    with pytest.raises(InputError, match="not positive"):
        calibration_pairs(None, limit=0)
