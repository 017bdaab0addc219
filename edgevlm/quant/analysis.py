"""Quantization error of a QDQ ONNX model against its float model.

- :func:`stage_sqnr`: SQNR (and cosine, max abs error) of the stage outputs,
  both models run by onnxruntime with its normal optimizations (so the QDQ
  model runs the integer kernels onnxruntime fuses).
- :func:`layer_sqnr`: per tensor, the SQNR of the float model's tensor vs the
  quantized model's dequantized tensor (error accumulated up to that layer)
  and the local SQNR of that tensor's own Q/DQ pair (the noise it adds).
  Intermediate tensors come from onnxruntime.quantization.qdq_loss_debug.
- :func:`sensitivity`: compute nodes ranked by the SQNR lost across them.
- :func:`compare_schemes`: quantize one ONNX stage under several schemes and
  report each one's stage SQNR (e.g. an encoder at w8a8 vs w8a16).

Every SQNR uses edgevlm.core.metrics, so all reports share one definition.
"""
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import qdq_loss_debug

from edgevlm.core.metrics import compare, sqnr_db
from edgevlm.progress import report
from edgevlm.quant import onnx_files
from edgevlm.quant.calibration import as_samples, chunk_by_bytes
from edgevlm.quant.ort_cpu import cpu_session_options


def _concat_sqnr(refs, tests) -> float | None:
    if not len(refs) or not len(tests):
        return None
    r = np.concatenate([np.asarray(a, np.float64).ravel() for a in refs])
    t = np.concatenate([np.asarray(a, np.float64).ravel() for a in tests])
    return sqnr_db(r, t)


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), cpu_session_options(), providers=["CPUExecutionProvider"])


def _model_samples(path, data) -> list[dict[str, np.ndarray]]:
    sess = _session(path)
    inputs = sess.get_inputs()
    shapes = [[d if isinstance(d, int) else None for d in i.shape] for i in inputs]
    return as_samples(data, [i.name for i in inputs], shapes)


def run_outputs(path, samples) -> list[list[np.ndarray]]:
    """Outputs of the ONNX model at ``path`` for each sample (a list per output)."""
    sess = _session(path)
    per_sample = [sess.run(None, s) for s in samples]
    return [list(outs) for outs in zip(*per_sample)]


def stage_sqnr(float_path, qdq_path, data) -> dict:
    """Output error of the QDQ model vs the float model on ``data`` (samples of inputs).

    Returns ``{"sqnr_db": worst output SQNR, "cosine": worst, "max_abs_err": worst,
    "outputs": {name: SQNR dB}, "samples": n}``; each output's SQNR is
    computed over all samples together.
    """
    samples = _model_samples(float_path, data)
    names = [o.name for o in _session(float_path).get_outputs()]
    ref, test = run_outputs(float_path, samples), run_outputs(qdq_path, samples)
    if len(ref) != len(test):
        raise ValueError(f"float model has {len(ref)} outputs, quantized model {len(test)}")
    flat_r = [np.concatenate([a.ravel() for a in r]) for r in ref]
    flat_t = [np.concatenate([a.ravel() for a in t]) for t in test]
    return {
        "sqnr_db": compare("sqnr_db", flat_r, flat_t),
        "cosine": compare("cosine", flat_r, flat_t),
        "max_abs_err": compare("max_abs_err", flat_r, flat_t),
        "outputs": {n: sqnr_db(r, t) for n, r, t in zip(names, flat_r, flat_t)},
        "samples": len(samples),
    }


def _with_outputs(path, names: list[str], out_path) -> None:
    """The model at ``path`` with ``names`` as flattened extra outputs, as qdq_loss_debug names them, at ``out_path``
    (beside ``path``, so that its external data, if any, is the same file)."""
    model = onnx.load(str(path), load_external_data=False)
    shape_name = "edgevlm_layer_sqnr_flat"
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1], np.int64), shape_name))
    for name in names:
        out = name + qdq_loss_debug._TENSOR_SAVE_POSTFIX
        model.graph.node.append(onnx.helper.make_node("Reshape", [name, shape_name], [out], name=out))
        model.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, [-1]))
    onnx.save_model(model, str(out_path))


_QDQ_SUFFIXES = ("", qdq_loss_debug.QUANT_INPUT_SUFFIX, qdq_loss_debug.DEQUANT_OUTPUT_SUFFIX, qdq_loss_debug._POST_QDQ_POSTFIX1)


def spread_chunks(n: int, first_s: float, budget_s: float | None) -> list[int]:
    """The chunks to run of ``n``, the first having taken ``first_s``: all when they fit ``budget_s`` at that
    pace, else as many as fit, spread evenly from the first to the last (so a chart spans the whole stage)."""
    fit = n if budget_s is None else max(2, int(budget_s // max(first_s, 1e-6)))
    if fit >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, fit).round()})


