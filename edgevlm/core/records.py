"""Typed records a backend returns beside its files, read by the pipeline and the CLI.

:class:`QuantRecord` says how a stage was quantized, :class:`HtpContext`
what a QNN context binary was prepared for.  Each serializes with
``to_dict()`` to the dict report.json holds under the artifact's ``info``
(``info["quant"]``, and ``htp_arch``... beside it), unchanged from the
untyped dicts the backends returned before.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MixedPrecisionRecord:
    """The mixed-precision search behind a stage (edgevlm.quant.mixed_precision): layers raised, figure reached."""

    overrides: dict[str, int]  # tensor -> bits raised to
    metric: str  # "sqnr_db" (higher is better) or "accuracy_drop"
    achieved: float
    target: float
    met: bool
    steps: list = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> MixedPrecisionRecord:
        return cls(d["overrides"], d["metric"], d["achieved"], d["target"], d["met"], d.get("steps", []))

    def to_dict(self) -> dict:
        return {"overrides": self.overrides, "metric": self.metric, "achieved": self.achieved, "target": self.target,
                "met": self.met, "steps": self.steps}


# The keys of a quantizer's report dict that QuantRecord holds as typed fields; the rest stays in ``facts``.
_TYPED = ("scheme", "integer_only", "offending_ops", "mixed_precision", "kv_cache")


@dataclass(frozen=True)
class QuantRecord:
    """How one artifact's stage was quantized.

    ``scheme`` is the scheme's name; ``integer_only`` and ``offending_ops``
    the integer-only check of the quantized graph (None where the quantizer
    does not run it); ``mixed_precision`` the layers raised to meet a quality
    target; ``kv_cache`` the KV-cache tensors kept at the kv scheme's bits
    (``{"bits", "tensors"}``).  ``facts`` is everything else the quantizer
    reported (observer, weight rounding, calibration samples, node counts...),
    in its order, for the report.
    """

    scheme: str
    facts: dict = field(default_factory=dict)
    integer_only: bool | None = None
    offending_ops: tuple[str, ...] | None = None
    mixed_precision: MixedPrecisionRecord | None = None
    kv_cache: dict | None = None

    @property
    def weight_algo(self) -> str | None:
        """The weight rounding (gptq, rtn, mse, awq) where the quantizer chose one."""
        return (self.facts.get("weights") or {}).get("weight_algo")

    @property
    def calibration_samples(self) -> int | None:
        """How many calibration samples (pt2e: batches) the activation ranges were observed on."""
        return self.facts.get("calibration_samples", self.facts.get("calibration_batches"))

    @classmethod
    def from_dict(cls, d: dict) -> QuantRecord:
        """From a quantizer's report dict (edgevlm.quant.onnx_qdq.quantize_onnx's, say)."""
        mp = d.get("mixed_precision")
        ops = d.get("offending_ops")
        return cls(d["scheme"], {k: v for k, v in d.items() if k not in _TYPED}, d.get("integer_only"),
                   None if ops is None else tuple(ops), None if mp is None else MixedPrecisionRecord.from_dict(mp),
                   d.get("kv_cache"))

    def to_dict(self) -> dict:
        """report.json's ``info["quant"]``."""
        out = {"scheme": self.scheme, **self.facts}
        if self.integer_only is not None:
            out["integer_only"] = self.integer_only
        if self.offending_ops is not None:
            out["offending_ops"] = list(self.offending_ops)
        if self.mixed_precision is not None:
            out["mixed_precision"] = self.mixed_precision.to_dict()
        if self.kv_cache is not None:
            out["kv_cache"] = self.kv_cache
        return out


@dataclass(frozen=True)
class HtpContext:
    """What a QNN HTP context binary was prepared for and how long it took (the qnn backend)."""

    source: str  # the QDQ model it was prepared from, relative to the build
    htp_arch: int
    soc_model: int
    vtcm_mb: int
    prepare_s: float
    prepare_budget_s: float
    qnn_sdk: str | None
    htp_departure: dict | None = None  # per-layer HTP vs onnxruntime CPU, when verified
    graphs: int = 1  # QNN graphs, one context binary each (a stage prepared in parts has several)

    def to_dict(self) -> dict:
        out = {"source": self.source, "htp_arch": self.htp_arch, "soc_model": self.soc_model, "vtcm_mb": self.vtcm_mb,
               "prepare_s": self.prepare_s, "prepare_budget_s": self.prepare_budget_s, "qnn_sdk": self.qnn_sdk,
               "qnn_graphs": self.graphs}
        if self.htp_departure is not None:
            out["htp_departure"] = self.htp_departure
        return out
