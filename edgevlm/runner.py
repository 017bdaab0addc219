"""Run a compiled VLM build on this machine: the path `edgevlm run`, `edgevlm profile` and the examples take.

    from edgevlm.runner import BuildRunner
    runner = BuildRunner("build/autoneural-nano-sa8295p", threads=2)
    result = runner.answer(PIL.Image.open("cat.png"), "what color is the circle?")
    print(result.text, result.timings)

The encoder and projector run from the build's compiled artifacts (ONNX
through onnxruntime by default, or the ExecuTorch .pte), so a quantized
build answers with its quantized vision path; the language model runs in the
C runtime from the build's ``llm.gguf`` (prefill of ``<bos>``, then the image
embeddings, then the prompt; then greedy or sampled decode in C).  Builds of
Hugging Face checkpoints format the prompt with the checkpoint's chat
template and preprocess the image as its processor does (vlm.json's
``processing``; edgevlm.models.hf.processing), and stream text pieces that
carry their own spacing.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from edgevlm.core.stage import VISION_STAGES, StageName
from edgevlm.errors import InputError

# Stage artifacts this machine can run, in order of preference.  qnn (the QNN context binaries on the
# HTP simulation) is the deployed path of HTP targets but slow here: it runs when asked for.
RUNNABLE_BACKENDS = ("onnx", "executorch", "qnn")


@dataclass
class Answer:
    text: str
    tokens: list[int]
    timings: dict = field(default_factory=dict)  # ms and tokens/s, measured on this machine


def open_image(path):
    """PIL image from a path, or one clear error naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        # PIL only warns between MAX_IMAGE_PIXELS (89.5 Mpx) and twice that: a 484-byte RLE BMP that
        # claims 3145728 x 48 pixels took 5 s and 770 MB to decode (found by tests/fuzz/fuzz_image.py).
        # Past the limit is an error here, so a tiny file cannot make `edgevlm run` hang or swap.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return im.convert("RGB")
    except Image.DecompressionBombWarning as exc:
        raise InputError(f"cannot read image '{path}': {exc}", "downscale the image (it is resized to the "
                         "build's input size anyway)") from None
    except FileNotFoundError:
        raise InputError(f"image '{path}' does not exist", "pass the path of a PNG or JPEG file") from None
    # PIL's decoders also report damaged files as SyntaxError ("broken PNG file"), EOFError,
    # DecompressionBombError (an Exception, not an OSError) and TypeError (a TIFF whose strip offset
    # tag holds a RATIONAL: "'float' object cannot be interpreted as an integer"); found by
    # tests/fuzz/fuzz_image.py.
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, TypeError,
            Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image '{path}': {exc}", "pass an image file PIL can open (PNG, JPEG, ...)") from None


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {what} '{path}': {exc}", "recompile the build with `edgevlm compile`") from None


