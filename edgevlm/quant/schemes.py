"""Quantization schemes: frozen, validated dataclasses chosen by name.

A scheme fixes the integer widths of one stage's weights and activations (or,
for a KV-cache scheme, of the cache).  Conventions follow what the Qualcomm
QNN HTP backend expects: weights signed and symmetric per output channel,
activations unsigned and asymmetric per tensor (uint8 / uint16).

``parse_quant_spec`` turns the CLI's ``--quant`` string into one scheme per
stage kind and checks each against the target's allowed dtypes.
"""
import re
from dataclasses import dataclass

from edgevlm.core.stage import KV_CACHE, StageKind
from edgevlm.errors import InputError, UnknownNameError

STAGE_KINDS = (*StageKind, KV_CACHE)  # the keys of a per-kind scheme spec
GRANULARITIES = ("per-tensor", "per-channel", "per-group")
FLOAT_SPECS = ("float", "none", "fp32")


@dataclass(frozen=True)
class QuantScheme:
    """How one stage (or the KV cache) is quantized.

    A stage scheme sets ``weight_bits`` and ``act_bits``; a KV-cache scheme
    sets only ``kv_bits``.  ``group_size`` is required for (and only for)
    ``weight_granularity="per-group"``.
    """

    name: str
    weight_bits: int | None = None
    act_bits: int | None = None
    weight_granularity: str = "per-channel"
    group_size: int | None = None
    weight_symmetric: bool = True
    act_symmetric: bool = False
    kv_bits: int | None = None

    def __post_init__(self):
        if self.is_kv_only:
            if self.kv_bits not in (8, 16):
                raise InputError(f"scheme {self.name}: kv_bits must be 8 or 16, got {self.kv_bits}")
            return
        if self.weight_bits not in (4, 8, 16):
            raise InputError(f"scheme {self.name}: weight_bits must be 4, 8 or 16, got {self.weight_bits}")
        if self.act_bits not in (8, 16):
            raise InputError(f"scheme {self.name}: act_bits must be 8 or 16, got {self.act_bits}")
        if self.kv_bits not in (None, 8, 16):
            raise InputError(f"scheme {self.name}: kv_bits must be None, 8 or 16, got {self.kv_bits}")
        if self.weight_granularity not in GRANULARITIES:
            raise InputError(
                f"scheme {self.name}: unknown weight granularity '{self.weight_granularity}'",
                f"use one of {', '.join(GRANULARITIES)}",
            )
        if (self.weight_granularity == "per-group") != (self.group_size is not None):
            raise InputError(f"scheme {self.name}: group_size is required for, and only for, per-group weights")
        if self.group_size is not None and (self.group_size < 2 or self.group_size & (self.group_size - 1)):
            raise InputError(f"scheme {self.name}: group_size must be a power of two >= 2, got {self.group_size}")

    @property
    def is_kv_only(self) -> bool:
        """True for a KV-cache scheme (only ``kv_bits`` set)."""
        return self.weight_bits is None and self.act_bits is None

    @property
    def weight_dtype(self) -> str | None:
        """ONNX-style weight element type: ``int4``/``int8``/``int16`` (signed when symmetric)."""
        if self.weight_bits is None:
            return None
        return f"{'' if self.weight_symmetric else 'u'}int{self.weight_bits}"

    @property
    def act_dtype(self) -> str | None:
        """Activation element type: ``uint8``/``uint16`` when asymmetric, as QNN expects."""
        if self.act_bits is None:
            return None
        return f"{'' if self.act_symmetric else 'u'}int{self.act_bits}"

    def to_dict(self) -> dict:
        """Plain JSON-ready description for reports."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _stage_scheme(name: str, w: int, a: int) -> QuantScheme:
    return QuantScheme(name=name, weight_bits=w, act_bits=a)


SCHEMES: dict[str, QuantScheme] = {
    s.name: s
    for s in (
        _stage_scheme("w8a8", 8, 8),
        _stage_scheme("w8a16", 8, 16),
        _stage_scheme("w4a16", 4, 16),
        _stage_scheme("w4a8", 4, 8),
        _stage_scheme("w16a16", 16, 16),
        QuantScheme(name="kv8", kv_bits=8),
        QuantScheme(name="kv16", kv_bits=16),
    )
}

# "w4a16-g32": a named stage scheme with per-group weights of 32 elements.
_GROUPED = re.compile(r"^(w\d+a\d+)-g(\d+)$")


def get_scheme(name: str | QuantScheme) -> QuantScheme:
    """The scheme called ``name`` (e.g. ``w8a16``, ``kv8``, ``w4a16-g32`` for per-group weights)."""
    if isinstance(name, QuantScheme):
        return name
    key = name.strip().lower()
    if key in SCHEMES:
        return SCHEMES[key]
    m = _GROUPED.match(key)
    if m and m.group(1) in SCHEMES:
        base = SCHEMES[m.group(1)]
        return QuantScheme(
            name=key,
            weight_bits=base.weight_bits,
            act_bits=base.act_bits,
            weight_granularity="per-group",
            group_size=int(m.group(2)),
        )
    raise UnknownNameError(
        f"unknown quantization scheme '{name}'",
        f"use one of: {', '.join(SCHEMES)}, a stage scheme with '-g<group size>', or 'float'",
    )


def check_scheme_allowed(scheme: QuantScheme, target, kind: str) -> None:
    """Raise InputError unless ``target`` accepts ``scheme`` for a stage of ``kind``."""
    where = f"target {target.name} ({kind})"
    if kind == KV_CACHE:
        if not scheme.is_kv_only:
            raise InputError(f"scheme {scheme.name} is not a KV-cache scheme ({where})", "use kv8 or kv16 for kv=")
        if f"int{scheme.kv_bits}" not in target.kv_dtypes:
            raise InputError(
                f"scheme {scheme.name} is not allowed on {where}: KV cache dtypes allowed: "
                f"{', '.join(target.kv_dtypes)}",
                f"use kv{target.kv_dtypes[0][3:]}" if target.kv_dtypes[0].startswith("int") else None,
            )
        return
    if scheme.is_kv_only:
        raise InputError(f"KV-cache scheme {scheme.name} given for a {kind} stage on {target.name}",
                         "use a stage scheme such as w8a16 (kv= takes kv8/kv16)")
    problems = []
    if f"int{scheme.act_bits}" not in target.activation_dtypes:
        problems.append(f"activations int{scheme.act_bits} (allowed: {', '.join(target.activation_dtypes)})")
    if f"int{scheme.weight_bits}" not in target.weight_dtypes:
        problems.append(f"weights int{scheme.weight_bits} (allowed: {', '.join(target.weight_dtypes)})")
    if scheme.weight_granularity not in target.weight_granularities:
        problems.append(
            f"{scheme.weight_granularity} weights (allowed: {', '.join(target.weight_granularities)})"
        )
    if problems:
        allowed = [n for n, s in SCHEMES.items() if not s.is_kv_only and _fits(s, target)]
        raise InputError(
            f"scheme {scheme.name} is not allowed on {where}: " + "; ".join(problems),
            f"use one of: {', '.join(allowed) or 'none'}",
        )


def _fits(scheme: QuantScheme, target) -> bool:
    return (
        f"int{scheme.act_bits}" in target.activation_dtypes
        and f"int{scheme.weight_bits}" in target.weight_dtypes
        and scheme.weight_granularity in target.weight_granularities
    )


def uses_qnn_rules(target) -> bool:
    """True for Hexagon HTP targets: their graphs follow Qualcomm QNN's quantization rules."""
    return target.htp is not None


