"""The ``onnx-qdq`` family: a float ONNX model -> its QDQ model (onnxruntime's quantizer through edgevlm.quant).

The onnx backend exports; this quantizes (GPTQ, AWQ, MSE-scaled or round-to-nearest weights,
mixed precision when the stage has a quality target, the KV cache at the kv
scheme's bits) and measures the per-layer SQNR behind report.html's chart.
The qnn backend prepares its HTP context binaries from the QDQ model written
here (``QnnBackend.consumes = "onnx"``).
"""
from dataclasses import dataclass
from pathlib import Path

from edgevlm.compiler.quantizers import Quantized, register
from edgevlm.core.records import QuantRecord
from edgevlm.core.stage import KV_CACHE, STATE_OUTPUT_SUFFIX, StageKind

LAYER_SQNR_SAMPLES = 2  # calibration samples behind the per-layer SQNR in report.html (kept few: it runs both models)
# The per-layer SQNR's activations, fetched in chunks of this many float bytes when they are more (all at
# once, both models, they were the compile's memory peak: 7.9 GB on a 3-layer SigLIP2 tower at 512 px); a
# large stage takes one sample.  Resident is ~4x a chunk (the QDQ model's Q and DQ outputs, both models):
# at 1 GiB a 2-layer SigLIP2 tower at 512 px (450 MiB a sample) went +4.2 GB.
LAYER_SQNR_CHUNK_BYTES = 2**29
LAYER_SQNR_SAMPLES_LARGE = 1
# Each chunk runs both models whole again: the LFM2-VL-1.6B-shaped encoder's 16 chunks took 20 min (more than
# its calibration; under load), the 450M's 6 chunks 143 s.  A diagnostic gets a budget, like verification on slow
# kernels: past it the chart keeps chunks spread over the whole stage (analysis.spread_chunks), and says so.
LAYER_SQNR_BUDGET_S = 300.0

KV_STATE = ("key_cache", "value_cache")  # the LM stages' KV-cache inputs (outputs add STATE_OUTPUT_SUFFIX)
# Ops that only move data: the KV cache keeps its 8 bits through them.
_MOVES = {"Slice", "Squeeze", "Unsqueeze", "Reshape", "Gather", "Split", "Transpose", "Identity"}


@dataclass
class FloatOnnx:
    """What this family quantizes: the float model at ``path`` (weights in a side file), its graph
    (without the weights when ``large``), its output names, and where the QDQ model goes."""

    path: Path
    graph: object  # onnx.ModelProto
    output_names: list[str] | None
    dest: Path
    large: bool


def _layer_sqnr(float_path, qdq_path, calibration, samples: int = LAYER_SQNR_SAMPLES, chunk_bytes: int | None = None,
                budget_s: float | None = LAYER_SQNR_BUDGET_S) -> dict:
    """``{"layer_sqnr": [{"tensor", "op", "sqnr_db"}]}``: each quantized activation, graph order, QDQ vs float (dB, 2 decimals).

    A per-layer chart is a diagnostic: where the SQNR cannot be computed
    (the error overflows float64, or the quantizer made a tensor the float
    model lacks, such as an inlined HardSwish's input, which onnxruntime's
    activation matching does not skip) the build stands and
    ``{"layer_sqnr_error": reason}`` says why.  A chunked pass cut short by
    ``budget_s`` adds ``layer_sqnr_coverage`` (chunks and tensors run of all).
    """
    from edgevlm.errors import EdgeVLMError
    from edgevlm.quant.analysis import layer_sqnr

    coverage = {}
    try:
        rows = layer_sqnr(float_path, qdq_path, list(calibration)[:samples], chunk_bytes=chunk_bytes, budget_s=budget_s,
                          coverage=coverage)
    except EdgeVLMError:
        raise
    except (ValueError, ArithmeticError, KeyError) as exc:
        return {"layer_sqnr_error": f"edgevlm.quant.analysis.layer_sqnr failed ({type(exc).__name__}: {exc})"}
    out = {"layer_sqnr": [{"tensor": r["tensor"], "op": r["op"],
                           "sqnr_db": None if r["sqnr_db"] is None else round(float(r["sqnr_db"]), 2)} for r in rows]}
    if coverage and coverage["chunks_run"] < coverage["chunks"]:
        out["layer_sqnr_coverage"] = coverage
    return out


