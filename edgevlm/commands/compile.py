"""`edgevlm compile`: build, verify and report artifacts for a target."""
from edgevlm.core.config import CompileConfig

NAME = "compile"
HELP = "compile a model for a target into verified artifacts (build/<model>-<target>/)"
ORDER = 0
DEFAULTS = CompileConfig()  # every option's default, defined once there


def add_arguments(parser):
    parser.add_argument("--model", default=None, help="zoo model name or local checkpoint directory (default: the embedded default model)")
    parser.add_argument("--target", required=True, help="target name (see `edgevlm targets`)")
    parser.add_argument("--out", default=None, help="build directory (default: build/<model>-<target>)")
    parser.add_argument("--backends", default=None, help="comma-separated backends (default: the target's preference order)")
    parser.add_argument("--quant", default=None, help="scheme (w8a8, w8a16, w4a16, w4a8, w16a16, float) or per stage kind, "
                        "e.g. encoder=w8a16,llm=w4a16,kv=kv8 (default: the target's)")
    parser.add_argument("--calib", default=None, metavar="DIR", help="directory of calibration images (a Hugging Face VLM: each with its prompt in a same-name .txt; "
                        "default: a built-in set of images and prompts)")
    parser.add_argument("--calib-samples", type=int, default=DEFAULTS.calib_samples,
                        help=f"calibration samples to use at most (default {DEFAULTS.calib_samples})")
    parser.add_argument("--hub", action="store_true", help="also compile and profile each stage on a device through Qualcomm AI Hub (needs qai-hub credentials)")
    parser.add_argument("--observer", default=DEFAULTS.observer, choices=["minmax", "percentile", "mse", "entropy"], help="activation range observer")
    parser.add_argument("--vision-tokens", type=int, default=None, metavar="N",
                        help="reduce the VLM's image tokens to N inside the encoder stage (default: keep all)")
    parser.add_argument("--token-reduce", default=DEFAULTS.token_reduce, choices=["dct", "pool", "merge", "prune"],
                        help="how --vision-tokens reduces: dct (Fourier-VLM low-pass), pool (average), merge (ToMe), "
                        f"prune (text-guided, keeps the tokens closest to the prompt); default {DEFAULTS.token_reduce}")
    parser.add_argument("--eval-n", type=int, default=DEFAULTS.eval_n, metavar="N",
                        help="measure a VLM build's accuracy on N shapes samples, float vs the build's path; a Hugging Face "
                        "checkpoint: greedy agreement with transformers on up to N of 4 built-in images + prompts "
                        f"(0: skip; default {DEFAULTS.eval_n})")
    parser.add_argument("--quality-target", default=None, metavar="DB|STAGE=DB,...",
                        help="mixed precision: raise sensitive layers (8-bit weights, 16-bit activations) until each "
                        "quantized stage, or each stage named (e.g. llm-prefill=25,llm-decode=25), reaches this SQNR (dB)")
    parser.add_argument("--weight-algo", default=DEFAULTS.weight_algo, choices=["gptq", "rtn", "mse", "awq"],
                        help="weight rounding: gptq (error-minimizing on the calibration samples, default), rtn "
                        "(round to nearest), mse (round to nearest on per-channel scales clipped to minimize the "
                        "weight error) or awq (activation-aware per-input-channel scales, searched on the calibration "
                        "samples and folded into the producing norm or layer, then round to nearest)")
    parser.add_argument("--max-context", type=int, default=None, metavar="TOKENS",
                        help="context length of a Hugging Face VLM checkpoint's build: chat template + image tokens + "
                        "prompt + answer (default: room for a 64-token prompt and a 256-token answer)")
    parser.add_argument("--no-htp-verify", action="store_true",
                        help="do not run the QNN context binaries on the HTP simulation (the report says they were not verified)")
    parser.add_argument("--keep-failed", action="store_true",
                        help="if the compile fails, keep its partial build as OUT.failed-<pid> for debugging "
                        "(default: removed)")


