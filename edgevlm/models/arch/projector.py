"""The connector from vision tokens to the language model's embedding space.

AutoNeural's connector is a normalization-free MLP (linear -> GELU -> linear):
without LayerNorm it has no per-token statistics to compute, which integer
NPUs handle poorly.  LFM2-VL's projector is the same MLP preceded by a
pixel-unshuffle (factor x factor neighbouring tokens concatenated) and a
LayerNorm; both are options here so its weights load under transformers'
names (layer_norm, linear_1, linear_2).
"""
import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.errors import CheckpointError

_ACTIVATIONS = {"gelu": F.gelu, "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "relu": F.relu}


class MLPProjector(nn.Module):
    """tokens [B, N, in_dim] -> embeddings [B, N / factor^2, out_dim].

    With ``downsample_factor`` f > 1 the N tokens are read as a square
    row-major grid and each f x f block is concatenated (row offset major,
    then column offset, then channel), as LFM2-VL's pixel unshuffle does.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, act: str = "gelu", bias: bool = True,
                 downsample_factor: int = 1, layer_norm: bool = False):
        super().__init__()
        if act not in _ACTIVATIONS:
            raise CheckpointError(f"projector activation '{act}' is not supported", f"use one of: {', '.join(_ACTIVATIONS)}")
        self.factor = downsample_factor
        self.act_name = act
        width = in_dim * downsample_factor**2
        self.layer_norm = nn.LayerNorm(width) if layer_norm else None
        self.linear_1 = nn.Linear(width, hidden_dim, bias=bias)
        self.linear_2 = nn.Linear(hidden_dim, out_dim, bias=bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.factor > 1:
            tokens = self.unshuffle(tokens)
        if self.layer_norm is not None:
            tokens = self.layer_norm(tokens)
        return self.linear_2(_ACTIVATIONS[self.act_name](self.linear_1(tokens)))

    def unshuffle(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        side, f = int(round(n**0.5)), self.factor
        if side * side != n or side % f:
            raise ValueError(f"pixel unshuffle needs a square token grid divisible by {f}, got {n} tokens")
        grid = tokens.reshape(b, side // f, f, side // f, f, c).permute(0, 1, 3, 2, 4, 5)
        return grid.reshape(b, (side // f) ** 2, f * f * c)
