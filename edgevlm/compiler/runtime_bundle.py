"""The runtime bundle of a VLM build: what `edgevlm run` needs beside the stage artifacts.

A build of a zoo VLM also holds

- ``llm.gguf``: the language model for the C runtime (edgevlm.runtime), its
  matrices in the GGUF type matching the build's LLM scheme (4-bit per-group
  weights -> Q4_K with a Q6_K head, other 4-bit -> Q4_0, 8-bit -> Q8_0, float
  -> F32; the tied embedding/output matrix stays Q8_0 under Q4_0, as
  llama.cpp's quantizer keeps a better head); report.json's runtime info
  names the type (``gguf_type``);
- ``tokenizer.json``: the model's tokenizer;
- ``chat_template.jinja``: for Hugging Face checkpoints, their chat template:
  vlm.json's ``processing`` then says how `edgevlm run` renders a prompt
  (template, special tokens, the image run's wrapping) and preprocesses an
  image (resize mode, filter, rescale, mean, std), as the checkpoint's
  transformers processor does (edgevlm.models.hf.processing);
- ``text_embeddings.safetensors``: the LM's word embeddings, only when the
  build prunes image tokens by the prompt (``--token-reduce prune``);
- ``vlm.json``: how to turn an image and a prompt into runtime inputs (image
  size, normalization, number of image tokens, special ids, the context
  length ``max_len``) and which stage artifacts hold the encoder and projector.

The language model is an LFM2 (``lfm2`` GGUF) or a Qwen2 (``qwen2`` GGUF,
FastVLM's).

The bundle is verified like every other artifact: the C runtime's greedy
answers on the calibration prompts are compared with the float PyTorch
model's (token agreement), and the first-token logits by SQNR.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgevlm.core.stage import VISION_STAGES

GGUF_NAME = "llm.gguf"
VLM_JSON = "vlm.json"
BACKEND_NAME = "edgevlm-runtime"  # the runtime bundle's "backend" in report.json and manifest.json
TOKENIZER_JSON = "tokenizer.json"
TEXT_EMBEDDINGS = "text_embeddings.safetensors"  # only for text-guided token pruning
CHAT_TEMPLATE = "chat_template.jinja"  # only for Hugging Face checkpoints
FORMAT_VERSION = 1
VERIFY_NEW_TOKENS = 24  # greedy answer length compared per verification prompt


def gguf_type_for(scheme) -> str:
    """GGUF tensor type for an LLM scheme (None = float).

    Per-group 4-bit weights (a granularity only the cpu targets accept, e.g.
    ``--quant llm=w4a8-g32``) -> q4_k: Q4_K blocks (sub-blocks of 32 with their
    own scale and min) and a Q6_K head, llama-quantize's Q4_K_M choice; other
    4-bit -> q4_0; 8-bit -> q8_0.
    """
    bits = getattr(scheme, "weight_bits", None)
    if bits == 4 and getattr(scheme, "weight_granularity", None) == "per-group":
        return "q4_k"
    return {4: "q4_0", 8: "q8_0"}.get(bits, "f32")


def is_runtime_vlm(bundle) -> bool:
    """True when the bundle is a VLM with a tokenizer whose LM the C runtime can run (LFM2 or Qwen2)."""
    from edgevlm.models.arch.lfm2 import Lfm2ForCausalLM
    from edgevlm.models.arch.qwen2 import Qwen2ForCausalLM

    vlm, tok = bundle.modules.get("vlm"), bundle.modules.get("tokenizer")
    return vlm is not None and tok is not None and vlm.encoder is not None \
        and isinstance(vlm.lm, (Lfm2ForCausalLM, Qwen2ForCausalLM))


def _export_gguf(path: Path, lm, qtype: str, tokenizer, name: str) -> None:
    from edgevlm.models.arch.qwen2 import Qwen2ForCausalLM
    from edgevlm.runtime.gguf_export import export_lfm2_gguf, export_qwen2_gguf

    if isinstance(lm, Qwen2ForCausalLM):
        export_qwen2_gguf(path, lm.config, lm.state_dict(), qtype=qtype, tokenizer=tokenizer, name=name)
    else:
        export_lfm2_gguf(path, lm.config, lm.state_dict(), qtype=qtype, tokenizer=tokenizer, name=name)


def write(bundle, scheme, out_dir: Path, stage_paths: dict[str, dict[str, str]], verify_samples: int = 4) -> dict:
    """Write llm.gguf, tokenizer.json and vlm.json into ``out_dir``; returns the report entry.

    ``stage_paths`` maps stage name -> {backend: artifact path} of what was
    built, so `edgevlm run` finds the encoder and projector artifacts.
    """
    vlm, tok = bundle.modules["vlm"], bundle.modules["tokenizer"]
    processing = bundle.modules.get("processing")
    qtype = gguf_type_for(scheme)
    out_dir = Path(out_dir)
    tok.save(out_dir / TOKENIZER_JSON)
    _export_gguf(out_dir / GGUF_NAME, vlm.lm, qtype, tok.tokenizer, bundle.name)
    meta = {
        "format": FORMAT_VERSION,
        "model": bundle.name,
        "image_size": vlm.image_size,
        "mean": [float(v) for v in vlm.mean.flatten()],
        "std": [float(v) for v in vlm.std.flatten()],
        "num_image_tokens": vlm.num_image_tokens,
        "image_token_id": vlm.image_token_id,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "max_len": vlm.max_len,
        "gguf": GGUF_NAME,
        "tokenizer": TOKENIZER_JSON,
        "stages": {name: paths for name, paths in stage_paths.items() if name in VISION_STAGES},
    }
    files = [GGUF_NAME, TOKENIZER_JSON, VLM_JSON]
    if processing is not None:
        chat = processing.chat
        (out_dir / CHAT_TEMPLATE).write_text(chat.template, encoding="utf-8")
        meta["processing"] = {"template": CHAT_TEMPLATE, "special_tokens": dict(chat.special_tokens),
                              "image_token": chat.image_token, "image_prefix": chat.image_prefix,
                              "image_suffix": chat.image_suffix, "image": processing.image.to_json()}
        files.append(CHAT_TEMPLATE)
    if vlm.prune_to is not None:
        # Text-guided pruning runs at run time and needs the word embeddings the LM starts from.
        from safetensors.numpy import save_file

        table = vlm.lm.model.embed_tokens.weight.detach().float().numpy()
        save_file({"embed_tokens": table}, str(out_dir / TEXT_EMBEDDINGS))
        meta.update(prune_to=vlm.prune_to, text_embeddings=TEXT_EMBEDDINGS)
        files.append(TEXT_EMBEDDINGS)
    (out_dir / VLM_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    parity = _verify(vlm, tok, out_dir / GGUF_NAME, verify_samples, processing)
    return {"backend": BACKEND_NAME, "path": GGUF_NAME, "files": files,
            "info": {"gguf_type": qtype, "gguf_tensor_types": _tensor_types(out_dir / GGUF_NAME),
                     "runs_on": "C runtime (edgevlm.runtime), CPU"}, "parity": parity}


def _tensor_types(path: Path) -> dict[str, int]:
    """ggml type -> tensor count in the written file: what gguf_type became after the
    fallbacks for rows that are not whole blocks (e.g. q4_k -> Q5_0 for 128-wide rows)."""
    from gguf import GGUFReader

    out: dict[str, int] = {}
    for t in GGUFReader(str(path)).tensors:
        out[t.tensor_type.name] = out.get(t.tensor_type.name, 0) + 1
    return dict(sorted(out.items()))


def _verify(vlm, tok, gguf_path: Path, samples: int, processing=None) -> dict:
    """Greedy answers of the C runtime vs float PyTorch on shapes calibration samples (float image embeddings).

    With ``processing`` (a Hugging Face checkpoint's), prompts go through its chat template and images
    through its image processing, as `edgevlm run` formats them.
    """
    import torch

    from edgevlm.core.metrics import sqnr_db
    from edgevlm.data.shapes import make_sample
    from edgevlm.models.zoo.vlms import CALIBRATION_SEED
    from edgevlm.runtime import Model

    model = Model.load(gguf_path, threads=1)
    same = total = 0
    sqnrs = []
    for i in range(samples):
        s = make_sample(CALIBRATION_SEED, i, vlm.image_size)
        if processing is not None:
            ids = processing.prompt_ids(s.prompt, vlm.num_image_tokens)
            pixels = torch.from_numpy(processing.image(s.image))
        else:
            ids = vlm.prompt_ids(tok.encode(s.prompt), tok.bos_id)
            pixels = vlm.pixel_values(s.image)
        with torch.no_grad():
            embeds = vlm.select_image_tokens(vlm.image_embeds(pixels), ids)
        want = vlm.generate(embeds, ids, tok.eos_id, VERIFY_NEW_TOKENS)
        if len(want) < min(VERIFY_NEW_TOKENS, vlm.max_len - len(ids)):
            want.append(tok.eos_id)  # it stopped at eos: the runtime must stop there too
        sess = model.session(n_ctx=vlm.max_len)
        logits = prefill_vlm(sess, ids, embeds[0].numpy(), vlm.image_token_id)
        with torch.no_grad():  # prefill through the explicit state: Qwen2ForCausalLM has no stateless forward
            spliced = vlm.splice(torch.tensor([ids]), embeds)
            ref = vlm.lm.prefill(embeds=spliced, state=vlm.lm.init_state(len(ids)), last_only=True)[0][0].numpy()
        sqnrs.append(sqnr_db([ref], [logits]))
        got = [int(logits.argmax())]
        for _ in range(len(want) - 1):
            got.append(int(sess.step(got[-1]).argmax()))
        same += sum(a == b for a, b in zip(want, got))
        total += len(want)
    how = " through the checkpoint's chat template" if processing is not None else ""
    return {"metric": "greedy_agreement", "value": same / total, "first_token_sqnr_db": min(sqnrs),
            "reference": f"float PyTorch model, greedy answers to {samples} shapes calibration prompts{how} (float image embeddings)"}


def prefill_vlm(session, ids: list[int], image_embeds: np.ndarray, image_token_id: int) -> np.ndarray:
    """Prefill ``ids`` (text, one run of N image placeholders, text) into a runtime session: text runs as ids,
    the image run as embeddings.

    Returns the last position's logits.
    """
    from edgevlm.errors import InputError

    ids = list(ids)
    n = image_embeds.shape[0]
    first = ids.index(image_token_id) if image_token_id in ids else -1
    if first < 0 or ids[first:first + n] != [image_token_id] * n:  # e.g. a vlm.json that does not fit the projector
        raise InputError(f"the prompt ids hold no run of {n} image placeholders (id {image_token_id}) for the image's "
                         f"{n} embeddings", "recompile the build with `edgevlm compile`")
    if first:
        session.prefill(ids=ids[:first])
    logits = session.prefill(embeds=np.ascontiguousarray(image_embeds, dtype=np.float32))
    rest = ids[first + n:]
    return session.prefill(ids=rest) if rest else logits
