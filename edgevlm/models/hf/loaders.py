"""Load local Hugging Face checkpoint directories (config.json + safetensors) into zoo modules.

Supported ``model_type`` values:

- ``lfm2``: Lfm2ForCausalLM -> :class:`~edgevlm.models.arch.lfm2.Lfm2ForCausalLM`
  (parameter names are identical; a tied ``lm_head.weight`` is dropped).
- ``lfm2_vl``: Lfm2VlForConditionalGeneration -> a VisionLanguageModel with
  its SigLIP2 vision tower (:mod:`edgevlm.models.arch.siglip2`), projector (pixel
  unshuffle + LayerNorm + MLP) and LFM2 language model.  transformers' tower
  is "NaFlex" (any patch grid, padded, position embeddings resized per
  image); here it runs at one static square size, the processor's
  ``tile_size`` from preprocessor_config.json when present, else the
  position table's native grid, with every patch valid.
- ``fast_vlm``: FastVlmForConditionalGeneration -> a VisionLanguageModel with
  its timm vision tower (FastViTHD ``fastvit_mci3`` in the released
  checkpoints, held under transformers' TimmWrapper; built by timm from the
  config's ``architecture`` and ``model_args``), projector (linear -> GELU ->
  linear) and Qwen2 language model (edgevlm.models.arch.qwen2, same explicit-state
  API).  The image side is the processor's crop size when
  preprocessor_config.json is present, else timm's default input size.

- ``edgevlm_vlm``: directories written by edgevlm's own ``save_model``.

Both VLMs give the four static-shape stages of zoo VLMs (encoder, projector,
llm-prefill, llm-decode; see vlm.vlm_stages), with ``image_size`` and
``image_tokens`` in the bundle's meta.  When the directory holds a
tokenizer.json, its tokenizer, chat template and image processing
(:mod:`edgevlm.models.hf.processing`) join the bundle, so the compiler writes
the C-runtime package (llm.gguf, tokenizer.json, chat_template.jinja,
vlm.json; compiler/runtime_bundle.py) and `edgevlm run` formats prompts as
the model's processor does.  The prompt is the rendered chat (template +
image run + the user's text): the prefill stage holds it with PROMPT_ROOM
tokens of text, and the context (``max_context``, the runtime's KV length)
defaults to that plus NEW_TOKENS tokens of answer.  Without a tokenizer.json
the stages are still built; the report says why no runtime bundle was.

Nothing is downloaded and pickle files are refused (see checkpoint.py).
"""
import math
from pathlib import Path

import torch

from edgevlm.core.stage import Stage
from edgevlm.errors import CheckpointError, InputError
from edgevlm.models import checkpoint
from edgevlm.models.arch.encoders.base import VisionEncoder
from edgevlm.models.arch.lfm2 import Lfm2Config, Lfm2ForCausalLM
from edgevlm.models.arch.projector import MLPProjector
from edgevlm.models.registry import ModelBundle
from edgevlm.models.arch.siglip2 import Siglip2VisionTower
from edgevlm.models.arch.vlm import VisionLanguageModel, llm_stages, vlm_stages

PREFILL_LEN = 16  # LM-only checkpoints and VLMs without a tokenizer: prompt room of the prefill stage
MAX_LEN = 64
PROMPT_ROOM = 64  # tokens of user text the prefill stage holds beside the chat template and the image
NEW_TOKENS = 256  # default answer room: --max-context defaults to the prefill length + this


def _lm_stages(lm: Lfm2ForCausalLM, prefill_len: int = PREFILL_LEN, max_len: int = MAX_LEN) -> list[Stage]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, lm.config.vocab_size, (1, prefill_len), generator=gen)
    state = lm.init_state(max_len)
    with torch.no_grad():
        embeds = lm.embed(ids)
        n_valid = torch.tensor([prefill_len])
        logits, after = lm.prefill(embeds=embeds, state=state, n_valid=n_valid, last_only=True)
    return llm_stages(lm, (embeds, n_valid, *state), (logits.argmax(-1).reshape(1, 1), *after))


def _take(state: dict, prefixes: tuple[str, ...], new_prefix: str) -> dict:
    """Tensors under any of ``prefixes``, renamed to ``new_prefix`` + rest (removed from ``state``)."""
    out = {}
    for key in list(state):
        for p in prefixes:
            if key.startswith(p):
                out[new_prefix + key[len(p):]] = state.pop(key)
                break
    return out


