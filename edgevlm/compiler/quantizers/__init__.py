"""Quantizers per backend family: the compile's quantization step, one module per family.

A backend names the family that quantizes its exported form
(``Backend.quantizer``, e.g. ``"onnx-qdq"``); the pipeline runs
``backend.export`` -> :func:`quantize` -> ``backend.finish``
(``backends.base.lower_stage``), so a backend lowers what it is given and
never quantizes.  Every quantizer has one signature::

    quantizer(form, stage, config, target, *, hessians=None) -> Quantized

``form`` is the backend's export of the captured ``stage`` (an ONNX file, a
torch.export program), ``config`` the compile's :class:`QuantConfig` (the
stage's scheme is ``config.scheme_for(stage.stage.kind)``, never None here),
``target`` the :class:`Target`, ``hessians`` the compile's GPTQ Hessian store
(shared by the stages; None when weights are not rounded by GPTQ).

A module of this package joins the registry with ``@register("<family>")``;
discovery imports every module here, as ``backends`` does for backends.
"""
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgevlm.core.records import QuantRecord
from edgevlm.errors import UnknownNameError


@dataclass(frozen=True)
class Quantized:
    """A quantizer's result: the quantized form the backend lowers, its record, and what else the report shows.

    ``info`` goes into the artifact's ``info`` (the ONNX family's per-layer
    SQNR), ``notes`` into its ``notes`` (one line each on how the stage
    departs from the target's own path).
    """

    form: Any
    record: QuantRecord
    info: dict = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


_QUANTIZERS: dict[str, Callable[..., Quantized]] = {}
_discovered = False


def register(family: str):
    """Decorator: ``fn`` quantizes the forms of backend family ``family``."""
    def add(fn):
        if family in _QUANTIZERS:
            raise ValueError(f"quantizer family '{family}' registered twice ({_QUANTIZERS[family].__module__}, {fn.__module__})")
        _QUANTIZERS[family] = fn
        return fn

    return add


def quantizers() -> dict[str, Callable[..., Quantized]]:
    """Every registered family and its quantizer (the modules of this package, imported once)."""
    global _discovered
    if not _discovered:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _discovered = True
    return dict(_QUANTIZERS)


def quantize(family: str, form, stage, config, target, *, hessians=None) -> Quantized:
    """``form`` of ``stage`` quantized by family ``family``'s quantizer at the stage's scheme."""
    found = quantizers()
    if family not in found:
        raise UnknownNameError(f"no quantizer for backend family '{family}'",
                               f"use one of: {', '.join(sorted(found))}, or add a module to edgevlm/compiler/quantizers/")
    return found[family](form, stage, config, target, hessians=hessians)


__all__ = ["Quantized", "quantize", "quantizers", "register"]