def _read_meta(path: Path) -> dict:
    """vlm.json, checked field by field before use: a damaged file gives one error naming the field.

    (Found by tests/fuzz/fuzz_build_files.py: before, a wrong type or value ended in a TypeError or
    KeyError traceback, or in a huge allocation.)
    """
    from edgevlm.compiler.runtime_bundle import FORMAT_VERSION

    meta = _read_json(path, "build metadata")

    def bad(what: str) -> InputError:
        return InputError(f"build metadata '{path}' is damaged: {what}", "recompile the build with `edgevlm compile`")

    if not isinstance(meta, dict):
        raise bad(f"it is not a JSON object (it holds {type(meta).__name__})")
    if meta.get("format") != FORMAT_VERSION:
        raise bad(f"format {meta.get('format')!r}; this edgevlm reads format {FORMAT_VERSION}")
    limits = {"image_size": (1, 4096), "num_image_tokens": (1, 1 << 16), "max_len": (2, 1 << 16),
              "image_token_id": (0, 2**31 - 1), "bos_id": (0, 2**31 - 1), "eos_id": (0, 2**31 - 1)}
    processing = meta.get("processing")
    if processing is not None and meta.get("bos_id") is None:
        del limits["bos_id"]  # a chat template without a bos token (Qwen2's)
    if meta.get("prune_to") is not None:
        limits["prune_to"] = (1, 1 << 16)
    for key, (lo, hi) in limits.items():
        v = meta.get(key)
        if type(v) is not int or not lo <= v <= hi:
            raise bad(f"'{key}' is {v!r}, expected an integer in [{lo}, {hi}]")
    if meta["num_image_tokens"] + 2 > meta["max_len"]:
        raise bad(f"{meta['num_image_tokens']} image tokens leave no room in max_len {meta['max_len']}")
    for key in ("mean", "std"):
        v = meta.get(key)
        if not (isinstance(v, list) and len(v) == 3 and all(type(x) in (int, float) and math.isfinite(x) and abs(x) <= 1e3
                                                            for x in v)):
            raise bad(f"'{key}' is {v!r}, expected 3 numbers in [-1000, 1000]")   # float32 after all
    if any(abs(x) < 1e-6 for x in meta["std"]):
        raise bad(f"'std' {meta['std']} has a value too close to zero to divide by")

    def relative_file(v) -> bool:  # a path inside the build directory
        return isinstance(v, str) and v != "" and "\0" not in v and not Path(v).is_absolute() and ".." not in Path(v).parts

    for key in ("gguf", "tokenizer") + (("text_embeddings",) if "prune_to" in limits else ()):
        if not relative_file(meta.get(key)):
            raise bad(f"'{key}' is {meta.get(key)!r}, expected a file name inside the build")
    if processing is not None:
        if not (isinstance(processing, dict) and relative_file(processing.get("template"))
                and all(isinstance(processing.get(k), str) for k in ("image_token", "image_prefix", "image_suffix"))
                and isinstance(processing.get("special_tokens"), dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in processing["special_tokens"].items())
                and isinstance(processing.get("image"), dict)):
            raise bad("'processing' is not {template, special_tokens, image_token, image_prefix, image_suffix, image}")
    stages = meta.get("stages")
    if not (isinstance(stages, dict) and all(isinstance(paths, dict) and all(isinstance(b, str) and relative_file(f)
                                                                             for b, f in paths.items())
                                             for paths in stages.values())):
        raise bad("'stages' is not {stage: {backend: artifact file}}")
    return meta