def _strip_prefix(state: dict, prefix: str) -> dict:
    """``state`` with ``prefix`` removed from the names that start with it."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _load_lm(lm: Lfm2ForCausalLM, state: dict, where: str) -> None:
    if lm.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    checkpoint.load_into(lm, state, where)


def load_lfm2(ckpt: Path, cfg: dict, max_context: int | None = None) -> ModelBundle:
    """An LFM2 causal LM checkpoint."""
    lm = Lfm2ForCausalLM(Lfm2Config.from_dict(cfg))
    _load_lm(lm, checkpoint.lazy_state_dict(ckpt), str(ckpt))
    lm.eval()
    meta = {"family": "llm", "source": "huggingface", "model_type": "lfm2", "params": sum(p.numel() for p in lm.parameters()),
            "config": lm.config.to_dict()}
    return ModelBundle(ckpt.name, _lm_stages(lm), {"lm": lm}, meta)


def _preprocessor(ckpt: Path) -> dict:
    """The checkpoint's preprocessor_config.json (image size, mean, std), or {} when it has none."""
    from edgevlm.models.checkpoint import read_json_object

    path = ckpt / "preprocessor_config.json"
    return read_json_object(path, "fix or remove preprocessor_config.json") if path.is_file() else {}


def _mean_std(pre: dict, default_mean, default_std) -> tuple[tuple, tuple]:
    mean, std = pre.get("image_mean", default_mean), pre.get("image_std", default_std)
    if pre.get("do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if isinstance(mean, (int, float)):
        mean = (mean,) * 3
    if isinstance(std, (int, float)):
        std = (std,) * 3
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _context(ckpt: Path, processing, num_image_tokens: int, max_context: int | None) -> tuple[int, int]:
    """(prefill length, context length) of an imported VLM; InputError when ``max_context`` cannot hold the image."""
    if processing is not None:
        overhead = len(processing.prompt_ids("", num_image_tokens))  # chat template + image run, no user text
        prefill_len = overhead + PROMPT_ROOM
        where = f"the chat template and the image's {num_image_tokens} tokens take {overhead}"
    else:
        overhead = 1 + num_image_tokens  # <bos> + image tokens
        prefill_len = overhead + PREFILL_LEN
        where = f"<bos> and the image's {num_image_tokens} tokens take {overhead}"
    if max_context is None:
        return prefill_len, prefill_len + (NEW_TOKENS if processing is not None else MAX_LEN - PREFILL_LEN)
    if type(max_context) is not int or max_context < overhead + 2:
        raise InputError(f"--max-context {max_context} does not fit {ckpt.name}: {where}, and a prompt and an answer need more",
                         f"use --max-context >= {overhead + 2} (default {prefill_len + NEW_TOKENS})")
    return min(prefill_len, max_context - 1), max_context


def _vlm_bundle(ckpt: Path, model_type: str, encoder, projector, lm, image_token: int, num_image_tokens: int,
                config: dict, image, max_context: int | None = None) -> ModelBundle:
    """encoder -> projector -> LM as a VisionLanguageModel and its four static-shape stages.

    ``image`` is the ImageProcessing read from the checkpoint's processor settings; the tokenizer and
    chat template join the bundle when the checkpoint has a tokenizer.json.
    """
    from edgevlm.models.hf.processing import read_processing

    processing = read_processing(ckpt, model_type, image)
    if processing is not None and processing.tokenizer.image_id != image_token:
        raise CheckpointError(f"'{ckpt}': the tokenizer's {processing.chat.image_token!r} is id {processing.tokenizer.image_id}, "
                              f"config.json's image token id is {image_token}", "use the tokenizer.json the checkpoint was saved with")
    if processing is not None and processing.tokenizer.vocab_size > lm.config.vocab_size:
        raise CheckpointError(f"'{ckpt}': tokenizer.json has {processing.tokenizer.vocab_size} tokens, the language model "
                              f"{lm.config.vocab_size}", "use the tokenizer.json the checkpoint was saved with")
    prefill_len, max_len = _context(ckpt, processing, num_image_tokens, max_context)
    vlm = VisionLanguageModel(encoder, projector, lm, image_token, encoder.image_size, num_image_tokens,
                              prefill_len=prefill_len, max_len=max_len, mean=image.mean, std=image.std).eval()

    def count(m):
        return sum(p.numel() for p in m.parameters())

    meta = {
        "family": "vlm", "source": "huggingface", "model_type": model_type, "params": count(vlm),
        "params_by_part": {"encoder": count(encoder), "projector": count(projector), "llm": count(lm)},
        "image_size": encoder.image_size, "image_tokens": num_image_tokens,
        "prefill_len": prefill_len, "max_context": max_len,
        "config": dict(config, image_token_id=image_token, image_size=encoder.image_size),
    }
    modules = {"vlm": vlm, "lm": lm, "projector": projector, "encoder": encoder}
    if processing is None:
        meta["runtime_bundle"] = {"cause": f"not written: checkpoint '{ckpt}' has no tokenizer.json",
                                  "fix": "copy the model's tokenizer.json, tokenizer_config.json and chat template next "
                                         "to its config.json and recompile"}
    else:
        # checkpoint_dir: edgevlm.accuracy compares the build with transformers' model of this directory
        modules.update(tokenizer=processing.tokenizer, processing=processing, checkpoint_dir=ckpt)
    return ModelBundle(ckpt.name, vlm_stages(vlm), modules, meta)


def load_lfm2_vl(ckpt: Path, cfg: dict, max_context: int | None = None) -> ModelBundle:
    """An LFM2-VL checkpoint: SigLIP2 vision tower (static square size) + projector + LFM2 language model.

    The image side is the processor's ``tile_size`` (preprocessor_config.json)
    when the directory has one, else the vision tower's native grid
    (sqrt(num_patches) * patch_size).
    """
    text_cfg, vision_cfg = cfg.get("text_config"), cfg.get("vision_config")
    if not isinstance(text_cfg, dict) or not isinstance(vision_cfg, dict) or "hidden_size" not in vision_cfg:
        raise CheckpointError(f"'{ckpt}/config.json' lacks text_config or vision_config.hidden_size", "use the checkpoint's original config.json")
    for part, sub, supported in (("vision tower", vision_cfg, "siglip2_vision_model"), ("text model", text_cfg, "lfm2")):
        if sub.get("model_type", supported) != supported:
            raise CheckpointError(f"LFM2-VL {part} '{sub.get('model_type')}' in '{ckpt}/config.json' is not supported",
                                  f"only {supported} {part}s are (SigLIP2 NaFlex towers, LFM2 language models)")
    text = Lfm2Config.from_dict(text_cfg)
    if "tie_word_embeddings" in cfg or "tie_embedding" in cfg:
        text.tie_word_embeddings = bool(cfg.get("tie_word_embeddings", cfg.get("tie_embedding")))
    lm = Lfm2ForCausalLM(text)
    factor = int(cfg.get("downsample_factor", 2))
    projector = MLPProjector(
        vision_cfg["hidden_size"], cfg.get("projector_hidden_size", 2560), text.hidden_size,
        act=cfg.get("projector_hidden_act", "gelu"), bias=cfg.get("projector_bias", True),
        downsample_factor=factor, layer_norm=cfg.get("projector_use_layernorm", True),
    )
    from edgevlm.models.hf.processing import image_processing

    pre = _preprocessor(ckpt)
    patch = int(vision_cfg.get("patch_size", 16))
    image_size = int(pre.get("tile_size", math.isqrt(int(vision_cfg.get("num_patches", 256))) * patch))
    if image_size % (patch * factor):
        raise CheckpointError(f"LFM2-VL image size {image_size} is not a multiple of patch_size x downsample_factor = {patch * factor}",
                              "set tile_size in preprocessor_config.json to such a multiple")
    image = image_processing("lfm2_vl", pre, image_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), f"{ckpt}/preprocessor_config.json")
    encoder = Siglip2VisionTower(vision_cfg, image_size, image.mean, image.std)
    vision, proj_state, lm_state = _split_vlm_state(ckpt, "LFM2-VL")
    vision = _strip_prefix(vision, "vision_model.")  # checkpoints saved before transformers 5 nest the tower there
    _take(vision, ("head.",), "")  # SigLIP2's attention-pooling head: LFM2-VL reads the patch tokens
    checkpoint.load_into(encoder, vision, f"{ckpt} (vision tower, under 'model.vision_tower.')")
    checkpoint.load_into(projector, proj_state, f"{ckpt} (multi_modal_projector)")
    _load_lm(lm, lm_state, f"{ckpt} (language_model)")
    image_token = int(cfg.get("image_token_id", 396))
    return _vlm_bundle(ckpt, "lfm2_vl", encoder, projector, lm, image_token, encoder.num_tokens // factor**2,
                       {"text_config": text.to_dict(), "vision_config": vision_cfg, "downsample_factor": factor},
                       image, max_context)