def run(args) -> int:
    from edgevlm.accuracy import build_accuracy
    from edgevlm.commands._table import print_table
    from edgevlm.compiler.pipeline import compile as compile_model
    from edgevlm.quant.mixed_precision import parse_quality_target

    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    config = CompileConfig(out=args.out, backends=backends, verbose=True, quant=args.quant, calib_dir=args.calib,
                           calib_samples=args.calib_samples, observer=args.observer, hub=args.hub,
                           quality_target_db=parse_quality_target(args.quality_target), vision_tokens=args.vision_tokens,
                           token_reduce=args.token_reduce, eval_n=args.eval_n, htp_verify=not args.no_htp_verify,
                           keep_failed=args.keep_failed, weight_algo=args.weight_algo, max_context=args.max_context, accuracy_check=build_accuracy)
    result = compile_model(args.model, target=args.target, config=config)
    rep = result.report
    rows = []
    for st in rep["stages"]:
        for a in st["artifacts"]:
            art = result.artifacts[st["name"], a["backend"]]
            p = a["parity"]
            value = p["value"]
            shown = f"{p['metric']} {value:.3g}" if isinstance(value, float) else p["metric"]
            if "estimated_sample_s" in p:  # not started: by the stage's MAC count no sample fits the budget
                where = f"QNN HTP v{art.htp.htp_arch} sim" if art.htp is not None else "portable kernels"
                shown += f" on {where}: ~{p['estimated_sample_s']} s a sample (estimate), budget {p['budget_s']:g} s"
            elif art.htp is not None and "samples" in p:
                shown += f" on QNN HTP v{art.htp.htp_arch} sim ({p['samples']} samples)"
            elif a["backend"] == "executorch" and "budget_s" in p:  # portable (reference) kernels, within a budget
                shown += f" on portable kernels ({p['samples']} of {p['of']} samples within {p['budget_s']:g} s)"
            if art.integer_only is not None:
                shown += ", integer-only" if art.integer_only else ", NOT integer-only"
            mp = art.quant.mixed_precision if art.quant is not None else None
            if mp is not None and not mp.met:
                shown += f", quality target NOT met ({mp.achieved:.1f} < {mp.target:g} dB)"
            rows.append((st["name"], a["backend"], a["path"], shown, f"{a['lower_s']:.2f}"))
        for s in st["skipped"]:
            rows.append((st["name"], s["backend"], "-", f"skipped: {s['reason']}", "-"))
    rt = rep.get("runtime")
    if rt:
        p = rt["parity"]
        rows.append(("llm", rt["backend"], f"{rt['path']} ({rt['info']['gguf_type']})",
                     f"greedy agreement {p['value']:.3f}, first-token sqnr_db {p['first_token_sqnr_db']:.3g}", "-"))
    acc = rep.get("accuracy")
    caption = None
    if acc and "summary" in acc:  # an imported checkpoint: greedy agreement with transformers
        caption = acc["summary"]
    elif acc:
        caption = (f"accuracy on {acc['n']} shapes samples: float {acc['float']:.3f}, "
                         f"this build {acc['quantized']:.3f} ({acc['quantized_path']})")
    print_table(f"{rep['model']} -> {rep['target']}", ("stage", "backend", "artifact", "parity", "lower s"), rows,
                caption=caption, right=("lower s",))
    notes = {art.notes["qnn"] for art in result.artifacts.values() if art.notes.get("qnn")}
    for note in sorted(notes):
        print(f"executorch: {note}")
    why = rep.get("model_meta", {}).get("runtime_bundle")
    if isinstance(why, dict):  # a Hugging Face VLM checkpoint without its tokenizer: `edgevlm run` cannot use the build
        print(f"runtime bundle {why['cause']} (fix: {why['fix']})")
    print(f"build: {result.build_dir}/ (report.json, report.html, manifest.json)")
    return 0
