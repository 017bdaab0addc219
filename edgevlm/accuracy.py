"""The accuracy of a finished VLM build: a float reference vs the build's deployed path.

Two references, one per kind of model:

- a zoo model (trained on the shapes task): exact match on shapes samples,
  float PyTorch vs the build (:func:`shapes_accuracy`);
- an imported Hugging Face checkpoint (random or real weights, its own chat
  template): greedy agreement with transformers' model on the same checkpoint
  over a few images and prompts (:func:`checkpoint_agreement`).

Both run the build through :class:`edgevlm.runner.BuildRunner` (vision artifacts + the C
runtime), so this module sits above the runner.  The compiler never imports it: ``edgevlm.compile``
and ``edgevlm compile`` hand :func:`build_accuracy` to
``edgevlm.compiler.pipeline.compile(accuracy_check=...)``, which calls it on the finished
build before the report is written (``--eval-n 0`` skips it).
"""
import contextlib
import time
from pathlib import Path

import numpy as np

from edgevlm.errors import InputError

ACCURACY_SEED = 12345  # the shapes evaluation seed (training uses 0)
# An imported checkpoint: CHECKPOINT_PAIRS (image, prompt) pairs x TEACHER_STEPS steps; on the tiny
# checkpoints the whole step (loading transformers' model included) took 22 s on this 2-core VM under load 8.
# No new pair starts past CHECKPOINT_BUDGET_S, so a large checkpoint on slow vision artifacts stays bounded.
CHECKPOINT_PAIRS = 4
TEACHER_STEPS = 32
CHECKPOINT_BUDGET_S = 300.0


def build_accuracy(bundle, build_dir: Path, n: int, gguf_type: str, vision_backend: str | None = None) -> dict:
    """The build's accuracy for the report: :func:`checkpoint_agreement` (at most ``n`` pairs) for an
    imported checkpoint with its tokenizer, else :func:`shapes_accuracy` on ``n`` samples."""
    if "processing" in bundle.modules:
        return checkpoint_agreement(bundle.modules["checkpoint_dir"], build_dir, gguf_type, vision_backend,
                                    pairs=min(n, CHECKPOINT_PAIRS))
    return shapes_accuracy(bundle, build_dir, n, gguf_type, vision_backend)


def shapes_accuracy(bundle, build_dir: Path, n: int, gguf_type: str, vision_backend: str | None = None) -> dict:
    """Exact match on ``n`` shapes samples: the float PyTorch model vs the build's deployed path
    (``vision_backend``'s artifacts, default the runner's choice, + the C runtime)."""
    from edgevlm.data.evaluate import evaluate
    from edgevlm.models.arch.vlm import make_answerer
    from edgevlm.runner import BuildRunner

    vlm, tok = bundle.modules["vlm"], bundle.modules["tokenizer"]
    runner = BuildRunner(build_dir, threads=1, backend=vision_backend)
    built = evaluate(lambda im, p: runner.answer(im, p).text, n=n, seed=ACCURACY_SEED, image_size=vlm.image_size)
    ref = evaluate(make_answerer(vlm, tok), n=n, seed=ACCURACY_SEED, image_size=vlm.image_size)
    return {"dataset": "shapes", "n": n, "seed": ACCURACY_SEED, "float": ref["exact_match"], "quantized": built["exact_match"],
            "quantized_path": f"{runner.backend} vision artifacts + C runtime llm.gguf ({gguf_type})",
            "by_question": {"float": ref["by_question"], "quantized": built["by_question"]}}


# -- an imported checkpoint vs transformers ----------------------------------------------------------------------

@contextlib.contextmanager
def _transformers_quiet():
    """transformers' own progress bars and notices ("Loading weights", "`causal_conv1d_fn` is falling back to
    its reference PyTorch implementation") off while the reference loads and runs: in a compile log they are
    noise between edgevlm's progress lines.  Restored afterwards, for a caller using transformers too."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class TransformersReference:
    """transformers' processor + model (float32) of one checkpoint directory: the float reference."""

    def __init__(self, ckpt):
        import torch

        from edgevlm._compat import import_timm

        import_timm()  # transformers' image processors import torchvision
        import transformers

        self.version = transformers.__version__
        with _transformers_quiet():
            self.processor = transformers.AutoProcessor.from_pretrained(ckpt)
            self.model = transformers.AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()

    def inputs(self, image, prompt: str):
        conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        return self.processor(images=[image], text=text, return_tensors="pt")

    def generate(self, image, n: int, prompt: str) -> list[int]:
        """``n`` greedy new tokens (fewer when it ends with its eos)."""
        import torch

        inp = self.inputs(image, prompt)
        # transformers' hybrid cache asks an attention layer for the sequence length, and an LM of
        # conv layers only has none ("get_seq_length can only be called on Attention layers"): such
        # a model generates without the cache (each step re-runs the whole sequence; same tokens).
        layer_types = getattr(self.model.config.get_text_config(), "layer_types", None)
        no_attention = layer_types is not None and not any("attention" in t for t in layer_types)
        with torch.no_grad(), _transformers_quiet():
            out = self.model.generate(**inp, max_new_tokens=n, do_sample=False, **({"use_cache": False} if no_attention else {}))
        return out[0, inp["input_ids"].shape[1]:].tolist()

    def image_features(self, image, prompt: str = "") -> np.ndarray:
        import torch

        inp = self.inputs(image, prompt)
        extra = {k: inp[k] for k in ("spatial_shapes", "pixel_attention_mask") if k in inp}
        with torch.no_grad(), _transformers_quiet():
            feats = self.model.get_image_features(pixel_values=inp["pixel_values"], **extra)
        feats = getattr(feats, "pooler_output", feats)
        if isinstance(feats, (list, tuple)):
            feats = torch.cat([f.reshape(-1, f.shape[-1]) for f in feats])
        return feats.reshape(-1, feats.shape[-1]).float().numpy()