def _split_vlm_state(ckpt: Path, name: str):
    """(vision tower, projector, language model) tensors of a HF VLM checkpoint, LM keys renamed to
    the causal-LM layout; any tensor outside the three parts is a CheckpointError."""
    state = checkpoint.lazy_state_dict(ckpt)  # tensors read one at a time by load_into
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


def _side(value) -> int | None:
    """An image side from a processor's size/crop_size entry (int or dict)."""
    if isinstance(value, dict):
        value = value.get("height", value.get("shortest_edge"))
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _timm_tower(ckpt: Path, vision_cfg: dict, pre: dict) -> VisionEncoder:
    """FastVLM's vision tower: the timm model transformers' TimmWrapper holds, feature map -> tokens."""
    from edgevlm._compat import import_timm

    if vision_cfg.get("model_type", "timm_wrapper") != "timm_wrapper" or "architecture" not in vision_cfg:
        raise CheckpointError(f"FastVLM vision tower '{vision_cfg.get('model_type')}' in '{ckpt}/config.json' is not supported",
                              "only timm_wrapper towers (FastViTHD fastvit_mci3) are")
    args = dict(vision_cfg.get("model_args") or {})
    if args.get("features_only"):
        raise CheckpointError("FastVLM vision tower with features_only is not supported", "FastVLM reads forward_features")
    timm = import_timm()
    try:
        backbone = timm.create_model(vision_cfg["architecture"], pretrained=False, num_classes=0, **args)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"timm cannot build vision tower '{vision_cfg['architecture']}' with {args}: {exc}",
                              "use the checkpoint's original config.json (or a newer timm)") from None
    timm_cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    image_size = _side(pre.get("crop_size")) or _side(pre.get("size")) or int(timm_cfg.get("input_size", (3, 256, 256))[-1])
    encoder = VisionEncoder(backbone, backbone.num_features)
    encoder.encoder_name = vision_cfg["architecture"]
    encoder.image_size = image_size
    encoder.mean, encoder.std = _mean_std(pre, timm_cfg.get("mean", (0.0, 0.0, 0.0)), timm_cfg.get("std", (1.0, 1.0, 1.0)))
    with torch.no_grad():
        encoder.num_tokens = encoder.eval()(torch.zeros(1, 3, image_size, image_size)).shape[1]
    return encoder


