"""edgevlm's build of a Hugging Face VLM checkpoint vs transformers on the same checkpoint and image.

Three figures (issue 14 item 4), each against transformers' own processor and
model, the image at the build's static size:

- greedy: the ids `edgevlm run` generates (BuildRunner; F32 GGUF) for N new
  tokens == transformers' ``generate(do_sample=False)``;
- q8_0: the checkpoint's LM written as a Q8_0 GGUF, argmax agreement with
  transformers' greedy tokens over teacher-forced steps (its tokens fed back);
- vision: the build's float encoder + projector artifacts vs transformers'
  ``get_image_features``, max abs error;

and, as compile's accuracy step would report it for this build,
edgevlm.accuracy.checkpoint_agreement (build_accuracy).

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

from edgevlm.accuracy import TransformersReference, checkpoint_agreement, teacher_forced

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


def q8_teacher_forced(ckpt, runner, ref: Reference, image, steps: int, work: Path) -> dict:
    """Argmax agreement of a Q8_0 GGUF of the checkpoint's LM with transformers' greedy tokens, fed back."""
    from edgevlm.compiler.runtime_bundle import _export_gguf
    from edgevlm.models import from_pretrained
    from edgevlm.runtime import Model

    bundle = from_pretrained(ckpt)
    path = work / "q8_0.gguf"
    _export_gguf(path, bundle.modules["lm"], "q8_0", bundle.modules["tokenizer"].tokenizer, "q8_0")
    del bundle
    teacher = ref.generate(image, steps, PROMPT)
    same = teacher_forced(Model.load(path, threads=runner.threads), runner.prompt_ids(PROMPT), runner.image_embeds(image),
                          runner.meta["image_token_id"], teacher)
    path.unlink()
    return {"agreement": sum(same) / len(same), "steps": len(same)}


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
    ap.add_argument("--json", type=Path, help="also append the result line here")
    args = ap.parse_args(argv)
    from edgevlm.runner import BuildRunner

    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build = args.build or compile_float(args.checkpoint, args.out / "build")
    compile_s = time.perf_counter() - t0
    ref = Reference(args.checkpoint)
    runner = BuildRunner(build, threads=args.threads)
    image = test_image(runner.meta["image_size"])
    result = {"checkpoint": str(args.checkpoint), "build": str(build), "compile_s": round(compile_s, 1),
              "image_size": runner.meta["image_size"], "image_tokens": runner.meta["num_image_tokens"],
              "max_context": runner.meta["max_len"],
              "greedy": greedy_match(runner, ref, image, args.new_tokens),
              "q8_0": q8_teacher_forced(args.checkpoint, runner, ref, image, args.teacher_steps, args.out),
              "vision_max_abs_err": vision_error(runner, ref, [image, test_image(runner.meta["image_size"], seed=7)])}
    del ref, runner
    # what compile's accuracy step reports for this (float) build
    result["build_accuracy"] = checkpoint_agreement(args.checkpoint, build, "f32", threads=args.threads)
    line = json.dumps(result)
    print(line)
    if args.json:
        with open(args.json, "a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
