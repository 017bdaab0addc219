"""lsnet: LSNet, "See Large, Focus Small" (Wang et al., CVPR 2025, arXiv:2503.23135).

Not in timm, so written here from the paper and the reference model
definition.  The key op is LS convolution: *large-kernel perception* (LKP:
1x1 -> 7x7 depthwise -> 1x1 -> 1x1 to ``9 * dim/8`` channels -> GroupNorm)
predicts, at every pixel, a 3x3 kernel for each of ``dim/8`` channel groups;
*small-kernel aggregation* (SKA) then applies those per-pixel 3x3 kernels to
the input (channel ``c`` uses predicted kernel ``c mod dim/8``).  The
reference runs SKA as a custom Triton kernel; here it is nine shifted slices
of the zero-padded input, multiplied and summed, which is exactly the same
sum, static-shape, and built from ops every NPU compiler accepts.

Stages alternate, within each stage, between a RepVGG-style depthwise mixer
with squeeze-excite (even blocks) and an LS convolution (odd blocks), except
that the last stage uses LeViT-style attention with learned relative biases
instead of LS convolution; every block ends with a residual 1x1 FFN.  A 8x
conv stem and a depthwise stride-2 conv + 1x1 conv between stages give 64x
downsampling for the paper's four-stage models (224 px -> 4x4 tokens); the
demo ``nano`` has three stages (32x).  Parameter names follow the reference
implementation, so its weights, converted to safetensors, load unchanged.
"""
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.models.arch.encoders.base import EncoderFamily, EncoderSize, VisionEncoder

SIZES = {
    "nano": EncoderSize(128, dict(embed_dim=(32, 64, 96), depth=(1, 2, 2), num_heads=(2, 2, 3), key_dim=(16, 16, 16))),
    "small": EncoderSize(256, dict(embed_dim=(48, 96, 160, 224), depth=(1, 2, 4, 4), num_heads=(3, 3, 3, 4))),
    # The paper's variants (Table 1 / reference README), ImageNet classifiers at 224 px.
    "t": EncoderSize(224, dict(embed_dim=(64, 128, 256, 384), depth=(0, 2, 8, 10), num_heads=(3, 3, 3, 4)), "LSNet-T (paper: 11.4M params with classifier head)"),
    "s": EncoderSize(224, dict(embed_dim=(96, 192, 320, 448), depth=(1, 2, 8, 10), num_heads=(3, 3, 3, 4)), "LSNet-S (paper: 16.1M params with classifier head)"),
    "b": EncoderSize(224, dict(embed_dim=(128, 256, 384, 512), depth=(4, 6, 8, 10), num_heads=(3, 3, 3, 4)), "LSNet-B (paper: 23.2M params with classifier head)"),
}


class ConvBN(nn.Sequential):
    """Bias-free conv followed by BatchNorm (``c``, ``bn``), BN weight initialised to ``bn_weight_init``."""

    def __init__(self, cin, cout, ks=1, stride=1, pad=0, groups=1, bn_weight_init=1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(cin, cout, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(cout))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class BNLinear(nn.Sequential):
    """BatchNorm1d + Linear classifier head."""

    def __init__(self, cin, cout):
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(cin))
        self.add_module("l", nn.Linear(cin, cout))
        nn.init.trunc_normal_(self.l.weight, std=0.02)
        nn.init.zeros_(self.l.bias)


class Residual(nn.Module):
    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x):
        return x + self.m(x)


class FFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = ConvBN(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = ConvBN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x):
        return self.pw2(self.act(self.pw1(x)))


