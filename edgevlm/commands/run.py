"""`edgevlm run BUILD --image IMG --prompt TEXT`: answer with a compiled VLM build on this machine.

Vision (encoder + projector) runs from the build's compiled artifacts, the
language model in the C runtime from the build's GGUF; the answer streams
to stdout word by word, timings go to stderr.  ``--json`` prints one object
instead: the answer, its token ids and the timings (ms, tokens/s).
"""
import json
import sys
import time

from edgevlm.runner import RUNNABLE_BACKENDS

NAME = "run"
HELP = "run a compiled VLM build on an image and a prompt (vision artifacts + C runtime), streaming the answer"
ORDER = 5


def add_arguments(parser):
    parser.add_argument("build", help="build directory written by `edgevlm compile`")
    parser.add_argument("--image", required=True, help="image file (any format PIL opens; resized as the model expects)")
    parser.add_argument("--prompt", required=True, help="question or instruction, e.g. \"describe the image.\"")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="generate at most this many tokens (default 24)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--backend", default=None, choices=list(RUNNABLE_BACKENDS),
                        help="which vision artifacts to run (default: onnx when the build has it; qnn: the QNN context binaries on the HTP simulation)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all; default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (1 = off; default)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--quiet", action="store_true", help="print only the answer, no timings")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (answer, token ids, timings) instead of streaming text")


def run(args) -> int:
    from edgevlm.runner import BuildRunner, open_image
    from edgevlm.runtime import Sampler

    sampler = Sampler(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    runner = BuildRunner(args.build, threads=args.threads, backend=args.backend)
    t0 = time.perf_counter()
    image = open_image(args.image)
    timings: dict = {"image_read_ms": (time.perf_counter() - t0) * 1e3}
    if args.json:
        ids: list[int] = []
        words = runner.stream(image, args.prompt, args.max_new_tokens, sampler, timings, token_ids=ids)
        answer = runner.separator.join(w for w in words if w)  # the text the streaming run prints
        print(json.dumps({"answer": answer, "token_ids": ids, "backend": runner.backend, "threads": args.threads,
                          "timings": timings}))
        return 0
    first = True
    for word in runner.stream(image, args.prompt, args.max_new_tokens, sampler, timings):
        if word:
            sys.stdout.write(("" if first else runner.separator) + word)
            sys.stdout.flush()
            first = False
    sys.stdout.write("\n")
    if not args.quiet:
        t = timings
        rate = f"{t['decode_tokens_per_s']:.0f} tokens/s" if t.get("decode_tokens_per_s") else "-"
        print(f"[{runner.backend} vision: encoder {t['encoder_ms']:.1f} ms, projector {t['projector_ms']:.1f} ms; "
              f"C runtime: prefill {t['prompt_tokens']} tokens {t['prefill_ms']:.1f} ms, time to first token "
              f"{t['ttft_ms']:.1f} ms, {t['new_tokens']} tokens at {rate}; {args.threads} threads, measured here]",
              file=sys.stderr)
    return 0
