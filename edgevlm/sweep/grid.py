"""The points of a sweep: the cartesian product of the settings given on the command line.

``--quant 'encoder=w8a16|w8a8,llm=w4a16|w8a16'`` is four settings (``|`` separates the
alternatives of one stage kind, ``,`` the kinds); ``--quant`` may be repeated, and the points are
the union.  ``--vision-tokens 'all|4|1'`` (all: no reduction) and ``--token-reduce 'dct|merge'``
multiply them; a point with all tokens has no reduction, so it appears once.  A point is keyed by
its settings: the same settings are the same point in any later run (resume).
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass

from edgevlm.errors import InputError

ALL_TOKENS = "all"


@dataclass(frozen=True)
class Point:
    model: str
    target: str
    quant: str  # canonical per-kind spec, e.g. "encoder=w8a16,llm=w4a16" ("" = the target's defaults)
    vision_tokens: int | None  # None: all of the encoder's tokens
    token_reduce: str | None  # None when vision_tokens is None
    eval_n: int
    seed: int
    htp_verify: bool

    @property
    def key(self) -> str:
        """A stable id of the settings (16 hex digits of a sha256 of them)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def tokens_label(self) -> str:
        return ALL_TOKENS if self.vision_tokens is None else f"{self.vision_tokens} {self.token_reduce}"

    @property
    def slug(self) -> str:
        """The point's build directory name: readable settings plus the key."""
        q = self.quant.replace("=", "-").replace(",", "_") or "default"
        t = "all" if self.vision_tokens is None else f"{self.vision_tokens}{self.token_reduce}"
        return f"{self.target}-{q}-t{t}-{self.key[:8]}"

    def settings(self) -> dict:
        return asdict(self)


def _alternatives(text: str, what: str) -> list[str]:
    alts = [a.strip() for a in text.split("|")]
    if not all(alts):
        raise InputError(f"{what} '{text}' has an empty alternative", f"separate alternatives with '|', e.g. {what} 'a|b'")
    return list(dict.fromkeys(alts))


def expand_quant(spec: str) -> list[str]:
    """``'encoder=w8a16|w8a8,llm=w4a16'`` -> ``['encoder=w8a16,llm=w4a16', 'encoder=w8a8,llm=w4a16']``."""
    text = spec.strip().lower()
    if not text:
        return [""]
    if "=" not in text:
        return _alternatives(text, "--quant")
    kinds, choices = [], []
    for part in text.split(","):
        kind, sep, alts = (s.strip() for s in part.partition("="))
        if not sep or not kind:
            raise InputError(f"bad --quant entry '{part}'", "write kind=scheme|scheme,..., e.g. encoder=w8a16|w8a8,llm=w4a16")
        if kind in kinds:
            raise InputError(f"--quant '{spec}' names '{kind}' twice", f"list its alternatives once: {kind}=a|b")
        kinds.append(kind)
        choices.append(_alternatives(alts, f"--quant {kind}"))
    return [",".join(f"{k}={v}" for k, v in zip(kinds, combo)) for combo in itertools.product(*choices)]


def parse_tokens(spec: str) -> list[int | None]:
    out = []
    for a in _alternatives(spec, "--vision-tokens"):
        if a == ALL_TOKENS:
            out.append(None)
            continue
        try:
            v = int(a)
        except ValueError:
            v = 0
        if v < 1:
            raise InputError(f"--vision-tokens alternative '{a}' is neither 'all' nor a positive integer",
                             "write e.g. --vision-tokens 'all|4|1'")
        out.append(v)
    return list(dict.fromkeys(out))


def expand(model: str, targets: str, quants: list[str], vision_tokens: str, token_reduce: str, eval_n: int,
           seed: int, htp_verify: bool) -> list[Point]:
    """Every point of the grid, each validated against its target (an InputError names the bad setting)."""
    from edgevlm.models.arch.token_reduction import METHODS
    from edgevlm.quant.schemes import parse_quant_spec
    from edgevlm.targets import get_target

    if eval_n < 1:
        raise InputError(f"--eval-n must be positive, got {eval_n}", "pass e.g. --eval-n 300")
    target_names = [t.strip() for t in targets.split(",") if t.strip()]
    if not target_names:
        raise InputError("--target is empty", "pass one or more targets, e.g. --target sa8295p,snapdragon-8-gen3")
    reduces = _alternatives(token_reduce, "--token-reduce")
    for r in reduces:
        if r not in METHODS:
            raise InputError(f"unknown --token-reduce '{r}'", f"use one or more of {'|'.join(METHODS)}")
    quant_specs = list(dict.fromkeys(q for spec in quants for q in expand_quant(spec)))
    tokens = parse_tokens(vision_tokens)
    points = []
    for tname in target_names:
        tgt = get_target(tname)
        for q in quant_specs:
            parse_quant_spec(q or None, tgt)  # raises InputError naming what the target allows
            for t in tokens:
                for r in ([None] if t is None else reduces):
                    points.append(Point(model, tgt.name, q, t, r, eval_n, seed, htp_verify))
    return list(dict.fromkeys(points))
