"""`edgevlm run BUILD --image IMG --prompt TEXT`: answer with a compiled VLM build on this machine.

Vision (encoder + projector) runs from the build's compiled artifacts, the
language model in the C runtime from the build's GGUF; the answer streams
to stdout word by word, timings go to stderr.
"""
import sys

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


def run(args) -> int:
    from edgevlm.runner import BuildRunner, open_image
    from edgevlm.runtime import Sampler

    sampler = Sampler(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    runner = BuildRunner(args.build, threads=args.threads, backend=args.backend)
    image = open_image(args.image)
    timings: dict = {}
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
