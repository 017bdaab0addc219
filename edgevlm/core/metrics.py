"""Numeric comparison of an artifact's outputs with the float model's.

Every artifact's parity figure comes from here, so all reports use one
definition of each metric.
"""
import math

import numpy as np


def _pair(ref, test) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(ref, dtype=np.float64)
    t = np.asarray(test, dtype=np.float64)
    if r.shape != t.shape:
        raise ValueError(f"shape mismatch: reference {r.shape} vs test {t.shape}")
    return r, t


def max_abs_err(ref, test) -> float:
    """max |ref - test| over all elements."""
    r, t = _pair(ref, test)
    return float(np.max(np.abs(r - t))) if r.size else 0.0


def sqnr_db(ref, test) -> float:
    """Signal-to-quantization-noise ratio 10*log10(sum ref^2 / sum (ref-test)^2), in dB.

    +inf when the outputs are identical; -inf when the reference is all zero
    but the test is not, or the noise is not finite; NaN when the reference
    itself is not finite.
    """
    r, t = _pair(ref, test)
    noise = float(np.sum((r - t) ** 2))
    signal = float(np.sum(r**2))
    if not math.isfinite(noise) or not math.isfinite(signal):
        # NaN/inf in either tensor, or a noise sum past float range: no finite ratio exists.
        return -math.inf if math.isfinite(signal) else math.nan
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine(ref, test) -> float:
    """Cosine similarity of the flattened outputs (1.0 for two zero tensors)."""
    r, t = _pair(ref, test)
    nr, nt = float(np.linalg.norm(r)), float(np.linalg.norm(t))
    if nr == 0.0 and nt == 0.0:
        return 1.0
    if nr == 0.0 or nt == 0.0:
        return 0.0
    return float(np.dot(r.ravel(), t.ravel()) / (nr * nt))


METRICS = {"max_abs_err": max_abs_err, "sqnr_db": sqnr_db, "cosine": cosine}


def compare(metric: str, refs: list, tests: list) -> float:
    """``metric`` over several outputs: the worst value (max error, min SQNR/cosine)."""
    fn = METRICS[metric]
    values = [fn(r, t) for r, t in zip(refs, tests, strict=True)]
    return max(values) if metric == "max_abs_err" else min(values)