class RepVGGDW(nn.Module):
    """3x3 depthwise + 1x1 depthwise + identity (re-parameterizable into one 3x3 depthwise conv)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = ConvBN(dim, dim, 3, 1, 1, groups=dim)
        self.conv1 = ConvBN(dim, dim, 1, 1, 0, groups=dim)

    def forward(self, x):
        return self.conv(x) + self.conv1(x) + x


class LargeKernelPerception(nn.Module):
    """LKP: per-pixel 3x3 kernels [B, dim/groups, sks*sks, H, W] predicted from a 7x7 depthwise context."""

    def __init__(self, dim: int, lks: int = 7, sks: int = 3, groups: int = 8):
        super().__init__()
        self.cv1 = ConvBN(dim, dim // 2)
        self.act = nn.ReLU()
        self.cv2 = ConvBN(dim // 2, dim // 2, ks=lks, pad=(lks - 1) // 2, groups=dim // 2)
        self.cv3 = ConvBN(dim // 2, dim // 2)
        self.cv4 = nn.Conv2d(dim // 2, sks * sks * dim // groups, 1)
        self.norm = nn.GroupNorm(dim // groups, sks * sks * dim // groups)
        self.sks, self.kernels = sks, dim // groups

    def forward(self, x):
        w = self.norm(self.cv4(self.act(self.cv3(self.cv2(self.act(self.cv1(x)))))))
        b, _, h, width = w.shape
        return w.view(b, self.kernels, self.sks * self.sks, h, width)


def small_kernel_aggregation(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """SKA: out[b,c,i,j] = sum_{u,v} x_pad[b, c, i+u, j+v] * w[b, c mod K, u*k+v, i, j], zero padding k//2."""
    _, channels, h, width = x.shape
    k = int(round(w.shape[2] ** 0.5))
    w = w.repeat(1, channels // w.shape[1], 1, 1, 1)  # channel c -> kernel c mod K
    xp = F.pad(x, (k // 2,) * 4)
    out = xp[:, :, 0:h, 0:width] * w[:, :, 0]
    for u, v in itertools.product(range(k), range(k)):
        if u or v:
            out = out + xp[:, :, u:u + h, v:v + width] * w[:, :, u * k + v]
    return out


class LSConv(nn.Module):
    """Large-small convolution: BN(SKA(x, LKP(x))) + x."""

    def __init__(self, dim: int):
        super().__init__()
        self.lkp = LargeKernelPerception(dim)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x):
        return self.bn(small_kernel_aggregation(x, self.lkp(x))) + x


class Attention(nn.Module):
    """LeViT-style multi-head attention over the full (small) grid, with learned relative-position biases."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int):
        super().__init__()
        self.num_heads, self.key_dim, self.scale = num_heads, key_dim, key_dim ** -0.5
        self.nh_kd = key_dim * num_heads
        self.dh = int(attn_ratio * key_dim) * num_heads
        self.qkv = ConvBN(dim, self.dh + 2 * self.nh_kd)
        self.proj = nn.Sequential(nn.ReLU(), ConvBN(self.dh, dim, bn_weight_init=0.0))
        self.dw = ConvBN(self.nh_kd, self.nh_kd, 3, 1, 1, groups=self.nh_kd)
        points = list(itertools.product(range(resolution), range(resolution)))
        offsets: dict = {}
        idxs = [offsets.setdefault((abs(p[0] - q[0]), abs(p[1] - q[1])), len(offsets)) for p in points for q in points]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("attention_bias_idxs", torch.tensor(idxs, dtype=torch.long).view(len(points), len(points)))

    def forward(self, x):
        b, _, h, w = x.shape
        n = h * w
        q, k, v = self.qkv(x).split([self.nh_kd, self.nh_kd, self.dh], dim=1)
        q = self.dw(q)
        q, k, v = q.view(b, self.num_heads, -1, n), k.view(b, self.num_heads, -1, n), v.view(b, self.num_heads, -1, n)
        attn = (q.transpose(-2, -1) @ k) * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        out = v @ attn.softmax(dim=-1).transpose(-2, -1)
        return self.proj(out.reshape(b, -1, h, w))


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(ReLU(fc1(mean(x))))), reduction to ``dim/4`` rounded to a multiple of 8 (as timm's SEModule).

    Written out rather than taken from timm because timm's uses an in-place
    ReLU, which integer NPU op sets do not list.
    """

    def __init__(self, dim: int, ratio: float = 0.25):
        super().__init__()
        reduced = max(8, int(dim * ratio + 4) // 8 * 8)
        self.fc1 = nn.Conv2d(dim, reduced, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(reduced, dim, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


class Block(nn.Module):
    """Even blocks: RepVGG depthwise mixer + SE; odd blocks: LS conv (attention in the last stage); then FFN."""

    def __init__(self, dim, key_dim, num_heads, attn_ratio, resolution, index, last_stage):
        super().__init__()
        if index % 2 == 0:
            self.mixer = RepVGGDW(dim)
            self.se = SqueezeExcite(dim)
        else:
            self.se = nn.Identity()
            self.mixer = Residual(Attention(dim, key_dim, num_heads, attn_ratio, resolution)) if last_stage else LSConv(dim)
        self.ffn = Residual(FFN(dim, 2 * dim))

    def forward(self, x):
        return self.ffn(self.se(self.mixer(x)))


class LSNet(nn.Module):
    """LSNet backbone (stages ``blocks1..blocksN``); ``num_classes`` > 0 adds the paper's BN+Linear head."""

    def __init__(self, embed_dim, depth, num_heads, key_dim=None, img_size=224, num_classes=0, distillation=False):
        super().__init__()
        key_dim = key_dim or (16,) * len(embed_dim)
        e0 = embed_dim[0]
        self.patch_embed = nn.Sequential(
            ConvBN(3, e0 // 4, 3, 2, 1), nn.ReLU(), ConvBN(e0 // 4, e0 // 2, 3, 2, 1), nn.ReLU(), ConvBN(e0 // 2, e0, 3, 2, 1)
        )
        resolution = img_size // 8
        self.num_stages = len(embed_dim)
        for i in range(self.num_stages):
            stage = nn.Sequential()
            if i > 0:  # downsample from the previous stage: depthwise 3x3 stride 2, then 1x1
                stage.append(ConvBN(embed_dim[i - 1], embed_dim[i - 1], 3, 2, 1, groups=embed_dim[i - 1]))
                stage.append(ConvBN(embed_dim[i - 1], embed_dim[i]))
                resolution = (resolution - 1) // 2 + 1
            ratio = embed_dim[i] / (key_dim[i] * num_heads[i])
            for d in range(depth[i]):
                stage.append(Block(embed_dim[i], key_dim[i], num_heads[i], ratio, resolution, d, i == self.num_stages - 1))
            setattr(self, f"blocks{i + 1}", stage)
        self.num_features = embed_dim[-1]
        if num_classes > 0:
            self.head = BNLinear(embed_dim[-1], num_classes)
            if distillation:
                self.head_dist = BNLinear(embed_dim[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for i in range(self.num_stages):
            x = getattr(self, f"blocks{i + 1}")(x)
        return x


def build(cfg: dict, image_size: int) -> VisionEncoder:
    """Build an LSNet encoder for ``image_size`` (the attention biases are laid out for that grid)."""
    backbone = LSNet(img_size=image_size, **cfg)
    return VisionEncoder(backbone, backbone.num_features)


FAMILY = EncoderFamily(
    name="lsnet",
    description="LSNet (large-kernel perception + small-kernel aggregation), from the paper",
    sizes=SIZES,
    build=build,
    mean=(0.485, 0.456, 0.406),  # ImageNet statistics, as the reference training
    std=(0.229, 0.224, 0.225),
    divisor=8,  # the 8x stem; later stride-2 convs round up, as the attention-bias grid does
    checkpoint_ignore=("head.", "head_dist."),
)
