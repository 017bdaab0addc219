"""ExecuTorch backend: .pte programs, run here with executorch.runtime.

- CPU targets: XNNPACK delegate, float or static int8 through torchao pt2e
  with ``XNNPACKQuantizer``.
- Hexagon HTP targets (sa8295p, snapdragon-8-gen3): pt2e with
  ``QnnQuantizer`` (8a8w / 16a8w / 16a4w from the stage's scheme).  With a QNN
  SDK (``QNN_SDK_ROOT``) the program is lowered with the QNN partitioner for
  the target's SoC; without one, the QnnQuantizer-quantized program is lowered
  to ExecuTorch's portable kernels so it still runs here with the HTP's
  quantization numerics, and ``info["qnn"]`` says so.  That is not an error.
"""
import contextlib
import logging
import os
from pathlib import Path

import numpy as np

from edgevlm.compiler.backends.base import Artifact, Backend, Plan
from edgevlm.errors import BackendUnavailableError, InputError

EXTRA = "executorch"
INSTALL = f"pip install 'edgevlm[{EXTRA}]'"

# edgevlm target name -> QcomChipset member of the target's SoC.
HTP_SOCS = {"sa8295p": "SA8295", "snapdragon-8-gen3": "SM8650"}

# (activation bits, weight bits) -> QuantDtype member of the QnnQuantizer.
QNN_QUANT_DTYPES = {(8, 8): "use_8a8w", (16, 8): "use_16a8w", (16, 4): "use_16a4w", (16, 16): "use_16a16w", (8, 4): "use_8a4w"}


def calibration_inputs(stage) -> list[tuple]:
    """Calibration input tuples: the stage's calibration set, else its example inputs."""
    return list(stage.stage.calibration) if stage.stage.calibration else [tuple(stage.stage.example_inputs)]


def quantize_program(stage, quantizer) -> "torch.export.ExportedProgram":
    """pt2e post-training quantization of ``stage.program`` with ``quantizer``.

    prepare -> calibrate on :func:`calibration_inputs` -> convert -> re-export,
    giving a Q/DQ ExportedProgram at the stage's example shapes.
    """
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    prepared = prepare_pt2e(stage.program.module(), quantizer)
    with torch.no_grad():
        for inputs in calibration_inputs(stage):
            prepared(*inputs)
    converted = convert_pt2e(prepared)
    return torch.export.export(converted, tuple(stage.stage.example_inputs), strict=False)


def xnnpack_quantizer(scheme):
    """Static symmetric int8 activations (XNNPACK has no 16-bit ones), 8- or 4-bit weights."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    if scheme.act_bits != 8 or scheme.weight_bits not in (4, 8) or scheme.weight_granularity == "per-group":
        raise InputError(
            f"the executorch backend (XNNPACK) cannot run scheme {scheme.name}: it takes int8 activations "
            "and int8/int4 weights per channel or per tensor",
            "use --quant w8a8 for executorch, or the onnx backend for this scheme",
        )
    qmax = 127 if scheme.weight_bits == 8 else 7
    config = get_symmetric_quantization_config(
        is_per_channel=scheme.weight_granularity == "per-channel", weight_qmin=-qmax, weight_qmax=qmax
    )
    return XNNPACKQuantizer().set_global(config)


QNN_HOST_LIB = Path("lib") / "x86_64-linux-clang" / "libQnnHtp.so"


def qnn_sdk_root() -> str | None:
    """QNN_SDK_ROOT when it holds the SDK's host HTP library, else None."""
    root = os.environ.get("QNN_SDK_ROOT", "")
    return root if root and (Path(root) / QNN_HOST_LIB).is_file() else None


