"""Calibration data: images from a directory, and checked per-input samples.

Calibration samples are dicts {graph input name: np.ndarray}, one per run of
the float model.  ``as_samples`` turns the forms users give (a list of input
tuples, of dicts, or bare arrays) into that form and checks names, shapes and
values, so that problems surface as an InputError naming the input and the
sample, never as a NaN model later.
"""
from pathlib import Path

import numpy as np

from edgevlm.errors import InputError
from edgevlm.quant.observers import check_finite

# The most activation bytes of one sample that calibration holds at once (more take another pass).
CALIBRATION_CHUNK_BYTES = 2**30
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


def load_calibration_images(directory, size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                            limit: int | None = None) -> list[np.ndarray]:
    """Images of ``directory`` (sorted by name) as float32 arrays (1, 3, H, W).

    Each image is converted to RGB, resized to ``size`` (int or (H, W)),
    scaled to [0, 1] and normalized with per-channel ``mean`` and ``std``.
    Unreadable files are skipped; a directory without any readable image
    raises InputError listing what was found.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(directory)
    if not path.is_dir():
        raise InputError(f"calibration directory '{directory}' does not exist or is not a directory",
                         "give --calib a directory of images (png, jpg, ...)")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
    std = np.asarray(std, np.float32).reshape(3, 1, 1)
    if np.any(std == 0):
        raise InputError(f"normalization std {std.ravel().tolist()} has a zero", "use non-zero std values")
    files = sorted(p for p in path.iterdir() if p.is_file())
    images, skipped = [], []
    for f in files:
        if limit is not None and len(images) >= limit:
            break
        try:
            with Image.open(f) as im:
                rgb = im.convert("RGB").resize((w, h), Image.BILINEAR)
        except (UnidentifiedImageError, OSError, ValueError):
            skipped.append(f.name)
            continue
        x = np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0
        images.append(((x - mean) / std)[None].astype(np.float32))
    if not images:
        seen = ", ".join(f.name for f in files[:5]) + (" ..." if len(files) > 5 else "")
        raise InputError(
            f"calibration directory '{directory}' has no readable images "
            f"({len(files)} files{': ' + seen if files else ''})",
            f"put image files ({', '.join(IMAGE_SUFFIXES[:4])} ...) in it, or omit --calib to use the synthetic set",
        )
    return images


def as_samples(calibration, input_names, input_shapes=None) -> list[dict[str, np.ndarray]]:
    """Check calibration data and return it as a list of {input name: float32/int array}.

    ``calibration`` is an iterable whose items are dicts keyed by input name,
    tuples/lists ordered like ``input_names``, or (for one input) arrays.
    ``input_shapes`` (optional) holds each input's static shape; dims given
    as None or strings are not checked.
    """
    if calibration is None:
        raise InputError("no calibration data given", "pass an iterable of input samples")
    input_names = list(input_names)
    samples = []
    for i, item in enumerate(calibration):
        if isinstance(item, dict):
            sample = dict(item)
        elif isinstance(item, (tuple, list)):
            if len(item) != len(input_names):
                raise InputError(f"calibration sample {i} has {len(item)} inputs, the model takes "
                                 f"{len(input_names)} ({', '.join(input_names)})")
            sample = dict(zip(input_names, item))
        elif len(input_names) == 1:
            sample = {input_names[0]: item}
        else:
            raise InputError(f"calibration sample {i} is a {type(item).__name__}",
                             f"give a dict or tuple of {len(input_names)} inputs ({', '.join(input_names)})")
        missing = [n for n in input_names if n not in sample]
        extra = [n for n in sample if n not in input_names]
        if missing or extra:
            raise InputError(
                f"calibration sample {i}: inputs do not match the model "
                f"(missing: {', '.join(missing) or '-'}; unknown: {', '.join(extra) or '-'})",
                f"key samples by the model's inputs: {', '.join(input_names)}",
            )
        out = {}
        for j, name in enumerate(input_names):
            value = sample[name]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            arr = np.asarray(value)
            if arr.dtype.kind == "f":
                arr = arr.astype(np.float32, copy=False)
            check_finite(name, arr, f"in calibration sample {i}")
            if input_shapes is not None:
                want = input_shapes[j]
                if len(want) != arr.ndim or any(
                    isinstance(d, int) and d > 0 and d != s for d, s in zip(want, arr.shape)
                ):
                    raise InputError(f"calibration sample {i}: input '{name}' has shape {tuple(arr.shape)}, "
                                     f"the model expects {tuple(want)}")
            out[name] = arr
        samples.append(out)
    if not samples:
        raise InputError("calibration data is empty", "give at least one calibration sample")
    return samples


def graph_samples(model, calibration) -> list[dict[str, np.ndarray]]:
    """``as_samples`` for an ONNX model's graph inputs (initializers excluded), shapes from the graph."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    shapes = [[d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
              for i in inputs]
    return as_samples(calibration, [i.name for i in inputs], shapes)


def chunk_by_bytes(sizes: dict[str, int], budget: int) -> list[list[str]]:
    """The names of ``sizes`` ({tensor: bytes}, in order) in consecutive chunks of at most ``budget`` bytes
    (a single tensor larger than that is a chunk of its own)."""
    chunks, chunk, used = [], [], 0
    for name, size in sizes.items():
        if chunk and used + size > budget:
            chunks.append(chunk)
            chunk, used = [], 0
        chunk.append(name)
        used += size
    return chunks + [chunk] if chunk else chunks
