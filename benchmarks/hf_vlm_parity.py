"""edgevlm's build of a Hugging Face VLM checkpoint vs transformers on the same checkpoint and image.

Three figures (issue 14 item 4), each against transformers' own processor and
model, the image at the build's static size:

- greedy: the ids `edgevlm run` generates (BuildRunner; F32 GGUF) for N new
  tokens == transformers' ``generate(do_sample=False)``;
- q8_0: the checkpoint's LM written as a Q8_0 GGUF, argmax agreement with
  transformers' greedy tokens over teacher-forced steps (its tokens fed back);
- vision: the build's float encoder + projector artifacts vs transformers'
  ``get_image_features``, max abs error;

a control for q8_0 (q8_0_weights_control): transformers' model with its LM's
matrices rounded through gguf's Q8_0, float activations, teacher-forced on
the same tokens (the weight rounding's share of the loss; ``float`` is that
forward unrounded); and, as compile's accuracy step would report it for this build,
edgevlm.accuracy.checkpoint_agreement (build_accuracy; --agreement-pairs 0 skips it).

    flock /tmp/edgevlm-bigmem.lock python benchmarks/hf_vlm_parity.py /work/ckpt/lfm2-vl-450m --out /tmp/b450

The build is ``edgevlm compile --model CKPT --target cpu-x86_64 --backends
onnx --quant float`` (made when --build is not given).  Writes one JSON line
to stdout (and to --json when given).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgevlm.accuracy import CHECKPOINT_PAIRS, TransformersReference, checkpoint_agreement, teacher_forced

PROMPT = "What is in this image?"


def test_image(side: int, seed: int = 0):
    """A seeded noise image at ``side`` x ``side`` pixels."""
    from PIL import Image

    return Image.fromarray((np.random.RandomState(seed).rand(side, side, 3) * 255).astype("uint8"))


# transformers' processor + model of the checkpoint: the same reference compile's accuracy step uses
Reference = TransformersReference


def compile_float(ckpt, out) -> Path:
    """`edgevlm compile --model CKPT --target cpu-x86_64 --backends onnx --quant float` (no shapes accuracy)."""
    from edgevlm.compiler.pipeline import compile as compile_model

    return Path(compile_model(str(ckpt), target="cpu-x86_64", backends=["onnx"], quant="float", out=out, eval_n=0).build_dir)


def without_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def greedy_match(runner, ref: Reference, image, n: int) -> dict:
    want = without_eos(ref.generate(image, n, PROMPT), runner.meta["eos_id"])
    got = runner.answer(image, PROMPT, max_new_tokens=n).tokens
    first_diff = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    return {"equal": got == want, "tokens": len(want), "distinct": len(set(want)), "first_difference": first_diff,
            "want": want, "got": got}


def write_q8_gguf(ckpt, path: Path) -> Path:
    """The checkpoint's LM as a Q8_0 GGUF at ``path`` (edgevlm's import of the whole checkpoint, freed after)."""
    from edgevlm.compiler.runtime_bundle import _export_gguf
    from edgevlm.models import from_pretrained

    bundle = from_pretrained(ckpt)
    _export_gguf(path, bundle.modules["lm"], "q8_0", bundle.modules["tokenizer"].tokenizer, "q8_0")
    return path


def q8_teacher_forced(ckpt, runner, ref: Reference, image, steps: int, work: Path, gguf: Path | None = None) -> dict:
    """Argmax agreement of a Q8_0 GGUF of the checkpoint's LM (``gguf``, written into ``work`` when not given)
    with transformers' greedy tokens, fed back."""
    from edgevlm.runtime import Model

    path = gguf or write_q8_gguf(ckpt, work / "q8_0.gguf")
    teacher = ref.generate(image, steps, PROMPT)
    same = teacher_forced(Model.load(path, threads=runner.threads), runner.prompt_ids(PROMPT), runner.image_embeds(image),
                          runner.meta["image_token_id"], teacher)
    path.unlink()
    return {"agreement": sum(same) / len(same), "steps": len(same), "teacher": teacher}