def _chunked_errors(float_path, qdq_path, samples, sizes: dict[str, int], chunk_bytes: int,
                    budget_s: float | None = None, coverage: dict | None = None) -> dict:
    """qdq_loss_debug's per-tensor errors, the activations fetched in chunks of about ``chunk_bytes`` per sample.

    Holding every activation of a large stage at once (both models, each
    sample) is what made its per-layer SQNR the compile's memory peak; each
    chunk runs both models again, so the cost is time instead.  ``sizes``:
    :func:`onnx_files.float_tensor_sizes` of the float model.  With
    ``budget_s``, the chunks run are those :func:`spread_chunks` picks at the
    first chunk's pace, and none starts past the budget; ``coverage`` (a dict)
    receives how many ran.
    """
    float_path, qdq_path = Path(float_path), Path(qdq_path)
    qdq_names = set(onnx_files.float_tensor_sizes(qdq_path))
    chunks = chunk_by_bytes(sizes, chunk_bytes)
    label = "per-layer SQNR (activation chunks)"

    def errors_of(names):
        aug_f = float_path.with_name(f".{float_path.stem}.layers.onnx")
        aug_q = qdq_path.with_name(f".{qdq_path.stem}.layers.onnx")
        try:
            _with_outputs(float_path, names, aug_f)
            _with_outputs(qdq_path, [n + s for n in names for s in _QDQ_SUFFIXES if n + s in qdq_names], aug_q)
            float_acts = qdq_loss_debug.collect_activations(str(aug_f), iter(samples))
            qdq_acts = qdq_loss_debug.collect_activations(str(aug_q), iter(samples))
        finally:
            aug_f.unlink(missing_ok=True)
            aug_q.unlink(missing_ok=True)
        matched = qdq_loss_debug.create_activation_matching(qdq_acts, float_acts)
        del float_acts, qdq_acts
        for m in matched.values():
            m.setdefault("float", [])
        return qdq_loss_debug.compute_activation_error(matched, err_func=_concat_sqnr)

    t0 = time.perf_counter()
    report(label, 0, len(chunks), 0.0)
    errors = errors_of(chunks[0])
    plan = spread_chunks(len(chunks), time.perf_counter() - t0, budget_s)
    report(label, 1, len(plan), time.perf_counter() - t0)
    ran = [0]
    for i in plan[1:]:
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            break
        errors |= errors_of(chunks[i])
        ran.append(i)
        report(label, len(ran), len(plan), time.perf_counter() - t0)
    if coverage is not None:
        coverage.update(chunks=len(chunks), chunks_run=len(ran), budget_s=budget_s,
                        tensors=sum(len(chunks[i]) for i in ran), tensors_of=len(sizes))
    return errors


def layer_sqnr(float_path, qdq_path, data, chunk_bytes: int | None = None, budget_s: float | None = None,
               coverage: dict | None = None) -> list[dict]:
    """Per quantized activation, in graph order: ``{"tensor", "op", "node", "sqnr_db", "local_sqnr_db"}``.

    ``sqnr_db``: float model's tensor vs the QDQ model's dequantized tensor
    (all error up to this point); ``local_sqnr_db``: the tensor before vs
    after its own Q/DQ pair in the QDQ model (the rounding/clipping it adds),
    None where the quantizer folded the producing op into the Q/DQ pair (a
    Relu or Clip absorbed by the quantization range), which makes the pair
    also apply that op.  ``chunk_bytes``: when the activations of all
    samples pass it, they are fetched in chunks of about that many bytes per
    sample (both models run once per chunk) instead of all at once;
    ``budget_s`` and ``coverage``: see :func:`_chunked_errors` (a pass of one
    chunk always runs whole).
    """
    samples = _model_samples(float_path, data)
    sizes = onnx_files.float_tensor_sizes(float_path)
    whole = max(sum(sizes.values()), 1)
    if chunk_bytes is None or whole * len(samples) <= chunk_bytes:
        chunk_bytes = whole  # one chunk: every activation at once
    # Always the graph-only augmentation of _chunked_errors (the augmented models read the stage's own
    # weight file, the two models run one after the other): qdq_loss_debug's own augmentation loads the
    # weights into the graph and holds both models at once, which took an LFM2-VL-1.6B-shaped llm-decode
    # (one token a sample: activations far under any chunk) from 9.2 GB to the machine's 24 GB.
    errors = _chunked_errors(float_path, qdq_path, samples, sizes, chunk_bytes, budget_s, coverage)
    producers = _producers(float_path)
    qdq_producers = _producers(qdq_path)
    order = {name: i for i, name in enumerate(producers)}
    qdq_order = {name: i for i, name in enumerate(qdq_producers)}  # tensors the float graph lacks (htp_forms')
    rows = []
    for name, err in errors.items():
        node = producers.get(name)
        # A quantized graph output is renamed: its producer writes "<name>_QuantizeLinear_Input".
        qdq_node = qdq_producers.get(name + "_QuantizeLinear_Input") or qdq_producers.get(name)
        folded = node is not None and (qdq_node is None or qdq_node.op_type != node.op_type)
        rows.append({
            "tensor": name,
            "op": node.op_type if node is not None else "input",
            "node": node.name if node is not None else "",
            "sqnr_db": err.get("xmodel_err"),
            "local_sqnr_db": None if folded else err["qdq_err"],
        })
    # errors' order is onnxruntime's calibration tensor *set* (per-process hash seed), so sort fully
    return sorted(rows, key=lambda r: (order.get(r["tensor"], -1), qdq_order.get(r["tensor"], -1), r["tensor"]))