@contextlib.contextmanager
def _qnn_sdk_env():
    """Run QNN quantization with a usable SDK or with none, never half of one.

    Without ``QNN_SDK_ROOT`` ExecuTorch downloads the QNN SDK and a libc++
    when a QnnQuantizer is built; with a ``QNN_SDK_ROOT`` that lacks the host
    libraries, its annotation passes abort the process inside the SDK's
    loader.  An empty ``QNN_SDK_ROOT`` is ExecuTorch's documented "the caller
    manages the SDK", after which it uses its SDK-free quantization rules; its
    warning about that fallback is ours to report (in ``info["qnn"]``).
    """
    previous = os.environ.get("QNN_SDK_ROOT")
    hide = qnn_sdk_root() is None
    if hide:
        os.environ["QNN_SDK_ROOT"] = ""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        if hide:
            if previous is None:
                os.environ.pop("QNN_SDK_ROOT", None)
            else:
                os.environ["QNN_SDK_ROOT"] = previous


def qnn_quantizer(soc: str, scheme):
    """QnnQuantizer for ``soc`` with the scheme's widths, per-channel weights and min/max activation ranges.

    Build and use it inside ``_qnn_sdk_env()``.
    """
    from executorch.backends.qualcomm.quantizer.quantizer import QnnQuantizer, QuantDtype
    from executorch.backends.qualcomm.serialization.qc_schema import QcomChipset
    from torchao.quantization.pt2e import MinMaxObserver

    key = (scheme.act_bits, scheme.weight_bits)
    if key not in QNN_QUANT_DTYPES:
        raise InputError(f"QnnQuantizer has no a{scheme.act_bits}w{scheme.weight_bits} scheme", "use w8a8, w8a16 or w4a16")
    quantizer = QnnQuantizer(soc_model=getattr(QcomChipset, soc))
    per_channel = scheme.weight_granularity != "per-tensor"
    # MinMaxObserver, not QNN's default moving average: a calibration set of a
    # few batches would otherwise keep mostly the first batch's range and clip
    # the rest (measured: 13 dB vs 37 dB SQNR on a small conv+linear stage).
    quantizer.set_default_quant_config(
        getattr(QuantDtype, QNN_QUANT_DTYPES[key]),
        is_conv_per_channel=per_channel,
        is_linear_per_channel=per_channel,
        act_observer=MinMaxObserver,
    )
    return quantizer


def _lower_xnnpack(program):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])


def _lower_portable(program):
    from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(program)


def _lower_qnn(program, soc: str, example_inputs):
    """QNN HTP delegate for ``soc`` (needs the QNN SDK's host libraries)."""
    from executorch.backends.qualcomm.serialization.qc_schema import QcomChipset
    from executorch.backends.qualcomm.utils.utils import (
        generate_htp_compiler_spec,
        generate_qnn_executorch_compiler_spec,
        to_edge_transform_and_lower_to_qnn,
    )

    specs = generate_qnn_executorch_compiler_spec(
        soc_model=getattr(QcomChipset, soc), backend_options=generate_htp_compiler_spec(use_fp16=False)
    )
    return to_edge_transform_and_lower_to_qnn(program.module(), tuple(example_inputs), specs)


def _op_name(target) -> str:
    """``aten.convolution.default`` / ``quantized_decomposed::quantize_per_tensor`` -> the bare op name."""
    parts = getattr(target, "__name__", str(target)).replace("::", ".").split(".")
    return parts[1] if len(parts) >= 2 else parts[0]


def describe_program(edge_manager) -> dict:
    """Delegates (backend id -> partitions), ops left outside them, ops inside them."""
    gm = edge_manager.exported_program().graph_module
    delegates: dict[str, int] = {}
    outside, inside = set(), set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if _op_name(node.target) == "executorch_call_delegate":
            lowered = getattr(gm, node.args[0].target)
            delegates[lowered.backend_id] = delegates.get(lowered.backend_id, 0) + 1
            inside |= {
                _op_name(n.target) for n in lowered.original_module.graph.nodes if n.op == "call_function"
            }
        elif _op_name(node.target) != "getitem":
            outside.add(_op_name(node.target))
    return {"delegates": delegates, "ops": sorted(outside), "delegated_ops": sorted(inside - {"getitem"})}


