"""Vision token reduction: fewer image tokens for the LLM, traded against accuracy.

Each reducer maps encoder tokens [B, N, C] (a square row-major grid) to
[B, n, C] inside the encoder stage, so the compiled artifacts carry it:

- ``dct``   Fourier-VLM's parameter-free compression: 2-D DCT-II of the token
            grid, keep the k x k lowest frequencies, inverse DCT at size k
            (amplitude rescaled so a constant grid stays constant).  It is a
            fixed linear map, one [n, N] matmul: cheap and integer-friendly.
- ``pool``  average pooling of the grid to k x k (adaptive bins), also one
            fixed [n, N] matmul.
- ``merge`` ToMe-style bipartite soft matching: alternate tokens form sets A
            and B, each A token's most similar (cosine) B token is found, the
            most similar pairs are averaged; repeated until n tokens remain.
            Data-dependent, but built from HTP ops only (topk, cumsum, gather,
            comparisons, matmul).

``n`` must be a perfect square for dct and pool (the output is a grid).
The fourth method, text-guided ``prune``, depends on the prompt and so runs
after the projector (edgevlm/models/arch/token_pruning.py).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from edgevlm.errors import InputError

METHODS = ("dct", "pool", "merge")


def _dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix D [n, n]: X_hat = D @ x."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def dct_lowpass_matrix(side: int, k: int) -> torch.Tensor:
    """[k*k, side*side]: grid -> low-pass DCT -> inverse DCT at size k (row-major grids)."""
    one = _dct_matrix(k).T @ _dct_matrix(side)[:k] * math.sqrt(k / side)  # [k, side], per axis
    return torch.kron(one, one).float()


def pool_matrix(side: int, k: int) -> torch.Tensor:
    """[k*k, side*side]: adaptive average pooling of a side x side grid to k x k (as torch's bins)."""
    one = torch.zeros(k, side, dtype=torch.float64)
    for o in range(k):
        lo, hi = (o * side) // k, -((-(o + 1) * side) // k)
        one[o, lo:hi] = 1.0 / (hi - lo)
    return torch.kron(one, one).float()


class LinearTokenReducer(nn.Module):
    """tokens [B, N, C] -> M @ tokens with a fixed [n, N] matrix (dct or pool)."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.register_buffer("matrix", matrix)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.matrix, tokens)


class MergeTokenReducer(nn.Module):
    """ToMe bipartite merging from N to n tokens (rounds of at most N_B merges), kept in source order."""

    def __init__(self, in_tokens: int, out_tokens: int):
        super().__init__()
        self.rounds = []
        n = in_tokens
        while n > out_tokens:
            r = min(n // 2, n - out_tokens)
            self.rounds.append((n, r))
            n -= r

    @staticmethod
    def _interleave(even: torch.Tensor, odd: torch.Tensor) -> torch.Tensor:
        """[B, nA] and [B, nB] (nA = nB or nB + 1) -> [B, nA + nB] in source order."""
        nb = odd.shape[1]
        out = torch.stack([even[:, :nb], odd], dim=2).reshape(even.shape[0], 2 * nb)
        return torch.cat([out, even[:, nb:]], dim=1) if even.shape[1] > nb else out

    @classmethod
    def _merge(cls, x: torch.Tensor, r: int) -> torch.Tensor:
        # Written with HTP ops only (topk, cumsum, gather, eq, where, matmul; no sort or scatter).
        b, n, _ = x.shape
        a, bb = x[:, 0::2], x[:, 1::2]  # A: even source positions, B: odd
        na = a.shape[1]
        an = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        bn = bb / bb.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        score, match = torch.matmul(an, bn.transpose(1, 2)).max(dim=-1)  # best B partner of each A token
        merged = torch.topk(score, r, dim=-1).indices  # the r most similar A tokens merge into their partner
        is_merged = (torch.arange(na, device=x.device).view(1, na, 1) == merged.unsqueeze(1)).to(x.dtype).amax(-1) > 0.5
        kept = cls._interleave(~is_merged, torch.ones_like(bb[..., 0], dtype=torch.bool))
        slot = torch.cumsum(kept.to(torch.int64), dim=1) - 1  # output slot of each kept token, source order kept
        slot_b = slot[:, 1::2]
        dest = cls._interleave(torch.where(is_merged, torch.gather(slot_b, 1, match), slot[:, 0::2]), slot_b)
        onehot = (dest.unsqueeze(1) == torch.arange(n - r, device=x.device).view(1, -1, 1)).to(x.dtype)  # [B, n-r, N]
        return torch.matmul(onehot, x) / onehot.sum(-1, keepdim=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for _, r in self.rounds:
            tokens = self._merge(tokens, r)
        return tokens


def make_reducer(method: str, in_tokens: int, out_tokens: int) -> nn.Module:
    """The reducer ``method`` from ``in_tokens`` (a square grid) to ``out_tokens``."""
    if method not in METHODS:
        raise InputError(f"unknown token reduction '{method}'", f"use one of: {', '.join(METHODS)}")
    side = math.isqrt(in_tokens)
    if side * side != in_tokens:
        raise InputError(f"token reduction needs a square token grid; the encoder gives {in_tokens} tokens",
                         "use a model whose encoder returns a square grid")
    if not isinstance(out_tokens, int) or not 1 <= out_tokens <= in_tokens:
        raise InputError(f"--vision-tokens {out_tokens} is outside 1..{in_tokens} (the encoder's {in_tokens} tokens)",
                         f"pass a count from 1 to {in_tokens}")
    if method == "merge":
        return MergeTokenReducer(in_tokens, out_tokens)
    k = math.isqrt(out_tokens)
    if k * k != out_tokens:
        squares = ", ".join(str(i * i) for i in range(1, side + 1))
        raise InputError(f"--token-reduce {method} keeps a square grid; {out_tokens} is not a square",
                         f"pass --vision-tokens {squares}, or use --token-reduce merge")
    return LinearTokenReducer(dct_lowpass_matrix(side, k) if method == "dct" else pool_matrix(side, k))


class ReducedEncoder(nn.Module):
    """An encoder followed by a token reducer; keeps the encoder's descriptive attributes."""

    def __init__(self, encoder: nn.Module, reducer: nn.Module, method: str, out_tokens: int):
        super().__init__()
        self.encoder = encoder
        self.reducer = reducer
        for attr in ("out_dim", "mean", "std", "image_size", "encoder_name", "size"):
            if hasattr(encoder, attr):
                setattr(self, attr, getattr(encoder, attr))
        self.num_tokens = out_tokens
        self.token_reduce = method

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.reducer(self.encoder(pixel_values))
