"""Quantize a float ONNX model to QDQ form with onnxruntime.quantization.

Flow: check weights -> (HTP targets) onnxruntime's QNN pre-processing and
the graph forms the HTP executes correctly (edgevlm.quant.htp_forms) ->
calibrate every float tensor with an edgevlm observer (checked for NaN/Inf)
-> write the ranges as onnxruntime's calibration cache -> quantize_static in
QDQ format (for HTP targets with the configuration of
``execution_providers.qnn.get_qnn_qdq_config``) -> check the scales of the
result.  Calibration is done here rather than inside quantize_static so that
non-finite activations are reported by tensor name and so that the MSE
observer (which onnxruntime lacks) can be used.
"""
import contextlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data
from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

from edgevlm.errors import InputError
from edgevlm.progress import track
from edgevlm.quant import htp_forms, onnx_files
from edgevlm.quant.calibration import CALIBRATION_CHUNK_BYTES, chunk_by_bytes, graph_samples
from edgevlm.quant.checker import _check
from edgevlm.quant.gptq import apply_gptq, check_weight_algo
from edgevlm.quant.observers import RangeObserver, check_finite
from edgevlm.quant.qdq import qrange
from edgevlm.quant.schemes import QuantScheme, check_scheme_allowed, get_scheme, uses_qnn_rules
from edgevlm.quant.weight_scales import apply_mse_scales
from edgevlm.targets import get_target

_QTYPE = {
    "uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16, "int8": QuantType.QInt8,
    "int16": QuantType.QInt16, "int4": QuantType.QInt4, "uint4": QuantType.QUInt4,
}
# Smallest activation range (rmax - rmin) QNN accepts; onnxruntime's QNN configuration widens
# narrower ranges to it.
QNN_MIN_REAL_RANGE = 1e-4
_QDQ = ("QuantizeLinear", "DequantizeLinear")
# Per-channel axis of a weight, by consumer op: the defaults of onnxruntime's operator quantizers.
_WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1, "MatMul": 1}


def quantize_onnx(float_onnx_path, out_path, scheme, calibration, target, observer: str = "minmax",
                  overrides: dict[str, int] | None = None, percentile: float | None = None,
                  weight_algo: str = "rtn", hessians=None) -> dict:
    """Quantize ``float_onnx_path`` to a QDQ model at ``out_path``; return info for the report.

    ``calibration``: iterable of {input name: np.ndarray} (or input tuples).
    ``overrides``: {tensor or node name: bits} setting single tensors apart
    from the scheme: an activation tensor to 16 bits (mixed precision) or 8
    bits (e.g. the KV-cache inputs/outputs under kv8), a weight initializer
    to 8 bits; a node name applies 16 to all its float outputs or 8 to its
    weights.
    ``weight_algo``: ``rtn`` (round to nearest), ``mse`` (edgevlm.quant.weight_scales:
    each channel's scale clipped to minimize its rounding error) or ``gptq`` (edgevlm.quant.gptq:
    Conv/MatMul weights re-rounded on the same grid to minimize each layer's
    output error on the calibration samples); ``hessians``: a
    ``gptq.HessianStore`` shared by the stages of one build (llm-decode takes
    llm-prefill's Hessians of the same weights).
    Raises InputError for bad data (naming the tensor), a scheme the target
    does not allow, non-finite weights, or scales that would underflow.
    """
    scheme, target = get_scheme(scheme), get_target(target)
    float_onnx_path, out_path = Path(float_onnx_path), Path(out_path)
    _check_arguments(float_onnx_path, scheme, target, weight_algo)
    qnn = uses_qnn_rules(target)
    # A float model given with external data is a large one: every intermediate model keeps its weights
    # in a side file too, so that graph-only steps never load them (edgevlm.quant.onnx_files).
    large = onnx_files.has_external_data(float_onnx_path)
    with tempfile.TemporaryDirectory(prefix="edgevlm-quant-") as tmp, _quiet_onnxruntime_quantization():
        tmp = Path(tmp)
        model, model_path, preprocessed, forms = _float_graph(float_onnx_path, tmp, qnn, large)
        # A large model is its graph alone here: the steps that read weights read them one at a time from disk.
        weights_dir = str(model_path.parent) if large else ""
        check_weights(model, scheme, weights_dir)
        act_overrides, weight_overrides = _split_overrides(model, overrides or {})
        act_overrides = softmax_outputs_at_16(model, scheme, target, qnn) | act_overrides  # the caller's win
        if scheme.act_bits == 16 or scheme.weight_bits != 8 or 16 in act_overrides.values():
            model, model_path = _lift_to_opset21(model, model_path, tmp / "opset21.onnx", large)
            weights_dir = str(model_path.parent) if large else ""

        samples = graph_samples(model, calibration)
        act_dtypes = {n: f"uint{b}" for n, b in act_overrides.items()}
        ranges = calibrate_onnx(model_path, samples, observer, scheme.act_dtype, act_dtypes, percentile)
        check_activation_scales(ranges, scheme, act_dtypes)
        input_widened = {}
        if qnn:
            ranges, input_widened = htp_forms.widen_input_ranges(model, ranges, act_dtypes, scheme.act_dtype)
        widened = _widened_by_qnn(ranges) if qnn else {}
        cache = tmp / "calibration.json"
        save_tensors_data(_tensors_data(ranges), cache)

        ort_overrides = _ort_overrides(model, act_overrides, weight_overrides, scheme, qnn, weights_dir)
        if qnn:  # types QNN's HTP requires win: a graph it refuses is no build at all
            ort_overrides |= htp_forms.quant_overrides(model)
        staged = tmp / "quantized.onnx"  # out_path only ever receives a checked model
        _quantize_static(model, model_path, staged, cache, scheme, ort_overrides, qnn, large)
        if large:
            del model
        quantized = onnx.load(str(staged))
        weight_info = _round_weights(weight_algo, model_path, quantized, samples, hessians)
        split = 0
        if qnn:  # QDQ-level forms: they need the quantized grids (htp_forms.split_wide_matmuls)
            quantized, split = htp_forms.split_wide_matmuls(quantized)
        if not large and (weight_algo != "rtn" or split):  # the file copied below; a large one is saved from memory
            onnx.save(quantized, str(staged))
        _write_checked(quantized, staged, out_path, large)

    return _info(scheme, quantized, out_path, observer=observer, weights=weight_info, samples=len(samples),
                 qnn=qnn, preprocessed=preprocessed, forms=forms, split=split,
                 overrides={**act_overrides, **weight_overrides}, widened=widened, input_widened=input_widened)


