"""ONNX backend: torch.onnx (dynamo exporter) from the captured program; runs with onnxruntime.

Quantized stages become QDQ models through edgevlm.quant (onnxruntime's
quantizer), applied here to the float ONNX the exporter writes; the qnn
backend prepares its HTP context binaries from that QDQ model.
"""
import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edgevlm.compiler.backends.base import Artifact, Backend, Plan
from edgevlm.core.records import QuantRecord
from edgevlm.core.stage import KV_CACHE, StageKind

OPSET = 21  # first opset with int4/uint16 QuantizeLinear, which the quantized stages use
LAYER_SQNR_SAMPLES = 2  # calibration samples behind the per-layer SQNR in report.html (kept few: it runs both models)
# The per-layer SQNR's activations, fetched in chunks of this many float bytes when they are more (all at
# once, both models, they were the compile's memory peak: 7.9 GB on a 3-layer SigLIP2 tower at 512 px); a
# large stage takes one sample.  Resident is ~4x a chunk (the QDQ model's Q and DQ outputs, both models):
# at 1 GiB a 2-layer SigLIP2 tower at 512 px (450 MiB a sample) went +4.2 GB.
LAYER_SQNR_CHUNK_BYTES = 2**29
LAYER_SQNR_SAMPLES_LARGE = 1
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"  # torch.onnx's per-node metadata key


def _output_names(stage) -> list[str] | None:
    """Stage output names, with "_out" added where one repeats an input name.

    A state-passing stage (llm-decode: conv_state in, conv_state out) names
    both sides alike, but an ONNX graph may define each name only once.
    """
    if not stage.output_names:
        return None
    inputs = set(stage.input_names)
    return [f"{n}_out" if n in inputs else n for n in stage.output_names]


def _layer_sqnr(float_path, qdq_path, calibration, samples: int = LAYER_SQNR_SAMPLES, chunk_bytes: int | None = None) -> dict:
    """``{"layer_sqnr": [{"tensor", "op", "sqnr_db"}]}``: each quantized activation, graph order, QDQ vs float (dB, 2 decimals).

    A per-layer chart is a diagnostic: where the SQNR cannot be computed
    (the error overflows float64, or the quantizer made a tensor the float
    model lacks, such as an inlined HardSwish's input, which onnxruntime's
    activation matching does not skip) the build stands and
    ``{"layer_sqnr_error": reason}`` says why.
    """
    from edgevlm.errors import EdgeVLMError
    from edgevlm.quant.analysis import layer_sqnr

    try:
        rows = layer_sqnr(float_path, qdq_path, list(calibration)[:samples], chunk_bytes=chunk_bytes)
    except EdgeVLMError:
        raise
    except (ValueError, ArithmeticError, KeyError) as exc:
        return {"layer_sqnr_error": f"edgevlm.quant.analysis.layer_sqnr failed ({type(exc).__name__}: {exc})"}
    return {"layer_sqnr": [{"tensor": r["tensor"], "op": r["op"],
                            "sqnr_db": None if r["sqnr_db"] is None else round(float(r["sqnr_db"]), 2)} for r in rows]}


KV_STATE = ("key_cache", "value_cache")  # the LM stages' KV-cache inputs (outputs add "_out")
# Ops that only move data: the KV cache keeps its 8 bits through them.
_MOVES = {"Slice", "Squeeze", "Unsqueeze", "Reshape", "Gather", "Split", "Transpose", "Identity"}


def _kv_overrides(model, stage, scheme, kv_scheme) -> dict[str, int]:
    """Activation overrides putting an LM stage's KV cache at the kv scheme's bits (kv8).

    Covers the cache inputs and outputs and every tensor that only moves
    cache data between them and the compute ops: forward from the inputs
    (the per-layer slices of the stacked cache), backward from the outputs
    (the stacking of the updated per-layer caches).
    """
    if kv_scheme is None or stage.kind != StageKind.LLM or kv_scheme.kv_bits >= scheme.act_bits:
        return {}
    from edgevlm.quant import onnx_files

    outputs = _output_names(stage) or ()
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
    todo = [n for n in outputs if n.removesuffix("_out") in KV_STATE]
    while todo:  # backward from the cache outputs
        t = todo.pop()
        if t not in tensors:
            tensors.add(t)
            node = producer.get(t)
            if node is not None and node.op_type in _MOVES | {"Concat"}:
                todo += [i for i in (node.input if node.op_type == "Concat" else node.input[:1]) if i and i not in constants]
    return {t: kv_scheme.kv_bits for t in sorted(tensors)}