def _producers(path) -> dict:
    return {o: n for n in onnx.load(str(path), load_external_data=False).graph.node for o in n.output}


def weight_sqnr(float_path, qdq_path) -> dict[str, float]:
    """{weight initializer: SQNR dB of its dequantized values vs the float weights}."""
    matched = qdq_loss_debug.create_weight_matching(str(float_path), str(qdq_path))
    return {name: _concat_sqnr([m["float"]], [m["dequantized"].astype(np.float32)]) for name, m in matched.items()}


SENSITIVITY_CHUNK_BYTES = 2**30  # activations fetched per sample and chunk (a 450M LM's prefill holds several GB)


def sensitivity(float_path, qdq_path, data, layers: list[dict] | None = None,
                chunk_bytes: int | None = SENSITIVITY_CHUNK_BYTES) -> list[dict]:
    """Compute nodes ranked by how much SQNR is lost across them, largest loss first.

    A node's ``drop_db`` is the SQNR of its (worst) activation input minus
    the SQNR of its output, both vs the float model: the error this layer's
    weight and activation quantization adds.  Each row:
    ``{"node", "op", "outputs", "weights", "sqnr_db", "drop_db", "weight_sqnr_db", "weights_sqnr_db"}``
    where ``outputs``/``weights`` are the tensors a mixed-precision pass can
    raise.  Pass ``layers`` (from :func:`layer_sqnr`) to reuse them.  One run of
    each model (per ``chunk_bytes`` of activations, see :func:`layer_sqnr`)
    ranks every layer, whatever their number.
    """
    layers = layer_sqnr(float_path, qdq_path, data, chunk_bytes=chunk_bytes) if layers is None else layers
    at = {r["tensor"]: r["sqnr_db"] for r in layers if r["sqnr_db"] is not None}
    model = onnx.load(str(float_path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    w_sqnr = weight_sqnr(float_path, qdq_path)

    def _weight_of(node) -> list[str]:
        # Input 1 is the weight of Conv/MatMul/Gemm (and the scale of a norm); biases stay int32.
        return [node.input[1]] if len(node.input) > 1 and node.input[1] in w_sqnr else []

    def upstream(tensor: str, seen: frozenset = frozenset()) -> tuple[float, list[str]]:
        """SQNR where ``tensor``'s error was last measured, and the weights of the
        unmeasured nodes in between (e.g. a Conv folded with the Relu after it)."""
        if tensor in at:
            return at[tensor], []
        node = producers.get(tensor)
        if node is None or tensor in seen:
            return float("inf"), []
        found = [upstream(i, seen | {tensor}) for i in node.input if i and i not in inits]
        weights = _weight_of(node) + [w for _, ws in found for w in ws]
        return min((f for f, _ in found), default=float("inf")), weights

    rows = []
    for node in model.graph.node:
        outs = [o for o in node.output if o in at]
        if not outs:
            continue
        found = [upstream(i) for i in node.input if i and i not in inits]
        weights = list(dict.fromkeys(_weight_of(node) + [w for _, ws in found for w in ws]))
        before = min((f for f, _ in found), default=float("inf"))
        after = min(at[o] for o in outs)
        rows.append({
            "node": node.name, "op": node.op_type, "outputs": outs, "weights": weights,
            "sqnr_db": after,
            "drop_db": (before - after) if before != float("inf") else 0.0,
            "weight_sqnr_db": min((w_sqnr[w] for w in weights), default=None),
            "weights_sqnr_db": {w: w_sqnr[w] for w in weights},
        })
    return sorted(rows, key=lambda r: -r["drop_db"])


def compare_schemes(float_path, calibration, target, schemes=("w8a8", "w8a16"), eval_data=None,
                    observer: str = "minmax", out_dir=None, layers: bool = False) -> dict[str, dict]:
    """Quantize one ONNX stage with each scheme; return ``{scheme: stage_sqnr(...) + "quant"}``.

    ``eval_data`` (default: the calibration data) is what the error is
    measured on.  QDQ models are written to ``out_dir`` (kept) or a temporary
    directory.  With ``layers=True`` each entry also holds ``"layers"`` from
    :func:`layer_sqnr`.
    """
    from edgevlm.quant.onnx_qdq import quantize_onnx

    calibration = list(calibration)
    data = calibration if eval_data is None else list(eval_data)
    results = {}
    with tempfile.TemporaryDirectory(prefix="edgevlm-schemes-") as tmp:
        where = Path(out_dir) if out_dir is not None else Path(tmp)
        for scheme in schemes:
            name = getattr(scheme, "name", scheme)
            qdq_path = where / f"{Path(float_path).stem}.{name}.onnx"
            info = quantize_onnx(float_path, qdq_path, scheme, calibration, target, observer=observer)
            entry = stage_sqnr(float_path, qdq_path, data)
            entry["quant"] = info
            if layers:
                entry["layers"] = layer_sqnr(float_path, qdq_path, data)
            results[name] = entry
    return results