def softmax_outputs_at_16(model: onnx.ModelProto, scheme: QuantScheme, target, qnn: bool) -> dict[str, int]:
    """{Softmax output: 16} under 8-bit activations on a CPU-class target that allows 16-bit activations.

    A Softmax over n keys puts most probabilities near 1/n: attention spread over a SigLIP2 tower's
    1024 patches sits below uint8's step of 1/255, so at 8 bits it is mostly zeros.  Measured on the
    LFM2-VL-450M encoder at 4 layers (benchmarks/encoder_softmax16.py, cpu-x86_64 w8a8): every Softmax
    output at 1.3-5.3 dB local SQNR, the encoder 0.3 dB; with them at 16 bits, 28.0 dB.  Not on QNN
    targets (``qnn``): their default activations are 16-bit, and under w8a8 a 16-bit Softmax output
    changes which MatMuls htp_forms splits, which has not been measured on the HTP.
    """
    if qnn or scheme.act_bits != 8 or "int16" not in target.activation_dtypes:
        return {}
    return {node.output[0]: 16 for node in model.graph.node if node.op_type == "Softmax"}


def _check_arguments(float_onnx_path: Path, scheme: QuantScheme, target, weight_algo: str) -> None:
    check_weight_algo(weight_algo)
    if weight_algo == "awq":
        raise InputError("weight algorithm 'awq' rescales the float model before it is quantized, which "
                         "quantize_onnx does not do", "call edgevlm.quant.awq.awq_onnx_file on the float model, then "
                         "quantize_onnx with weight_algo='rtn' (edgevlm.compile does both)")
    if scheme.is_kv_only:
        raise InputError(f"{scheme.name} is a KV-cache scheme", "quantize a graph with a stage scheme such as w8a16")
    check_scheme_allowed(scheme, target, "stage")
    if not float_onnx_path.is_file():
        raise InputError(f"float ONNX model '{float_onnx_path}' not found")