def _export(stage):
    """The captured program as an ONNX program (torch.onnx's dynamo exporter, at OPSET)."""
    import torch

    # The exporter prints progress lines and warnings of its own: keep the console ours.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            stage.program,
            (),
            dynamo=True,
            input_names=list(stage.stage.input_names),
            output_names=_output_names(stage.stage),
            opset_version=OPSET,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    # The exporter writes each node's Python stack trace, absolute source paths included, into its
    # metadata: the same model built from two checkouts would differ in bytes.  The node's module scope
    # and class (the other metadata keys) stay for reading the graph.
    for node in program.model.graph.all_nodes():
        node.metadata_props.pop(STACK_TRACE_KEY, None)
    for function in program.model.functions.values():
        for node in function.all_nodes():
            node.metadata_props.pop(STACK_TRACE_KEY, None)
    return program


def _save_float(program, path: Path, large: bool, external: bool):
    """Write the float model to ``path`` and return its graph (a large one without its weights)."""
    import onnx

    from edgevlm.quant import onnx_files

    if large:
        program.save(str(path), external_data=external)
        onnx_files.release_weights(program)
        return onnx.load(str(path), load_external_data=False)
    model = program.model_proto
    onnx_files.release_weights(program)
    onnx.save_model(model, str(path))
    return model


def _quantize(float_path: Path, path: Path, model, stage, scheme, plan: Plan) -> QuantRecord:
    """The QDQ model of ``float_path`` at ``path`` (onnxruntime's quantizer through edgevlm.quant), with
    mixed precision when the stage has a quality target and the KV cache at the kv scheme's bits."""
    from edgevlm.quant.mixed_precision import quality_target_for, search_mixed_precision
    from edgevlm.quant.onnx_qdq import quantize_onnx

    q = plan.quant
    observer, weight_algo = q.observer, q.weight_algo
    min_sqnr = quality_target_for(q.quality_target_db, stage.name)
    kv = _kv_overrides(model, stage.stage, scheme, q.scheme_for(KV_CACHE))
    if min_sqnr is None:
        quant = quantize_onnx(float_path, path, scheme, stage.stage.calibration, plan.target, observer=observer,
                              overrides=kv, weight_algo=weight_algo, hessians=plan.options.get("gptq_hessians"))
    else:
        quant = search_mixed_precision(float_path, path, scheme, stage.stage.calibration, plan.target,
                                       min_sqnr_db=min_sqnr, observer=observer, base_overrides=kv,
                                       weight_algo=weight_algo).info
    if kv:
        quant["kv_cache"] = {"bits": next(iter(kv.values())), "tensors": len(kv)}
    quant.pop("path", None)  # a temporary path: not part of the (deterministic) record
    return QuantRecord.from_dict(quant)


class OnnxBackend(Backend):
    name = "onnx"
    extra = None  # core dependency
    can_execute = True

    def available(self):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return False, f"onnx/onnxruntime not importable ({exc}); reinstall edgevlm"
        return True, ""

    def lower(self, stage, plan: Plan) -> Artifact:
        import onnx

        from edgevlm.quant import onnx_files

        rel = f"{stage.name}.onnx"
        path = Path(plan.out_dir) / rel
        program = _export(stage)
        # A large stage goes file to file: written from the exporter's graph with its weights in a side
        # file (no protobuf copy of them in memory), then read back as a graph only.
        weight_bytes = sum(v.const_value.nbytes for v in program.model.graph.initializers.values() if v.const_value is not None)
        large = weight_bytes > onnx_files.STREAM_ABOVE
        scheme = plan.quant.scheme_for(stage.stage.kind)
        info, record = {"opset": OPSET}, None
        if scheme is None:
            model = _save_float(program, path, large, external=weight_bytes > onnx_files.EXTERNAL_DATA_ABOVE)
            del program
        else:
            with tempfile.TemporaryDirectory(prefix="edgevlm-onnx-") as tmp:
                float_path = Path(tmp) / rel
                model = _save_float(program, float_path, large, external=True)
                del program
                record = _quantize(float_path, path, model, stage, scheme, plan)
                info |= _layer_sqnr(float_path, path, stage.stage.calibration,
                                    LAYER_SQNR_SAMPLES_LARGE if large else LAYER_SQNR_SAMPLES, LAYER_SQNR_CHUNK_BYTES)
            model = onnx.load(str(path), load_external_data=False)
        info |= {"ops": sorted({n.op_type for n in model.graph.node}), "nodes": len(model.graph.node)}
        files = [p.relative_to(Path(plan.out_dir)).as_posix() for p in onnx_files.files(path)]  # + its external data, if any
        if len(files) > 1:
            info["external_data"] = files[1:]
        return Artifact("onnx", stage.name, rel, files, info, quant=record,
                        integer_only=None if record is None else record.integer_only)

    def load(self, artifact: Artifact, build_dir, threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(Path(build_dir) / artifact.path), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]

        def run(inputs):
            return sess.run(None, {n: np.asarray(x) for n, x in zip(names, inputs, strict=True)})

        return run


BACKEND = OnnxBackend()
