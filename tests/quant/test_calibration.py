"""Calibration images from a directory, and checked calibration samples."""
import numpy as np
import pytest
import torch
from PIL import Image

from edgevlm.errors import InputError
from edgevlm.quant.calibration import as_samples, load_calibration_images


def test_loads_resizes_and_normalizes(tmp_path):
    Image.new("RGB", (40, 30), (255, 0, 128)).save(tmp_path / "a.png")
    Image.new("L", (10, 10), 255).save(tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_calibration_images(tmp_path, 16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert len(images) == 2 and all(im.shape == (1, 3, 16, 16) and im.dtype == np.float32 for im in images)
    # Bound: normalized values of solid colours within 0.01 of (v/255 - 0.5) / 0.5.
    np.testing.assert_allclose(images[0][0, :, 0, 0], [1.0, -1.0, 128 / 255 * 2 - 1], atol=0.01)
    np.testing.assert_allclose(images[1], 1.0, atol=0.01)
    assert len(load_calibration_images(tmp_path, (8, 12), limit=1)) == 1


def test_directory_without_readable_images(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(InputError, match="no readable images.*2 files.*broken.png"):
        load_calibration_images(tmp_path, 16)
    with pytest.raises(InputError, match="does not exist"):
        load_calibration_images(tmp_path / "missing", 16)
    with pytest.raises(InputError, match="no readable images \\(0 files\\)"):
        (tmp_path / "empty").mkdir()
        load_calibration_images(tmp_path / "empty", 16)


def test_as_samples_accepts_tuples_dicts_arrays_and_tensors():
    x = np.zeros((1, 2), np.float32)
    ids = np.array([[1, 2]], np.int64)
    got = as_samples([(torch.zeros(1, 2), ids), {"ids": ids, "x": x}], ["x", "ids"], [[1, 2], [1, None]])
    assert [sorted(s) for s in got] == [["ids", "x"], ["ids", "x"]]
    assert got[0]["x"].dtype == np.float32 and got[0]["ids"].dtype == np.int64
    assert as_samples([x], ["x"])[0]["x"] is not None


def test_as_samples_errors_name_sample_and_input():
    x = np.zeros((1, 2), np.float32)
    with pytest.raises(InputError, match="sample 0 has 1 inputs.*takes 2"):
        as_samples([(x,)], ["x", "y"])
    with pytest.raises(InputError, match="sample 1: input 'x' has shape \\(1, 3\\)"):
        as_samples([x, np.zeros((1, 3), np.float32)], ["x"], [[1, 2]])
    with pytest.raises(InputError, match="'x' contains Inf in calibration sample 0"):
        as_samples([np.array([[np.inf, 0]], np.float32)], ["x"])
    with pytest.raises(InputError, match="no calibration data"):
        as_samples(None, ["x"])


def test_chunk_by_bytes_keeps_order_and_budget():
    from edgevlm.quant.calibration import chunk_by_bytes

    assert chunk_by_bytes({"a": 3, "b": 3, "c": 5, "d": 1, "e": 9}, 6) == [["a", "b"], ["c", "d"], ["e"]]
    assert chunk_by_bytes({}, 6) == []


def test_calibration_in_activation_chunks_gives_the_same_ranges(conv_attention_onnx, calib, monkeypatch):
    """Ranges observed chunk by chunk (one tensor at a time here) equal those of one pass: max abs diff 0."""
    from edgevlm.quant import onnx_qdq

    whole = onnx_qdq.calibrate_onnx(conv_attention_onnx, calib[:3])
    monkeypatch.setattr(onnx_qdq, "CALIBRATION_CHUNK_BYTES", 1)
    chunked = onnx_qdq.calibrate_onnx(conv_attention_onnx, calib[:3])
    assert len(whole) > 8 and chunked == whole
