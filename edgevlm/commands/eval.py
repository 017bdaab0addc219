"""`edgevlm eval MODEL --dataset shapes --n 500`: exact-match accuracy of greedy generation.

The model is a zoo name or a saved checkpoint directory, run in PyTorch
(float).  Generation goes through an ``answer(image, prompt) -> str``
function (edgevlm.data.evaluate), so other backends plug in by supplying
their own; a compiled build directory (holding manifest.json) is evaluated
by the backend registered for it in ``BUILD_ANSWERERS``.
"""
import json
from pathlib import Path

from edgevlm.errors import InputError

NAME = "eval"
HELP = "exact-match accuracy of a model (greedy generation) on a data set"
ORDER = 50

# Backends that can answer from a compiled build directory: name -> "module:function(build_dir) -> answer fn".
BUILD_ANSWERERS: dict[str, str] = {"edgevlm-runtime": "edgevlm.runner:build_answerer"}


def add_arguments(parser):
    parser.add_argument("model", help="zoo model name or checkpoint directory")
    parser.add_argument("--dataset", default="shapes", choices=["shapes"], help="data set (default shapes)")
    parser.add_argument("--n", type=int, default=500, help="number of samples (default 500)")
    parser.add_argument("--seed", type=int, default=12345, help="data set seed (default 12345; training used seed 0)")
    parser.add_argument("--backend", default=None, choices=["onnx", "executorch", "qnn"],
                        help="for a build: which vision artifacts answer (qnn: the QNN context binaries on the HTP simulation)")
    parser.add_argument("--shards", type=int, default=None, metavar="K",
                        help="for a build: split the samples into K shards run as Ray tasks (one by one without Ray); same result as serial")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="for a build: shard across a Ray cluster (auto or ray://host:10001); shards default to its CPUs")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def answerer_for(model: str, backend: str | None = None):
    """(answer function, image size, description) for a model name, checkpoint dir or build dir."""
    path = Path(model)
    if path.is_dir() and (path / "manifest.json").is_file():
        return _build_answerer(path, backend)
    if backend is not None:
        raise InputError(f"--backend {backend} applies to a compiled build, and '{model}' is not one",
                         "pass a build directory written by `edgevlm compile`, or leave --backend out")
    from edgevlm.models import build_model
    from edgevlm.models.arch.vlm import make_answerer

    bundle = build_model(model)
    vlm, tok = bundle.modules.get("vlm"), bundle.modules.get("tokenizer")
    if vlm is None or tok is None or vlm.encoder is None:
        raise InputError(f"model '{model}' is not a complete vision-language model with a tokenizer",
                         "evaluate a zoo VLM (see `edgevlm models`) or a directory saved by edgevlm.models.train")
    return make_answerer(vlm, tok), vlm.image_size, f"{bundle.name} (pytorch float)"


def _build_answerer(path: Path, backend: str | None = None):
    import importlib

    from edgevlm.compiler.integrity import read_manifest

    manifest = read_manifest(path)
    for target in BUILD_ANSWERERS.values():
        module, func = target.split(":")
        made = getattr(importlib.import_module(module), func)(path, manifest, backend=backend)
        if made is not None:
            return made
    raise InputError(f"no evaluation backend can run the build '{path}'",
                     "evaluate the float model by name (e.g. `edgevlm eval autoneural-nano`)")


def run(args) -> int:
    from edgevlm.data.evaluate import evaluate

    if args.n < 1:
        raise InputError(f"--n must be positive, got {args.n}", "pass e.g. --n 500")
    if args.shards is not None or args.ray_address:
        result, what = _sharded(args)
    else:
        answer, image_size, what = answerer_for(args.model, args.backend)
        result = evaluate(answer, args.dataset, n=args.n, seed=args.seed, image_size=image_size)
    result["model"] = what
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for sh in result.get("shards", []):
        print(f"shard {sh['shard'] + 1}/{len(result['shards'])}: samples {sh['start']}..{sh['stop'] - 1} ({sh['samples']}) "
              f"on {sh['host']} pid {sh['pid']}: {sh['samples_per_s']:.2f} samples/s (load {sh['load_s']:.1f} s)")
    print(f"{what} on {args.dataset} (n={result['n']}, seed {args.seed}): exact_match {result['exact_match']:.4f}")
    for kind, acc in result["by_question"].items():
        print(f"  {kind:<12} {acc:.3f}")
    return 0


def _sharded(args):
    """(result, description) of a build's evaluation split into shards (edgevlm.sharded_eval)."""
    from edgevlm import parallel
    from edgevlm.sharded_eval import evaluate_sharded

    path = Path(args.model)
    if not (path.is_dir() and (path / "manifest.json").is_file()):
        raise InputError(f"--shards / --ray-address shard a compiled build, and '{args.model}' is not one",
                         "pass a build directory written by `edgevlm compile`, or leave --shards and --ray-address out")
    if args.shards is not None and args.shards < 1:
        raise InputError(f"--shards must be positive, got {args.shards}", "pass e.g. --shards 2")
    _, image_size, what = answerer_for(args.model, args.backend)  # checks the build before any worker starts
    with parallel.session(args.ray_address) as engine:
        result = evaluate_sharded(path.resolve(), args.backend, args.n, args.seed, image_size, engine, args.shards, args.dataset)
    return result, f"{what}, {len(result['shards'])} shards on {result['engine']}"