def _float_allowed(target, what: str) -> None:
    if not target.float_graphs:
        raise InputError(
            f"{what}: target {target.name} runs integer graphs only, so stages cannot stay float",
            "give a quantization scheme, e.g. --quant w8a16",
        )


def parse_quant_spec(spec: str | None, target) -> dict[str, QuantScheme | None]:
    """One scheme per stage kind (``encoder``, ``projector``, ``llm``, ``kv``) from ``--quant``.

    - ``None``: the target's ``default_quant``;
    - ``"w8a16"``: that scheme for encoder, projector and llm (kv keeps the target default);
    - ``"encoder=w8a16,llm=w4a16,kv=kv8"``: per kind, the rest from the target's defaults;
    - ``"float"`` / ``"none"`` (whole spec or per kind): no quantization (value None), only on
      targets that run float graphs.

    Raises InputError naming the scheme, the target and what it allows.
    """
    result: dict[str, QuantScheme | None] = {
        kind: get_scheme(name) for kind, name in target.default_quant.items() if kind in STAGE_KINDS
    }
    text = (spec or "").strip().lower()
    if not text:
        pass
    elif text in FLOAT_SPECS:
        _float_allowed(target, f"--quant {spec}")
        return {kind: None for kind in STAGE_KINDS}
    elif "=" not in text:
        scheme = get_scheme(text)
        if scheme.is_kv_only:
            result[KV_CACHE] = scheme
        else:
            result.update(dict.fromkeys(StageKind, scheme))
    else:
        for part in filter(None, (p.strip() for p in text.split(","))):
            kind, sep, name = (s.strip() for s in part.partition("="))
            if not sep or kind not in STAGE_KINDS:
                raise InputError(
                    f"bad --quant entry '{part}'",
                    f"write kind=scheme with kind one of {', '.join(STAGE_KINDS)}, e.g. encoder=w8a16,llm=w4a16",
                )
            if name in FLOAT_SPECS:
                _float_allowed(target, f"--quant {part}")
                result[kind] = None
            else:
                result[kind] = get_scheme(name)
    for kind, scheme in result.items():
        if scheme is not None:
            check_scheme_allowed(scheme, target, kind)
    return result