def _float_graph(float_onnx_path: Path, tmp: Path, qnn: bool, large: bool):
    """(model, its path, QNN pre-processed?, HTP form counts): the float graph quantization starts from.

    For HTP targets: onnxruntime's QNN pre-processing, then the graph forms
    the HTP executes correctly (edgevlm.quant.htp_forms); each rewritten
    model is saved under ``tmp`` for the steps that read a path.  A
    ``large`` model is returned as its graph (onnx_files.load_graph).
    """
    if not qnn:
        model = onnx_files.load_graph(float_onnx_path) if large else onnx.load(str(float_onnx_path))
        return model, float_onnx_path, False, {}
    model_path = pre = tmp / "preprocessed.onnx"
    external = {"save_as_external_data": True, "all_tensors_to_one_file": True,
                "external_data_location": pre.name + ".data"} if large else {}
    preprocessed = qnn_preprocess_model(str(float_onnx_path), str(pre), **external)
    if not preprocessed:
        model_path = float_onnx_path
    formed = tmp / "htp_forms.onnx"
    if large:
        forms = htp_forms.apply_file(model_path, formed)
        model_path = formed if forms else model_path
        return onnx_files.load_graph(model_path), model_path, preprocessed, forms
    model, forms = htp_forms.apply(onnx.load(str(model_path)))
    if forms:
        model_path = formed
        onnx_files.save(model, model_path, external=False)
    return model, model_path, preprocessed, forms


def _lift_to_opset21(model: onnx.ModelProto, model_path: Path, lifted_path: Path, large: bool):
    """(model, path) at opset 21 when below it and the converter can lift it, else as given.

    4- and 16-bit QuantizeLinear/DequantizeLinear are standard from opset 21.
    If the converter cannot lift the model, onnxruntime emits com.microsoft
    Q/DQ ops instead (visible in the returned "qdq_domains").  A ``large``
    model is given and returned as its graph (onnx_files.load_graph); the
    converter reads it whole.
    """
    if _opset(model) >= 21:
        return model, model_path
    try:
        converted = onnx.version_converter.convert_version(onnx.load(str(model_path)) if large else model, 21)
    except Exception:  # noqa: BLE001 - any converter failure leaves the model as exported
        return model, model_path
    onnx_files.save(converted, lifted_path, external=large)
    return (onnx_files.load_graph(lifted_path) if large else converted), lifted_path


def _widened_by_qnn(ranges: dict) -> dict[str, list[float]]:
    """The ranges onnxruntime's QNN configuration widens to QNN_MIN_REAL_RANGE.

    On HTP they lose their precision: reported, never silent.  All-zero
    tensors are exact either way and not listed.
    """
    return {n: [lo, hi] for n, (lo, hi) in ranges.items() if 0.0 < max(hi, 0.0) - min(lo, 0.0) < QNN_MIN_REAL_RANGE}


def _quantize_static(model, model_path: Path, staged: Path, cache: Path, scheme: QuantScheme, ort_overrides: dict,
                     qnn: bool, large: bool) -> None:
    """onnxruntime's quantize_static of ``model_path`` to ``staged`` in QDQ format, on the ranges in ``cache``.

    HTP targets take the configuration of ``execution_providers.qnn.get_qnn_qdq_config``.
    """
    act_type, weight_type = _QTYPE[scheme.act_dtype], _QTYPE[scheme.weight_dtype]
    per_channel = scheme.weight_granularity in ("per-channel", "per-group")
    if qnn:
        config = get_qnn_qdq_config(
            str(model_path), None, calibrate_method=CalibrationMethod.MinMax,
            activation_type=act_type, weight_type=weight_type, per_channel=per_channel,
            init_overrides=ort_overrides or None, activation_symmetric=scheme.act_symmetric,
            weight_symmetric=scheme.weight_symmetric,
        )
        op_types, extra = config.op_types_to_quantize, dict(config.extra_options)
    else:
        # Every op type, as the QNN configuration does, so that the graph is QDQ around every op.
        op_types = sorted({n.op_type for n in model.graph.node} - {"Cast"})
        extra = {
            "ActivationSymmetric": scheme.act_symmetric, "WeightSymmetric": scheme.weight_symmetric,
            "TensorQuantOverrides": ort_overrides,
        }
    if scheme.weight_granularity == "per-group":
        extra["BlockSize"] = scheme.group_size
        # Groups run along a MatMul weight's reduction axis (K of a K x N weight), as in
        # GPTQ/AWQ-style int4; onnxruntime would otherwise block along its channel axis N.
        extra["QDQOpTypePerChannelSupportToAxis"] = {"MatMul": 0}
    quantize_static(
        str(model_path), str(staged), None, quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types, per_channel=per_channel,
        activation_type=act_type, weight_type=weight_type, calibrate_method=CalibrationMethod.MinMax,
        extra_options=extra, calibration_cache_path=str(cache), use_external_data_format=large,
    )


