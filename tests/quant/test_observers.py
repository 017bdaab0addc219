"""Calibration observers on known distributions.

Bounds are stated per test; distributions are seeded, so results are fixed.
"""
import numpy as np
import pytest

from edgevlm.errors import InputError, UnknownNameError
from edgevlm.quant.observers import RangeObserver, observe
from edgevlm.quant.qdq import fake_quantize


def _stream(data: np.ndarray, n: int = 8):
    """``data`` split into ``n`` calibration samples of one tensor 'x'."""
    return [{"x": part} for part in np.array_split(data, n)]


@pytest.fixture(scope="module")
def uniform():
    return np.random.default_rng(0).uniform(-1.0, 3.0, 200_000).astype(np.float32)


@pytest.fixture(scope="module")
def gaussian_outliers():
    """N(0, 1) with 3 outliers at +-40 (15 ppm of the values)."""
    rng = np.random.default_rng(1)
    data = rng.normal(0.0, 1.0, 200_000).astype(np.float32)
    data[[10, 50_000, 150_000]] = [40.0, -40.0, 40.0]
    return data


@pytest.fixture(scope="module")
def laplace():
    return np.random.default_rng(2).laplace(0.0, 1.0, 200_000).astype(np.float32)


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_uniform_range_is_nearly_the_true_range(uniform, method):
    lo, hi = observe(_stream(uniform), method)["x"]
    # Bound: within 3% of the width (4.0) of the true range [-1, 3] for every observer.
    # (entropy's KL search may clip a uniform's edges slightly more; allow 10% there)
    tol = 0.4 if method == "entropy" else 0.12
    assert abs(lo - -1.0) <= tol and abs(hi - 3.0) <= tol, (lo, hi)


def test_minmax_is_exact(gaussian_outliers):
    lo, hi = observe(_stream(gaussian_outliers), "minmax")["x"]
    assert (lo, hi) == (-40.0, 40.0)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_clipping_observers_ignore_outliers(gaussian_outliers, method):
    lo, hi = observe(_stream(gaussian_outliers), method)["x"]
    # Bound: the clipped range lies within [-12, 12] sigma, well inside the +-40 outliers,
    # and still covers +-2 sigma (95% of the mass).
    assert -12.0 <= lo <= -2.0 and 2.0 <= hi <= 12.0, (lo, hi)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("dist", ["gaussian_outliers", "laplace"])
def test_mse_range_has_the_least_fake_quant_error(request, dist, dtype):
    data = request.getfixturevalue(dist)
    err = {}
    for method in ("minmax", "percentile", "entropy", "mse"):
        r = observe(_stream(data), method, default_dtype=dtype)["x"]
        err[method] = float(np.mean((data - fake_quantize(data, *r, dtype)) ** 2))
    # Bound: MSE's mean squared fake-quant error is no more than 1% above the best other observer's.
    assert err["mse"] <= 1.01 * min(err[m] for m in ("minmax", "percentile", "entropy")), err


def test_mse_clips_heavy_tails_at_8_bit_but_not_16_bit(laplace):
    seen = observe(_stream(laplace), "minmax")["x"]
    lo8, hi8 = observe(_stream(laplace), "mse", default_dtype="uint8")["x"]
    lo16, hi16 = observe(_stream(laplace), "mse", default_dtype="uint16")["x"]
    # Bound: at 8 bits the range is clipped by >= 10% on a side; at 16 bits it is the full range.
    assert hi8 <= 0.9 * seen[1] or lo8 >= 0.9 * seen[0], (seen, lo8, hi8)
    assert (lo16, hi16) == pytest.approx(seen), (seen, lo16, hi16)


def test_ranges_merge_across_samples():
    ranges = observe([{"x": np.array([0.0, 1.0], np.float32)}, {"x": np.array([-2.0, 0.5], np.float32)}])
    assert ranges["x"] == (-2.0, 1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_the_tensor(bad):
    obs = RangeObserver("mse")
    with pytest.raises(InputError, match="'conv1_out'.*sample 3"):
        obs.update_all({"conv1_out": np.array([0.0, bad], np.float32)}, where="in calibration sample 3")


def test_bad_observer_arguments():
    with pytest.raises(UnknownNameError, match="kmeans"):
        RangeObserver("kmeans")
    with pytest.raises(InputError, match="percentile"):
        RangeObserver("percentile", percentile=20.0)
    with pytest.raises(InputError, match="no calibration data"):
        RangeObserver().ranges()


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_a_tensor_only_seen_empty_has_the_zero_range(uniform, method):
    # A [0, ...] tensor (e.g. an empty state input): no value to represent, so [0, 0]; values seen elsewhere win.
    samples = [{"x": part, "empty": np.zeros((0, 4), np.float32)} for part in np.array_split(uniform, 4)]
    samples[0]["x_later_empty"] = np.zeros((0,), np.float32)
    samples[1]["x_later_empty"] = np.array([-2.0, 5.0], np.float32)
    r = observe(samples, method)
    assert r["empty"] == (0.0, 0.0)
    assert r["x_later_empty"][1] > 0.0 and r["x"][1] > 2.0
