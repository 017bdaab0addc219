"""The "shapes" data set: colored shapes at positions, with questions and answers.

Each sample is one small RGB image holding one or two shapes (distinct kinds,
distinct cells of a 3x3 grid) and one question about it with a short answer:

    what color is the circle?     -> red
    where is the square?          -> top left
    what shape is at the center?  -> triangle
    how many shapes are there?    -> two
    describe the image.           -> a red circle at the top left and a blue square at the bottom

Sample ``i`` of seed ``s`` depends only on (s, i), so the same seed always
gives the same samples, whatever ``n`` is.  Rendering uses PIL only.
"""
import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from edgevlm.errors import InputError

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (160, 60, 210),
    "orange": (245, 135, 25),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
COUNTS = ("one", "two")
QUESTION_KINDS = ("color", "where", "shape", "count", "describe")
BACKGROUND = (24, 24, 28)
DEFAULT_IMAGE_SIZE = 64

# Every word a prompt or answer can use; the tokenizer's vocabulary.
VOCABULARY = sorted(
    set(" ".join(COLORS).split() + list(SHAPES) + " ".join(POSITIONS).split() + list(COUNTS))
    | set("what color is the where shape at how many shapes are there describe image a and ? .".split())
)


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    prompt: str
    answer: str
    objects: tuple  # ((color, shape, position), ...) in grid order


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    else:  # cross
        w = r * 0.35
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)


def _describe(objects) -> str:
    return " and ".join(f"a {c} {s} at the {p}" for c, s, p in objects)


def question_answer(kind: str, target: tuple, objects) -> tuple[str, str]:
    """(prompt, answer) of question ``kind`` about ``target`` (color, shape, position) in ``objects``."""
    color, shape, position = target
    if kind == "color":
        return f"what color is the {shape}?", color
    if kind == "where":
        return f"where is the {shape}?", position
    if kind == "shape":
        return f"what shape is at the {position}?", shape
    if kind == "count":
        return "how many shapes are there?", COUNTS[len(objects) - 1]
    return "describe the image.", _describe(objects)


def all_questions(objects) -> list[tuple[str, str]]:
    """Every distinct (prompt, answer) pair an image with ``objects`` can be asked (for training)."""
    pairs = [question_answer(k, t, objects) for k in ("color", "where", "shape") for t in objects]
    return pairs + [question_answer("count", objects[0], objects), question_answer("describe", objects[0], objects)]


def make_sample(seed: int, index: int, image_size: int = DEFAULT_IMAGE_SIZE) -> Sample:
    """Sample ``index`` of the data set with ``seed`` (deterministic)."""
    rng = random.Random(f"shapes:{seed}:{index}")
    count = rng.choice((1, 2))
    kinds = rng.sample(SHAPES, count)
    cells = sorted(rng.sample(range(len(POSITIONS)), count))
    colors = [rng.choice(list(COLORS)) for _ in range(count)]
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell = image_size / 3
    objects = []
    for kind, c, color in zip(kinds, cells, colors):
        row, col = divmod(c, 3)
        jitter = cell * 0.12
        cx = (col + 0.5) * cell + rng.uniform(-jitter, jitter)
        cy = (row + 0.5) * cell + rng.uniform(-jitter, jitter)
        _draw(draw, kind, cx, cy, cell * rng.uniform(0.3, 0.4), COLORS[color])
        objects.append((color, kind, POSITIONS[c]))
    prompt, answer = question_answer(rng.choice(QUESTION_KINDS), rng.choice(objects), objects)
    return Sample(image, prompt, answer, tuple(objects))


def samples(n: int, seed: int, image_size: int = DEFAULT_IMAGE_SIZE):
    """Yield samples 0..n-1 of ``seed``."""
    _check(n, image_size)
    for i in range(n):
        yield make_sample(seed, i, image_size)


def _check(n: int, image_size: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise InputError(f"--n must be a positive integer, got {n!r}", "pass e.g. --n 500")
    if not isinstance(image_size, int) or not 24 <= image_size <= 1024:
        raise InputError(f"image size must be 24..1024 pixels, got {image_size!r}", "pass e.g. --image-size 64")


def write_dataset(out_dir, n: int, seed: int, image_size: int = DEFAULT_IMAGE_SIZE) -> Path:
    """Write ``n`` samples as PNGs plus labels.jsonl (keys image, prompt, answer) into ``out_dir``.

    Files are written to a temporary directory first and moved into place, so
    an interrupted run never leaves a half-written data set.
    """
    _check(n, image_size)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"output '{out}' exists and is not an empty directory", "choose a new --out directory or remove it")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    width = len(str(n - 1))
    with open(tmp / "labels.jsonl", "w") as labels:
        for i, s in enumerate(samples(n, seed, image_size)):
            name = f"{i:0{width}d}.png"
            s.image.save(tmp / name, format="PNG", optimize=False)
            labels.write(json.dumps({"image": name, "prompt": s.prompt, "answer": s.answer}) + "\n")
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
