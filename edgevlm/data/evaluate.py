"""Exact-match evaluation with a pluggable generation backend.

A backend is any function ``answer(image: PIL.Image, prompt: str) -> str``:
the float model in PyTorch (edgevlm.models.arch.vlm.make_answerer), or a compiled
build run through onnxruntime / the C runtime.  The score is the fraction of
samples whose answer equals the reference after lower-casing and collapsing
whitespace.
"""
from collections import Counter

from edgevlm.data import shapes
from edgevlm.errors import InputError

DATASETS = ("shapes",)


def normalize(text: str) -> str:
    return " ".join(text.lower().split())


def evaluate(answer, dataset: str = "shapes", n: int = 500, seed: int = 12345,
             image_size: int = shapes.DEFAULT_IMAGE_SIZE, keep_examples: int = 5) -> dict:
    """Run ``answer`` on ``n`` samples; returns exact_match (0..1), per-question-kind accuracy and a few misses."""
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset '{dataset}'", f"use one of: {', '.join(DATASETS)}")
    right, total, kind_right, kind_total, misses = 0, 0, Counter(), Counter(), []
    for s in shapes.samples(n, seed, image_size):
        got = answer(s.image, s.prompt)
        kind = s.prompt.split()[0] if not s.prompt.startswith("what") else " ".join(s.prompt.split()[:2])
        ok = normalize(got) == normalize(s.answer)
        right += ok
        total += 1
        kind_right[kind] += ok
        kind_total[kind] += 1
        if not ok and len(misses) < keep_examples:
            misses.append({"prompt": s.prompt, "answer": s.answer, "got": got})
    return {
        "dataset": dataset,
        "n": total,
        "seed": seed,
        "exact_match": right / total,
        "by_question": {k: kind_right[k] / kind_total[k] for k in sorted(kind_total)},
        "misses": misses,
    }