def kv_overrides(model, stage, scheme, kv_scheme, output_names=None) -> dict[str, int]:
    """Activation overrides putting an LM stage's KV cache at the kv scheme's bits (kv8).

    Covers the cache inputs and outputs (``output_names``: the graph's,
    ``Stage.graph_output_names``) and every tensor that
    only moves cache data between them and the compute ops: forward from the
    inputs (the per-layer slices of the stacked cache), backward from the
    outputs (the stacking of the updated per-layer caches).
    """
    if kv_scheme is None or stage.kind != StageKind.LLM or kv_scheme.kv_bits >= scheme.act_bits:
        return {}
    from edgevlm.quant import onnx_files

    outputs = output_names or ()
    consumers = onnx_files.consumers(model.graph)
    producer = {t: node for node in model.graph.node for t in node.output}
    constants = {i.name for i in model.graph.initializer}
    tensors = set()
    todo = [n for n in stage.input_names if n in KV_STATE]
    while todo:  # forward from the cache inputs
        t = todo.pop()
        if t not in tensors:
            tensors.add(t)
            todo += [o for n in consumers.get(t, []) if n.op_type in _MOVES and n.input[0] == t for o in n.output]
    todo = [n for n in outputs if n.removesuffix(STATE_OUTPUT_SUFFIX) in KV_STATE]
    while todo:  # backward from the cache outputs
        t = todo.pop()
        if t not in tensors:
            tensors.add(t)
            node = producer.get(t)
            if node is not None and node.op_type in _MOVES | {"Concat"}:
                todo += [i for i in (node.input if node.op_type == "Concat" else node.input[:1]) if i and i not in constants]
    return {t: kv_scheme.kv_bits for t in sorted(tensors)}


@register("onnx-qdq")
def quantize_float_onnx(form: FloatOnnx, stage, config, target, *, hessians=None) -> Quantized:
    """The QDQ model of ``form.path`` at ``form.dest``, with mixed precision when the stage has a quality
    target and the KV cache at the kv scheme's bits; ``info`` is the per-layer SQNR."""
    from edgevlm.quant.mixed_precision import quality_target_for, search_mixed_precision
    from edgevlm.quant.onnx_qdq import quantize_onnx

    scheme = config.scheme_for(stage.stage.kind)
    calibration = stage.stage.calibration
    min_sqnr = quality_target_for(config.quality_target_db, stage.name)
    kv = kv_overrides(form.graph, stage.stage, scheme, config.scheme_for(KV_CACHE), form.output_names)
    weight_algo, awq = config.weight_algo, None
    if weight_algo == "awq":
        # AWQ rewrites the float model itself (its working copy; equal in exact arithmetic), so calibration, the
        # per-layer SQNR and mixed precision all see the one float model the QDQ weights were scaled from;
        # the weights are then rounded to nearest on their scaled grid.
        from edgevlm.quant.awq import awq_onnx_file

        awq, weight_algo = awq_onnx_file(form.path, calibration, scheme, target), "rtn"
    if min_sqnr is None:
        quant = quantize_onnx(form.path, form.dest, scheme, calibration, target, observer=config.observer,
                              overrides=kv, weight_algo=weight_algo, hessians=hessians)
    else:
        quant = search_mixed_precision(form.path, form.dest, scheme, calibration, target,
                                       min_sqnr_db=min_sqnr, observer=config.observer, base_overrides=kv,
                                       weight_algo=weight_algo).info
    if awq is not None:
        quant["weights"] = {**awq, "rounding": quant["weights"]["weight_algo"]}
    if kv:
        quant["kv_cache"] = {"bits": next(iter(kv.values())), "tensors": len(kv)}
    quant.pop("path", None)  # a temporary path: not part of the (deterministic) record
    info = _layer_sqnr(form.path, form.dest, calibration, LAYER_SQNR_SAMPLES_LARGE if form.large else LAYER_SQNR_SAMPLES,
                       LAYER_SQNR_CHUNK_BYTES)
    return Quantized(form.dest, QuantRecord.from_dict(quant), info)
