"""A checkpoint's own text and image processing: tokenizer.json, chat template, special ids, preprocessor_config.json.

What the model's transformers processor does for one image and one user
turn, at the build's static image size, without transformers or torch (the
runner loads this at run time):

- the chat template (chat_template.jinja, else tokenizer_config.json's or
  processor_config.json's ``chat_template``) is rendered as
  ``apply_chat_template`` renders it: a jinja2 sandbox with trim_blocks and
  lstrip_blocks, transformers' ``tojson``, ``raise_exception`` and
  ``strftime_now``, the tokenizer's special tokens as variables, messages
  ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", ...}]}]``
  and ``add_generation_prompt=True``;
- the image placeholder is expanded where the model's processor puts the
  image: LFM2-VL (Lfm2VlProcessor, one tile at the build's size, so no
  row/column or thumbnail tokens): ``<|image_start|>`` + ``<image>`` x N +
  ``<|image_end|>``; FastVLM (LlavaProcessor): ``<image>`` x N;
- the text is tokenized with the checkpoint's tokenizer.json without added
  special tokens (the template carries ``bos``), as apply_chat_template
  tokenizes a rendered chat;
- the image is resized to the build's square size (LFM2-VL: straight to the
  tile; CLIP-style processors: shortest edge, then centre crop), rescaled
  and normalized with the processor's factors.  transformers' LFM2-VL
  processor picks a resolution (and tiles) per image; at the build's
  static size an image of that size gives the same pixels.

Every file problem is a CheckpointError naming the file and the fix.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from edgevlm.errors import CheckpointError, InputError
from edgevlm.models.tokenizer import TextTokenizer

TEMPLATE_FILE = "chat_template.jinja"
# PIL's resampling filter numbers (as preprocessor_config.json stores them) -> names
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
RESIZE_MODES = ("square", "shortest_edge_center_crop")
# model_type -> (image token, text before and after the image's run of image tokens)
IMAGE_WRAPPING = {
    "lfm2_vl": ("<image>", "<|image_start|>", "<|image_end|>"),
    "fast_vlm": ("<image>", "", ""),
}


@dataclass(frozen=True)
class ImageProcessing:
    """Resize + rescale + normalize to one static square size (what preprocessor_config.json says, at that size)."""

    size: int
    resize: str = "square"          # or "shortest_edge_center_crop"
    resample: str = "bilinear"
    rescale_factor: float = 1 / 255
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)

    def __call__(self, image) -> np.ndarray:
        """One PIL image -> float32 [1, 3, size, size]."""
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise InputError(f"expected a PIL image, got {type(image).__name__}", "open the image with PIL.Image.open")
        im = image.convert("RGB")
        s = self.size
        filt = getattr(Image.Resampling, self.resample.upper())
        if self.resize == "shortest_edge_center_crop":
            w, h = im.size
            short = min(w, h)
            if short != s:  # transformers' get_resize_output_image_size: the short side to s, the long side floored
                im = im.resize((s, int(h * s / w)) if w <= h else (int(w * s / h), s), filt)
            w, h = im.size
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
        elif im.size != (s, s):
            im = im.resize((s, s), filt)
        x = np.asarray(im, dtype=np.float32).transpose(2, 0, 1)[None] * np.float32(self.rescale_factor)
        m = np.asarray(self.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        d = np.asarray(self.std, dtype=np.float32).reshape(1, 3, 1, 1)
        return np.ascontiguousarray((x - m) / d, dtype=np.float32)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict, where: str) -> "ImageProcessing":
        try:
            out = cls(size=int(d["size"]), resize=str(d["resize"]), resample=str(d["resample"]),
                      rescale_factor=float(d["rescale_factor"]), mean=tuple(float(v) for v in d["mean"]),
                      std=tuple(float(v) for v in d["std"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: image processing is damaged ({exc!r})", "recompile the build with `edgevlm compile`") from None
        if out.resize not in RESIZE_MODES or out.resample not in RESAMPLE.values() or len(out.mean) != 3 \
                or len(out.std) != 3 or not 1 <= out.size <= 4096 or any(abs(v) < 1e-6 for v in out.std):
            raise InputError(f"{where}: image processing {d} is out of range", "recompile the build with `edgevlm compile`")
        return out


@dataclass(frozen=True)
class ChatFormat:
    """The chat template and how the image placeholder expands."""

    template: str
    special_tokens: dict = field(default_factory=dict)   # bos_token, eos_token, ... as the template sees them
    image_token: str = "<image>"
    image_prefix: str = ""
    image_suffix: str = ""

    def render(self, prompt: str, num_image_tokens: int, system: str | None = None) -> str:
        """The rendered chat for one user turn (image, then ``prompt``) with the image placeholder expanded."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = render_template(self.template, messages, **self.special_tokens)
        count = text.count(self.image_token)
        if count != 1:
            raise CheckpointError(f"the chat template puts {count} image placeholders ({self.image_token!r}) in a turn with one image",
                                  "use the checkpoint's original chat template")
        run = self.image_prefix + self.image_token * num_image_tokens + self.image_suffix
        return text.replace(self.image_token, run)


