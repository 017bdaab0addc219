"""The ``pt2e`` family (the executorch backend): a torch.export program -> its Q/DQ program, by torchao pt2e.

The quantizer is the target's (edgevlm.quant.pt2e.quantizer_for):
``XNNPACKQuantizer`` on CPU targets, ``QnnQuantizer`` for the SoC of a
Hexagon HTP target.
"""
import dataclasses
from dataclasses import dataclass

from edgevlm.compiler.quantizers import Quantized, register
from edgevlm.core.records import QuantRecord


@dataclass(frozen=True)
class Program:
    """What the pt2e families quantize: a torch.export program at its (contiguous) example inputs.

    ``keep_rms_norm_decomposed``: the program holds a channel RMS norm that
    QnnQuantizer must not recompose (executorch_backend.has_channel_rms_norm).
    """

    program: object  # torch.export.ExportedProgram
    example: tuple
    keep_rms_norm_decomposed: bool = False


@register("pt2e")
def quantize_program(form: Program, stage, config, target, *, hessians=None) -> Quantized:
    """``form``'s program through prepare -> calibrate -> convert with the target's pt2e quantizer."""
    from edgevlm.quant.pt2e import QNN_QUANT_DTYPES, keep_rms_norm_decomposed, quantize_pt2e_program, quantizer_for

    scheme = config.scheme_for(stage.stage.kind)
    soc = target.htp.soc_name if target.htp is not None else None
    quantizer = quantizer_for(target, scheme, observer=config.observer)
    notes = {}
    if form.keep_rms_norm_decomposed:
        keep_rms_norm_decomposed(quantizer)
        notes["qnn_rms_norm"] = "channel RMS norm kept decomposed (QNN's RecomposeRmsNorm handles last-dim norms only)"
    program = quantize_pt2e_program(form.program, form.example, quantizer, stage.calibration_inputs())
    label = (f"QnnQuantizer({QNN_QUANT_DTYPES[(scheme.act_bits, scheme.weight_bits)]}, {soc})" if soc
             else "XNNPACKQuantizer (symmetric int8 activations)")
    # The pipeline judges an artifact with a quant record by SQNR against the float model.
    record = QuantRecord(scheme.name, {"quantizer": label, "activation_observer": config.observer,
                                       "calibration_batches": len(stage.calibration_inputs())})
    return Quantized(dataclasses.replace(form, program=program), record, notes=notes)
