"""Calibration observers: the float range [lo, hi] each activation is quantized over.

- ``minmax``: the smallest and largest value seen.
- ``percentile``: cut ``(100 - p) / 2`` percent of the histogram mass on each
  side (onnxruntime's percentile calibrator, p = 99.99 by default).
- ``entropy``: the KL-divergence threshold search of onnxruntime's entropy
  calibrator.
- ``mse``: the range whose fake-quantized histogram has the least squared
  error.  onnxruntime (and torchao's pt2e observers for QNN) offer no MSE
  calibrator over a histogram, so this search is written here; it reuses
  onnxruntime's histogram collection.

All observers stream: ``update(tensor_name, array)`` per calibration sample,
then ``ranges()``.  Non-finite values raise InputError naming the tensor,
because a range built from them would make a NaN model.
"""
import contextlib
import io

import numpy as np
from onnxruntime.quantization.calibrate import HistogramCollector

from edgevlm.errors import InputError, UnknownNameError
from edgevlm.quant.qdq import qrange

OBSERVERS = ("minmax", "percentile", "entropy", "mse")
DEFAULT_PERCENTILE = 99.99
HISTOGRAM_BINS = 2048
ENTROPY_BINS = 128  # quantized bins of the entropy search (onnxruntime default)
MSE_GRID = 16  # candidate clip points per side, per search stage


def check_finite(name: str, array: np.ndarray, where: str) -> None:
    """Raise InputError if ``array`` (the tensor ``name``) holds NaN or Inf."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = "NaN" if np.isnan(array).any() else "Inf"
        raise InputError(
            f"tensor '{name}' contains {bad} {where}",
            "check the model's weights and the calibration inputs (value range, normalization); "
            "a range computed from non-finite values would make a NaN model",
        )


class RangeObserver:
    """Streams tensors and computes one [lo, hi] range per tensor name.

    ``dtypes`` gives each tensor's quantized type (``"uint8"`` ...) for the
    MSE search; tensors not listed use ``default_dtype``.
    """

    def __init__(self, method: str = "minmax", *, percentile: float = DEFAULT_PERCENTILE,
                 default_dtype: str = "uint8", dtypes: dict[str, str] | None = None):
        if method not in OBSERVERS:
            raise UnknownNameError(f"unknown observer '{method}'", f"use one of: {', '.join(OBSERVERS)}")
        if not 50.0 < percentile <= 100.0:
            raise InputError(f"percentile {percentile} out of range", "use a value in (50, 100], e.g. 99.99")
        self.method = method
        self.default_dtype = default_dtype
        self.dtypes = dtypes or {}
        self.n_samples = 0
        self._min: dict[str, float] = {}
        self._max: dict[str, float] = {}
        # Tensors seen only with zero elements (e.g. a [0, ...] state input of a user's ONNX graph; edgevlm's own
        # LM stages leave such state parts out, models.arch.vlm._NonEmptyState): their range is [0, 0], which
        # every quantization parameter represents exactly, there being no value in them.
        self._empty: set[str] = set()
        self._hist = None
        if method != "minmax":
            ort_method = {"percentile": "percentile", "entropy": "entropy", "mse": "distribution"}[method]
            # onnxruntime's collector: value histograms over a symmetric range
            # that grows (and re-bins) as new samples widen it.
            self._hist = HistogramCollector(
                method=ort_method, symmetric=False,
                num_bins=HISTOGRAM_BINS,
                num_quantized_bins=ENTROPY_BINS, percentile=percentile, scenario="same",
            )

    def update(self, name: str, array: np.ndarray, where: str = "") -> None:
        """Add one observation of tensor ``name``."""
        array = np.asarray(array)
        if array.size == 0:
            self._empty.add(name)
            return
        lo, hi = float(array.min()), float(array.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):  # min/max propagate NaN and show Inf: no third pass over the data
            check_finite(name, array, where or "during calibration")
        self._min[name] = min(lo, self._min.get(name, lo))
        self._max[name] = max(hi, self._max.get(name, hi))
        if self._hist is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # the collector prints progress lines
                self._hist.collect({name: [array.astype(np.float32, copy=False)]})

    def update_all(self, tensors: dict[str, np.ndarray], where: str = "") -> None:
        """Add one calibration sample's tensors."""
        for name, array in tensors.items():
            self.update(name, array, where)
        self.n_samples += 1

    def ranges(self) -> dict[str, tuple[float, float]]:
        """{tensor name: (lo, hi)} with lo <= hi; (0.0, 0.0) for a tensor only ever seen empty."""
        if not self._min:
            raise InputError("no calibration data was observed", "give at least one calibration sample")
        empty = {n: (0.0, 0.0) for n in self._empty - self._min.keys()}
        return {**empty, **self._ranges_of_values()}

    def _ranges_of_values(self) -> dict[str, tuple[float, float]]:
        if self.method == "minmax":
            return {n: (self._min[n], self._max[n]) for n in self._min}
        hists = self._hist.get_histogram_dict()
        if self.method == "mse":
            return {
                n: mse_range(h[0], h[1], self.dtypes.get(n, self.default_dtype), self._min[n], self._max[n])
                for n, h in hists.items()
            }
        with contextlib.redirect_stdout(io.StringIO()):
            found = self._hist.compute_collection_result()
        out = {}
        for n, value in found.items():
            lo, hi = float(value[0]), float(value[1])
            # Clamp to the values actually seen (the entropy search works on a symmetric histogram).
            lo, hi = max(lo, self._min[n]), min(hi, self._max[n])
            out[n] = (lo, hi) if lo <= hi else (self._min[n], self._max[n])
        return out


