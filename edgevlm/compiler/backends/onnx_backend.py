"""ONNX backend: torch.onnx (dynamo exporter) from the captured program; runs with onnxruntime.

``export`` writes the float ONNX model; a quantized stage's QDQ model is the
``onnx-qdq`` quantizer's (``compiler/quantizers/onnx_qdq_quantizer.py``), which
the pipeline runs between ``export`` and ``finish``.  The qnn backend prepares
its HTP context binaries from that QDQ model.
"""
import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

from edgevlm.compiler.backends.base import Artifact, Backend, Plan
from edgevlm.compiler.quantizers import Quantized
from edgevlm.compiler.quantizers.onnx_qdq_quantizer import FloatOnnx

OPSET = 21  # first opset with int4/uint16 QuantizeLinear, which the quantized stages use
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"  # torch.onnx's per-node metadata key


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
            output_names=stage.stage.graph_output_names(),
            opset_version=OPSET,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    # The exporter writes each node's Python stack trace, absolute source paths included, into its
    # metadata: the same model built from two checkouts would differ in bytes.  The node's module scope
    # and class (the other metadata keys) stay for reading the graph.
    for graph in (program.model.graph, *program.model.functions.values()):
        for node in graph.all_nodes():
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


class OnnxBackend(Backend):
    name = "onnx"
    extra = None  # core dependency
    can_execute = True
    quantizer = "onnx-qdq"

    def available(self):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return False, f"onnx/onnxruntime not importable ({exc}); reinstall edgevlm"
        return True, ""

    def export(self, stage, plan: Plan, workdir: Path) -> FloatOnnx:
        """The float model: at its place in the build when the stage stays float, else in ``workdir`` with its
        weights in a side file, for the quantizer."""
        from edgevlm.quant import onnx_files

        rel = f"{stage.name}.onnx"
        dest = Path(plan.out_dir) / rel
        program = _export(stage)
        # A large stage goes file to file: written from the exporter's graph with its weights in a side
        # file (no protobuf copy of them in memory), then read back as a graph only.
        weight_bytes = sum(v.const_value.nbytes for v in program.model.graph.initializers.values() if v.const_value is not None)
        large = weight_bytes > onnx_files.STREAM_ABOVE
        if plan.quant.scheme_for(stage.stage.kind) is None:
            path, external = dest, weight_bytes > onnx_files.EXTERNAL_DATA_ABOVE
        else:
            path, external = Path(workdir) / rel, True
        graph = _save_float(program, path, large, external)
        return FloatOnnx(path, graph, stage.stage.graph_output_names(), dest, large)

    def finish(self, stage, plan: Plan, form: FloatOnnx, quantized: Quantized | None) -> Artifact:
        import onnx

        from edgevlm.quant import onnx_files

        info, record, model = {"opset": OPSET}, None, form.graph
        if quantized is not None:
            record = quantized.record
            info |= quantized.info
            model = onnx.load(str(quantized.form), load_external_data=False)
        info |= {"ops": sorted({n.op_type for n in model.graph.node}), "nodes": len(model.graph.node)}
        files = [p.relative_to(Path(plan.out_dir)).as_posix() for p in onnx_files.files(form.dest)]  # + its external data, if any
        if len(files) > 1:
            info["external_data"] = files[1:]
        return Artifact("onnx", stage.name, f"{stage.name}.onnx", files, info, quant=record,
                        integer_only=None if record is None else record.integer_only)

    def load(self, artifact: Artifact, build_dir, threads: int = 0):
        import onnxruntime as ort

        from edgevlm.quant.ort_cpu import cpu_session_options

        # Not onnxruntime's defaults: on an x86 CPU without VNNI its fused int8 kernels saturate
        # (cpu_session_options), and a w8a8 build would answer from wrong image features there.
        sess = ort.InferenceSession(str(Path(build_dir) / artifact.path), cpu_session_options(threads),
                                    providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]

        def run(inputs):
            return sess.run(None, {n: np.asarray(x) for n, x in zip(names, inputs, strict=True)})

        return run


BACKEND = OnnxBackend()
