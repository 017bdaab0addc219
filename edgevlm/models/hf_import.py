"""Load local Hugging Face checkpoint directories (config.json + safetensors) into zoo modules.

Supported ``model_type`` values:

- ``lfm2``: Lfm2ForCausalLM -> :class:`~edgevlm.models.lfm2.Lfm2ForCausalLM`
  (parameter names are identical; a tied ``lm_head.weight`` is dropped).
- ``lfm2_vl``: Lfm2VlForConditionalGeneration -> a VisionLanguageModel
  holding its language model and projector (pixel unshuffle + LayerNorm +
  MLP).  Its vision tower (SigLIP2 NaFlex: variable-resolution patches with
  resized position embeddings and a patch attention mask) is NOT built:
  its tensors are checked to exist and left out; the projector takes the
  vision tower's output features (a square grid of patch tokens) instead of
  pixels.
- ``fast_vlm``: FastVlmForConditionalGeneration -> a VisionLanguageModel
  holding its Qwen2 language model (edgevlm.models.qwen2, same explicit-state
  API) and its projector (linear -> GELU -> linear).  Its vision tower (a
  timm model, FastViTHD ``fastvit_mci3`` in the released checkpoints, held
  under transformers' TimmWrapper) is NOT built: the projector takes the
  tower's flattened output feature map.
- ``edgevlm_vlm``: directories written by edgevlm's own ``save_model``.

Nothing is downloaded and pickle files are refused (see checkpoint.py).
"""
from pathlib import Path

import torch

from edgevlm.compiler.stage import Stage
from edgevlm.errors import CheckpointError
from edgevlm.models import checkpoint
from edgevlm.models.lfm2 import DecodeStage, Lfm2Config, Lfm2ForCausalLM, PrefillStage, STATE_NAMES
from edgevlm.models.projector import MLPProjector
from edgevlm.models.registry import ModelBundle
from edgevlm.models.vlm import VisionLanguageModel

PREFILL_LEN = 16
MAX_LEN = 64


def _lm_stages(lm: Lfm2ForCausalLM, prefill_len: int = PREFILL_LEN, max_len: int = MAX_LEN) -> list[Stage]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, lm.config.vocab_size, (1, prefill_len), generator=gen)
    state = lm.init_state(max_len)
    with torch.no_grad():
        embeds = lm.embed(ids)
        n_valid = torch.tensor([prefill_len])
        logits, after = lm.prefill(embeds=embeds, state=state, n_valid=n_valid, last_only=True)
    return [
        Stage("llm-prefill", PrefillStage(lm), (embeds, n_valid, *state), kind="llm",
              input_names=("embeds", "n_valid", *STATE_NAMES), output_names=("logits", *STATE_NAMES)),
        Stage("llm-decode", DecodeStage(lm), (logits.argmax(-1).reshape(1, 1), *after), kind="llm",
              input_names=("token", *STATE_NAMES), output_names=("logits", *STATE_NAMES)),
    ]


def _take(state: dict, prefixes: tuple[str, ...], new_prefix: str) -> dict:
    """Tensors under any of ``prefixes``, renamed to ``new_prefix`` + rest (removed from ``state``)."""
    out = {}
    for key in list(state):
        for p in prefixes:
            if key.startswith(p):
                out[new_prefix + key[len(p):]] = state.pop(key)
                break
    return out


def _load_lm(lm: Lfm2ForCausalLM, state: dict, where: str) -> None:
    if lm.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    checkpoint.load_into(lm, state, where)


def load_lfm2(ckpt: Path, cfg: dict) -> ModelBundle:
    """An LFM2 causal LM checkpoint."""
    lm = Lfm2ForCausalLM(Lfm2Config.from_dict(cfg))
    _load_lm(lm, checkpoint.load_state_dict(ckpt), str(ckpt))
    lm.eval()
    meta = {"family": "llm", "source": "huggingface", "model_type": "lfm2", "params": sum(p.numel() for p in lm.parameters()),
            "config": lm.config.to_dict()}
    return ModelBundle(ckpt.name, _lm_stages(lm), {"lm": lm}, meta)


def load_lfm2_vl(ckpt: Path, cfg: dict) -> ModelBundle:
    """An LFM2-VL checkpoint: language model + projector (the SigLIP2 NaFlex vision tower is not built)."""
    text_cfg, vision_cfg = cfg.get("text_config"), cfg.get("vision_config")
    if not isinstance(text_cfg, dict) or not isinstance(vision_cfg, dict) or "hidden_size" not in vision_cfg:
        raise CheckpointError(f"'{ckpt}/config.json' lacks text_config or vision_config.hidden_size", "use the checkpoint's original config.json")
    text = Lfm2Config.from_dict(text_cfg)
    if "tie_word_embeddings" in cfg or "tie_embedding" in cfg:
        text.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", cfg.get("tie_embedding")))
    lm = Lfm2ForCausalLM(text)
    projector = MLPProjector(
        vision_cfg["hidden_size"], cfg.get("projector_hidden_size", 2560), text.hidden_size,
        act=cfg.get("projector_hidden_act", "gelu"), bias=cfg.get("projector_bias", True),
        downsample_factor=cfg.get("downsample_factor", 2), layer_norm=cfg.get("projector_use_layernorm", True),
    )
    vision, proj_state, lm_state = _split_vlm_state(ckpt, "LFM2-VL")
    checkpoint.load_into(projector, proj_state, f"{ckpt} (multi_modal_projector)")
    _load_lm(lm, lm_state, f"{ckpt} (language_model)")
    vlm = VisionLanguageModel(None, projector, lm, int(cfg.get("image_token_id", 396)), image_size=0, num_image_tokens=0,
                              prefill_len=PREFILL_LEN, max_len=MAX_LEN).eval()
    tokens = torch.randn(1, 16, vision_cfg["hidden_size"], generator=torch.Generator().manual_seed(0))
    stages = [Stage("projector", projector, (tokens,), kind="projector", input_names=("image_tokens",),
                    output_names=("image_embeds",))] + _lm_stages(lm)
    meta = {
        "family": "vlm", "source": "huggingface", "model_type": "lfm2_vl",
        "params": sum(p.numel() for p in vlm.parameters()),
        "not_supported": "vision tower (siglip2 NaFlex, %d tensors) not built: pass its output features "
                         "[B, h*w, C] (a square grid) to the projector" % len(vision),
        "config": {"text_config": text.to_dict(), "image_token_id": vlm.image_token_id},
    }
    return ModelBundle(ckpt.name, stages, {"vlm": vlm, "lm": lm, "projector": projector}, meta)