def accuracy_pairs(n: int) -> list:
    """The built-in (image, prompt) pairs: shapes pictures of ACCURACY_SEED (drawn here, not the
    calibration seed's) with the calibration set's general prompts in turn."""
    from edgevlm.data.calibration_set import BUILTIN_IMAGE_SIZE, DEFAULT_PROMPTS
    from edgevlm.data.shapes import make_sample

    return [(make_sample(ACCURACY_SEED, i, BUILTIN_IMAGE_SIZE).image.convert("RGB"), DEFAULT_PROMPTS[i % len(DEFAULT_PROMPTS)])
            for i in range(n)]


def teacher_forced(model, ids: list[int], image_embeds: np.ndarray, image_token_id: int, teacher: list[int]) -> list[bool]:
    """Per step: does the runtime ``model``'s argmax equal ``teacher``'s token, its tokens fed back?

    The steps before the first False are the ones a free greedy run of the model reproduces.
    """
    from edgevlm.compiler.runtime_bundle import prefill_vlm

    session = model.session(n_ctx=len(ids) + len(teacher) + 1)
    logits = prefill_vlm(session, ids, image_embeds, image_token_id)
    same = []
    for token in teacher:
        same.append(int(np.argmax(logits)) == token)
        logits = session.step(token)
    return same


def checkpoint_agreement(ckpt, build_dir: Path, gguf_type: str, vision_backend: str | None = None,
                         pairs: int = CHECKPOINT_PAIRS, steps: int = TEACHER_STEPS, budget_s: float = CHECKPOINT_BUDGET_S,
                         threads: int = 2) -> dict:
    """Greedy agreement of the build with transformers on checkpoint ``ckpt``, teacher-forced.

    Per built-in (image, prompt) pair (:func:`accuracy_pairs`; the image resized to the build's static
    square size first, so the build and transformers' processor see the same pixels): transformers'
    greedy tokens for ``steps`` new tokens are the teacher; the build's path (``vision_backend``'s
    encoder + projector artifacts, default the runner's choice, then the C runtime on the build's
    llm.gguf) prefills the same prompt and, at each step, its argmax is compared with the teacher's
    token, which is then fed.  ``agreement`` is over all steps; ``first_difference`` per pair is how
    many tokens a free greedy run of the build matches.  No pair starts after ``budget_s`` seconds
    (the first always runs); the report says how many ran.
    """
    from PIL import Image

    from edgevlm.runner import BuildRunner

    t0 = time.perf_counter()
    runner = BuildRunner(build_dir, threads=threads, backend=vision_backend)
    ref = TransformersReference(ckpt)
    size = runner.meta["image_size"]
    offered = accuracy_pairs(pairs)
    rows, unfit = [], []
    for i, (image, prompt) in enumerate(offered):
        if rows and time.perf_counter() - t0 > budget_s:
            break
        image = image.resize((size, size), Image.BICUBIC)
        try:
            ids = runner.prompt_ids(prompt)
        except InputError:  # a --max-context with no room for this prompt and an answer: the build is still fine
            unfit.append(i)
            continue
        teacher = ref.generate(image, min(steps, runner.meta["max_len"] - len(ids) - 1), prompt)
        same = teacher_forced(runner.model, ids, runner.image_embeds(image), runner.meta["image_token_id"], teacher)
        rows.append({"image": i, "prompt": prompt, "steps": len(same), "agreement": sum(same) / max(len(same), 1),
                     "first_difference": same.index(False) if False in same else None})
    total = sum(r["steps"] for r in rows)
    agreement = sum(r["agreement"] * r["steps"] for r in rows) / total if total else None
    unfit_note = (f"; {len(unfit)} prompts do not fit the build's context of {runner.meta['max_len']} with an answer"
                  if unfit else "")
    version = ref.version
    del ref
    return {"dataset": f"built-in: shapes images (seed {ACCURACY_SEED}) resized to {size} px, with general prompts",
            "metric": "teacher_forced_greedy_agreement", "agreement": agreement, "steps": total,
            "steps_per_pair": steps, "pairs": len(rows), "pairs_offered": len(offered), "budget_s": budget_s,
            "pairs_not_fitting_context": unfit,
            "first_token_agreement": sum(r["first_difference"] != 0 for r in rows) / len(rows) if rows else None,
            "reference": f"transformers {version} float32 model of the checkpoint, greedy",
            "quantized_path": f"{runner.backend} vision artifacts + C runtime llm.gguf ({gguf_type})",
            "by_pair": rows, "seconds": round(time.perf_counter() - t0, 1),
            "summary": (f"greedy agreement with transformers {'-' if agreement is None else f'{agreement:.3f}'}: {total} "
                        f"teacher-forced steps over {len(rows)} built-in image + prompt pairs (of {len(offered)}{unfit_note}); "
                        f"build path: {runner.backend} vision artifacts + C runtime llm.gguf ({gguf_type})")}