def _round_weights(weight_algo: str, model_path: Path, quantized: onnx.ModelProto, samples, hessians) -> dict:
    """Re-round ``quantized``'s weights in place by ``weight_algo`` (rtn: as quantize_static left them); its record."""
    if weight_algo == "rtn":
        return {"weight_algo": "rtn"}
    t0 = time.perf_counter()
    if weight_algo == "gptq":
        info = apply_gptq(model_path, quantized, samples, act_order=True, store=hessians)
    else:
        info = apply_mse_scales(model_path, quantized)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return info


def _write_checked(quantized: onnx.ModelProto, staged: Path, out_path: Path, large: bool) -> None:
    """Check ``quantized``'s scales, then write it to ``out_path`` atomically (a small model as the ``staged`` file)."""
    check_scales(quantized)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if large:  # one file again unless the quantized model still needs its weights beside it
        onnx_files.save(quantized, out_path)
    else:
        partial = out_path.with_name(out_path.name + ".partial")
        shutil.copyfile(staged, partial)
        partial.replace(out_path)


def _info(scheme: QuantScheme, quantized: onnx.ModelProto, out_path: Path, *, observer, weights, samples, qnn,
          preprocessed, forms, split, overrides, widened, input_widened) -> dict:
    """The report's record of one quantization."""
    ok, offending, n_quantized = _check(quantized)
    return {
        "scheme": scheme.name,
        "scheme_detail": scheme.to_dict(),
        "observer": observer,
        "weights": weights,
        "calibration_samples": samples,
        "activation_type": scheme.act_dtype,
        "weight_type": scheme.weight_dtype,
        "weight_granularity": scheme.weight_granularity,
        "qnn_config": qnn,
        "qnn_preprocessed": preprocessed,
        "htp_forms": forms,
        "htp_split_matmuls": split,
        "opset": _opset(quantized),
        "qdq_domains": sorted({n.domain or "ai.onnx" for n in quantized.graph.node if n.op_type in _QDQ}),
        "nodes_quantized": n_quantized,
        "quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node),
        "dequantize_nodes": sum(n.op_type == "DequantizeLinear" for n in quantized.graph.node),
        "overrides": overrides,
        "range_widened": widened,
        "htp_input_range_widened": input_widened,
        "integer_only": ok,
        "offending_ops": offending,
        "path": str(out_path),
    }


