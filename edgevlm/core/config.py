"""What one compile is asked to do: :class:`CompileConfig`, every option of
``edgevlm.compiler.pipeline.compile`` with its default, defined once; and
:class:`QuantConfig`, its quantization options resolved for a target.

``edgevlm compile`` (commands/compile.py) builds one from its arguments and
takes its defaults from here; ``compile(model, target=..., **fields)`` builds
one from keyword arguments through :meth:`CompileConfig.with_fields`, which
names an unknown field.  Resolving the options against a target (schemes per
stage kind and the like) happens in the compiler, a layer above.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class CompileConfig:
    """Every compile option.  Field docs are the API's; ``compile()``'s docstring refers here.

    - ``out``: build directory (None: build/<model>-<target>).
    - ``backends``: backend names (None: the target's preference order).
    - ``calibration``: input tuples an ``nn.Module``'s stage calibrates on.
    - ``name``: the build's model name for an ``nn.Module`` (default: its class name).
    - ``verbose``: progress on the console.
    - ``quant``: a scheme (``"w8a16"``), per stage kind (``"encoder=w8a16,llm=w4a16,kv=kv8"``),
      ``"float"``, or None for the target's defaults.
    - ``calib_dir``: a directory of calibration images (with same-name .txt prompts for a Hugging
      Face VLM); ``calib_samples``: at most this many of them.
    - ``observer``: the activation range observer (minmax, percentile, mse, entropy).
    - ``hub``: also compile and profile each stage through Qualcomm AI Hub.
    - ``quality_target_db``: mixed precision, an SQNR (dB) for every quantized stage or per stage name.
    - ``vision_tokens`` / ``token_reduce``: reduce a VLM's image tokens to N with dct, pool, merge or prune.
    - ``eval_n``: shapes samples behind a VLM build's accuracy (0: skip).
    - ``htp_verify``: run the QNN context binaries on the HTP simulation.
    - ``keep_failed``: a compile that fails keeps its partial build as ``<out>.failed-<pid>`` (next
      to ``out``) for debugging, instead of removing it.
    - ``weight_algo``: weight rounding, gptq (on the calibration samples), rtn, mse or awq (edgevlm.quant.awq:
      per-input-channel scales from the calibration samples, folded into the float model, then rtn).
    - ``max_context``: context length of a Hugging Face VLM checkpoint's build.
    - ``accuracy_check``: what measures a VLM build's accuracy (``edgevlm.accuracy.build_accuracy``;
      it runs the build, a layer above the compiler); None skips it.
    """

    out: Any = None
    backends: tuple[str, ...] | None = None
    calibration: tuple | None = None
    name: str | None = None
    verbose: bool = False
    quant: str | None = None
    calib_dir: Any = None
    calib_samples: int = 32
    observer: str = "minmax"
    hub: bool = False
    quality_target_db: float | dict[str, float] | None = None
    vision_tokens: int | None = None
    token_reduce: str = "dct"
    eval_n: int = 200
    htp_verify: bool = True
    keep_failed: bool = False
    weight_algo: str = "gptq"
    max_context: int | None = None
    accuracy_check: Callable | None = None

    def __post_init__(self):
        # Sequences are held as tuples, so a config is a value (a caller's list changing later changes nothing).
        if self.backends is not None:
            object.__setattr__(self, "backends", tuple(self.backends))
        if self.calibration is not None:
            object.__setattr__(self, "calibration", tuple(self.calibration))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def with_fields(self, **fields) -> CompileConfig:
        """This config with ``fields`` replaced; a name that is not a field is a TypeError naming it."""
        unknown = sorted(set(fields) - set(self.field_names()))
        if unknown:
            raise TypeError(f"unknown compile option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                            f"the options are the fields of edgevlm.core.config.CompileConfig: {', '.join(self.field_names())}")
        return dataclasses.replace(self, **fields) if fields else self


@dataclass(frozen=True)
class QuantConfig:
    """How a compile quantizes, resolved once against the target and read by every backend.

    ``schemes`` maps each stage kind (``encoder``, ``projector``, ``llm``)
    and the KV cache (``kv``) to its scheme, an ``edgevlm.quant.schemes``
    scheme or None for float, as ``parse_quant_spec`` resolved them from the
    config's ``quant`` and the target's defaults.  ``observer``,
    ``quality_target_db`` and ``weight_algo`` are the config's.
    """

    schemes: Mapping[str, Any]
    observer: str
    quality_target_db: float | dict[str, float] | None
    weight_algo: str

    def __post_init__(self):
        object.__setattr__(self, "schemes", MappingProxyType(dict(self.schemes)))

    @classmethod
    def resolve(cls, schemes: Mapping[str, Any] | None, config: CompileConfig | None = None) -> QuantConfig:
        """The schemes per kind with the config's quantization options (None: CompileConfig's defaults)."""
        config = config or CompileConfig()
        return cls(schemes or {}, config.observer, config.quality_target_db, config.weight_algo)

    def scheme_for(self, kind: str):
        """The scheme of stage kind ``kind`` (or of the KV cache, ``"kv"``); None: float."""
        return self.schemes.get(kind)

    @property
    def quantized(self) -> bool:
        """Whether any stage kind (or the KV cache) is quantized."""
        return any(s is not None for s in self.schemes.values())
