"""pt2e quantization recipes for ExecuTorch: the ecosystem's quantizers, chosen per target.

- CPU targets: ExecuTorch's ``XNNPACKQuantizer`` (int8 activations, int8 or
  int4-range weights, symmetric per channel).
- Hexagon HTP targets: ExecuTorch's ``QnnQuantizer`` with ``QuantDtype``
  8a8w / 16a8w / 16a4w (/ 8a4w, 16a16w) for the target's SoC, per-channel
  conv and linear weights, and optionally ExecuTorch's 8-bit KV-cache
  annotation for static LLM graphs (``annotate_kv_8bit``).

``quantize_pt2e`` runs torchao's prepare_pt2e -> calibrate -> convert_pt2e.
torchao and executorch are optional (``edgevlm[executorch]``) and imported
only here, lazily; without them these functions raise BackendUnavailableError.
"""
import contextlib
import logging
import os
from pathlib import Path

from edgevlm.errors import BackendUnavailableError, InputError
from edgevlm.progress import track
from edgevlm.quant.schemes import check_scheme_allowed, get_scheme, uses_qnn_rules
from edgevlm.targets import get_target

INSTALL = "pip install 'edgevlm[executorch]'"

# (activation bits, weight bits) -> QnnQuantizer QuantDtype member.
QNN_QUANT_DTYPES = {(8, 8): "use_8a8w", (16, 8): "use_16a8w", (16, 4): "use_16a4w",
                    (8, 4): "use_8a4w", (16, 16): "use_16a16w"}

# edgevlm observer -> torchao pt2e observer for activations.  HistogramObserver
# searches the range minimising the L2 quantization error (an MSE observer);
# torchao has no percentile or entropy observer.
PT2E_OBSERVERS = {"minmax": "MinMaxObserver", "mse": "HistogramObserver"}

_QNN_HOST_LIB = Path("lib") / "x86_64-linux-clang" / "libQnnHtp.so"


def _require_pt2e():
    try:
        import executorch  # noqa: F401
        import torchao.quantization.pt2e  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(f"pt2e quantization needs torchao and executorch ({exc})", INSTALL) from exc


@contextlib.contextmanager
def qnn_sdk_guard():
    """Use QNN's SDK-free quantization rules unless a complete QNN SDK is configured.

    Building a QnnQuantizer without ``QNN_SDK_ROOT`` makes ExecuTorch try to
    download the SDK; an empty ``QNN_SDK_ROOT`` is its documented "caller
    manages the SDK", which keeps annotation in Python.  The quantization
    numerics (QuantDtype, observers) are the same either way.

    It also keeps PyTorch's oneDNN (MKLDNN) switch as the caller had it.
    Building a QnnQuantizer on an AMD host sets ``torch.backends.mkldnn.enabled
    = False`` for the whole process (ExecuTorch's guard against a oneDNN crash
    on "some AMD hosts").  Left off, every later convolution in the compile --
    the 1x1 convs of the linear-to-conv form above all -- falls back to ATen's
    slow path: on a 2-core AMD EPYC a [1024,768,1,1] conv went from 0.4 s to
    ~8 s and calibrating the LFM2-VL-450M encoder took 3.5-4 min per sample.
    edgevlm already runs the float model with oneDNN on for capture and the
    parity references, so turning it off for calibration alone avoids no
    risk.  A user who wants it off sets ``torch.backends.mkldnn.enabled =
    False`` before compiling; that is kept.
    """
    import torch

    previous = os.environ.get("QNN_SDK_ROOT")
    hide = not (previous and (Path(previous) / _QNN_HOST_LIB).is_file())
    mkldnn = torch.backends.mkldnn.enabled
    if hide:
        os.environ["QNN_SDK_ROOT"] = ""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        if torch.backends.mkldnn.enabled != mkldnn and not torch.backends.flags_frozen():
            torch.backends.mkldnn.enabled = mkldnn
        logging.disable(logging.NOTSET)
        if hide:
            if previous is None:
                os.environ.pop("QNN_SDK_ROOT", None)
            else:
                os.environ["QNN_SDK_ROOT"] = previous


def _activation_observer(observer: str):
    from torchao.quantization import pt2e

    if observer not in PT2E_OBSERVERS:
        raise InputError(f"observer '{observer}' has no pt2e equivalent",
                         f"use one of {', '.join(PT2E_OBSERVERS)} for ExecuTorch")
    return getattr(pt2e, PT2E_OBSERVERS[observer])


def quantizer_for(target, scheme, *, kv_cache_8bit: bool = False, observer: str = "minmax"):
    """The pt2e quantizer for ``scheme`` on ``target`` (XNNPACKQuantizer or QnnQuantizer).

    ``kv_cache_8bit`` (HTP only) adds ExecuTorch's ``annotate_kv_8bit``, which
    keeps the KV-cache inputs of attention matmuls 8-bit in static LLM graphs.
    """
    _require_pt2e()
    target, scheme = get_target(target), get_scheme(scheme)
    check_scheme_allowed(scheme, target, "stage")
    if scheme.weight_granularity == "per-group":
        raise InputError(f"scheme {scheme.name}: per-group weights are not offered by these pt2e recipes",
                         "use a per-channel scheme for ExecuTorch, or the onnx backend")
    act_observer = _activation_observer(observer)
    if uses_qnn_rules(target):
        return _qnn_quantizer(target, scheme, kv_cache_8bit, act_observer)
    if target.kind == "cpu":
        if kv_cache_8bit:
            raise InputError("the 8-bit KV-cache annotation is a QNN (HTP) recipe", "drop kv_cache_8bit for CPU targets")
        return _xnnpack_quantizer(scheme, act_observer)
    raise InputError(f"no pt2e quantizer for target {target.name}",
                     "ExecuTorch pt2e recipes cover CPU (XNNPACK) and Hexagon HTP (QNN) targets")


