"""The ``coreml`` family: a torch.export program -> what the Core ML backend converts, by the stage's scheme.

- int8 activations: pt2e on the program (calibrated Q/DQ, int8 per-channel
  weights), converted to Core ML ``quantize``/``dequantize`` ops.  Core ML's
  own activation quantizer (``coremltools.optimize.coreml.linear_quantize_activations``)
  calibrates by running predictions, which only macOS can do, and
  coremltools' torch-side quantizer needs ``torch.ao.quantization.quantizer``,
  gone from torch 2.13; pt2e (torchao) does the same job everywhere.
- 8-bit weights with float activations: ``linear_quantize_weights`` (int8, per channel).
- 4-bit weights: per-group -> ``linear_quantize_weights`` int4 per block
  (needs iOS 18, so the deployment target is raised and a note says so);
  otherwise 4-bit k-means palettization (iOS 16+).

Weight compression is a coremltools transform of the converted ML program,
so this quantizer chooses it (``CoreMLProgram.compression``) and the backend
applies it right after conversion.
"""
import contextlib
import dataclasses
import io
import warnings
from dataclasses import dataclass

from edgevlm.compiler.quantizers import Quantized, register
from edgevlm.core.records import QuantRecord
from edgevlm.errors import BackendUnavailableError, InputError


@contextlib.contextmanager
def quiet():
    """coremltools prints progress bars and version warnings: keep the console ours."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def import_coremltools():
    """(coremltools, coremltools.optimize), imported quietly."""
    with quiet():
        import coremltools as ct
        import coremltools.optimize as cto
    return ct, cto


@dataclass(frozen=True)
class CoreMLProgram:
    """What the Core ML backend converts: a torch.export program at its contiguous example inputs, and the
    weight compression to apply to the converted program (``weight_kind`` names it; ``ios18``: it needs iOS 18)."""

    program: object  # torch.export.ExportedProgram
    example: tuple
    compression: object | None = None  # coremltools.optimize.coreml.OptimizationConfig
    weight_kind: str | None = None
    ios18: bool = False


def _int8_activation_program(stage, program, example):
    """pt2e Q/DQ program with int8 activations and int8 per-channel weights."""
    from edgevlm.quant.pt2e import quantize_pt2e_program

    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
    except ImportError:
        raise BackendUnavailableError(
            "int8 activations for Core ML are calibrated with the pt2e int8 quantizer, which is not installed",
            "pip install 'edgevlm[executorch]'",
        ) from None
    # Symmetric int8 per-channel weights and int8 activations: the form Core ML's
    # quantize/dequantize ops (iOS 17) take.
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    return quantize_pt2e_program(program, example, quantizer, stage.calibration_inputs())


def _weight_compression(cto, scheme):
    """(OptimizationConfig, kind) for weight-only compression, or (None, None)."""
    if scheme.weight_bits == 8:
        op = cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return cto.coreml.OptimizationConfig(global_config=op), "int8 linear, per channel"
    if scheme.weight_bits == 4 and scheme.weight_granularity == "per-group":
        op = cto.coreml.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=scheme.group_size
        )
        return cto.coreml.OptimizationConfig(global_config=op), f"int4 linear, per block of {scheme.group_size}"
    if scheme.weight_bits == 4:
        op = cto.coreml.OpPalettizerConfig(nbits=4, mode="kmeans")
        return cto.coreml.OptimizationConfig(global_config=op), "4-bit palettized (k-means LUT)"
    return None, None


@register("coreml")
def quantize_for_coreml(form: CoreMLProgram, stage, config, target, *, hessians=None) -> Quantized:
    """int8 activations: ``form``'s program through pt2e; float activations: the weight compression to apply."""
    scheme = config.scheme_for(stage.stage.kind)
    quant, notes = {"scheme": scheme.name}, {}
    compression = None
    if scheme.act_bits == 8:
        if scheme.weight_bits != 8:
            raise InputError(
                f"Core ML backend: scheme {scheme.name} has no Core ML form (int8 activations take int8 weights)",
                "use w8a8, or w4a16 for 4-bit weights with float16 activations",
            )
        form = dataclasses.replace(form, program=_int8_activation_program(stage, form.program, form.example))
        quant["activations"] = "int8 (pt2e Q/DQ, calibrated)"
        quant["calibration_batches"] = len(stage.calibration_inputs())
        weight_kind = "int8 linear, per channel (pt2e)"
    else:
        quant["activations"] = f"float16 (Core ML has no int{scheme.act_bits} activations)"
        compression, weight_kind = _weight_compression(import_coremltools()[1], scheme)
    quant["weights"] = weight_kind or "float16"
    ios18 = scheme.weight_bits == 4 and scheme.weight_granularity == "per-group"
    if ios18:
        notes["deployment_note"] = "int4 per-block weights need iOS 18: deployment target raised from iOS 17"
    form = dataclasses.replace(form, compression=compression, weight_kind=weight_kind, ios18=ios18)
    return Quantized(form, QuantRecord.from_dict(quant), notes=notes)