def _environment():
    """jinja2 sandbox set up as transformers' _compile_jinja_template (same filters and globals)."""
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        # transformers' {% generation %} tag marks assistant text for masks; rendering passes it through
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_passthrough"), [], [], body).set_lineno(lineno)

        def _passthrough(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def render_template(template: str, messages: list, add_generation_prompt: bool = True, **special_tokens) -> str:
    """``template`` rendered for ``messages`` as transformers' apply_chat_template(tokenize=False) renders it."""
    import jinja2

    try:
        return _environment().from_string(template).render(messages=messages, tools=None, documents=None,
                                                           add_generation_prompt=add_generation_prompt, **special_tokens)
    except jinja2.TemplateError as exc:
        raise CheckpointError(f"the chat template does not render: {exc}", "use the checkpoint's original chat template") from None


class CheckpointTokenizer(TextTokenizer):
    """A checkpoint's tokenizer.json with the special ids a VLM build needs (bos may be None); encode,
    decode and save as the zoo tokenizer's (ids as apply_chat_template tokenizes a rendered chat)."""

    def __init__(self, tokenizer, bos_token: str | None, eos_token: str, image_token: str, where: str = "tokenizer.json"):
        self.tokenizer = tokenizer

        def token_id(text, what):
            i = tokenizer.token_to_id(text)
            if i is None:
                raise CheckpointError(f"{where} has no {what} token {text!r}",
                                      "use the checkpoint's original tokenizer.json and tokenizer_config.json")
            return i

        self.bos_id = token_id(bos_token, "bos") if bos_token else None
        self.eos_id = token_id(eos_token, "eos")
        self.image_id = token_id(image_token, "image")


@dataclass
class Processing:
    """Everything between (image, prompt) and the LM's input ids, read from a checkpoint directory."""

    tokenizer: CheckpointTokenizer
    chat: ChatFormat
    image: ImageProcessing

    def prompt_ids(self, prompt: str, num_image_tokens: int, system: str | None = None) -> list[int]:
        return self.tokenizer.encode(self.chat.render(prompt, num_image_tokens, system))


# ---------------------------------------------------------------- reading a checkpoint

def _json(path: Path, fix: str) -> dict:
    from edgevlm.models.checkpoint import read_json_object

    return read_json_object(path, fix)


def _token_text(v):
    """A special token entry of tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) and v else None


def read_chat_template(ckpt: Path) -> str:
    """chat_template.jinja, else tokenizer_config.json's / processor_config.json's chat_template (as transformers looks)."""
    path = ckpt / TEMPLATE_FILE
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"cannot read '{path}': {exc}", "restore the checkpoint's chat_template.jinja") from None
    else:
        text = None
        for name in ("tokenizer_config.json", "processor_config.json", "chat_template.json"):
            if (ckpt / name).is_file():
                text = _json(ckpt / name, f"fix or re-export {name}").get("chat_template")
                if isinstance(text, list):  # named templates: transformers uses "default"
                    text = next((t.get("template") for t in text if isinstance(t, dict) and t.get("name") == "default"), None)
                if text:
                    break
        if not text:
            raise CheckpointError(f"'{ckpt}' has no chat template (no {TEMPLATE_FILE}, none in tokenizer_config.json)",
                                  f"copy the model's {TEMPLATE_FILE} into the checkpoint directory")
    if not isinstance(text, str) or not text.strip():
        raise CheckpointError(f"the chat template of '{ckpt}' is empty", f"restore the model's {TEMPLATE_FILE}")
    import jinja2

    try:
        _environment().from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise CheckpointError(f"the chat template of '{ckpt}' is not valid jinja: {exc.message} (line {exc.lineno})",
                              f"restore the model's {TEMPLATE_FILE}") from None
    return text


def read_image_settings(ckpt: Path) -> dict:
    """The image processor's settings: preprocessor_config.json, else processor_config.json's image_processor."""
    path = ckpt / "preprocessor_config.json"
    if path.is_file():
        return _json(path, "fix or re-export preprocessor_config.json")
    proc = ckpt / "processor_config.json"
    if proc.is_file():
        settings = _json(proc, "fix or re-export processor_config.json").get("image_processor")
        if isinstance(settings, dict):
            return settings
    return {}


def _factors(pre: dict, default_mean, default_std, where: str) -> tuple[float, tuple, tuple]:
    def triple(v, what):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v] * 3
        if isinstance(v, tuple):  # the defaults
            v = list(v)
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            raise CheckpointError(f"{where}: {what} is {v!r}, expected 3 numbers", "fix or re-export preprocessor_config.json")
        return tuple(float(x) for x in v)

    if pre.get("do_normalize", True):
        mean, std = triple(pre.get("image_mean", default_mean), "image_mean"), triple(pre.get("image_std", default_std), "image_std")
        if any(abs(s) < 1e-6 for s in std):
            raise CheckpointError(f"{where}: image_std {list(std)} has a zero", "fix or re-export preprocessor_config.json")
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    rescale = pre.get("rescale_factor", 1 / 255) if pre.get("do_rescale", True) else 1.0
    if not isinstance(rescale, (int, float)) or isinstance(rescale, bool) or not 0 < rescale <= 1:
        raise CheckpointError(f"{where}: rescale_factor is {rescale!r}", "fix or re-export preprocessor_config.json")
    return float(rescale), mean, std


def image_processing(model_type: str, pre: dict, size: int, default_mean, default_std, where: str) -> ImageProcessing:
    """ImageProcessing at ``size`` from the processor settings ``pre``."""
    rescale, mean, std = _factors(pre, default_mean, default_std, where)
    resample = pre.get("resample", 2 if model_type == "lfm2_vl" else 3)
    if resample not in RESAMPLE:
        raise CheckpointError(f"{where}: resample {resample!r} is not a PIL filter number ({RESAMPLE})",
                              "fix or re-export preprocessor_config.json")
    crop = model_type != "lfm2_vl" and pre.get("do_center_crop", True)
    return ImageProcessing(size=size, resize="shortest_edge_center_crop" if crop else "square", resample=RESAMPLE[resample],
                           rescale_factor=rescale, mean=mean, std=std)


def read_processing(ckpt: Path, model_type: str, image: ImageProcessing) -> Processing | None:
    """The checkpoint's tokenizer + chat template, or None when it has no tokenizer.json (then no runtime bundle).

    A tokenizer.json that is present but unreadable, a tokenizer_config.json
    naming tokens it lacks, or a missing / broken chat template is a
    CheckpointError.
    """
    from tokenizers import Tokenizer

    tok_path = ckpt / "tokenizer.json"
    if not tok_path.exists():
        return None
    fix = "restore the checkpoint's tokenizer.json (written by the tokenizers library)"
    try:
        tok = Tokenizer.from_file(str(tok_path))
    except Exception as exc:  # tokenizers raises plain Exceptions on bad JSON
        raise CheckpointError(f"cannot read tokenizer '{tok_path}': {str(exc).splitlines()[0][:200]}", fix) from None
    cfg_path = ckpt / "tokenizer_config.json"
    tcfg = _json(cfg_path, "fix or re-export tokenizer_config.json") if cfg_path.is_file() else {}
    specials = {k: _token_text(tcfg.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
    specials = {k: v for k, v in specials.items() if v}
    if "eos_token" not in specials:
        raise CheckpointError(f"'{ckpt}' names no eos_token (tokenizer_config.json)",
                              "restore the checkpoint's tokenizer_config.json")
    image_token, prefix, suffix = IMAGE_WRAPPING[model_type]
    image_token = _token_text(tcfg.get("image_token")) or image_token
    template = read_chat_template(ckpt)
    tokenizer = CheckpointTokenizer(tok, specials.get("bos_token"), specials["eos_token"], image_token, str(tok_path))
    for text in (prefix, suffix):
        if text and tok.token_to_id(text) is None:
            raise CheckpointError(f"{tok_path} has no {text!r} token, which {model_type} puts around the image",
                                  "use the checkpoint's original tokenizer.json")
    chat = ChatFormat(template, {k: v for k, v in specials.items()}, image_token, prefix, suffix)
    return Processing(tokenizer, chat, image)