def _no_bundle_reason(build_dir: Path) -> dict | None:
    """report.json's model_meta.runtime_bundle ({cause, fix}) when compile said why it wrote no runtime bundle."""
    try:
        why = json.loads((build_dir / "report.json").read_text())["model_meta"]["runtime_bundle"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return why if isinstance(why, dict) and isinstance(why.get("cause"), str) and isinstance(why.get("fix"), str) else None


class BuildRunner:
    """A compiled VLM build, loaded once: encoder + projector artifacts and the runtime GGUF."""

    def __init__(self, build_dir, threads: int = 2, backend: str | None = None):
        import importlib

        from edgevlm.compiler import integrity
        from edgevlm.compiler.backends.base import Artifact
        from edgevlm.compiler.runtime_bundle import BACKEND_NAME, VLM_JSON
        from edgevlm.models.tokenizer import load_tokenizer
        from edgevlm.runtime import Model

        self.build_dir = Path(build_dir)
        manifest = integrity.read_manifest(self.build_dir)
        if not (self.build_dir / VLM_JSON).is_file():
            why = _no_bundle_reason(self.build_dir)
            if why:  # a Hugging Face checkpoint compiled without its tokenizer: say what it lacked
                raise InputError(f"build '{build_dir}' has no {VLM_JSON}: its runtime bundle was {why['cause']}", why["fix"])
            raise InputError(f"build '{build_dir}' has no {VLM_JSON}: it is not a VLM build with a runtime bundle",
                             "compile a zoo VLM with this edgevlm (e.g. `edgevlm compile --target sa8295p`)")
        if threads < 1:
            raise InputError(f"threads={threads}", "use threads >= 1")
        # Every file loaded below is checked against manifest.json first: a damaged build is refused, never run.
        integrity.verify_entries(self.build_dir, manifest, lambda e: e["path"] == VLM_JSON)
        self.meta = _read_meta(self.build_dir / VLM_JSON)
        report = self.build_dir / "report.json"  # absent while compile itself measures the build's accuracy
        self.report = _read_json(report, "build report") if report.is_file() else {}
        stages = self.meta["stages"]
        choices = [backend] if backend else [b for b in RUNNABLE_BACKENDS if all(b in stages.get(s, {}) for s in VISION_STAGES)]
        if not choices or not all(choices[0] in stages.get(s, {}) for s in VISION_STAGES):
            have = sorted({b for s in stages.values() for b in s})
            raise InputError(f"build '{build_dir}' has no runnable encoder and projector artifacts"
                             f"{' for backend ' + backend if backend else ''} (it has: {', '.join(have) or 'none'})",
                             f"compile with --backends {','.join(RUNNABLE_BACKENDS)}")
        self.backend = choices[0]
        self.verified = integrity.verify_entries(
            self.build_dir, manifest, lambda e: e.get("backend") == BACKEND_NAME
            or (e.get("stage") in VISION_STAGES and e.get("backend") == self.backend))
        # The backend's module directly, not the registry: that would import every backend (and torch).
        be = importlib.import_module(f"edgevlm.compiler.backends.{self.backend}_backend").BACKEND
        self._stages: dict[str, Callable] = {s: self._load_stage(be, Artifact(self.backend, s, stages[s][self.backend]), threads)
                                             for s in VISION_STAGES}
        self.processing = None
        if self.meta.get("processing") is not None:
            self.processing = self._load_processing()
            self.tokenizer = self.processing.tokenizer
        else:
            self.tokenizer = load_tokenizer(self.build_dir / self.meta["tokenizer"])
        self.model = Model.load(self.build_dir / self.meta["gguf"], threads=threads)
        for key in ("bos_id", "eos_id", "image_token_id"):
            if self.meta.get(key) is not None and self.meta[key] >= self.model.n_vocab:
                raise InputError(f"build '{build_dir}' is damaged: vlm.json's {key} {self.meta[key]} is outside the "
                                 f"model's vocab of {self.model.n_vocab}", "recompile the build with `edgevlm compile`")
        self.text_embeddings = None
        if self.meta.get("prune_to") is not None:
            from safetensors import SafetensorError
            from safetensors.numpy import load_file

            path = self.build_dir / self.meta["text_embeddings"]
            try:
                self.text_embeddings = load_file(str(path))["embed_tokens"]
            except (OSError, KeyError, SafetensorError) as exc:
                raise InputError(f"cannot read the build's text embeddings '{path}': {exc!r}",
                                 "recompile the build with `edgevlm compile`") from None
        self.threads = threads

    def _load_processing(self):
        """The checkpoint's tokenizer, chat template and image processing, as compile wrote them."""
        from tokenizers import Tokenizer

        from edgevlm.errors import CheckpointError
        from edgevlm.models.hf.processing import ChatFormat, CheckpointTokenizer, ImageProcessing, Processing

        p, where = self.meta["processing"], f"build '{self.build_dir}'"
        fix = "recompile the build with `edgevlm compile`"
        try:
            template = (self.build_dir / p["template"]).read_text(encoding="utf-8")
            tok = Tokenizer.from_file(str(self.build_dir / self.meta["tokenizer"]))
        except Exception as exc:  # OSError, UnicodeDecodeError, or tokenizers' plain Exception on bad JSON
            raise InputError(f"{where}: cannot read its tokenizer or chat template: {str(exc)[:200]}", fix) from None
        chat = ChatFormat(template, dict(p["special_tokens"]), p["image_token"], p["image_prefix"], p["image_suffix"])
        image = ImageProcessing.from_json(p["image"], where)
        if image.size != self.meta["image_size"]:
            raise InputError(f"{where}: vlm.json's processing size {image.size} is not its image_size {self.meta['image_size']}", fix)
        try:
            tokenizer = CheckpointTokenizer(tok, chat.special_tokens.get("bos_token"), chat.special_tokens.get("eos_token", ""),
                                            chat.image_token, where)
        except CheckpointError as exc:
            raise InputError(exc.cause, fix) from None
        if tokenizer.eos_id != self.meta["eos_id"] or tokenizer.image_id != self.meta["image_token_id"]:
            raise InputError(f"{where}: its tokenizer's eos/image ids are not vlm.json's", fix)
        return Processing(tokenizer, chat, image)

    # -- pieces --------------------------------------------------------------
    def pixel_values(self, image) -> np.ndarray:
        if self.processing is not None:
            return self.processing.image(image)
        from edgevlm.data.image import preprocess

        return preprocess(image, self.meta["image_size"], self.meta["mean"], self.meta["std"])

    def image_embeds(self, image, timings: dict | None = None) -> np.ndarray:
        """Projected image tokens [N, hidden] of one PIL image, through the build's artifacts."""
        t_in = time.perf_counter()
        px = self.pixel_values(image)
        t0 = time.perf_counter()
        tokens = self._run_stage(StageName.ENCODER, px)
        t1 = time.perf_counter()
        embeds = self._run_stage(StageName.PROJECTOR, tokens)
        t2 = time.perf_counter()
        if timings is not None:
            timings["preprocess_ms"] = (t0 - t_in) * 1e3
            timings["encoder_ms"] = (t1 - t0) * 1e3
            timings["projector_ms"] = (t2 - t1) * 1e3
        return np.asarray(embeds, dtype=np.float32).reshape(-1, embeds.shape[-1])

    def _load_stage(self, backend, artifact, threads: int) -> Callable:
        try:
            return backend.load(artifact, self.build_dir, threads)
        except Exception as exc:  # the backend's own error: a missing or damaged artifact
            raise InputError(f"build '{self.build_dir}': cannot load its {artifact.stage} artifact '{artifact.path}' "
                             f"({self.backend}): {exc}", "recompile the build with `edgevlm compile`") from None

    def _run_stage(self, stage: str, x):
        try:
            return self._stages[stage]([x])[0]
        # The backend's own error (onnxruntime's InvalidArgument, ...): the build's files disagree, e.g. a
        # vlm.json image_size that is not the encoder's (found by tests/fuzz/fuzz_build_files.py).
        except Exception as exc:
            raise InputError(f"build '{self.build_dir}': its {stage} ({self.backend}) cannot run on its input: {exc}",
                             "vlm.json does not fit the build's artifacts; recompile the build with `edgevlm compile`") from None

    def select_image_tokens(self, embeds: np.ndarray, ids: list[int]) -> np.ndarray:
        """Text-guided pruning to the build's ``prune_to`` tokens (builds compiled with --token-reduce prune)."""
        if self.text_embeddings is None:
            return embeds
        from edgevlm.models.arch.token_pruning import keep_for_prompt

        return embeds[keep_for_prompt(embeds, self.text_embeddings.__getitem__, ids, self.meta["image_token_id"],
                                      self.meta["prune_to"])]

    def prompt_ids(self, prompt: str, max_new_tokens: int = 1) -> list[int]:
        m = self.meta
        if self.processing is not None:
            from edgevlm.errors import CheckpointError

            try:
                ids = self.processing.prompt_ids(prompt, m["num_image_tokens"])
            except CheckpointError as exc:  # the build's template does not render
                raise InputError(f"build '{self.build_dir}': {exc.cause}", "recompile the build with `edgevlm compile`") from None
            if len(ids) + 1 > m["max_len"]:
                text = len(ids) - len(self.processing.prompt_ids("", m["num_image_tokens"]))
                raise InputError(f"the prompt is {text} tokens; with the chat template and the image's {m['num_image_tokens']} "
                                 f"tokens it takes {len(ids)} of this build's context of {m['max_len']}, leaving no room to answer",
                                 f"shorten the prompt, or recompile with --max-context {len(ids) + max(max_new_tokens, 1)}")
            return ids
        from edgevlm.models.arch.token_pruning import image_prompt_ids

        ids = image_prompt_ids(m["bos_id"], m["image_token_id"], m["num_image_tokens"], self.tokenizer.encode(prompt))
        if len(ids) >= m["max_len"]:
            raise InputError(f"the prompt is {len(ids) - 1 - m['num_image_tokens']} tokens; this build holds "
                             f"{m['max_len'] - 1 - m['num_image_tokens']} with its image", "shorten the prompt")
        return ids

    # -- the whole path ------------------------------------------------------
    def stream(self, image, prompt: str, max_new_tokens: int = 24, sampler=None, timings: dict | None = None,
               token_ids: list | None = None) -> Iterator[str]:
        """Yield the answer's words as they are generated.

        ``timings`` (if given) receives preprocess_ms, encoder_ms, projector_ms,
        prefill_ms, image_to_logits_ms (image in to the first answer token's
        logits: what an engine that samples before decoding shows as its first
        token), ttft_ms (image in to first answer token out; the C generator
        hands a token back after running it, so this includes one decode step)
        and decode_tokens_per_s; ``token_ids`` receives the ids.
        """
        from edgevlm.compiler.runtime_bundle import prefill_vlm

        if max_new_tokens < 1:
            raise InputError(f"--max-new-tokens must be >= 1, got {max_new_tokens}", "pass e.g. --max-new-tokens 24")
        timings = {} if timings is None else timings
        t_start = time.perf_counter()
        ids = self.prompt_ids(prompt, max_new_tokens)
        embeds = self.select_image_tokens(self.image_embeds(image, timings), ids)
        session = self.model.session(n_ctx=self.meta["max_len"])
        t0 = time.perf_counter()
        prefill_vlm(session, ids, embeds, self.meta["image_token_id"])
        t_prefilled = time.perf_counter()
        timings.update(prefill_ms=(t_prefilled - t0) * 1e3, prompt_tokens=len(ids),
                       image_to_logits_ms=(t_prefilled - t_start) * 1e3)
        budget = min(max_new_tokens, self.meta["max_len"] - len(ids))
        n, t_first = 0, None
        made: list[int] = []
        shown = ""
        # Sampling and the decode step of every token run in C; each id is handed back as it is made.
        for token in session.generate(budget, sampler, stop_token=self.meta["eos_id"]):
            if t_first is None:
                t_first = time.perf_counter()
                timings["ttft_ms"] = (t_first - t_start) * 1e3
            if token_ids is not None:
                token_ids.append(token)
            n += 1
            if self.processing is None:
                yield self.tokenizer.decode([token])
                continue
            # Byte-level BPE: a token may end inside a UTF-8 character, so the text grows by decoding the
            # whole answer; a trailing replacement character waits for the next token.
            made.append(token)
            text = self.tokenizer.decode(made)
            if not text.endswith("\ufffd") and len(text) > len(shown):
                yield text[len(shown):]
                shown = text
        if self.processing is not None and made:
            text = self.tokenizer.decode(made)
            if len(text) > len(shown):
                yield text[len(shown):]
        t_end = time.perf_counter()
        timings.setdefault("ttft_ms", (t_end - t_start) * 1e3)
        timings.update(new_tokens=n, decode_tokens_per_s=(n - 1) / (t_end - t_first) if n > 1 else None)

    @property
    def separator(self) -> str:
        """What goes between two streamed pieces: a space for word-level zoo builds, nothing for BPE pieces."""
        return "" if self.processing is not None else " "

    def answer(self, image, prompt: str, max_new_tokens: int = 24, sampler=None) -> Answer:
        timings: dict = {}
        ids: list[int] = []
        words = list(self.stream(image, prompt, max_new_tokens, sampler, timings, ids))
        return Answer(self.separator.join(w for w in words if w), ids, timings)


def build_answerer(build_dir, manifest=None, backend: str | None = None):
    """``answer(image, prompt) -> str`` over a build (for `edgevlm eval BUILD`), or None if it is not a VLM build.

    ``backend`` selects the vision artifacts (onnx, executorch, qnn; default: the first the build has).
    """
    from edgevlm.compiler.runtime_bundle import VLM_JSON

    if not (Path(build_dir) / VLM_JSON).is_file():
        return None
    runner = BuildRunner(build_dir, backend=backend)
    return (lambda image, prompt: runner.answer(image, prompt).text), runner.meta["image_size"], \
        f"{runner.meta['model']} build {build_dir} ({runner.backend} vision + C runtime {runner.report.get('runtime', {}).get('info', {}).get('gguf_type', '?')})"