def mse_range(hist: np.ndarray, edges: np.ndarray, dtype: str, seen_min: float, seen_max: float,
              grid: int = MSE_GRID) -> tuple[float, float]:
    """The [lo, hi] minimising the histogram's expected squared fake-quantization error.

    Candidates clip each side of [seen_min, seen_max] to a fraction in
    (0, 1] of its extent: a ``grid`` x ``grid`` search, then the same grid
    again within one coarse step of the best pair.  Each candidate is scored
    as sum over bins of count * (center - dequant(quant(center)))^2, with the
    asymmetric (scale, zero point) convention of :func:`qparams_for_range`.
    The range returned always includes 0, as quantized ranges do.
    """
    qmin, qmax = qrange(dtype)
    counts = np.asarray(hist, dtype=np.float64)
    centers = (np.asarray(edges[:-1], np.float64) + np.asarray(edges[1:], np.float64)) / 2
    keep = counts > 0
    counts, centers = counts[keep], centers[keep]
    lo0, hi0 = min(seen_min, 0.0), max(seen_max, 0.0)
    if hi0 - lo0 == 0.0 or counts.size == 0:
        return lo0, hi0

    def best(lo_fracs: np.ndarray, hi_fracs: np.ndarray) -> tuple[float, float]:
        lf = np.repeat(lo_fracs, hi_fracs.size)[:, None]
        hf = np.tile(hi_fracs, lo_fracs.size)[:, None]
        los, his = lo0 * lf, hi0 * hf
        scale = np.maximum(his - los, 1e-300) / (qmax - qmin)
        zero = np.clip(np.rint(qmin - los / scale), qmin, qmax)
        q = np.clip(np.rint(centers[None, :] / scale) + zero, qmin, qmax)
        err = ((centers[None, :] - (q - zero) * scale) ** 2 * counts[None, :]).sum(axis=1)
        i = int(np.argmin(err))
        return float(lf[i, 0]), float(hf[i, 0])

    step = 1.0 / grid
    coarse = np.linspace(step, 1.0, grid)
    lf, hf = best(coarse, coarse)
    lf, hf = best(np.linspace(max(lf - step, step / grid), min(lf + step, 1.0), grid),
                  np.linspace(max(hf - step, step / grid), min(hf + step, 1.0), grid))
    return lo0 * lf, hi0 * hf


def observe(samples, method: str = "minmax", **kwargs) -> dict[str, tuple[float, float]]:
    """Ranges of each tensor over ``samples`` (an iterable of {name: array})."""
    obs = RangeObserver(method, **kwargs)
    for i, sample in enumerate(samples):
        obs.update_all(sample, where=f"in calibration sample {i}")
    return obs.ranges()
