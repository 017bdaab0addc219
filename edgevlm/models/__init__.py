"""Models: build a named model or load a checkpoint directory, as a ``ModelBundle`` of stages.

    arch/      the architectures (nn.Modules, the VLM's stages, token reduction); no names, no weights
    zoo/       the named models: each module defines ``MODELS``; weights/ holds the shipped weights
    hf/        Hugging Face checkpoint import (LFM2, LFM2-VL, FastVLM) with their processing
    train.py   trains a zoo VLM on the shapes data set (``python -m edgevlm.models.train``)
    registry.py, checkpoint.py, tokenizer.py: what they share (bundle and entry, safetensors reading,
               the zoo's tokenizer)

Discovery imports the modules of zoo/ only: they are the ones that register.
"""
import importlib
import pkgutil
from pathlib import Path

from edgevlm.errors import CheckpointError, UnknownNameError
from edgevlm.models import zoo
from edgevlm.models.registry import ModelBundle, ModelEntry

DEFAULT_MODEL = "autoneural-nano"

_ENTRIES: dict[str, ModelEntry] | None = None


def _discover() -> dict[str, ModelEntry]:
    global _ENTRIES
    if _ENTRIES is None:
        found: dict[str, ModelEntry] = {}
        for info in pkgutil.iter_modules(zoo.__path__):
            for entry in importlib.import_module(f"{zoo.__name__}.{info.name}").MODELS:
                found[entry.name] = entry
        _ENTRIES = found
    return _ENTRIES


def list_models() -> list[ModelEntry]:
    """All named models."""
    return list(_discover().values())


def build_model(name_or_dir: str | None = None, max_context: int | None = None) -> ModelBundle:
    """Build a named model, or load a checkpoint directory saved by edgevlm.

    A directory's config.json names the zoo model in ``"edgevlm_model"``; its
    safetensors weights are loaded into it.  ``max_context`` sets a Hugging
    Face VLM checkpoint's context length (zoo models keep the one they were
    trained with).
    """
    from edgevlm.errors import InputError
    from edgevlm.models import checkpoint

    name = name_or_dir or DEFAULT_MODEL
    entries = _discover()
    if max_context is not None and (name in entries or (Path(name).expanduser().is_dir()
                                                        and "model_type" not in _config_if_dir(name))):
        raise InputError(f"--max-context applies to Hugging Face VLM checkpoints, not to '{name}'",
                         "drop --max-context (zoo models keep the context they were trained with)")
    if name in entries:
        return entries[name].build()
    if Path(name).expanduser().exists() or "/" in name or name.startswith("."):
        ckpt = checkpoint.checkpoint_dir(name)
        cfg = checkpoint.read_config(ckpt)
        if "model_type" in cfg:
            return from_pretrained(ckpt, max_context)
        zoo_name = cfg.get("edgevlm_model")
        if zoo_name not in entries:
            raise CheckpointError(
                f"'{ckpt}/config.json' names no known edgevlm model (edgevlm_model={zoo_name!r})",
                f"set \"edgevlm_model\" to one of: {', '.join(entries)}",
            )
        checkpoint.weight_files(ckpt)  # refuse pickle before building anything
        return entries[zoo_name].build(weights_dir=ckpt)
    raise UnknownNameError(f"unknown model '{name}'", f"use one of: {', '.join(entries)} (see `edgevlm models`), or a checkpoint directory")


def _config_if_dir(name: str) -> dict:
    """config.json of directory ``name`` when it is one with a readable config, else {}."""
    import json

    try:
        cfg = json.loads((Path(name).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def from_pretrained(path, max_context: int | None = None) -> ModelBundle:
    """Load a local checkpoint directory (Hugging Face LFM2 / LFM2-VL / FastVLM, or a saved zoo model); see hf.loaders."""
    from edgevlm.models.hf.loaders import from_pretrained as _load

    return _load(path, max_context)


__all__ = ["DEFAULT_MODEL", "ModelBundle", "ModelEntry", "build_model", "from_pretrained", "list_models"]