def _xnnpack_quantizer(scheme, act_observer):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    if scheme.act_bits != 8 or scheme.weight_bits not in (4, 8):
        raise InputError(f"XNNPACK cannot run scheme {scheme.name}: it takes int8 activations and int8/int4 weights",
                         "use w8a8 or w4a8 with XNNPACK")
    qmax = 127 if scheme.weight_bits == 8 else 7
    config = get_symmetric_quantization_config(
        is_per_channel=scheme.weight_granularity == "per-channel", weight_qmin=-qmax, weight_qmax=qmax,
    )
    if act_observer.__name__ != "HistogramObserver":
        # XNNPACK's static config observes activations with HistogramObserver; swap in the requested one.
        from dataclasses import replace

        act = replace(config.input_activation, observer_or_fake_quant_ctr=act_observer.with_args(eps=2**-12))
        config = replace(config, input_activation=act, output_activation=act)
    return XNNPACKQuantizer().set_global(config)


def _qnn_quantizer(target, scheme, kv_cache_8bit, act_observer):
    key = (scheme.act_bits, scheme.weight_bits)
    if key not in QNN_QUANT_DTYPES:
        raise InputError(f"QnnQuantizer has no a{scheme.act_bits}w{scheme.weight_bits} scheme",
                         "use w8a8, w8a16, w4a16 or w4a8")
    if target.htp is None:
        raise InputError(f"target {target.name} has no Hexagon HTP", "use an HTP target such as sa8295p")
    with qnn_sdk_guard():
        from executorch.backends.qualcomm.quantizer.quantizer import QnnQuantizer, QuantDtype
        from executorch.backends.qualcomm.serialization.qc_schema import QcomChipset

        quantizer = QnnQuantizer(soc_model=getattr(QcomChipset, target.htp.soc_name))
        per_channel = scheme.weight_granularity == "per-channel"
        quantizer.set_default_quant_config(
            getattr(QuantDtype, QNN_QUANT_DTYPES[key]),
            is_conv_per_channel=per_channel,
            is_linear_per_channel=per_channel,
            # A few calibration batches: min/max over all of them, not QNN's moving average.
            act_observer=act_observer,
        )
        if kv_cache_8bit:
            from executorch.backends.qualcomm.quantizer.custom_annotation import annotate_kv_8bit

            quantizer.add_custom_quant_annotations((annotate_kv_8bit,))
    return quantizer


def keep_rms_norm_decomposed(quantizer) -> None:
    """Make ``quantizer`` (a QnnQuantizer) prepare graphs without the RecomposeRmsNorm pass.

    ExecuTorch's QNN ``RecomposeRmsNorm`` rewrites every
    ``x * rsqrt(mean(x^2) + eps) * gamma`` into a last-dim ``rms_norm``, wrong
    for a channel norm (MobileNetV5's RMSNorm2d; the executorch backend's
    ``has_channel_rms_norm`` finds one).  The norm then stays as
    pow/mean/add/rsqrt/mul, all of which the HTP runs.
    """
    from executorch.backends.qualcomm._passes import RecomposeRmsNorm
    from executorch.backends.qualcomm._passes.qnn_pass_manager import get_qnn_pass_manager_cls

    base = get_qnn_pass_manager_cls(quantizer.backend)

    class WithoutRmsNormRecompose(base):
        @classmethod
        def get_annotation_passes(cls):
            return [p for p in super().get_annotation_passes() if p is not RecomposeRmsNorm]

    quantizer.transform_for_annotation = lambda model: WithoutRmsNormRecompose().transform_for_annotation_pipeline(model)


def quantize_pt2e(program_or_module, example_inputs, quantizer, calibration):
    """prepare_pt2e -> run ``calibration`` (input tuples) -> convert_pt2e; returns the quantized GraphModule.

    ``program_or_module`` is a torch.export ExportedProgram, or an nn.Module
    that is exported here at ``example_inputs``.
    """
    _require_pt2e()
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example_inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    samples = [tuple(s) if isinstance(s, (tuple, list)) else (s,) for s in (calibration or [])]
    if not samples:
        raise InputError("pt2e calibration data is empty", "give at least one input tuple")
    for i, sample in enumerate(samples):
        for j, t in enumerate(sample):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
                raise InputError(f"input {j} of calibration sample {i} contains NaN or Inf",
                                 "check the calibration inputs (value range, normalization)")
    if isinstance(program_or_module, torch.export.ExportedProgram):
        graph = program_or_module.module()
    else:
        graph = torch.export.export(program_or_module.eval(), example_inputs, strict=False).module()
    with qnn_sdk_guard():
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for sample in track(samples, "pt2e calibration", len(samples)):
                prepared(*sample)
        return convert_pt2e(prepared)


def quantize_pt2e_program(program, example_inputs: tuple, quantizer, calibration) -> "torch.export.ExportedProgram":
    """:func:`quantize_pt2e`, re-exported at ``example_inputs``: lowering (ExecuTorch, Core ML) needs an
    ExportedProgram again."""
    import torch

    return torch.export.export(quantize_pt2e(program, example_inputs, quantizer, calibration), example_inputs, strict=False)