class ExecuTorchBackend(Backend):
    name = "executorch"
    extra = EXTRA
    can_execute = True

    def available(self):
        try:
            import executorch.exir  # noqa: F401
            import executorch.runtime  # noqa: F401
            import torchao.quantization.pt2e  # noqa: F401
        except ImportError as exc:
            return False, f"executorch not installed ({exc.name or exc}): {INSTALL}"
        return True, ""

    def lower(self, stage, plan: Plan) -> Artifact:
        ok, why = self.available()
        if not ok:
            raise BackendUnavailableError("executorch not installed", INSTALL)
        scheme = (plan.quant or {}).get(stage.stage.kind)
        soc = HTP_SOCS.get(plan.target.name)
        info: dict = {}
        program = stage.program
        if scheme is not None:
            if soc:
                with _qnn_sdk_env():
                    program = quantize_program(stage, qnn_quantizer(soc, scheme))
                quantizer = f"QnnQuantizer({QNN_QUANT_DTYPES[(scheme.act_bits, scheme.weight_bits)]}, {soc})"
                observer = "MinMaxObserver (activations), per-channel min/max (weights)"
            else:
                program = quantize_program(stage, xnnpack_quantizer(scheme))
                quantizer = "XNNPACKQuantizer (symmetric int8 activations)"
                observer = "HistogramObserver (activations), per-channel min/max (weights)"
            # The pipeline judges an artifact with info["quant"] by SQNR against the float model.
            info["quant"] = {"scheme": scheme.name, "quantizer": quantizer, "observer": observer,
                             "calibration_batches": len(calibration_inputs(stage))}
        if soc and qnn_sdk_root():
            try:
                edge = _lower_qnn(program, soc, stage.stage.example_inputs)
            except Exception as exc:  # the SDK raises many types; the user needs the first line
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise BackendUnavailableError(
                    f"QNN lowering for {soc} failed with the SDK at {qnn_sdk_root()}: {reason}",
                    "point QNN_SDK_ROOT at a QNN SDK whose host libraries load here, or unset it to lower without QNN",
                ) from None
            info["qnn"] = f"lowered with the QNN HTP partitioner for {soc} (SDK at {qnn_sdk_root()})"
        elif soc and scheme is not None:
            # XNNPACK takes neither QNN's 16-bit activations nor (measured) its
            # int32 per-channel bias correctly, so the portable kernels run the
            # Q/DQ graph: the HTP's quantization numerics, executed on the CPU.
            edge = _lower_portable(program)
            info["qnn"] = (
                f"QNN SDK not found (set QNN_SDK_ROOT to an SDK holding {QNN_HOST_LIB.as_posix()}): "
                f"QnnQuantizer-quantized program for {soc} lowered to ExecuTorch portable kernels, not the HTP"
            )
        else:
            edge = _lower_xnnpack(program)
            if soc:
                info["qnn"] = f"float stage: lowered to XNNPACK, not the HTP ({plan.target.name} runs integer graphs only)"
        info.update(describe_program(edge))
        info["delegate"] = ", ".join(info["delegates"]) or "portable"
        rel = f"{stage.name}.pte"
        data = edge.to_executorch().buffer
        (Path(plan.out_dir) / rel).write_bytes(data)
        info["bytes"] = len(data)
        return Artifact(self.name, stage.name, rel, [rel], info)

    def execute(self, artifact: Artifact, build_dir, inputs):
        import torch
        from executorch.runtime import Runtime

        program = Runtime.get().load_program(Path(build_dir) / artifact.path)
        method = program.load_method("forward")
        outputs = method.execute([torch.from_numpy(np.ascontiguousarray(x)) for x in inputs])
        return [o.detach().numpy() if isinstance(o, torch.Tensor) else np.asarray(o) for o in outputs]


BACKEND = ExecuTorchBackend()
