"""Named vision-language models: AutoNeural-style, FastVLM-style and a ViT baseline, each at nano and small.

A model is a JSON-safe config (encoder name/size/image size, projector,
LFM2 ``text_config``, image token id, prefill and cache lengths).  The nano
models ship trained weights in ``weights/<name>.safetensors`` with their
config in ``weights/<name>.json`` and the tokenizer in
``weights/tokenizer.json``; a model without shipped weights builds with
seeded random weights (``meta["trained"] == False``).  A saved model
directory holds config.json (with ``"edgevlm_model"``), model.safetensors
and tokenizer.json.
"""
import json
from pathlib import Path

import torch

from edgevlm.errors import CheckpointError
from edgevlm.models.arch.lfm2 import Lfm2Config, Lfm2ForCausalLM
from edgevlm.models.arch.projector import MLPProjector
from edgevlm.models.registry import ModelBundle, ModelEntry
from edgevlm.models.arch.vlm import VisionLanguageModel, vlm_stages

WEIGHTS_DIR = Path(__file__).parent / "weights"
MODEL_TYPE = "edgevlm_vlm"
CALIBRATION_SEED = 999  # shapes seed for stage calibration inputs; training uses 0, evaluation 12345
CALIBRATION_SAMPLES = 8
PROMPT_ROOM = 16  # tokens after the image tokens in the compiled prefill: <bos> + the longest shapes prompt (8) + slack
ANSWER_ROOM = 24  # KV slots after the prefill: the longest shapes answer is 17 tokens with <eos>

_CONV, _ATTN = "conv", "full_attention"


def _text_config(size: str, vocab_size: int) -> dict:
    if size == "nano":
        shape = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2,
                     layer_types=[_CONV, _CONV, _ATTN, _CONV, _CONV, _ATTN])
    else:
        shape = dict(hidden_size=256, intermediate_size=768, num_attention_heads=8, num_key_value_heads=2,
                     layer_types=[_CONV, _CONV, _ATTN, _CONV, _CONV, _ATTN, _CONV, _CONV, _ATTN, _CONV])
    cfg = Lfm2Config(vocab_size=vocab_size, num_hidden_layers=len(shape["layer_types"]), max_position_embeddings=128,
                     block_auto_adjust_ff_dim=False, rope_theta=10000.0, **shape)
    return cfg.to_dict()


# name -> (encoder, size, image size, description)
SPECS = {
    "autoneural-nano": ("mobilenetv5", "nano", 96, "AutoNeural-style: MobileNetV5 encoder + MLP connector + LFM2-style hybrid LM"),
    "autoneural-small": ("mobilenetv5", "small", 128, "AutoNeural-style at 'small' size"),
    "fastvlm-nano": ("fastvithd", "nano", 128, "FastVLM-style: FastViTHD encoder + MLP connector + LFM2-style hybrid LM"),
    "fastvlm-small": ("fastvithd", "small", 128, "FastVLM-style at 'small' size"),
    "vit-nano": ("vit", "nano", 96, "ViT baseline (SigLIP-style encoder) + MLP connector + LFM2-style hybrid LM"),
    "vit-small": ("vit", "small", 128, "ViT baseline at 'small' size"),
}


def default_config(name: str) -> dict:
    """The architecture config of a named model (no weights)."""
    from edgevlm.models.tokenizer import SPECIAL_TOKENS, load_tokenizer

    encoder, size, image_size, _ = SPECS[name]
    tok = load_tokenizer()
    return {
        "edgevlm_model": name,
        "model_type": MODEL_TYPE,
        "encoder": {"name": encoder, "size": size, "image_size": image_size},
        "projector": {"hidden_dim": 128 if size == "nano" else 256, "act": "gelu", "bias": True},
        "text_config": _text_config(size, tok.vocab_size),
        "image_token_id": SPECIAL_TOKENS.index("<image>"),
    }


