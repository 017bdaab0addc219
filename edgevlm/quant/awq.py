"""AWQ: activation-aware per-input-channel weight scales, folded into the op that produces each layer's input.

A few input channels of a linear layer carry most of its activation
magnitude; rounding their weight columns costs the output most.  AWQ (Lin
et al., 2024) multiplies weight column j by ``s_j = mean|x_j|^alpha`` and
divides input channel j by ``s_j``: the product ``W X`` is unchanged in exact
arithmetic, and the salient columns get a finer share of each row's grid.
``alpha`` is chosen per group of layers from ALPHAS to minimize the layers'
output error on calibration rows with the weights rounded on the grid the
QDQ model will have (``alpha = 0`` is round to nearest, so on those rows
the choice never does worse).  The division is folded into the producer of
the layers' input, so the float graph keeps its ops and only its constants
change: an RMSNorm's weight (a Mul by a constant), a LayerNormalization's
scale and bias, a constant Add's bias, the output rows of the linear
layer before it (a SwiGLU's up projection through ``silu(gate) * up``, an
LFM2 short convolution's ``C`` rows through the Split of its in-projection),
through data-moving ops (Reshape, Transpose, Squeeze, Gather, a MatMul
whose right operand carries the channels).  Layers whose input no producer
can absorb (after a Softmax-weighted sum, a residual Add, a tensor that
other ops also read) are left unscaled and counted in the record.

Written here rather than taken from NNCF 3.4 (checked:
``nncf.quantization.algorithms.weight_compression.awq.AWQ``, ONNX backend):
its patterns match MatMul/Gemm only, not the 1x1 Conv form every linear has
on HTP targets (linear_to_conv_pass); they start at a MatMul or a
Relu/Sigmoid-class activation, so a norm -> projection pair (the q/k/v and
gate/up projections of every block) is not found; where the producer is an
activation it inserts a Mul that a QDQ model would quantize on its own; it
skips weights above 4 bits; and it measures the error on its own symmetric
grid ([-8, 7], scale max|w| / 8), not the one onnxruntime writes here
([-7, 7] on max|w| / 7 at 4 bits per output channel, which QNN HTP v68
takes).  The grid emulated here is :func:`fake_quantize`'s.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from edgevlm.errors import InputError
from edgevlm.quant import onnx_files
from edgevlm.quant.calibration import graph_samples

ALPHAS = np.linspace(0.0, 1.0, 11)  # the paper's grid is 20 steps; 11 measured the same alpha on the nano LMs at half the time
SEARCH_ROWS = 512  # calibration rows per group the error is measured on (spread evenly over the samples)
SEARCH_OUT_ROWS = 2048  # output channels per layer the error is measured on (an LM head's 65536 rows: a subset)
MIN_RATIO = 1e-3  # mean|x_j| below this fraction of the largest is raised to it: a dead channel gets no 1/0
_MOVERS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten"}


def fake_quantize(w: torch.Tensor, bits: int, granularity: str, symmetric: bool = True,
                  group_size: int | None = None) -> torch.Tensor:
    """``w`` ([N, K], rows = output channels) rounded on the grid onnxruntime's quantizer gives it here, dequantized.

    Symmetric: scale ``max|w| / (2^(b-1) - 1)``, integers in ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (the restricted
    rule of edgevlm.quant.onnx_qdq, as QNN's symmetric encodings use it); asymmetric: ``(max - min) / (2^b - 1)``
    with a zero point.  Per output channel, per group of ``group_size`` inputs along K, or per tensor.
    """
    n, k = w.shape
    if granularity == "per-group":
        g = group_size or k
        pad = (-k) % g
        blocks = torch.nn.functional.pad(w, (0, pad)).reshape(n, -1, g)
        return fake_quantize(blocks.reshape(-1, g), bits, "per-channel", symmetric).reshape(n, -1)[:, :k]
    view = w.reshape(1, -1) if granularity == "per-tensor" else w
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = view.abs().amax(dim=1, keepdim=True) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return (torch.clamp(torch.round(view / scale), -qmax, qmax) * scale).reshape(n, k)
    lo = torch.clamp(view.amin(dim=1, keepdim=True), max=0)
    hi = torch.clamp(view.amax(dim=1, keepdim=True), min=0)
    scale = (hi - lo) / (2 ** bits - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zp = torch.round(-lo / scale)
    return ((torch.clamp(torch.round(view / scale) + zp, 0, 2 ** bits - 1) - zp) * scale).reshape(n, k)


def search_scale(x: torch.Tensor, weights: list[torch.Tensor], grids: list, alphas=ALPHAS) -> tuple[np.ndarray, float, dict]:
    """(s [K], alpha, error by alpha) for layers ``weights`` ([N, K] each) sharing the input rows ``x`` ([rows, K]).

    ``s = m^alpha`` (m: mean|x_j| over ``x``, floored at MIN_RATIO of its largest), normalized to a
    geometric mean of 1 (the grids are invariant to a common factor), for the ``alpha`` minimizing the
    summed noise-to-signal ratio of the layers' outputs ``(x / s) Q(W s)^T`` vs ``x W^T``; ``grids``: each
    layer's fake quantizer (see :func:`fake_quantize`).
    """
    x = x.to(torch.float32)
    m = x.abs().mean(dim=0)
    m = torch.clamp(m, min=float(m.max()) * MIN_RATIO if float(m.max()) > 0 else 1.0)
    refs = [x @ w.T for w in weights]
    powers = [float((r ** 2).sum()) or 1.0 for r in refs]
    errors, best = {}, (math.inf, 0.0, torch.ones_like(m))
    for alpha in alphas:
        s = m ** float(alpha)
        s = s / torch.exp(torch.log(s).mean())
        xs = x / s
        err = sum(float(((xs @ q(w * s).T - r) ** 2).sum()) / p for w, q, r, p in zip(weights, grids, refs, powers))
        errors[round(float(alpha), 4)] = err
        if err < best[0]:
            best = (err, float(alpha), s)
    return best[2].numpy(), best[1], errors


class _Graph:
    """The float graph with what the scale folding asks of it: producers, readers, constants, static shapes."""

    def __init__(self, model: onnx.ModelProto, base_dir: str):
        self.model, self.base_dir = model, base_dir
        g = model.graph
        self.inits = {t.name: t for t in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.readers = onnx_files.consumers(g)
        self.outputs = {o.name for o in g.output}
        inferred = onnx.shape_inference.infer_shapes(onnx_files.structure(model))
        self.shapes = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            dims = vi.type.tensor_type.shape.dim
            if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                self.shapes[vi.name] = tuple(d.dim_value for d in dims)
        for t in g.initializer:
            self.shapes[t.name] = tuple(t.dims)
        self.values: dict[str, np.ndarray] = {}  # constants read (float32), by name
        self.edited: set[str] = set()

    def value(self, name: str) -> np.ndarray:
        if name not in self.values:
            self.values[name] = np.array(numpy_helper.to_array(self.inits[name], self.base_dir), np.float32)
        return self.values[name]

    def const_uses(self, name: str) -> int:
        return len(self.readers.get(name, []))

    def sole_reader(self, tensor: str, node) -> bool:
        readers = self.readers.get(tensor, [])
        return len(readers) == 1 and readers[0] is node and tensor not in self.outputs


def _attr(node, name, default=None):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _map_axis(src: tuple, dst: tuple, axis: int) -> int | None:
    """The axis of ``dst`` that holds ``src``'s axis ``axis`` element for element after a reshape (row-major):
    the same size, with the same number of elements after it."""
    inner = math.prod(src[axis + 1:])
    hits = [b for b in range(len(dst)) if dst[b] == src[axis] and math.prod(dst[b + 1:]) == inner]
    return hits[0] if len(hits) == 1 else None


def _mover_axis(g: _Graph, node, axis: int, forward: bool) -> int | None:
    """The channel axis on the other side of a data-moving ``node`` (``forward``: input -> output)."""
    src, dst = g.shapes.get(node.input[0]), g.shapes.get(node.output[0])
    if src is None or dst is None:
        return None
    if node.op_type == "Transpose":
        perm = list(_attr(node, "perm", list(range(len(src)))[::-1]))
        return perm.index(axis) if forward else perm[axis]
    return _map_axis(src, dst, axis) if forward else _map_axis(dst, src, axis)


def _linear(g: _Graph, node):
    """(weight name, input channel axis of the weight, output channel axis of the weight, input channel axis of the
    activation, output channel axis of the output) of a linear layer with a constant float weight, else None."""
    if len(node.input) < 2 or node.input[1] not in g.inits or node.input[0] in g.inits:
        return None
    w = g.inits[node.input[1]]
    if w.data_type != onnx.TensorProto.FLOAT:
        return None
    x_shape = g.shapes.get(node.input[0])
    if x_shape is None:
        return None
    if node.op_type == "Conv" and _attr(node, "group", 1) == 1 and len(w.dims) >= 3:
        return node.input[1], 1, 0, 1, 1
    if node.op_type == "MatMul" and len(w.dims) == 2 and len(x_shape) >= 2:
        return node.input[1], 0, 1, len(x_shape) - 1, len(x_shape) - 1
    if node.op_type == "Gemm" and len(w.dims) == 2 and not _attr(node, "transA", 0):
        return (node.input[1], 1, 0, 1, 1) if _attr(node, "transB", 0) else (node.input[1], 0, 1, 1, 1)
    return None


def _vector(s: np.ndarray, ndim: int, axis: int, offset: int, size: int) -> np.ndarray:
    """``s`` placed at ``[offset, offset + len(s))`` of a ``size`` vector of ones, shaped to broadcast on ``axis``."""
    v = np.ones(size)
    v[offset:offset + len(s)] = s
    shape = [1] * ndim
    shape[axis] = size
    return v.reshape(shape)


def _sink(g: _Graph, tensor: str, axis: int, offset: int, depth: int = 0) -> list | None:
    """How to divide channels ``[offset, offset + K)`` on ``axis`` of ``tensor`` by ``s`` inside its producers: a list
    of (constant name, node, input slot, fn(value, s) -> new value), or None where no producer can absorb it."""
    node = g.producer.get(tensor)
    shape = g.shapes.get(tensor)
    if node is None or shape is None or depth > 12:
        return None
    op, ins = node.op_type, list(node.input)

    def deeper(t, ax, off=offset):
        return _sink(g, t, ax, off, depth + 1) if g.sole_reader(t, node) else None

    if op in _MOVERS:
        ax = _mover_axis(g, node, axis, forward=False)
        return deeper(ins[0], ax) if ax is not None else None
    if op == "Gather":
        g_axis, idx = _attr(node, "axis", 0) % len(g.shapes.get(ins[0], shape)), g.shapes.get(ins[1])
        if idx is None:
            return None
        if axis < g_axis:
            return deeper(ins[0], axis)
        if axis >= g_axis + len(idx):
            return deeper(ins[0], axis - len(idx) + 1)
        return None
    if op == "Split":
        s_axis = _attr(node, "axis", 0) % len(shape)
        if s_axis != axis:
            return None
        sizes = [g.shapes[o][axis] for o in node.output if o in g.shapes]
        if len(sizes) != len(node.output):
            return None
        start = sum(sizes[:list(node.output).index(tensor)])
        return deeper(ins[0], axis, offset + start)
    if op == "Mul":
        const = [i for i in ins if i in g.inits]
        if len(const) == 1:
            return _const_edit(g, node, const[0], shape, axis, offset)
        for t in ins:  # a product of two activations: one factor takes the scale
            t_shape = g.shapes.get(t)
            if t_shape is not None and len(t_shape) == len(shape) and t_shape[axis] == shape[axis]:
                found = deeper(t, axis)
                if found is not None:
                    return found
        return None
    if op == "Add":
        const = [i for i in ins if i in g.inits]
        act = [i for i in ins if i not in g.inits]
        if len(const) != 1 or len(act) != 1 or g.shapes.get(act[0]) != shape:
            return None
        edit = _const_edit(g, node, const[0], shape, axis, offset)
        rest = deeper(act[0], axis)
        return edit + rest if edit is not None and rest is not None else None
    if op == "LayerNormalization":
        if axis != len(shape) - 1 or _attr(node, "axis", -1) not in (-1, len(shape) - 1):
            return None
        edits = [_const_edit(g, node, p, shape, axis, offset) for p in ins[1:3] if p]
        return None if any(e is None for e in edits) else [e for es in edits for e in es]
    if op == "MatMul" and ins[1] not in g.inits and ins[0] not in g.inits:
        b_shape = g.shapes.get(ins[1])  # A @ B: B's columns are the output's last axis
        if b_shape is not None and axis == len(shape) - 1 and b_shape[-1] == shape[-1]:
            return deeper(ins[1], len(b_shape) - 1)
        return None
    lin = _linear(g, node) if op in ("Conv", "MatMul", "Gemm") else None
    if lin is not None and axis == lin[4] and g.const_uses(lin[0]) == 1:
        w_name, _, w_out, _, _ = lin
        rows = g.shapes[w_name][w_out]

        def rows_fn(value, s, w_out=w_out, rows=rows):
            return value / _vector(s, value.ndim, w_out, offset, rows)

        edits = [(w_name, node, 1, rows_fn)]
        bias = ins[2] if op in ("Conv", "Gemm") and len(ins) > 2 and ins[2] else None
        if bias is not None:
            if bias not in g.inits or g.shapes[bias] != (rows,) or g.const_uses(bias) != 1:
                return None
            edits.append((bias, node, 2, lambda value, s, rows=rows: value / _vector(s, 1, 0, offset, rows)))
        return edits
    return None


def _const_edit(g: _Graph, node, name: str, out_shape: tuple, axis: int, offset: int):
    """The edit of a constant broadcast against ``out_shape`` so that the node's output channels are divided by s."""
    c_shape = g.shapes.get(name)
    if c_shape is None or len(c_shape) > len(out_shape):
        return None
    aligned = (1,) * (len(out_shape) - len(c_shape)) + tuple(c_shape)
    size = out_shape[axis]
    if aligned[axis] not in (1, size):
        return None
    lead = len(out_shape) - len(c_shape)

    def fn(value, s):
        v = _vector(s, len(out_shape), axis, offset, size)
        new = value.reshape(aligned) / v
        return new.reshape(new.shape[lead:]) if all(d == 1 for d in new.shape[:lead]) else new

    return [(name, node, list(node.input).index(name), fn)]


def _groups(g: _Graph, skip: set[str]):
    """{(source tensor, channel axis): [linear nodes reading it through data-moving ops only]}."""
    groups: dict[tuple, list] = {}
    for node in g.model.graph.node:
        lin = _linear(g, node) if node.op_type in ("Conv", "MatMul", "Gemm") else None
        if lin is None or lin[0] in skip or g.const_uses(lin[0]) != 1:
            continue
        if node.op_type == "Conv" and any(d != 1 for d in g.shapes[lin[0]][2:]):
            continue  # a spatial kernel: not a linear layer over channels (encoders' convs stay as they are)
        t, axis = node.input[0], lin[3]
        while (p := g.producer.get(t)) is not None and p.op_type in _MOVERS:
            axis = _mover_axis(g, p, axis, forward=False)
            if axis is None:  # the channels spread over several axes (attention heads merged): no one scale axis
                t = node.input[0]
                break
            t = p.input[0]
        groups.setdefault((t, axis), []).append(node)
    return groups


def _closed(g: _Graph, source: str, axis: int, members: list) -> bool:
    """True if every reader of ``source`` (through data-moving ops) is one of ``members``: dividing it changes nothing else."""
    todo, ids = [(source, axis)], {id(m) for m in members}
    while todo:
        t, ax = todo.pop()
        if t in g.outputs:
            return False
        for r in g.readers.get(t, []):
            if id(r) in ids and r.input[0] == t:
                continue
            if r.op_type not in _MOVERS or r.input[0] != t:
                return False
            nxt = _mover_axis(g, r, ax, forward=True)
            if nxt is None:
                return False
            todo.append((r.output[0], nxt))
    return True


def _as_rows(w: np.ndarray, w_in: int) -> np.ndarray:
    """A weight as [N, K] (rows: output channels) from its input-channel axis ``w_in``."""
    return (np.moveaxis(w, w_in, -1) if w.ndim == 2 else w.reshape(w.shape[0], -1)).reshape(-1, w.shape[w_in])


def awq_model(model: onnx.ModelProto, model_path, calibration, scheme, per_tensor_matmul: bool = False,
              base_dir: str = "", skip: set[str] | frozenset = frozenset()) -> tuple[onnx.ModelProto, dict]:
    """(model with AWQ scales folded in, record).  ``model_path``: the same model on disk (its intermediate
    tensors are read by onnxruntime); ``scheme``: the weights' grid (bits, granularity, symmetry, group size);
    ``per_tensor_matmul``: MatMul weights take one scale (QNN targets); ``base_dir``: the external data of a
    model read as its graph (onnx_files.load_graph)."""
    from edgevlm.quant.onnx_qdq import run_with_intermediates
    from edgevlm.quant.schemes import get_scheme

    scheme = get_scheme(scheme)
    if scheme.weight_bits is None or scheme.weight_bits > 8:
        return model, {"weight_algo": "awq", "layers": 0, "why": f"{scheme.name} has no 4- or 8-bit weights"}
    t0 = time.perf_counter()
    g = _Graph(model, base_dir)
    plans, unscaled = [], 0
    for (source, axis), members in _groups(g, set(skip)).items():
        size = g.shapes.get(source, (0,) * (axis + 1))[axis] if axis is not None else 0
        edits = _sink(g, source, axis, 0) if size > 1 and _closed(g, source, axis, members) else None
        if edits is None:
            unscaled += len(members)
        else:
            plans.append((source, axis, members, edits))
    samples = graph_samples(model, calibration)
    if plans and not samples:
        raise InputError("AWQ needs calibration samples", "give the stage calibration inputs, or use --weight-algo rtn")
    per_sample = -(-SEARCH_ROWS // max(len(samples), 1))
    rows: dict[str, list] = {p[0]: [] for p in plans}
    if plans:
        for values in run_with_intermediates(model_path, samples, set(rows), "AWQ statistics"):
            for source, axis, _, _ in plans:
                x = np.moveaxis(np.asarray(values[source], np.float32), axis, -1).reshape(-1, g.shapes[source][axis])
                rows[source].append(x[np.linspace(0, len(x) - 1, min(per_sample, len(x))).astype(int)])
    alphas, n_rows = [], 0
    for source, axis, members, edits in plans:
        x = torch.as_tensor(np.concatenate(rows.pop(source)))
        if not torch.all(torch.isfinite(x)):
            raise InputError(f"AWQ: the calibration values of '{source}' are not finite",
                             "check the calibration data, or use --weight-algo rtn")
        n_rows = max(n_rows, len(x))
        weights, grids, layouts = [], [], []
        for node in members:
            w_name, w_in, _, _, _ = _linear(g, node)
            w = _as_rows(g.value(w_name), w_in)
            # Output rows are independent on a per-channel or per-group grid: a subset measures the same alpha.
            per_tensor = scheme.weight_granularity == "per-tensor" or (per_tensor_matmul and node.op_type == "MatMul")
            if not per_tensor and len(w) > SEARCH_OUT_ROWS:
                w = w[np.linspace(0, len(w) - 1, SEARCH_OUT_ROWS).astype(int)]
            weights.append(torch.as_tensor(w, dtype=torch.float32))
            grids.append(_grid(scheme, "per-tensor" if per_tensor else scheme.weight_granularity))
            layouts.append((w_name, w_in))
        s, alpha, _ = search_scale(x, weights, grids)
        alphas.append(alpha)
        if alpha == 0.0:
            continue
        s = s.astype(np.float32)
        for w_name, w_in in layouts:
            shape = [1] * g.value(w_name).ndim
            shape[w_in] = -1
            g.values[w_name] = g.value(w_name) * s.reshape(shape)
            g.edited.add(w_name)
        for name, node, slot, fn in edits:
            new = fn(g.value(name), s).astype(np.float32)
            if g.const_uses(name) > 1 or new.shape != g.value(name).shape:  # shared or grown: a copy of its own
                fresh = f"{name}_awq{len(g.values)}"
                g.readers[name] = [r for r in g.readers[name] if r is not node]
                g.readers[fresh] = [node]
                g.shapes[fresh] = new.shape
                node.input[slot] = name = fresh
            g.values[name] = new
            g.edited.add(name)
    _write_back(g)
    scaled = sum(len(p[2]) for p, a in zip(plans, alphas) if a > 0)
    return model, {
        "weight_algo": "awq", "layers": scaled, "groups": len(plans), "calibration_rows": n_rows,
        "alphas": {f"{a:g}": alphas.count(a) for a in sorted(set(alphas))},
        "left_at_alpha_0": sum(len(p[2]) for p, a in zip(plans, alphas) if a == 0),
        "unscaled": {"layers": unscaled, "why": "no producer can absorb the division (e.g. after attention's "
                     "weighted sum, whose channels span the heads, or a residual Add; or the input is also read "
                     "elsewhere)"} if unscaled else None,
        "seconds": round(time.perf_counter() - t0, 2)}


def _write_back(g: _Graph) -> None:
    """The edited constants into the model as float32 (the new copies appended); constants no longer read go."""
    for name in sorted(g.edited):
        tensor = numpy_helper.from_array(g.values[name].astype(np.float32), name)
        if name in g.inits:
            g.inits[name].CopyFrom(tensor)
        else:
            g.model.graph.initializer.append(tensor)
    used = {i for n in g.model.graph.node for i in n.input}
    for t in [t for t in g.model.graph.initializer if t.name not in used and t.name in g.values]:
        g.model.graph.initializer.remove(t)


def _grid(scheme, granularity: str):
    return lambda w: fake_quantize(w, scheme.weight_bits, granularity, scheme.weight_symmetric, scheme.group_size)


def awq_onnx_file(path, calibration, scheme, target=None, skip: set[str] | frozenset = frozenset()) -> dict:
    """AWQ on the float ONNX model at ``path``, in place (external data kept as it was); returns the record.

    ``target``: its grid rules (QNN targets: MatMul weights per tensor).
    """
    from edgevlm.quant.schemes import get_scheme, uses_qnn_rules
    from edgevlm.targets import get_target

    path = Path(path)
    scheme = get_scheme(scheme)
    qnn = target is not None and uses_qnn_rules(get_target(target))
    if not onnx_files.has_external_data(path):
        model, record = awq_model(onnx.load(str(path)), path, calibration, scheme, qnn, skip=skip)
        onnx.save_model(model, str(path))
        return record
    model = onnx_files.load_graph(path)
    model, record = awq_model(model, path, calibration, scheme, qnn, str(path.parent), skip)
    with tempfile.TemporaryDirectory(prefix="edgevlm-awq-", dir=path.parent) as tmp:
        written = onnx_files.save_from(model, path.parent, Path(tmp) / path.name)
        for f in written:
            f.replace(path.parent / f.name)
    return record
