"""SmoothQuant on a float ONNX graph: activation outliers migrated into the following MatMul/Gemm weights.

For w8a8, a per-tensor activation range is set by its largest channels; a
few outlier channels leave the rest of the tensor with a handful of levels.
SmoothQuant (Xiao et al. 2023) divides each input channel j of a MatMul's
activation by s_j = max|x_j|^alpha / max|W_j|^(1-alpha) and multiplies row j
of the weight by s_j: the product is unchanged in exact arithmetic, and the
activation's channels become comparable so its 8-bit grid serves all of
them, at the price of a wider weight range (per-channel weight scales absorb
most of that).

The statistics, the scales and the rewrite are NNCF's
(``nncf.quantization.algorithms.smooth_quant.SmoothQuant``, ONNX backend):
it inserts a ``Mul`` by 1/s in front of each group of MatMuls that share an
activation and scales their weights.  A Mul left in the graph would get its
own QDQ on its input, so the outlier tensor would still be quantized at
8 bits and nothing is gained; NNCF's ONNX backend does not fold it (its
OpenVINO backend has the graph pass for that), and onnxruntime's own
``SmoothQuant`` extra option needs Intel Neural Compressor 2.x, which
dropped ONNX support in 3.x and is not installed.  So ``fold_scales`` here
(written by hand for that reason) folds each inserted Mul into the op that
produces its input when that op's output has no other consumer:
LayerNormalization (scale and bias), or a Mul by a constant (an RMSNorm's
weight, as torch's exporter writes it).  A group whose Mul cannot be folded
(after a Relu/GELU, a residual add, a shared tensor) is undone: its weights
divided back and the Mul removed.  What could neither be folded nor undone
is listed in the record.
"""
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgevlm.errors import InputError
from edgevlm.quant import onnx_files
from edgevlm.quant.calibration import graph_samples

DEFAULT_ALPHA = 0.5  # the SmoothQuant paper's default migration strength
_NNCF_SUFFIX = "/nncf_smooth_quant"


def smooth_model(model: onnx.ModelProto, calibration, alpha: float = DEFAULT_ALPHA) -> tuple[onnx.ModelProto, dict]:
    """(smoothed model, record): NNCF's SmoothQuant at ``alpha`` on MatMul/Gemm inputs, scales folded."""
    if not 0.0 < alpha < 1.0:
        raise InputError(f"SmoothQuant alpha {alpha:g} is outside (0, 1)",
                         "use e.g. 0.5 (the paper's default); larger moves more of the range into the weights")
    import nncf
    from nncf.common.factory import StatisticsAggregatorFactory, build_graph
    from nncf.quantization.algorithms.smooth_quant.algorithm import SmoothQuant

    samples = graph_samples(model, calibration)
    if not samples:
        raise InputError("SmoothQuant needs calibration samples", "give the stage calibration inputs")
    graph = build_graph(model)
    algo = SmoothQuant(subset_size=len(samples), alpha_map={"matmul": alpha, "convolution": -1})
    points = algo.get_statistic_points(model, graph)
    aggregator = StatisticsAggregatorFactory.create(model, nncf.Dataset(samples))
    aggregator.register_statistic_points(points)
    aggregator.collect_statistics(model, graph)
    smoothed = algo.apply(model, graph, aggregator.statistic_points)
    smoothed, folded, reverted, left = fold_scales(smoothed)
    return smoothed, {"alpha": alpha, "groups": folded + reverted + len(left), "folded": folded,
                      "reverted": reverted, "unfolded": left}


def _scaled_params(src, scale: np.ndarray, inits: dict) -> dict | None:
    """{initializer of ``src``: its value times ``scale`` along the last axis}, or None where ``src`` cannot take
    the scale: a LayerNormalization's scale and bias, or the one constant of a Mul (an RMSNorm's weight)."""
    if src.op_type == "LayerNormalization":
        params = [p for p in src.input[1:3] if p]
    elif src.op_type == "Mul":
        params = [p for p in src.input if p in inits]
        params = params if len(params) == 1 else []
    else:
        params = []
    if not params or any(p not in inits for p in params):
        return None
    updated = {}
    for p in params:
        value = numpy_helper.to_array(inits[p])
        if value.ndim == 0 or value.shape[-1] not in (1, scale.size):
            return None
        per_axis = scale if value.shape[-1] == scale.size else scale.reshape((1,) * (value.ndim - 1) + (-1,))
        updated[p] = (value.astype(np.float64) * per_axis).astype(value.dtype)
        if updated[p].shape != value.shape:  # a per-tensor constant would grow to per-channel: keep it apart
            return None
    return updated


