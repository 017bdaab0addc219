"""SigLIP2 vision tower (the "NaFlex" variant LFM2-VL uses) at one static, square image size.

transformers' Siglip2VisionModel takes variable-resolution inputs: a padded
list of flattened patches, their grid shape and a padding mask; its learned
position embeddings (a G x G table) are resized to each image's patch grid
at run time.  An NPU graph has one input shape, so this module fixes the
image side S: the patch grid is (S/p) x (S/p), nothing is padded, and the
position-embedding resize (bilinear, antialiased, as transformers does) is a
constant matrix [N, G*G] applied to the table.  Parameter names are
transformers' (``embeddings.patch_embedding``, ``encoder.layers.{i}.*``,
``post_layernorm``), so a checkpoint's vision-tower tensors load unchanged.

pixel_values [B, 3, S, S] (normalized) -> patch tokens [B, N, C], N = (S/p)^2,
row-major, after the post-LayerNorm (transformers' ``last_hidden_state``).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.errors import CheckpointError

_ACTIVATIONS = {"gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"), "gelu": F.gelu,
                "gelu_new": lambda x: F.gelu(x, approximate="tanh"), "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x)}


def patchify(pixel_values: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)*(W/p), p*p*C]: row-major patches, each flattened (row, column, channel)."""
    b, c, h, w = pixel_values.shape
    x = pixel_values.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def position_resize_matrix(grid: int, side: int) -> torch.Tensor:
    """[side*side, grid*grid]: row k holds the weights of output position k over the grid x grid table.

    Resizing is linear, so the matrix is the resize (bilinear, half-pixel
    centres, antialiased when shrinking) applied to each one-hot table entry.
    """
    basis = torch.eye(grid * grid, dtype=torch.float64).reshape(grid * grid, 1, grid, grid)
    resized = F.interpolate(basis, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return resized.reshape(grid * grid, side * side).t().contiguous().float()


class Siglip2Embeddings(nn.Module):
    def __init__(self, hidden: int, channels: int, patch: int, num_patches: int, side: int):
        super().__init__()
        self.patch = patch
        self.patch_embedding = nn.Linear(channels * patch * patch, hidden)
        self.position_embedding = nn.Embedding(num_patches, hidden)
        self.register_buffer("position_resize", position_resize_matrix(math.isqrt(num_patches), side), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.patch_embedding(patchify(pixel_values, self.patch)) + self.position_resize @ self.position_embedding.weight


class Siglip2Attention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.out_proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def heads(t):
            return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        attn = torch.softmax((q * self.head_dim**-0.5) @ k.transpose(-1, -2), dim=-1)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Siglip2MLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int, act: str):
        super().__init__()
        self.act = _ACTIVATIONS[act]
        self.fc1 = nn.Linear(hidden, intermediate)
        self.fc2 = nn.Linear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Siglip2EncoderLayer(nn.Module):
    def __init__(self, hidden: int, intermediate: int, heads: int, act: str, eps: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(hidden, eps=eps)
        self.self_attn = Siglip2Attention(hidden, heads)
        self.layer_norm2 = nn.LayerNorm(hidden, eps=eps)
        self.mlp = Siglip2MLP(hidden, intermediate, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class Siglip2Encoder(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Siglip2VisionTower(nn.Module):
    """SigLIP2 vision model at a fixed ``image_size``: pixels [B, 3, S, S] -> tokens [B, (S/p)^2, C]."""

    def __init__(self, vision_config: dict, image_size: int, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
        super().__init__()
        cfg = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, num_channels=3,
                   num_patches=256, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
        cfg.update({k: v for k, v in vision_config.items() if k in cfg})
        hidden, heads, patch = cfg["hidden_size"], cfg["num_attention_heads"], cfg["patch_size"]
        if cfg["hidden_act"] not in _ACTIVATIONS:
            raise CheckpointError(f"SigLIP2 activation '{cfg['hidden_act']}' is not supported", f"use one of: {', '.join(_ACTIVATIONS)}")
        if hidden % heads:
            raise CheckpointError(f"SigLIP2 hidden_size {hidden} is not divisible by num_attention_heads {heads}",
                                  "use the checkpoint's original config.json")
        if math.isqrt(cfg["num_patches"]) ** 2 != cfg["num_patches"]:
            raise CheckpointError(f"SigLIP2 num_patches {cfg['num_patches']} is not a square", "use the checkpoint's original config.json")
        if image_size <= 0 or image_size % patch:
            raise CheckpointError(f"image size {image_size} is not a positive multiple of the patch size {patch}",
                                  "set the processor's tile size to a multiple of the patch size")
        side = image_size // patch
        self.embeddings = Siglip2Embeddings(hidden, cfg["num_channels"], patch, cfg["num_patches"], side)
        self.encoder = Siglip2Encoder([Siglip2EncoderLayer(hidden, cfg["intermediate_size"], heads, cfg["hidden_act"],
                                                           cfg["layer_norm_eps"]) for _ in range(cfg["num_hidden_layers"])])
        self.post_layernorm = nn.LayerNorm(hidden, eps=cfg["layer_norm_eps"])
        self.out_dim = hidden
        self.image_size = image_size
        self.num_tokens = side * side
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.post_layernorm(self.encoder(self.embeddings(pixel_values)))
