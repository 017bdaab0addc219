"""The shapes accuracy of a finished VLM build: float PyTorch vs the build's deployed path.

It runs the build through :class:`edgevlm.runner.BuildRunner` (vision artifacts + the C
runtime), so it sits above the runner.  The compiler never imports it: ``edgevlm.compile``
and ``edgevlm compile`` hand :func:`build_accuracy` to
``edgevlm.compiler.pipeline.compile(accuracy_check=...)``, which calls it on the finished
build before the report is written.
"""
from pathlib import Path

ACCURACY_SEED = 12345  # the shapes evaluation seed (training uses 0)


def build_accuracy(bundle, build_dir: Path, n: int, gguf_type: str, vision_backend: str | None = None) -> dict:
    """Exact match on ``n`` shapes samples: the float PyTorch model vs the build's deployed path
    (``vision_backend``'s artifacts, default the runner's choice, + the C runtime)."""
    from edgevlm.data.evaluate import evaluate
    from edgevlm.models.vlm import make_answerer
    from edgevlm.runner import BuildRunner

    vlm, tok = bundle.modules["vlm"], bundle.modules["tokenizer"]
    runner = BuildRunner(build_dir, threads=1, backend=vision_backend)
    built = evaluate(lambda im, p: runner.answer(im, p).text, n=n, seed=ACCURACY_SEED, image_size=vlm.image_size)
    ref = evaluate(make_answerer(vlm, tok), n=n, seed=ACCURACY_SEED, image_size=vlm.image_size)
    return {"dataset": "shapes", "n": n, "seed": ACCURACY_SEED, "float": ref["exact_match"], "quantized": built["exact_match"],
            "quantized_path": f"{runner.backend} vision artifacts + C runtime llm.gguf ({gguf_type})",
            "by_question": {"float": ref["by_question"], "quantized": built["by_question"]}}