def build_vlm(cfg: dict) -> VisionLanguageModel:
    """Build the VLM of a config with seeded random weights (seed 0, global RNG untouched)."""
    from edgevlm.models.arch.encoders import build_encoder

    try:
        enc_cfg, proj_cfg = cfg["encoder"], cfg["projector"]
        text = Lfm2Config.from_dict(cfg["text_config"])
        with torch.random.fork_rng():
            torch.manual_seed(0)
            encoder = build_encoder(enc_cfg["name"], enc_cfg["size"], image_size=enc_cfg["image_size"])
            projector = MLPProjector(encoder.out_dim, proj_cfg["hidden_dim"], text.hidden_size, proj_cfg.get("act", "gelu"),
                                     proj_cfg.get("bias", True))
            lm = Lfm2ForCausalLM(text)
        # Room for <bos>, the image tokens and the longest shapes prompt, then for the longest answer.
        prefill_len = int(cfg.get("prefill_len", encoder.num_tokens + PROMPT_ROOM))
        max_len = int(cfg.get("max_len", prefill_len + ANSWER_ROOM))
        return VisionLanguageModel(encoder, projector, lm, int(cfg["image_token_id"]), enc_cfg["image_size"],
                                   encoder.num_tokens, prefill_len, max_len, encoder.mean, encoder.std)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"model config lacks or mistypes {exc}", "re-save the model with edgevlm (models.zoo.save_model)") from None