def _forced_agreement(ref: Reference, image, teacher: list[int]) -> float:
    """transformers' model teacher-forced in one forward over prompt + teacher: argmax == teacher, per step."""
    import torch

    inp = ref.inputs(image, PROMPT)
    n = inp["input_ids"].shape[1]
    ids = torch.cat([inp["input_ids"], torch.tensor([teacher[:-1]], dtype=inp["input_ids"].dtype)], 1)
    extra = {k: v for k, v in inp.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = ref.model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits
    return float((logits[0, n - 1:n - 1 + len(teacher)].argmax(-1) == torch.tensor(teacher)).float().mean())


def q8_weights_control(ref: Reference, image, teacher: list[int]) -> dict:
    """How much of the Q8_0 loss is the weight rounding alone: transformers' model with every LM matrix (the
    embeddings / head included, as the GGUF has them) rounded through gguf's own Q8_0 quantize + dequantize,
    activations float, teacher-forced on ``teacher``.  ``float`` is the same forward unrounded (the method's
    floor: 1.0 unless generate()'s cached decode and one full forward round differently).  Rounds ``ref``'s
    weights in place: call it last."""
    import torch
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    float_agreement = _forced_agreement(ref, image, teacher)
    lm = ref.model.model.language_model
    seen = set()
    with torch.no_grad():
        for p in [*lm.parameters(), *ref.model.get_output_embeddings().parameters()]:
            if p.dim() == 2 and id(p) not in seen:
                seen.add(id(p))
                q = quantize(p.numpy(), GGMLQuantizationType.Q8_0)
                p.copy_(torch.from_numpy(dequantize(q, GGMLQuantizationType.Q8_0)).reshape(p.shape))
    return {"float": float_agreement, "q8_0_weights": _forced_agreement(ref, image, teacher), "matrices": len(seen),
            "steps": len(teacher)}


def vision_error(runner, ref: Reference, images) -> float:
    return max(float(np.abs(runner.image_embeds(im) - ref.image_features(im, PROMPT)).max()) for im in images)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="work directory (the build goes to OUT/build)")
    ap.add_argument("--build", type=Path, help="an existing float build of the checkpoint")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--teacher-steps", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--agreement-pairs", type=int, default=CHECKPOINT_PAIRS,
                    help="image + prompt pairs for build_accuracy (0: skip it; default %(default)s)")
    ap.add_argument("--json", type=Path, help="also append the result line here")
    ap.add_argument("--control-only", type=int, metavar="IMAGE_SIZE",
                    help="no build: only q8_0_weights_control, on the test image at IMAGE_SIZE px (the build's "
                         "static size, e.g. 512 for LFM2-VL-450M)")
    args = ap.parse_args(argv)
    from edgevlm.runner import BuildRunner

    args.out.mkdir(parents=True, exist_ok=True)
    if args.control_only:
        return _emit({"checkpoint": str(args.checkpoint), "image_size": args.control_only,
                      "q8_0_weights_control": control_only(args.checkpoint, args.control_only, args.teacher_steps)},
                     args.json)
    t0 = time.perf_counter()
    build = args.build or compile_float(args.checkpoint, args.out / "build")
    compile_s = time.perf_counter() - t0
    # before transformers' model and the build are loaded: edgevlm's import of the checkpoint is a third copy of
    # its weights (at FastVLM-0.5B, 2.5 GB)
    q8_path = write_q8_gguf(args.checkpoint, args.out / "q8_0.gguf")
    ref = Reference(args.checkpoint)
    runner = BuildRunner(build, threads=args.threads)
    image = test_image(runner.meta["image_size"])
    result = {"checkpoint": str(args.checkpoint), "build": str(build), "compile_s": round(compile_s, 1),
              "image_size": runner.meta["image_size"], "image_tokens": runner.meta["num_image_tokens"],
              "max_context": runner.meta["max_len"],
              "greedy": greedy_match(runner, ref, image, args.new_tokens),
              "q8_0": q8_teacher_forced(args.checkpoint, runner, ref, image, args.teacher_steps, args.out, q8_path),
              "vision_max_abs_err": vision_error(runner, ref, [image, test_image(runner.meta["image_size"], seed=7)])}
    result["q8_0_weights_control"] = q8_weights_control(ref, image, result["q8_0"]["teacher"])
    del ref, runner
    if args.agreement_pairs > 0:  # what compile's accuracy step reports for this (float) build
        result["build_accuracy"] = checkpoint_agreement(args.checkpoint, build, "f32", pairs=args.agreement_pairs,
                                                        threads=args.threads)
    return _emit(result, args.json)


def control_only(ckpt, image_size: int, steps: int) -> dict:
    """q8_0_weights_control without a build: transformers' greedy tokens on the test image are the teacher."""
    ref = Reference(ckpt)
    image = test_image(image_size)
    teacher = ref.generate(image, steps, PROMPT)
    return {**q8_weights_control(ref, image, teacher), "distinct": len(set(teacher))}


def _emit(result: dict, json_path: Path | None) -> int:
    line = json.dumps(result)
    print(line)
    if json_path:
        with open(json_path, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
