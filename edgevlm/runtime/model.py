"""Python API of the C runtime: load a GGUF, open sessions, prefill, step, generate.

    from edgevlm.runtime import Model, Sampler
    model = Model.load("lfm2-q8_0.gguf", threads=2)
    s = model.session(n_ctx=512)
    logits = s.prefill(ids=[1, 4093, 504])        # numpy float32 [n_vocab]
    logits = s.step(int(logits.argmax()))
    for tok in model.generate([1, 4093, 504], max_new_tokens=32, sampler=Sampler()):
        print(tok)

Inputs are converted once to contiguous int32 / float32 numpy arrays whose
buffers the C code reads directly; logits are written by C into a numpy array
allocated here.  Generation runs its per-token loop (sampling + decode step)
in C: Python only receives each token id.
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import Iterator

import numpy as np

from edgevlm.errors import InputError
from edgevlm.runtime import _rt
from edgevlm.runtime.errors import from_c

_rt._set_error_factory(from_c)


def _token_ids(ids, n_vocab: int) -> np.ndarray:
    """ids as a contiguous int32 vector, refusing non-integers and out-of-range values before narrowing."""
    a = np.asarray(ids)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"token ids have dtype {a.dtype}", "pass integer token ids")
    if a.size and (a.min() < 0 or a.max() >= n_vocab):
        raise InputError(f"token id {int(a.min()) if a.min() < 0 else int(a.max())} is outside [0, {n_vocab})",
                         "use ids from the model's tokenizer")
    return np.ascontiguousarray(a, dtype=np.int32).reshape(-1)


@dataclass(frozen=True)
class Sampler:
    """Token sampling: temperature <= 0 is greedy; else top-k, then top-p, seeded."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not 0.0 < self.top_p <= 1.0:
            raise InputError(f"top_p {self.top_p} is outside (0, 1]", "use e.g. top_p=0.9, or 1.0 to disable")
        if self.top_k < 0 or self.seed < 0 or self.temperature < 0:
            raise InputError("temperature, top_k and seed must be >= 0", "use temperature=0 for greedy decoding")

    def sample(self, logits, count: int = 1) -> list[int]:
        """Draw count token ids from one logits vector with the C sampler (fresh RNG from seed)."""
        a = np.ascontiguousarray(logits, dtype=np.float32).reshape(-1)
        return _rt.sample(a, int(count), float(self.temperature), int(self.top_k), float(self.top_p), int(self.seed))


class Session:
    """KV cache, conv state and thread pool for one sequence (one thread at a time)."""

    def __init__(self, model: "Model", n_ctx: int, threads: int):
        self.model = model
        self._s = _rt.Session(model._m, int(n_ctx), int(threads))
        self.n_ctx = int(n_ctx)

    @property
    def n_past(self) -> int:
        """Tokens processed so far."""
        return self._s.n_past

    def reset(self) -> None:
        """Forget all tokens."""
        self._s.reset()

    def prefill(self, ids=None, embeds=None, out: np.ndarray | None = None) -> np.ndarray:
        """Run token ids [n] or embeddings [n, n_embd]; returns the last token's logits [n_vocab].

        out: optional float32 C-contiguous [n_vocab] array the C code writes the logits into.
        """
        if (ids is None) == (embeds is None):
            raise InputError("prefill needs exactly one of ids= or embeds=", "pass token ids or an [n, hidden] float array")
        if out is None:
            out = np.empty(self.model.n_vocab, dtype=np.float32)
        elif not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (self.model.n_vocab,)
                  and out.flags.c_contiguous and out.flags.writeable):
            raise InputError(f"out must be a writable C-contiguous float32 array of shape ({self.model.n_vocab},)",
                             "allocate it with np.empty(model.n_vocab, np.float32)")
        if ids is not None:
            a = _token_ids(ids, self.model.n_vocab)
            self._s.run(0, a, a.shape[0], out)
        else:
            a = np.ascontiguousarray(embeds, dtype=np.float32)
            if a.ndim == 3 and a.shape[0] == 1:
                a = a[0]
            if a.ndim != 2 or a.shape[1] != self.model.n_embd:
                raise InputError(f"embeds has shape {tuple(np.shape(embeds))}, expected [n, {self.model.n_embd}]",
                                 "pass one row of n_embd floats per token")
            self._s.run(1, a, a.shape[0], out)
        return out

    def step(self, token: int, out: np.ndarray | None = None) -> np.ndarray:
        """Run one token; returns its logits [n_vocab] (written into out when given)."""
        return self.prefill(ids=np.array([token], dtype=np.int64), out=out)

    def generate(self, max_new_tokens: int, sampler: Sampler | None = None, stop_token: int | None = None) -> Iterator[int]:
        """Sample up to max_new_tokens after the last prefill/step; stops at stop_token (not yielded).

        Each yielded token has been run through the model, so the session can
        continue (prefill more, or generate again) after the iterator ends.
        """
        s = sampler or Sampler()
        stop = -1 if stop_token is None else int(stop_token)
        return _rt.Generator(self._s, int(max_new_tokens), float(s.temperature), int(s.top_k), float(s.top_p),
                             int(s.seed), stop)


class Model:
    """An LFM2 or Qwen2 GGUF loaded by the C runtime (read-only; sessions may share it)."""

    def __init__(self, m, threads: int):
        self._m = m
        self.threads = threads
        try:
            self.info = m.info()
        except UnicodeDecodeError as exc:  # GGUF strings are UTF-8; found by tests/fuzz/fuzz_runtime_binding.py
            raise from_c(18, "EV_ERR_BAD_KEY", f"gguf: tokenizer.ggml.model is not valid UTF-8 ({exc.reason} at byte "
                         f"{exc.start})") from None
        self.n_vocab = self.info["n_vocab"]
        self.n_embd = self.info["n_embd"]

    @classmethod
    def load(cls, path: str | PathLike, threads: int = 1) -> "Model":
        """Load and validate a GGUF file; raises RuntimeLoadError naming what is wrong."""
        if threads < 1:
            raise InputError(f"threads={threads}", "use threads >= 1")
        return cls(_rt.Model(path), threads)

    def session(self, n_ctx: int = 2048, threads: int | None = None) -> Session:
        """A new session holding up to n_ctx tokens."""
        return Session(self, n_ctx, threads or self.threads)

    def token_text(self, token: int) -> bytes | None:
        """The vocab entry of a token as stored in the GGUF, or None."""
        return self._m.token_text(int(token))

    def token_type(self, token: int) -> int:
        """GGUF token type (1 normal, 3 control such as <|im_end|>, 6 byte, ...), 0 if the file has none."""
        return self._m.token_type(int(token))

    def generate(self, ids, max_new_tokens: int, sampler: Sampler | None = None, n_ctx: int | None = None,
                 stop_at_eos: bool = True) -> Iterator[int]:
        """Prefill ids in a fresh session, then stream up to max_new_tokens sampled token ids."""
        ids = _token_ids(ids, self.n_vocab)
        s = self.session(n_ctx or ids.shape[0] + max_new_tokens)
        s.prefill(ids=ids)
        eos = self.info["eos_token"] if stop_at_eos else -1
        return s.generate(max_new_tokens, sampler, stop_token=eos if eos >= 0 else None)