def save_model(vlm: VisionLanguageModel, cfg: dict, out_dir, tokenizer, dtype=torch.float32) -> Path:
    """Write config.json, model.safetensors and tokenizer.json into ``out_dir``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in vlm.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    tokenizer.save(out / "tokenizer.json")
    return out


def _load_weights(vlm: VisionLanguageModel, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from edgevlm.models import checkpoint

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read weights '{path}': {exc}", "the file is truncated or not safetensors; re-export it") from None
    own = vlm.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    checkpoint.load_into(vlm, state, str(path))


def load_model(cfg: dict, weights: Path | None, tokenizer_path: Path | None = None) -> ModelBundle:
    """A bundle for ``cfg`` with weights from ``weights`` (a safetensors file) or seeded random ones."""
    from edgevlm.models.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_path)
    vlm = build_vlm(cfg)
    if weights is not None:
        _load_weights(vlm, weights)
    vlm.eval()
    return _bundle(cfg, vlm, tok, trained=weights is not None)


def load_saved_model(ckpt: Path) -> ModelBundle:
    """Load a directory written by :func:`save_model`."""
    from edgevlm.models import checkpoint

    cfg = checkpoint.read_config(ckpt)
    files = checkpoint.weight_files(ckpt)
    if len(files) != 1:
        raise CheckpointError(f"expected one *.safetensors file in '{ckpt}', found {len(files)}", "keep only model.safetensors")
    tok_path = ckpt / "tokenizer.json"
    return load_model(cfg, files[0], tok_path if tok_path.is_file() else None)


def shipped_weights(name: str) -> tuple[dict, Path] | None:
    """(config, weights file) of a model whose trained weights ship with edgevlm, else None."""
    cfg_path, w_path = WEIGHTS_DIR / f"{name}.json", WEIGHTS_DIR / f"{name}.safetensors"
    if cfg_path.is_file() and w_path.is_file():
        return json.loads(cfg_path.read_text()), w_path
    return None


def _calibration(vlm: VisionLanguageModel, tok) -> list:
    from edgevlm.data.shapes import make_sample

    pairs = []
    for i in range(CALIBRATION_SAMPLES):
        s = make_sample(CALIBRATION_SEED, i, vlm.image_size)
        pairs.append((vlm.pixel_values(s.image), vlm.prompt_ids(tok.encode(s.prompt), tok.bos_id)))
    return pairs


def _bundle(cfg: dict, vlm: VisionLanguageModel, tok, trained: bool) -> ModelBundle:
    from edgevlm.models.arch.flops import count_macs, count_params

    stages = vlm_stages(vlm, _calibration(vlm, tok))
    macs = {s.name: count_macs(s.module, *s.example_inputs) for s in stages}
    meta = {
        "family": "vlm",
        "trained": trained,
        "params": count_params(vlm),
        "params_by_part": {"encoder": count_params(vlm.encoder), "projector": count_params(vlm.projector),
                           "llm": count_params(vlm.lm)},
        "macs": macs,
        "image_size": vlm.image_size,
        "image_tokens": vlm.num_image_tokens,
        "config": cfg,
    }
    return ModelBundle(cfg.get("edgevlm_model", "vlm"), stages, {"vlm": vlm, "tokenizer": tok}, meta)


def with_token_reduction(bundle: ModelBundle, tokens: int, method: str) -> ModelBundle:
    """The bundle's VLM with its image tokens reduced to ``tokens`` by ``method`` (see token_reduction).

    The reducer runs inside the encoder stage; the prefill and cache lengths
    shrink with the image.  The weights are shared, not retrained.
    """
    from edgevlm.errors import InputError
    from edgevlm.models.arch.token_reduction import ReducedEncoder, make_reducer

    vlm, tok = bundle.modules.get("vlm"), bundle.modules.get("tokenizer")
    if vlm is None or vlm.encoder is None or tok is None:
        raise InputError(f"model '{bundle.name}' has no vision tokens to reduce", "use --vision-tokens with a zoo VLM")
    if tokens == vlm.num_image_tokens:
        return bundle
    if method == "prune":  # prompt-dependent: runs between projector and LM (models/arch/token_pruning.py)
        if not isinstance(tokens, int) or not 1 <= tokens <= vlm.num_image_tokens:
            raise InputError(f"--vision-tokens {tokens} is outside 1..{vlm.num_image_tokens} (the encoder's tokens)",
                             f"pass a count from 1 to {vlm.num_image_tokens}")
        encoder = vlm.encoder
    else:
        encoder = ReducedEncoder(vlm.encoder, make_reducer(method, vlm.num_image_tokens, tokens), method, tokens)
    prefill_len = tokens + PROMPT_ROOM
    reduced = VisionLanguageModel(encoder, vlm.projector, vlm.lm, vlm.image_token_id, vlm.image_size, tokens,
                                  prefill_len, prefill_len + ANSWER_ROOM, vlm.encoder.mean, vlm.encoder.std).eval()
    if method == "prune":
        reduced.prune_to = tokens
    cfg = dict(bundle.meta["config"], token_reduction={"method": method, "tokens": tokens, "from": vlm.num_image_tokens})
    out = _bundle(cfg, reduced, tok, bundle.meta["trained"])
    out.name = f"{bundle.name}-{method}{tokens}"
    return out


def describe(name: str) -> dict:
    """Params and MACs per stage of a named model, computed on the meta device (no weights, no compute)."""
    from edgevlm.models.arch.flops import count_macs, count_params

    shipped = shipped_weights(name)
    cfg = shipped[0] if shipped else default_config(name)
    with torch.device("meta"):
        vlm = build_vlm(cfg)
        macs = {s.name: count_macs(s.module, *s.example_inputs) for s in vlm_stages(vlm)}
    return {
        "name": name, "description": SPECS[name][3], "encoder": f"{cfg['encoder']['name']} {cfg['encoder']['size']}",
        "image_size": vlm.image_size, "image_tokens": vlm.num_image_tokens, "params": count_params(vlm),
        "params_llm": count_params(vlm.lm), "macs": macs, "trained": shipped is not None,
    }


def _builder(name: str):
    def build(weights_dir=None) -> ModelBundle:
        if weights_dir is not None:
            return load_saved_model(Path(weights_dir))
        shipped = shipped_weights(name)
        if shipped is not None:
            return load_model(shipped[0], shipped[1])
        return load_model(default_config(name), None)

    return build


MODELS = [ModelEntry(name, spec[3], _builder(name), family="vlm") for name, spec in SPECS.items()]
