"""casvit: CAS-ViT, convolutional additive self-attention (Zhang et al., 2024, arXiv:2408.03703).

Not in timm, so written here from the paper and the reference model
definition.  A two-conv stem (4x), then four stages of additive blocks with a
3x3 stride-2 conv + BN between stages (32x in all).  Each block is

    x = x + LocalIntegration(x)          1x1 -> BN -> dw3x3 -> GELU -> 1x1
    x = x + CATM(BN(x))                  convolutional additive token mixer
    x = x + MLP(BN(x))                   1x1 -> GELU -> 1x1

and the additive token mixer replaces softmax attention with
``proj(dwc(Phi(q) + Phi(k)) * v)``, where Phi is a spatial gate (dw3x3 -> BN ->
ReLU -> 1x1 to one channel -> sigmoid) followed by a channel gate (global
pool -> 1x1 -> sigmoid): only convolutions, sigmoids and elementwise ops, all
NPU-friendly.  Parameter names follow the reference implementation (RCViT),
so its weights, converted to safetensors, load unchanged.  The token grid is
the last stage after the final BatchNorm (``norm``).
"""
import torch
from torch import nn

from edgevlm.models.arch.encoders.base import EncoderFamily, EncoderSize, VisionEncoder

SIZES = {
    "nano": EncoderSize(128, dict(layers=(1, 1, 2, 1), embed_dims=(16, 24, 48, 96))),
    "small": EncoderSize(224, dict(layers=(1, 2, 3, 1), embed_dims=(32, 48, 96, 160))),
    # The paper's variants (Table 1 / reference model zoo), ImageNet classifiers at 224 px.
    "xs": EncoderSize(224, dict(layers=(2, 2, 4, 2), embed_dims=(48, 56, 112, 220)), "CAS-ViT-XS (paper: 3.20M params with classifier head)"),
    "s": EncoderSize(224, dict(layers=(3, 3, 6, 3), embed_dims=(48, 64, 128, 256)), "CAS-ViT-S (paper: 5.76M params with classifier head)"),
    "m": EncoderSize(224, dict(layers=(3, 3, 6, 3), embed_dims=(64, 96, 192, 384)), "CAS-ViT-M (paper: 12.42M params with classifier head)"),
    "t": EncoderSize(224, dict(layers=(3, 3, 6, 3), embed_dims=(96, 128, 256, 512)), "CAS-ViT-T (paper: 21.76M params with classifier head)"),
}


def _stem(cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, cout // 2, 3, 2, 1), nn.BatchNorm2d(cout // 2), nn.ReLU(),
        nn.Conv2d(cout // 2, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(),
    )


class Downsample(nn.Module):
    """3x3 stride-2 conv + BN between stages (the reference's ``Embedding``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, 3, 2, 1)
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.norm(self.proj(x))


class SpatialGate(nn.Module):
    """x * sigmoid(1x1(ReLU(BN(dw3x3(x))))) with a single-channel gate map."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.BatchNorm2d(dim), nn.ReLU(),
            nn.Conv2d(dim, 1, 1, bias=False), nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.block(x)


class ChannelGate(nn.Module):
    """x * sigmoid(1x1(global average pool(x)))."""

    def __init__(self, dim: int):
        super().__init__()
        self.block = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, dim, 1, bias=False), nn.Sigmoid())

    def forward(self, x):
        return x * self.block(x)


class AdditiveTokenMixer(nn.Module):
    """Convolutional additive self-attention: proj(dwc(Phi_q(q) + Phi_k(k)) * v)."""

    def __init__(self, dim: int):
        super().__init__()
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.oper_q = nn.Sequential(SpatialGate(dim), ChannelGate(dim))
        self.oper_k = nn.Sequential(SpatialGate(dim), ChannelGate(dim))
        self.dwc = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.proj = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=1)
        return self.proj(self.dwc(self.oper_q(q) + self.oper_k(k)) * v)


class LocalIntegration(nn.Module):
    """1x1 -> BN -> dw3x3 -> GELU -> 1x1 local mixing, used as a residual branch."""

    def __init__(self, dim: int):
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(dim, dim, 1), nn.BatchNorm2d(dim), nn.Conv2d(dim, dim, 3, 1, 1, groups=dim), nn.GELU(), nn.Conv2d(dim, dim, 1)
        )

    def forward(self, x):
        return self.network(x)


class ConvMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class AdditiveBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.local_perception = LocalIntegration(dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = AdditiveTokenMixer(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.local_perception(x)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CASViT(nn.Module):
    """CAS-ViT backbone; with ``num_classes`` > 0 also the classifier head(s) of the paper's models."""

    def __init__(self, layers, embed_dims, mlp_ratio: float = 4.0, num_classes: int = 0, distillation: bool = False):
        super().__init__()
        self.patch_embed = _stem(embed_dims[0])
        network = []
        for i, depth in enumerate(layers):
            network.append(nn.Sequential(*[AdditiveBlock(embed_dims[i], mlp_ratio) for _ in range(depth)]))
            if i + 1 < len(layers):
                network.append(Downsample(embed_dims[i], embed_dims[i + 1]))
        self.network = nn.ModuleList(network)
        self.norm = nn.BatchNorm2d(embed_dims[-1])
        self.num_features = embed_dims[-1]
        if num_classes > 0:
            self.head = nn.Linear(embed_dims[-1], num_classes)
            if distillation:
                self.dist_head = nn.Linear(embed_dims[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for block in self.network:
            x = block(x)
        return self.norm(x)


def build(cfg: dict, image_size: int) -> VisionEncoder:
    """Build a CAS-ViT encoder (no classifier head)."""
    backbone = CASViT(**cfg)
    return VisionEncoder(backbone, backbone.num_features)


FAMILY = EncoderFamily(
    name="casvit",
    description="CAS-ViT (convolutional additive self-attention), from the paper",
    sizes=SIZES,
    build=build,
    mean=(0.485, 0.456, 0.406),  # ImageNet statistics, as the reference training
    std=(0.229, 0.224, 0.225),
    checkpoint_ignore=("head.", "dist_head."),
)
