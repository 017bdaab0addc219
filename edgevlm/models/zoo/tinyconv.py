"""tinyconv: a small MobileNet-style convolutional encoder.

Depthwise-separable blocks with BatchNorm and ReLU6 (every op NPU-friendly),
returning a token grid [B, N, C].  Built with a fixed seed, so compiles are
reproducible without a checkpoint.  It is a smoke-test model for the
compiler, not a trained network.
"""
import torch
from torch import nn

from edgevlm.core.stage import Stage, StageKind, StageName
from edgevlm.models.registry import ModelBundle, ModelEntry


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


class TinyConvEncoder(nn.Module):
    """Stem + depthwise-separable stages; output [B, (H/16)*(W/16), dim]."""

    def __init__(self, dim: int = 64, widths=(16, 24, 32, 48)):
        super().__init__()
        layers = [_conv_bn(3, widths[0], stride=2)]
        for cin, cout in zip(widths, widths[1:] + (dim,)):
            layers += [_conv_bn(cin, cin, stride=2 if cout != dim else 1, groups=cin), _conv_bn(cin, cout, k=1)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.features(x))
        return y.flatten(2).transpose(1, 2)


def build_tinyconv(weights_dir=None, image_size: int = 128) -> ModelBundle:
    torch.manual_seed(0)
    model = TinyConvEncoder().eval()
    # Non-trivial BatchNorm statistics so folding them is exercised.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    if weights_dir is not None:
        from edgevlm.models import checkpoint

        checkpoint.load_into(model, checkpoint.load_state_dict(weights_dir), str(weights_dir))
    example = (torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(1)),)
    stage = Stage(StageName.ENCODER, model, example, kind=StageKind.ENCODER, input_names=("pixel_values",),
                  output_names=("tokens",))
    params = sum(p.numel() for p in model.parameters())
    return ModelBundle("tinyconv", [stage], {"encoder": model}, {"params": params, "image_size": image_size})


MODELS = [
    ModelEntry("tinyconv", "MobileNet-style depthwise-separable encoder, 128x128 -> 16 tokens (smoke test)", build_tinyconv),
]
