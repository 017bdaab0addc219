"""GPTQ: error-minimizing rounding of Conv/MatMul weights onto the QDQ model's own grid.

Round-to-nearest puts each weight on the nearest grid point independently.
GPTQ (Frantar et al., 2022) rounds the input columns of a layer one at a
time and moves each column's rounding error onto the columns not yet
rounded, weighted by the inverse Hessian ``H = X^T X`` of the layer's inputs
X on calibration data, so that the layer output ``W X``, not the weight,
stays close to float.

Written here rather than taken from NNCF or torchao (checked, NNCF 3.4.0,
torchao 0.18): NNCF's GPTQ runs only on its OpenVINO backend, and its ONNX
``compress_weights`` writes weight-only models on its own grids; torchao's
GPTQ targets torch ``nn.Linear`` with per-group affine int4.  Neither
quantizes onto a grid fixed beforehand, which is what a QDQ model needs:
QNN HTP v68 takes int4/int8 weights per output channel, symmetric (the
conv form of every linear layer, see linear_to_conv_pass), CPU targets per
group along the reduction axis; and Conv weights, grouped and depthwise
ones included, are quantized the same way.

The grid (scale, zero point, axis, block size) is the one onnxruntime's
quantizer wrote into the QDQ model; :func:`apply_gptq` replaces only the
integer weights, so the QDQ model's dequantized weight *is* GPTQ's output,
bit for bit.  Hessians come from the float model's inputs to each layer on
the stage's calibration samples (text prompts and image+prompt prefills for
the LLM stages), not from the partly quantized model.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from edgevlm.errors import InputError
from edgevlm.quant import onnx_files
from edgevlm.quant.weight_layers import WeightLayer, weight_layers

DAMP = 0.01  # added to H's diagonal, as a fraction of its mean: keeps the Cholesky factorization defined
BLOCK = 128  # columns per lazy-update block (the result does not depend on it, only the speed)
ROW_PART_BYTES = 2**27  # float64 weight bytes of the rows GPTQ rounds at once (see gptq_quantize)
HESSIAN_BUDGET_BYTES = 512 * 1024**2  # Hessians summed in memory in the pass; the other layers' inputs go to disk
WEIGHT_ALGOS = ("rtn", "gptq", "mse", "awq")  # mse: edgevlm.quant.weight_scales; awq: edgevlm.quant.awq


def check_weight_algo(name: str) -> None:
    """An InputError for a weight algorithm that is not one of WEIGHT_ALGOS (edgevlm.compile checks before export)."""
    if name not in WEIGHT_ALGOS:
        raise InputError(f"unknown weight algorithm '{name}'", f"use one of {', '.join(WEIGHT_ALGOS)}")


def gptq_quantize(w: np.ndarray, hessian: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                  qmin: int, qmax: int, act_order: bool = False, damp: float = DAMP, dtype=np.int64) -> np.ndarray:
    """Integer weights ``q`` ([G, R, K], ``dtype``) minimizing ``||(W - (q - zp) s) X||`` column by column.

    ``w``: [G, R, K] float (G independent groups sharing one Hessian each,
    e.g. the groups of a grouped convolution; R output rows; K inputs).
    ``hessian``: [G, K, K] (sum of x x^T over calibration rows).
    ``scale``/``zero_point``: the fixed grid, broadcastable to ``w``.
    ``act_order``: round the inputs with the largest ``H_ii`` first.
    """
    h = torch.as_tensor(hessian, dtype=torch.float64).clone()
    g, r, k = w.shape
    diag = torch.diagonal(h, dim1=1, dim2=2)
    dead = diag <= 0  # inputs never seen non-zero: nothing to correct, their error moves nowhere
    diag[dead] = 1.0
    perm = None
    if act_order:
        perm = torch.argsort(diag, dim=1, descending=True)
        h = torch.take_along_dim(torch.take_along_dim(h, perm[:, :, None], dim=1), perm[:, None, :], dim=2)
        diag = torch.diagonal(h, dim1=1, dim2=2)
    diag += damp * diag.mean(dim=1, keepdim=True)
    # Upper Cholesky factor of H^-1: row i holds the update that rounding column i makes to columns > i.
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    # Rows are rounded independently of each other (the error moves along a row only), so a layer with
    # many rows is taken in parts of about ROW_PART_BYTES of float64 weights: a 65536-row LM head all at
    # once, with its grid in float64, took +3.6 GB (16384 of its rows: +0.89 GiB; in parts +0.36 GiB).
    # Parts cost time (each runs the column loop: 2 parts of 8192 x 512, +50% CPU on 2 busy cores).
    q = np.empty((g, r, k), dtype)
    parts = -(-g * r * k * 8 // ROW_PART_BYTES)
    bounds = np.linspace(0, r, min(parts, r) + 1).astype(int)  # equal parts: none of only a few rows
    for r0, r1 in zip(bounds[:-1], bounds[1:]):
        q[:, r0:r1] = _gptq_rows(*(np.broadcast_to(a, w.shape)[:, r0:r1] for a in (w, scale, zero_point)),
                                 hinv, perm, qmin, qmax)
    return q


def _gptq_rows(w, s, z, hinv, perm, qmin: int, qmax: int) -> np.ndarray:
    """GPTQ's rounding of the rows ``w`` ([G, r, K]) on the grid ``s``, ``z`` (``hinv``, ``perm``: gptq_quantize's).

    The grid stays in its own float32 / small-integer types (the arithmetic promotes it to float64
    exactly) and ``q`` is int32: half the memory of float64 copies, the same integers.
    """
    w = torch.as_tensor(np.array(w), dtype=torch.float64)
    s = torch.as_tensor(np.array(s, np.result_type(s.dtype, np.float32)))
    z = torch.as_tensor(np.array(z, np.int32 if np.issubdtype(z.dtype, np.integer) else np.float64))
    g, r, k = w.shape
    if perm is not None:
        w = torch.take_along_dim(w, perm[:, None, :], dim=2)
        s = torch.take_along_dim(s, perm[:, None, :], dim=2)
        z = torch.take_along_dim(z, perm[:, None, :], dim=2)
    q = torch.empty(w.shape, dtype=torch.int32)
    for i1 in range(0, k, BLOCK):
        i2 = min(i1 + BLOCK, k)
        w1 = w[:, :, i1:i2].clone()
        err = torch.empty_like(w1)
        hb = hinv[:, i1:i2, i1:i2]
        for i in range(i2 - i1):
            col, sc, zc = w1[:, :, i], s[:, :, i1 + i], z[:, :, i1 + i]
            qc = torch.clamp(torch.round(col / sc) + zc, qmin, qmax)
            q[:, :, i1 + i] = qc
            e = (col - (qc - zc) * sc) / hb[:, i, i][:, None]
            w1[:, :, i:] -= e[:, :, None] * hb[:, None, i, i:]
            err[:, :, i] = e
        w[:, :, i2:] -= torch.einsum("grb,gbk->grk", err, hinv[:, i1:i2, i2:])
    if perm is not None:
        q = torch.empty_like(q).scatter_(2, perm[:, None, :].expand(g, r, k), q)
    return q.numpy()


def shrink_hessian(h: np.ndarray, fourth: np.ndarray, rows: int) -> np.ndarray:
    """Ledoit-Wolf shrinkage of the Hessians ``h`` ([G, K, K] = sum of x x^T over ``rows`` rows) towards
    ``mu I`` (mu: the mean of the diagonal), with the intensity estimated from the same rows
    (``fourth``: [G], the sum of |x|^4): the estimate of E[x x^T] with the least expected squared error.

    Ledoit & Wolf (2004), "A well-conditioned estimator for large-dimensional covariance matrices",
    applied to second moments.  Written here rather than taken from scikit-learn's ledoit_wolf, which
    needs the rows themselves; GPTQ only accumulates their Hessian (and here their fourth moment).
    Measured (random 64 x K layers, 2000 held-out rows, 5 seeds): K=128, 5 isotropic rows, int4:
    RTN 18.6 dB, GPTQ 17.4, GPTQ on the shrunk Hessian 18.4; 5 low-rank rows: 18.6 / 19.0 / 19.5;
    K=384, 128 isotropic rows, int8: 42.8 / 38.7 / 42.8.
    """
    h = np.asarray(h, np.float64)
    k = h.shape[-1]
    s = h / rows
    mu = np.trace(s, axis1=1, axis2=2) / k
    eye = np.eye(k)
    d2 = ((s - mu[:, None, None] * eye) ** 2).sum(axis=(1, 2))
    b2 = (np.asarray(fourth, np.float64) - rows * (s ** 2).sum(axis=(1, 2))) / rows ** 2
    alpha = np.clip(np.minimum(b2, d2) / np.maximum(d2, np.finfo(np.float64).tiny), 0.0, 1.0)
    return (1 - alpha)[:, None, None] * h + (alpha * mu * rows)[:, None, None] * eye


def rtn_quantize(w, scale, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """Round-to-nearest on the same grid (the baseline GPTQ is measured against)."""
    return np.clip(np.round(w / scale) + zero_point, qmin, qmax).astype(np.int64)


def dequantize(q, scale, zero_point) -> np.ndarray:
    """``(q - zp) * scale`` in float32, as ONNX DequantizeLinear computes it."""
    return ((np.asarray(q).astype(np.int32) - np.asarray(zero_point).astype(np.int32)).astype(np.float32)
            * np.asarray(scale, np.float32))


class HessianStore:
    """Hessians and GPTQ-rounded weights of the stages quantized so far, by weight content, on disk.

    The LLM stages share their weights, and llm-decode sees one token a
    sample: too few rows for a Hessian of its own.  Given the store that
    llm-prefill filled, it adds prefill's Hessian of the same weight to its
    own; and where prefill already rounded that weight on the same grid from
    at least as many rows, it takes prefill's integers (:meth:`rounded`): its
    few one-token rows barely move the summed Hessian, rounding again cost
    LFM2-1.2B's llm-decode 16 min, and one set of integers is what a runtime
    sharing the weights between the stages needs.  That holds when prefill
    too had fewer rows than inputs and rounded on a shrunk Hessian (a
    2-sample calibration of LFM2-VL-1.6B: decode's GPTQ was 13 min 17 s
    before the integers were kept for that case).  On disk, as a 450M LM's
    Hessians take ~1.5 GB.
    """

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="edgevlm-hessians-")
        self._entries: dict[str, tuple[Path, int]] = {}
        self._rounded: dict[str, tuple[Path, int]] = {}

    def _grid_key(self, layer: WeightLayer) -> str:
        grid = hashlib.sha256(np.ascontiguousarray(layer.scale).tobytes()
                              + np.ascontiguousarray(layer.zp).tobytes()).hexdigest()
        return f"{self._key(layer.float_w)}-{grid}-{layer.qmin}:{layer.qmax}-{np.dtype(layer.q_dtype).str}"

    def put_rounded(self, layer: WeightLayer, q: np.ndarray, rows: int) -> None:
        """Keep ``q``, the integers GPTQ gave ``layer`` from ``rows`` calibration rows, unless the
        store holds a rounding of the same weight and grid from more rows."""
        key = self._grid_key(layer)
        if key in self._rounded and self._rounded[key][1] >= rows:
            return
        path = Path(self._dir.name) / f"q{len(self._rounded)}.npy"
        # .npy has no int4: one byte a weight for the 4- and 8-bit grids
        wide = np.int32 if np.dtype(layer.q_dtype).itemsize > 1 else np.int8 if layer.qmin < 0 else np.uint8
        np.save(path, np.asarray(q).astype(wide), allow_pickle=False)
        self._rounded[key] = (path, rows)

    def rounded(self, layer: WeightLayer, rows: int) -> np.ndarray | None:
        """The integers an earlier stage's GPTQ gave this layer's weight on this layer's grid from at
        least ``rows`` calibration rows, if any."""
        entry = self._rounded.get(self._grid_key(layer))
        if entry is None or entry[1] < rows:
            return None
        return np.load(entry[0], allow_pickle=False).astype(layer.q_dtype)

    @staticmethod
    def _key(w: np.ndarray) -> str:
        return f"{hashlib.sha256(np.ascontiguousarray(w).tobytes()).hexdigest()}-{'x'.join(map(str, w.shape))}"

    def put(self, weights: list[np.ndarray], h: np.ndarray, rows: int) -> None:
        path = Path(self._dir.name) / f"h{len(self._entries)}.npy"
        np.save(path, h.astype(np.float32), allow_pickle=False)
        for w in weights:
            self._entries[self._key(w)] = (path, rows)

    def get(self, w: np.ndarray) -> tuple[np.ndarray, int] | None:
        entry = self._entries.get(self._key(w))
        if entry is None:
            return None
        return np.load(entry[0], allow_pickle=False).astype(np.float64), entry[1]


def apply_gptq(float_model_path, qdq_model: onnx.ModelProto, samples, act_order: bool = False,
               skip: set[str] | frozenset = frozenset(), store: HessianStore | None = None) -> dict:
    """Re-round the integer weights of ``qdq_model`` (in place) by GPTQ on the grid it already has.

    ``float_model_path``: the float model ``qdq_model`` was quantized from
    (same node names); ``samples``: its calibration feeds.  Returns info for
    the report: layers re-rounded, Hessian passes over the samples, the most
    calibration rows a layer saw, and the layers left at round-to-nearest
    because they saw fewer rows than they have inputs.  ``store``: Hessians
    and rounded weights of earlier stages, read for layers with too few rows
    (an earlier stage's integers on the same grid as they are, else its
    Hessian with their own added), and written for the others.
    """
    from edgevlm.quant.onnx_qdq import run_with_intermediates

    # The graph only: each layer reads its own weight from the data file when it is rounded.
    external = onnx_files.has_external_data(float_model_path)
    float_model = onnx.load(str(float_model_path), load_external_data=not external)
    layers = weight_layers(float_model, qdq_model, set(skip), str(Path(float_model_path).parent) if external else "")
    if not layers:
        return {"weight_algo": "gptq", "layers": 0, "passes": 0, "act_order": act_order, "calibration_rows": 0,
                "hessians_from_earlier_stages": 0, "rounded_by_earlier_stages": 0, "shrunk_hessians": None}
    # Layers with the same input columns share a Hessian.  One pass over the samples: the Hessians that
    # fit HESSIAN_BUDGET_BYTES together (smallest first) are summed during it; the other layers' inputs
    # go to disk, one file per sample, and their Hessians are summed one at a time after it.  Memory is
    # the budget, one Hessian and one sample's layer inputs, and an LM whose every w2 has a Hessian of the
    # budget's size (LFM2-1.2B: 8192 inputs, 512 MiB in float64) takes one pass, not one per w2 (33 passes
    # at 16 layers).
    by_key: dict[tuple, list[WeightLayer]] = {}
    for layer in layers:
        by_key.setdefault(layer.hessian_key, []).append(layer)
    size = {key: group[0].groups * group[0].k ** 2 * 8 for key, group in by_key.items()}  # float64 bytes
    fits, used = set(), 0
    for key in sorted(by_key, key=size.get):
        if used + size[key] <= HESSIAN_BUDGET_BYTES:
            fits.add(key)
            used += size[key]
    in_memory = [key for key in by_key if key in fits]  # both in graph order
    from_disk = [key for key in by_key if key not in fits]
    on_disk = sorted({key[0] for key in from_disk})  # their input tensor names
    hessians: dict[tuple, torch.Tensor] = {}
    fourth: dict[tuple, torch.Tensor] = {}  # sum of |x|^4 per group, for shrink_hessian
    rows: dict[tuple, int] = {}

    def add(key, x):
        cols = by_key[key][0].columns(x).to(torch.float64)
        hessians[key] = hessians.get(key, 0) + cols.transpose(1, 2) @ cols
        rows[key] = rows.get(key, 0) + cols.shape[1]
        fourth[key] = fourth.get(key, 0) + ((cols ** 2).sum(-1) ** 2).sum(1)

    few_rows, borrowed, reused = [], 0, 0  # few_rows: layers rounded on a shrunk Hessian

    def round_layers(key):
        nonlocal borrowed, reused
        own = hessians.pop(key).numpy()
        enough = rows[key] >= by_key[key][0].k
        if enough and store is not None:
            store.put([layer.float_w for layer in by_key[key]], own, rows[key])
        for layer in by_key[key]:
            if not enough and store is not None and (q := store.rounded(layer, rows[key])) is not None:
                layer.qinit.CopyFrom(numpy_helper.from_array(q, layer.qinit.name))
                reused += 1
                continue
            h, n_rows = own, rows[key]
            if n_rows < layer.k and store is not None and (earlier := store.get(layer.float_w)) is not None:
                h, n_rows = own + earlier[0], n_rows + earlier[1]
                borrowed += 1
            if n_rows < layer.k:
                # Fewer calibration rows than inputs (a decode stage sees one token a sample, the
                # late layers of a CNN encoder a few positions): the Hessian is rank-deficient and
                # plain GPTQ fits the samples, not the layer (vit-nano llm-decode, 5 one-token
                # samples, 3 held out: 12.1 dB RTN -> 8.9 dB GPTQ).  Its Ledoit-Wolf shrinkage
                # towards a multiple of I is full-rank and tends to RTN as the rows say less.
                h, n_rows = shrink_hessian(own, fourth[key].numpy(), rows[key]), rows[key]
                few_rows.append(layer.node.name)
            if not np.all(np.isfinite(h)):
                raise InputError(f"GPTQ: the calibration inputs of layer '{layer.node.name}' are not finite",
                                 "check the calibration data, or use --weight-algo rtn")
            q = layer.from_grk(gptq_quantize(layer.to_grk(layer.float_w), h, layer.to_grk(layer.scale),
                                             layer.to_grk(layer.zp), layer.qmin, layer.qmax, act_order=act_order,
                                             dtype=layer.q_dtype))
            layer.qinit.CopyFrom(numpy_helper.from_array(q, layer.qinit.name))
            if store is not None:
                store.put_rounded(layer, q, n_rows)

    with tempfile.TemporaryDirectory(prefix="edgevlm-gptq-inputs-") as spool:
        n_samples = 0
        for values in run_with_intermediates(float_model_path, samples, {key[0] for key in by_key}):
            for key in in_memory:
                add(key, values[key[0]])
            for j, name in enumerate(on_disk):
                np.save(Path(spool) / f"{j}-{n_samples}.npy", np.asarray(values[name], np.float32), allow_pickle=False)
            n_samples += 1
        for key in in_memory:
            round_layers(key)
        for key in from_disk:
            j = on_disk.index(key[0])
            for i in range(n_samples):
                add(key, np.load(Path(spool) / f"{j}-{i}.npy", allow_pickle=False))
            round_layers(key)
    return {"weight_algo": "gptq", "layers": len(layers), "passes": 1, "act_order": act_order,
            "calibration_rows": max(rows.values()), "hessians_from_earlier_stages": borrowed,
            "rounded_by_earlier_stages": reused,
            "hessians_summed_from_disk": len(from_disk),
            "shrunk_hessians": {"layers": len(few_rows), "why": "fewer calibration rows than layer inputs"}
            if few_rows else None}