@contextlib.contextmanager
def _quiet_onnxruntime_quantization():
    """Silence onnxruntime.quantization's root-logger advice ("consider pre-processing", opset bumps).

    What it warns about is either done here (QNN pre-processing, opset 21)
    or reported in the returned info; the console belongs to the CLI.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def check_weights(model: onnx.ModelProto, scheme: QuantScheme, weights_dir: str = "") -> None:
    """Raise InputError for a float initializer with NaN/Inf or whose quantization scale would underflow.

    onnxruntime silently replaces a scale below float32's smallest normal
    with 1.0 (so a tiny, non-zero weight channel quantizes to all zeros);
    that is reported here instead.  All-zero tensors or channels are fine:
    they quantize exactly.  ``weights_dir``: where the external data of a
    model read as its graph (onnx_files.load_graph) is.
    """
    qmax = qrange(scheme.weight_dtype)[1]
    tiny = np.finfo(np.float32).tiny
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        w = onnx.numpy_helper.to_array(init, weights_dir)
        check_finite(init.name, w, "(a weight initializer of the float model)")
        if w.size < 2:
            continue
        absw = np.abs(w)
        per_axis = [absw.reshape(-1)] + ([absw.reshape(absw.shape[0], -1)] if w.ndim >= 2 else [])
        for view in per_axis:
            amax = view.max(axis=-1) if view.ndim == 2 else np.array([view.max()])
            if np.any((amax > 0) & (amax / qmax < tiny)):
                raise InputError(
                    f"weight '{init.name}' is too small to quantize: max |w| of a channel is "
                    f"{float(amax[(amax > 0)].min()):.3g}, so its scale underflows float32",
                    "rescale the layer (fold the factor into the next one) or check the checkpoint",
                )


def check_activation_scales(ranges: dict, scheme: QuantScheme, dtypes: dict[str, str]) -> None:
    """Raise InputError naming the activations whose non-zero range gives a scale below float32's normals.

    onnxruntime would replace such a scale with 1.0, turning the tensor into zeros.
    """
    tiny = np.finfo(np.float32).tiny
    bad = []
    for name, (lo, hi) in ranges.items():
        qmin, qmax = qrange(dtypes.get(name, scheme.act_dtype))
        width = max(hi, 0.0) - min(lo, 0.0)
        if 0.0 < width / (qmax - qmin) < tiny:
            bad.append(f"'{name}' [{lo:.3g}, {hi:.3g}]")
    if bad:
        raise InputError(
            f"activation {', '.join(sorted(bad)[:5])}{' ...' if len(bad) > 5 else ''} spans so little on the "
            "calibration data that its quantization scale underflows float32",
            "check the model's weights and normalization (values this small are lost in any integer type)",
        )


def check_scales(model: onnx.ModelProto) -> None:
    """Raise InputError naming the tensor if any Q/DQ scale is non-finite, zero or subnormal."""
    inits = {t.name: t for t in model.graph.initializer}
    tiny = np.finfo(np.float32).tiny
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.input[1] not in inits:
            continue
        scale = onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        if not np.all(np.isfinite(scale)) or np.any(scale < tiny):
            tensor = node.input[0] if node.op_type == "QuantizeLinear" else node.output[0]
            raise InputError(
                f"quantization scale of tensor '{tensor}' is {scale.ravel()[:4].tolist()}: "
                "non-finite, zero or below float32's smallest normal",
                "check the calibration data and the tensor's value range",
            )


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def run_with_intermediates(model_path, samples, names, label: str = "pass over the samples"):
    """Yield, per sample, {name: value} for the float tensors ``names`` (progress reported as ``label``).

    Node outputs are added as graph outputs; graph inputs are taken from the
    sample itself (an ONNX graph may not output a name it takes as input).
    """
    model_path = Path(model_path)
    external = onnx_files.has_external_data(model_path)
    model = onnx.load(str(model_path), load_external_data=not external)
    existing = {o.name for o in model.graph.output}
    inputs = {i.name for i in model.graph.input}
    for name in names:
        if name not in existing and name not in inputs:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    # Unoptimized, so that every named tensor still exists.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    if external:  # the graph with its outputs beside the model, reading the same data file: no copy of the weights here
        augmented = model_path.with_name(f".{model_path.stem}.intermediates.onnx")
        onnx.save_model(model, str(augmented))
        del model
        try:
            sess = ort.InferenceSession(str(augmented), opts, providers=["CPUExecutionProvider"])
        finally:
            augmented.unlink()
    else:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    for sample in track(samples, label, len(samples)):
        values = dict(zip(out_names, sess.run(None, sample)))
        values.update({n: v for n, v in sample.items() if n in inputs})
        yield {n: v for n, v in values.items() if n in names}


def calibrate_onnx(model_path, samples, observer: str = "minmax", default_dtype: str = "uint8",
                   dtypes: dict[str, str] | None = None, percentile: float | None = None):
    """{float tensor name: (lo, hi)} of the model at ``model_path`` over ``samples``.

    The activations of one sample are fetched in chunks of at most
    CALIBRATION_CHUNK_BYTES (one pass over the samples per chunk): all at
    once, a 12-layer SigLIP2 tower at 512 px held 5.3 GB of them.
    """
    kwargs = {"percentile": percentile} if percentile is not None else {}
    obs = RangeObserver(observer, default_dtype=default_dtype, dtypes=dtypes, **kwargs)
    chunks = chunk_by_bytes(onnx_files.float_tensor_sizes(model_path), CALIBRATION_CHUNK_BYTES)
    for n, names in enumerate(chunks):
        label = "calibration" + (f" (activation chunk {n + 1}/{len(chunks)})" if len(chunks) > 1 else "")
        for i, tensors in enumerate(run_with_intermediates(model_path, samples, set(names), label)):
            obs.update_all(tensors, where=f"on calibration sample {i}")
    return obs.ranges()


def _tensors_data(ranges: dict[str, tuple[float, float]]) -> TensorsData:
    return TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
        for name, (lo, hi) in ranges.items()
    })


def _split_overrides(model: onnx.ModelProto, overrides: dict[str, int]):
    """({activation: 16}, {weight: 8}) from tensor or node names."""
    inits = {t.name for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    tensors = set(onnx_files.float_tensor_names(model))
    acts, weights = {}, {}
    for name, bits in overrides.items():
        if name in inits:
            if bits != 8:
                raise InputError(f"override '{name}': weights can be raised to 8 bits, not {bits}")
            weights[name] = bits
        elif name in tensors:
            if bits not in (8, 16):
                raise InputError(f"override '{name}': activations take 8 or 16 bits, not {bits}")
            acts[name] = bits
        elif name in nodes:
            node = nodes[name]
            if bits == 16:
                acts.update({o: 16 for o in node.output if o in tensors})
            elif bits == 8:
                weights.update({i: 8 for i in node.input if i in inits})
            else:
                raise InputError(f"override '{name}': bits must be 16 (activations) or 8 (weights), not {bits}")
        else:
            raise InputError(f"override '{name}' names no tensor or node of the model",
                             "use names from the per-layer SQNR table of the analysis")
    return acts, weights


def _restricted_int4_weights(model, consumers, raised: set[str], qnn: bool, weights_dir: str = "") -> dict:
    """Overrides putting each int4 weight (or weight channel) on scale max|w| / 7.

    onnxruntime's symmetric int4 scale is 2 max|w| / 15 (the whole [-8, 7]
    range), which leaves the largest weight at 7.5 steps, between grid
    points: it is rounded to 7 or -8 (a one-hot MatMul constant's 1.0 becomes
    0.93), and a weight trained onto the int4 grid is not reproduced.  Its
    int8 rule, restricted to [-127, 127], keeps the largest weight on the
    grid; this is the same rule at 4 bits ([-7, 7] used), as QNN's symmetric
    encodings do.  Conv and MatMul weights, with the axes onnxruntime uses
    (QNN: MatMul per tensor).
    """
    out = {}
    for init in model.graph.initializer:
        node, idx = consumers.get(init.name, (None, None))
        if (init.name in raised or node is None or idx != 1 or node.op_type not in ("Conv", "MatMul")
                or init.data_type != onnx.TensorProto.FLOAT):
            continue
        w = onnx.numpy_helper.to_array(init, weights_dir)
        if w.ndim < 2:
            continue
        axis = None if qnn and node.op_type == "MatMul" else _WEIGHT_AXIS[node.op_type]
        rows = np.abs(w).reshape(1, -1) if axis is None else np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1)
        amax = rows.max(axis=1).astype(np.float32)
        scale = np.where(amax > 0, amax / np.float32(7), np.float32(1)).astype(np.float32)
        specs = [{"scale": np.array(s, np.float32), "zero_point": np.array(0, np.int8)} for s in scale]
        specs[0]["quant_type"] = QuantType.QInt4
        if axis is not None:
            specs[0]["axis"] = axis
        out[init.name] = specs
    return out


def _ort_overrides(model, acts, weights, scheme: QuantScheme, qnn: bool, weights_dir: str = "") -> dict:
    """onnxruntime TensorQuantOverrides for the raised tensors (``weights_dir``: as for check_weights)."""
    consumers = {}
    for n in model.graph.node:
        for k, i in enumerate(n.input):
            consumers.setdefault(i, (n, k))
    out = {name: [{"quant_type": _QTYPE[f"uint{bits}"]}] for name, bits in acts.items() if bits != scheme.act_bits}
    if scheme.weight_dtype == "int4" and scheme.weight_symmetric and scheme.weight_granularity == "per-channel":
        out |= _restricted_int4_weights(model, consumers, set(weights), qnn, weights_dir)
    for name in weights:
        if scheme.weight_bits >= 8:
            continue
        spec = {"quant_type": QuantType.QInt8, "symmetric": True}
        node, idx = consumers.get(name, (None, None))
        axis = _WEIGHT_AXIS.get(node.op_type) if node is not None and idx == 1 else None
        # QNN runs MatMul weights per tensor only; elsewhere keep the scheme's per-channel axis.
        if axis is not None and scheme.weight_granularity != "per-tensor" and not (qnn and node.op_type == "MatMul"):
            spec["axis"] = axis
        out[name] = [spec]
    return out

