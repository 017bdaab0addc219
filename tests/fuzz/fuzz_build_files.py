"""Fuzz target: a build's vlm.json, manifest.json, tokenizer.json and the prompt, the way `edgevlm run` reads them
(edgevlm.runner.BuildRunner, then one short answer on a fixed image).

    EDGEVLM_FUZZ_BUILD=build/autoneural-nano-sa8295p python tests/fuzz/fuzz_build_files.py CORPUS_DIR [flags]

Input byte 0 picks what the rest replaces (seeds.BUILD_FILES: 0 vlm.json,
1 manifest.json, 2 tokenizer.json; 3 the prompt, decoded as argv is, with
surrogateescape).  The other files are the real build's, in a scratch copy
whose large artifacts are symlinks (each loaded once, see
_cache_artifact_loads).  When vlm.json or tokenizer.json is
replaced, manifest.json's size and sha256 for it are updated, as a
consistent but wrong build would have them, so the content is parsed rather
than refused by an integrity check.

A damaged build must give an EdgeVLMError (one line on stderr from the CLI);
any other exception is a bug.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_support import scratch_dir  # noqa: E402
from seeds import BUILD_FILES  # noqa: E402

_STATE: dict = {}


def _setup() -> dict:
    if _STATE:
        return _STATE
    build = Path(os.environ.get("EDGEVLM_FUZZ_BUILD", ""))
    if not (build / "vlm.json").is_file():
        raise SystemExit("set EDGEVLM_FUZZ_BUILD to a build directory of `edgevlm compile` (a VLM build with vlm.json)")
    scratch = Path(scratch_dir("ev-fuzz-build-"))
    for f in build.iterdir():
        if f.is_file() and f.name not in BUILD_FILES:
            (scratch / f.name).symlink_to(f.resolve())
    from edgevlm.data.shapes import make_sample

    meta = json.loads((build / "vlm.json").read_text())
    _STATE.update(build=build, scratch=scratch, originals={n: (build / n).read_bytes() for n in BUILD_FILES},
                  image=make_sample(0, 1, meta["image_size"]).image)
    return _STATE


def _cache_artifact_loads(build: Path) -> None:
    """Load each of the real build's ONNX artifacts once (ONNX Runtime's session set-up is 85% of an
    input's time otherwise).  Only unchanged artifacts are cached: a vlm.json naming any other file
    (a fuzzed JSON, a missing path) goes through the real load every time."""
    from edgevlm.compiler.backends import onnx_backend

    real, cache = onnx_backend.BACKEND.load, {}
    immutable = {str(f.resolve()) for f in build.iterdir() if f.is_file() and f.name not in BUILD_FILES}

    def load(artifact, build_dir, threads=0):
        path = os.path.realpath(Path(build_dir) / artifact.path)
        if path not in immutable:
            return real(artifact, build_dir, threads)
        if (path, threads) not in cache:
            cache[path, threads] = real(artifact, build_dir, threads)
        return cache[path, threads]

    onnx_backend.BACKEND.load = load


def _with_manifest_entry(manifest: bytes, name: str, data: bytes) -> bytes:
    m = json.loads(manifest)
    for a in m.get("artifacts", []):
        if a.get("path") == name:
            a.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    return json.dumps(m, indent=2).encode()


def run(data: bytes):
    """`edgevlm run`'s answer (3 tokens at most) on the build with one file or the prompt replaced; raises
    EdgeVLMError if the build is bad."""
    from edgevlm.runner import BuildRunner

    st = _setup()
    which, body = (data[0] if data else 0) % (len(BUILD_FILES) + 1), data[1:]
    files = dict(st["originals"])
    prompt = "describe the image."
    if which < len(BUILD_FILES):
        name = BUILD_FILES[which]
        files[name] = body
        if name != "manifest.json":
            files["manifest.json"] = _with_manifest_entry(files["manifest.json"], name, body)
    else:
        prompt = body.decode("utf-8", "surrogateescape")
    for name, content in files.items():
        (st["scratch"] / name).write_bytes(content)
    return BuildRunner(st["scratch"], threads=1).answer(st["image"], prompt, max_new_tokens=3)


# Values a damaged or hand-edited JSON file may hold where another type or range is expected.
ODD_VALUES = (None, True, 0, -1, 1, 2**31, 2**63, -2**63, 1e308, 0.5, float("nan"), "", "x" * 300, "../vlm.json",
              "/etc/hostname", "a\0b", "llm.gguf", "encoder.onnx", [], [0], {}, {"": None})


def mutate_json(data: bytes, max_size: int, seed: int) -> bytes:
    """Structure-aware mutation (atheris custom_mutator): for a JSON file input, replace one value
    anywhere in the document by an odd value or another value of the document, or drop a key or an
    element; otherwise (or one time in five) libFuzzer's byte mutation.  Byte mutation alone rarely
    keeps JSON valid, so it would test little beyond the parser."""
    import random

    import atheris

    rng = random.Random(seed)
    doc = None
    if data and data[0] % (len(BUILD_FILES) + 1) < len(BUILD_FILES) and rng.random() < 0.8:
        try:
            doc = json.loads(data[1:])
        except ValueError:
            pass
    if doc is None:
        return atheris.Mutate(data, max_size)
    nodes = []   # (container, key) of every value in the document

    def walk(v):
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, child in items:
            nodes.append((v, k))
            walk(child)

    walk(doc)
    if not nodes:
        doc = rng.choice(ODD_VALUES)
    else:
        parent, key = rng.choice(nodes)
        op = rng.random()
        if op < 0.15:
            del parent[key]
        elif op < 0.3:
            other_parent, other_key = rng.choice(nodes)
            parent[key] = json.loads(json.dumps(other_parent[other_key]))
        else:
            parent[key] = rng.choice(ODD_VALUES)
    out = data[:1] + json.dumps(doc).encode()
    return out if len(out) <= max_size else atheris.Mutate(data, max_size)


def one_input(data: bytes) -> None:
    from edgevlm.errors import EdgeVLMError

    try:
        answer = run(data)
    except EdgeVLMError:
        return
    assert isinstance(answer.text, str) and len(answer.tokens) <= 3, answer


if __name__ == "__main__":
    import atheris

    import edgevlm.compiler.backends.onnx_backend  # noqa: F401  (the code under test, instrumented below)
    import edgevlm.compiler.runtime_bundle  # noqa: F401
    import edgevlm.models.tokenizer  # noqa: F401
    import edgevlm.runner  # noqa: F401
    from fuzz_support import instrument

    _cache_artifact_loads(_setup()["build"])
    instrument("edgevlm")
    atheris.Setup(sys.argv, one_input, custom_mutator=mutate_json)
    atheris.Fuzz()
