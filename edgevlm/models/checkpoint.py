"""Checkpoint directories: safetensors only, every failure a CheckpointError.

A checkpoint is a local directory holding ``config.json`` and one or more
``*.safetensors`` files.  Pickle-based files (.bin, .pt, .pth, .ckpt, .pkl)
are refused: loading them can run arbitrary code.  Nothing is downloaded.
"""
import json
from pathlib import Path

import torch

from edgevlm.errors import CheckpointError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def checkpoint_dir(path) -> Path:
    """Validate that ``path`` is an existing local directory."""
    p = Path(path).expanduser()
    if not p.exists():
        hint = (
            "edgevlm never downloads weights; download the checkpoint elsewhere and pass its local directory"
            if "/" in str(path) and not str(path).startswith((".", "/", "~"))
            else "pass an existing directory containing config.json and *.safetensors"
        )
        raise CheckpointError(f"checkpoint '{path}' does not exist", hint)
    if not p.is_dir():
        raise CheckpointError(f"checkpoint '{path}' is not a directory", "pass the directory holding config.json and *.safetensors")
    return p


def read_json_object(path: Path, fix: str) -> dict:
    """A JSON object from ``path``; CheckpointError (with ``fix``) if it is unreadable or not an object."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read '{path}': {exc}", fix) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"'{path}' is not a JSON object", fix)
    return obj


def read_config(ckpt: Path) -> dict:
    """Parse ``config.json`` of a checkpoint directory."""
    cfg_path = ckpt / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"no config.json in '{ckpt}'", "a checkpoint directory needs config.json next to its *.safetensors")
    return read_json_object(cfg_path, "fix or re-export config.json")


def weight_files(ckpt: Path) -> list[Path]:
    """The ``*.safetensors`` files of a checkpoint; refuses pickle-only checkpoints."""
    files = sorted(ckpt.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(f.name for f in ckpt.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            f"refusing pickle weights in '{ckpt}' ({', '.join(pickles)}): pickle can run arbitrary code",
            "convert them to safetensors (safetensors.torch.save_file) and retry",
        )
    raise CheckpointError(f"no *.safetensors weights in '{ckpt}'", "put the model's safetensors files next to config.json")


def _merged(ckpt: Path, read) -> dict:
    """``read(file)`` of every safetensors file of a checkpoint, merged by tensor name; an unreadable file or a
    tensor in two files is a CheckpointError."""
    from safetensors import SafetensorError

    state: dict = {}
    for f in weight_files(ckpt):
        try:
            part = read(f)
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read weights '{f}': {exc}", "the file is truncated or not safetensors; re-export it") from None
        dup = state.keys() & part.keys()
        if dup:
            raise CheckpointError(f"tensor '{sorted(dup)[0]}' appears in more than one file of '{ckpt}'", "remove the duplicate shard")
        state.update(part)
    return state


def load_state_dict(ckpt: Path) -> dict[str, torch.Tensor]:
    """Load and merge every safetensors file of a checkpoint (header and offsets validated by safetensors)."""
    from safetensors.torch import load_file

    return _merged(ckpt, lambda f: load_file(str(f)))


class LazyTensor:
    """One tensor of a safetensors file, read only when :meth:`load` is called (its shape from the header).

    A published-size checkpoint read whole (load_state_dict) sits in memory beside the module it is
    copied into: LFM2-VL-1.6B's 6.3 GB of float32 weights twice.  load_into copies lazy tensors one at a
    time, so the load holds the module plus one tensor.
    """

    __slots__ = ("path", "name", "shape")

    def __init__(self, path: Path, name: str, shape):
        self.path, self.name, self.shape = path, name, tuple(shape)

    def load(self) -> torch.Tensor:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                return f.get_tensor(self.name)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read tensor '{self.name}' of '{self.path}': {exc}",
                                  "the file is truncated or not safetensors; re-export it") from None


def lazy_state_dict(ckpt: Path) -> dict[str, "LazyTensor"]:
    """Every tensor of a checkpoint's safetensors files, by name, as a LazyTensor (headers read and validated
    now by safetensors, data when load_into copies it)."""
    from safetensors import safe_open

    def read(f: Path) -> dict[str, LazyTensor]:
        with safe_open(str(f), framework="pt") as handle:
            return {name: LazyTensor(f, name, handle.get_slice(name).get_shape()) for name in handle.keys()}

    return _merged(ckpt, read)


def load_into(module: torch.nn.Module, state: dict, where: str) -> None:
    """Copy ``state`` (tensors, or LazyTensors read and copied one at a time) into ``module``, naming the
    first missing, unexpected or mis-shaped tensor."""
    own = module.state_dict()
    for name, tensor in state.items():
        if name not in own:
            raise CheckpointError(f"unexpected tensor '{name}' in {where}", "the checkpoint is for a different model or size")
        if tuple(own[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"tensor '{name}' has shape {tuple(tensor.shape)} in {where}, the model expects {tuple(own[name].shape)}",
                "the checkpoint's config.json does not match its weights",
            )
    missing = [n for n in own if n not in state]
    if missing:
        raise CheckpointError(f"tensor '{missing[0]}' missing from {where} ({len(missing)} missing)", "the checkpoint is incomplete")
    if not any(isinstance(t, LazyTensor) for t in state.values()):
        module.load_state_dict(state, strict=True)
        return
    # own's tensors share storage with the module's parameters and buffers: copy_ writes them (as
    # load_state_dict does, converting the dtype), and each checkpoint tensor is freed before the next is read.
    with torch.no_grad():
        for name, value in state.items():
            own[name].copy_(value.load() if isinstance(value, LazyTensor) else value)
