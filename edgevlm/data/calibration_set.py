"""Images with prompts that calibrate a VLM's stages: a directory (`edgevlm compile --calib DIR`) or a built-in set.

A directory holds images (png, jpg, ...); an image's prompt is the text of
the file beside it with the same stem and ``.txt`` (``cat.png`` +
``cat.txt``), else one of DEFAULT_PROMPTS in turn.  The built-in set is
BUILTIN_SAMPLES pictures of the shapes data set (edgevlm.data.shapes, its
calibration seed) with their questions: drawn here, nothing downloaded.
"""
from pathlib import Path

from edgevlm.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")
BUILTIN_SAMPLES = 8
BUILTIN_SEED = 999  # the shapes seed zoo models calibrate on (models/zoo/vlms.py CALIBRATION_SEED)
BUILTIN_IMAGE_SIZE = 256
DEFAULT_PROMPTS = ("Describe this image.", "What objects are in the picture, and where are they?",
                   "What colors do you see?", "Is there any text in the image? Read it.")


def calibration_pairs(directory=None, limit: int = 32) -> tuple[list, str]:
    """([(PIL image RGB, prompt)], where they came from) from ``directory``, or the built-in set when None."""
    if limit < 1:
        raise InputError(f"--calib-samples {limit} is not positive", "use at least 1 calibration sample")
    if directory is None:
        from edgevlm.data.shapes import make_sample

        pairs = [(s.image.convert("RGB"), s.prompt) for s in
                 (make_sample(BUILTIN_SEED, i, BUILTIN_IMAGE_SIZE) for i in range(min(limit, BUILTIN_SAMPLES)))]
        return pairs, f"built-in set: {len(pairs)} shapes images with their questions (no --calib given)"
    from PIL import Image, UnidentifiedImageError

    path = Path(directory)
    if not path.is_dir():
        raise InputError(f"calibration directory '{directory}' does not exist or is not a directory",
                         "give --calib a directory of images (png, jpg, ...), each with an optional same-name .txt prompt")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    pairs, unreadable, own = [], [], 0
    for f in files:
        if len(pairs) >= limit:
            break
        try:
            with Image.open(f) as im:
                image = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError):
            unreadable.append(f.name)
            continue
        text = f.with_suffix(".txt")
        prompt = text.read_text(errors="replace").strip() if text.is_file() else ""
        own += bool(prompt)
        pairs.append((image, prompt or DEFAULT_PROMPTS[len(pairs) % len(DEFAULT_PROMPTS)]))
    if not pairs:
        raise InputError(f"calibration directory '{directory}' has no readable images ({len(files)} image files"
                         f"{', unreadable: ' + ', '.join(unreadable[:5]) if unreadable else ''})",
                         f"put image files ({', '.join(IMAGE_SUFFIXES[:4])} ...) in it, or omit --calib for the built-in set")
    skipped = f", {len(unreadable)} unreadable skipped" if unreadable else ""
    return pairs, f"{len(pairs)} images from {directory} ({own} with their own .txt prompt{skipped})"
