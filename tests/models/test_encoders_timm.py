"""timm-backed encoders load timm checkpoints (safetensors) and reproduce timm's forward_features.

Each reference model is built with timm's own classes (random init, with a
classifier head where the class has one), saved with safetensors, and loaded
through ``build_encoder(..., pretrained_dir=...)``.  Metric: max abs err of
our token grid vs timm's forward_features flattened to tokens, bound 1e-5.
"""
import pytest
import torch
from safetensors.torch import save_file

from edgevlm._compat import import_timm
from edgevlm.errors import CheckpointError
from edgevlm.models.arch.encoders import build_encoder
from edgevlm.models.arch.encoders import efficientvit_m, fastvithd, mobilenetv5


def _timm_mobilenetv5_nano(image_size):
    timm = import_timm()
    from timm.models import mobilenetv5 as mnv5
    from timm.models._efficientnet_builder import decode_arch_def

    cfg = mobilenetv5.SIZES["nano"].config
    out_res = image_size // cfg["msfa_stride"]
    model = timm.create_model(
        "mobilenetv5_300m_enc", pretrained=False, block_args=decode_arch_def(cfg["arch"]),
        stem_size=cfg["stem"], fix_stem=True, pad_type="", msfa_output_resolution=out_res,
    )
    # Same adapter class as timm's, at the demo width instead of Gemma 3n's 2048.
    model.msfa = mnv5.MobileNetV5MultiScaleFusionAdapter(
        model.msfa_in_chs, cfg["msfa_dim"], out_res, norm_layer=timm.layers.RmsNorm2d, act_layer=mnv5._GELU
    )
    return model


def _timm_fastvithd_nano(image_size):
    from functools import partial

    import_timm()
    from timm.models import fastvit

    cfg = dict(fastvithd.SIZES["nano"].config)
    cpe = partial(fastvit.RepConditionalPosEnc, spatial_shape=(7, 7))
    cfg["pos_embs"] = tuple(cpe if p else None for p in cfg["pos_embs"])
    return fastvit.FastVit(num_classes=10, lkc_use_act=True, se_downsamples=(False,) * 4, **cfg)


def _timm_efficientvit_m0(image_size):
    return import_timm().create_model("efficientvit_m0", pretrained=False, img_size=image_size)


CASES = [
    ("mobilenetv5", "nano", 128, _timm_mobilenetv5_nano),
    ("fastvithd", "nano", 128, _timm_fastvithd_nano),
    ("efficientvit-m", "m0", 224, _timm_efficientvit_m0),
]


def _randomize_norms(model):
    """Non-trivial norm statistics and scales, so a mis-loaded tensor cannot hide behind an identity init."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "weight", "bias", "gamma"):
                if t.dim() == 1:
                    t.copy_(torch.rand(t.shape, generator=g) * 0.5 + (0.75 if "var" in name or "weight" in name else -0.25))


@pytest.mark.parametrize("name,size,image_size,make_timm", CASES, ids=[c[0] for c in CASES])
def test_loads_timm_checkpoint_and_matches_forward_features(tmp_path, name, size, image_size, make_timm):
    torch.manual_seed(0)
    ref = make_timm(image_size).eval()
    _randomize_norms(ref)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))

    torch.manual_seed(1)  # a different random init, overwritten by the checkpoint
    enc = build_encoder(name, size, image_size=image_size, pretrained_dir=tmp_path)
    x = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = ref.forward_features(x).flatten(2).transpose(1, 2)
        got = enc(x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5


def test_pickle_checkpoint_is_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match="pickle"):
        build_encoder("efficientvit-m", "nano", pretrained_dir=tmp_path)


def test_checkpoint_of_another_size_names_the_tensor(tmp_path):
    torch.manual_seed(0)
    ref = _timm_efficientvit_m0(224)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"tensor 'stages\.[\w.]+' "):
        build_encoder("efficientvit-m", "nano", pretrained_dir=tmp_path)


def test_missing_checkpoint_dir_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        build_encoder("fastvithd", "nano", pretrained_dir=tmp_path / "absent")


def test_vit_loads_timm_siglip_checkpoint_and_matches_forward_features(tmp_path):
    """timm's SigLIP-style ViT with its attention-pooling head; the head's tensors are ignored when loading."""
    import_timm()
    from timm.models.vision_transformer import VisionTransformer

    from edgevlm.models.arch.encoders import vit

    torch.manual_seed(0)
    ref = VisionTransformer(img_size=128, class_token=False, global_pool="map", num_classes=10, **vit.SIZES["nano"].config).eval()
    _randomize_norms(ref)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "model.safetensors"))
    enc = build_encoder("vit", "nano", pretrained_dir=tmp_path)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        err = (enc(x) - ref.forward_features(x)).abs().max().item()
    assert err <= 1e-5