def load_fast_vlm(ckpt: Path, cfg: dict, max_context: int | None = None) -> ModelBundle:
    """A FastVLM checkpoint: timm vision tower (FastViTHD) + projector + Qwen2 language model.

    The image side is the processor's crop size (preprocessor_config.json)
    when the directory has one, else timm's default input size.
    """
    from edgevlm.models.arch.qwen2 import Qwen2Config, Qwen2ForCausalLM

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
    from edgevlm.models.hf.processing import image_processing

    pre = _preprocessor(ckpt)
    encoder = _timm_tower(ckpt, vision_cfg, pre)
    image = image_processing("fast_vlm", pre, encoder.image_size, encoder.mean, encoder.std, f"{ckpt}/preprocessor_config.json")
    vision, proj_state, lm_state = _split_vlm_state(ckpt, "FastVLM")
    # timm's names, under 'timm_model.' (transformers 5) or directly under the tower (older checkpoints)
    vision = {"backbone." + k: v for k, v in _strip_prefix(vision, "timm_model.").items()}
    checkpoint.load_into(encoder, vision, f"{ckpt} (vision tower, 'model.vision_tower.timm_model.' read as 'backbone.')")
    checkpoint.load_into(projector, proj_state, f"{ckpt} (multi_modal_projector)")
    if text.tie_word_embeddings:
        lm_state.pop("lm_head.weight", None)
    checkpoint.load_into(lm, lm_state, f"{ckpt} (language_model)")
    image_token = int(cfg.get("image_token_index", cfg.get("image_token_id", 151646)))
    return _vlm_bundle(ckpt, "fast_vlm", encoder, projector, lm, image_token, encoder.num_tokens,
                       {"text_config": text_cfg, "vision_config": vision_cfg}, image, max_context)


def load_edgevlm(ckpt: Path, cfg: dict, max_context: int | None = None) -> ModelBundle:
    from edgevlm.models.zoo.vlms import load_saved_model

    return load_saved_model(ckpt)


LOADERS = {"lfm2": load_lfm2, "lfm2_vl": load_lfm2_vl, "fast_vlm": load_fast_vlm, "edgevlm_vlm": load_edgevlm}


def from_pretrained(path, max_context: int | None = None) -> ModelBundle:
    """Load a local checkpoint directory: Hugging Face (by config.json's model_type) or edgevlm's own.

    ``max_context`` is an imported VLM's context length (prompt + answer tokens; see _context).
    """
    ckpt = checkpoint.checkpoint_dir(path)
    cfg = checkpoint.read_config(ckpt)
    checkpoint.weight_files(ckpt)  # refuse pickle-only directories before anything else
    model_type = "edgevlm_vlm" if "edgevlm_model" in cfg else cfg.get("model_type")
    if model_type not in LOADERS:
        raise CheckpointError(
            f"'{ckpt}/config.json' has model_type {model_type!r}, which edgevlm cannot load",
            f"supported model_type values: {', '.join(LOADERS)}",
        )
    if max_context is not None and model_type not in ("lfm2_vl", "fast_vlm"):
        raise InputError(f"--max-context applies to Hugging Face VLM checkpoints; '{ckpt}' is {model_type}",
                         "drop --max-context")
    return LOADERS[model_type](ckpt, cfg, max_context)