def _split_vlm_state(ckpt: Path, name: str):
    """(vision tower, projector, language model) tensors of a HF VLM checkpoint, LM keys renamed to
    the causal-LM layout; any tensor outside the three parts is a CheckpointError."""
    state = checkpoint.load_state_dict(ckpt)
    vision = _take(state, ("model.vision_tower.", "vision_tower."), "")
    if not vision:
        raise CheckpointError(f"no vision tower tensors in '{ckpt}'", f"the checkpoint is not a complete {name} model")
    proj_state = _take(state, ("model.multi_modal_projector.", "multi_modal_projector."), "")
    lm_state = _take(state, ("model.language_model.", "language_model.model."), "model.")
    lm_state.update(_take(state, ("lm_head.", "language_model.lm_head."), "lm_head."))
    if state:
        article = "an" if name.startswith("L") else "a"
        raise CheckpointError(f"unexpected tensor '{sorted(state)[0]}' in '{ckpt}'", f"the checkpoint is not {article} {name} model")
    return vision, proj_state, lm_state


def load_fast_vlm(ckpt: Path, cfg: dict) -> ModelBundle:
    """A FastVLM checkpoint: Qwen2 language model + projector (the timm vision tower is not built)."""
    from edgevlm.models.qwen2 import Qwen2Config, Qwen2ForCausalLM

    text_cfg, vision_cfg = cfg.get("text_config"), cfg.get("vision_config")
    if not isinstance(text_cfg, dict) or not isinstance(vision_cfg, dict) or "hidden_size" not in vision_cfg:
        raise CheckpointError(f"'{ckpt}/config.json' lacks text_config or vision_config.hidden_size", "use the checkpoint's original config.json")
    if text_cfg.get("model_type", "qwen2") != "qwen2":
        raise CheckpointError(f"FastVLM text model '{text_cfg.get('model_type')}' is not supported", "only Qwen2 language models are")
    text = Qwen2Config.from_dict(text_cfg)
    text.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", text.tie_word_embeddings))
    lm = Qwen2ForCausalLM(text)
    bias = cfg.get("multimodal_projector_bias", True)
    projector = MLPProjector(vision_cfg["hidden_size"], text.hidden_size, text.hidden_size,
                             act=cfg.get("projector_hidden_act", "gelu"), bias=bias)
    vision, proj_state, lm_state = _split_vlm_state(ckpt, "FastVLM")
    checkpoint.load_into(projector, proj_state, f"{ckpt} (multi_modal_projector)")
    if text.tie_word_embeddings:
        lm_state.pop("lm_head.weight", None)
    checkpoint.load_into(lm, lm_state, f"{ckpt} (language_model)")
    image_token = int(cfg.get("image_token_index", cfg.get("image_token_id", 151646)))
    vlm = VisionLanguageModel(None, projector, lm, image_token, image_size=0, num_image_tokens=0,
                              prefill_len=PREFILL_LEN, max_len=MAX_LEN).eval()
    tokens = torch.randn(1, 16, vision_cfg["hidden_size"], generator=torch.Generator().manual_seed(0))
    stages = [Stage("projector", projector, (tokens,), kind="projector", input_names=("image_tokens",),
                    output_names=("image_embeds",))] + _lm_stages(lm)
    meta = {
        "family": "vlm", "source": "huggingface", "model_type": "fast_vlm",
        "params": sum(p.numel() for p in vlm.parameters()),
        "not_supported": "vision tower (timm %s, %d tensors) not built: pass its output feature map, flattened to "
                         "[B, h*w, C], to the projector" % (vision_cfg.get("architecture", "?"), len(vision)),
        "config": {"text_config": text_cfg, "image_token_id": image_token},
    }
    return ModelBundle(ckpt.name, stages, {"vlm": vlm, "lm": lm, "projector": projector}, meta)


def load_edgevlm(ckpt: Path, cfg: dict) -> ModelBundle:
    from edgevlm.models.zoo import load_saved_model

    return load_saved_model(ckpt)


LOADERS = {"lfm2": load_lfm2, "lfm2_vl": load_lfm2_vl, "fast_vlm": load_fast_vlm, "edgevlm_vlm": load_edgevlm}


def from_pretrained(path) -> ModelBundle:
    """Load a local checkpoint directory: Hugging Face (by config.json's model_type) or edgevlm's own."""
    ckpt = checkpoint.checkpoint_dir(path)
    cfg = checkpoint.read_config(ckpt)
    checkpoint.weight_files(ckpt)  # refuse pickle-only directories before anything else
    model_type = "edgevlm_vlm" if "edgevlm_model" in cfg else cfg.get("model_type")
    if model_type not in LOADERS:
        raise CheckpointError(
            f"'{ckpt}/config.json' has model_type {model_type!r}, which edgevlm cannot load",
            f"supported model_type values: {', '.join(LOADERS)}",
        )
    return LOADERS[model_type](ckpt, cfg)