def fold_scales(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, int, list[str]]:
    """Fold NNCF's inserted smoothing Muls into their producers, and undo the groups whose Mul cannot be folded;
    (model, folded count, reverted count, names of Muls left in the graph)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = onnx_files.consumers(graph)
    init_uses = {name: len(readers) for name, readers in consumers.items() if name in inits}
    folded, reverted, left, drop = 0, 0, [], []
    for mul in [n for n in graph.node if n.op_type == "Mul" and n.name.endswith(_NNCF_SUFFIX)]:
        act, scale_name = (mul.input[0], mul.input[1]) if mul.input[1] in inits else (mul.input[1], mul.input[0])
        scale = numpy_helper.to_array(inits[scale_name]).astype(np.float64).reshape(-1)
        src = producer.get(act)
        alone = src is not None and len(consumers.get(act, [])) == 1 and act not in {o.name for o in graph.output}
        updated = _scaled_params(src, scale, inits) if alone else None
        if not updated:
            if _revert(mul, act, scale, consumers, inits, init_uses):
                drop.append(mul)
                reverted += 1
            else:
                left.append(mul.name)
            continue
        for p, value in updated.items():
            if init_uses.get(p, 0) == 1:
                inits[p].CopyFrom(numpy_helper.from_array(value, p))
            else:  # shared (the exporter merges equal constants, e.g. every norm's initial ones): a copy of its own
                name = f"{p}{_NNCF_SUFFIX}_folded_{folded}"
                graph.initializer.append(numpy_helper.from_array(value, name))
                src.input[list(src.input).index(p)] = name
                init_uses[p] -= 1
        # the producer now writes the Mul's output tensor; the Mul goes
        out = mul.output[0]
        src.output[list(src.output).index(act)] = out
        drop.append(mul)
        folded += 1
    for n in drop:
        graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for t in [t for t in graph.initializer if t.name not in used and t.name.endswith("/nncf_smooth_quant_scale")]:
        graph.initializer.remove(t)
    return model, folded, reverted, left


def _revert(mul, act: str, scale: np.ndarray, consumers: dict, inits: dict, init_uses: dict) -> bool:
    """Undo one smoothing group that cannot be folded: its MatMuls' weights divided back, their input rewired to
    the unsmoothed tensor (a Mul left in the graph would only add a quantization step).  False if not possible."""
    users = consumers.get(mul.output[0], [])
    plans = []
    for c in users:
        w = c.input[1] if len(c.input) > 1 else ""
        if c.op_type not in ("MatMul", "Gemm") or c.input[0] != mul.output[0] or w not in inits or init_uses.get(w) != 1:
            return False
        trans_b = next((a.i for a in c.attribute if a.name == "transB"), 0) if c.op_type == "Gemm" else 0
        value = numpy_helper.to_array(inits[w])
        axis = value.ndim - 1 if trans_b else value.ndim - 2  # the weight's input-channel axis
        if value.shape[axis] != scale.size:
            return False
        shape = [1] * value.ndim
        shape[axis] = -1
        plans.append((c, w, (value.astype(np.float64) * scale.reshape(shape)).astype(value.dtype)))
    for c, w, value in plans:  # the Mul multiplied the activation by ``scale``: the weight takes it back
        inits[w].CopyFrom(numpy_helper.from_array(value, w))
        c.input[0] = act
    return True


def smooth_onnx_file(path, calibration, alpha: float = DEFAULT_ALPHA) -> dict:
    """Smooth the float ONNX model at ``path`` in place (external data kept as it was); returns the record."""
    path = Path(path)
    external = onnx_files.has_external_data(path)
    model = onnx.load(str(path))
    smoothed, record = smooth_model(model, calibration, alpha)
    onnx_files.save(smoothed, path, external=external)
    return record
