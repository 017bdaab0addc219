"""Write an LFM2 or Qwen2 language model as GGUF, the way llama.cpp's converter does.

Input is a config plus a state dict in Hugging Face ``Lfm2ForCausalLM`` /
``Qwen2ForCausalLM`` naming (edgevlm's own models use the same names);
output is a GGUF v3 file of architecture ``lfm2`` / ``qwen2`` with llama.cpp's
key and tensor names, written by the ``gguf`` package (the writer llama.cpp's
``convert_hf_to_gguf.py`` uses), so llama.cpp loads edgevlm's files and
edgevlm's C runtime loads llama.cpp's.

Conventions copied from ``convert_hf_to_gguf.py``:
- LFM2Model: ``lfm2.attention.head_count_kv`` is a per-layer array, 0 for conv
  layers; the conv weight [hidden, 1, L] is stored squeezed as [hidden, L];
  HF's final ``model.embedding_norm`` is stored as ``token_embd_norm``;
- Qwen2Model: one ``qwen2.attention.head_count_kv``; q/k/v biases as
  ``blk.N.attn_{q,k,v}.bias``; the final norm as ``output_norm``; q/k are not
  permuted (llama.cpp rotates Qwen2 NEOX-style, as HF's rotate_half does);
- vectors (norms, biases) and the conv taps stay F32; matrices take the chosen type.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgevlm.errors import CheckpointError, InputError

QTYPES = ("f32", "f16", "q8_0", "q4_0", "q4_k", "q6_k")
# A K-quant tensor whose rows are not whole 256-blocks falls back as in
# llama-quantize (Q4_K -> Q5_0, Q6_K -> Q8_0); a row not of 32-blocks to F16.
_FALLBACK = {"q4_k": "q5_0", "q6_k": "q8_0"}
QK_K = 256


def _gguf():
    import gguf  # imported lazily: the package is needed only to write files

    return gguf


def _config(config, cls=None):
    if cls is None:
        from edgevlm.models.arch.lfm2 import Lfm2Config as cls
    if isinstance(config, cls):
        return config
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    if not isinstance(config, dict):
        raise InputError(f"config of type {type(config).__name__} is not a {cls.__name__}",
                         f"pass a dict (config.json), an edgevlm {cls.__name__} or the transformers config")
    return cls.from_dict(config)


def _numpy(t) -> np.ndarray:
    if hasattr(t, "detach"):
        t = t.detach().float().cpu().numpy()
    return np.ascontiguousarray(np.asarray(t, dtype=np.float32))


def _tensor_map(cfg) -> list[tuple[str, str, bool]]:
    """(gguf name, HF name, is_matrix) for every tensor the runtime reads."""
    out = [("token_embd.weight", "model.embed_tokens.weight", True),
           ("token_embd_norm.weight", "model.embedding_norm.weight", False)]
    for i, kind in enumerate(cfg.layer_types):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        out += [(b + "attn_norm.weight", p + "operator_norm.weight", False),
                (b + "ffn_norm.weight", p + "ffn_norm.weight", False),
                (b + "ffn_gate.weight", p + "feed_forward.w1.weight", True),
                (b + "ffn_down.weight", p + "feed_forward.w2.weight", True),
                (b + "ffn_up.weight", p + "feed_forward.w3.weight", True)]
        if kind == "conv":
            out += [(b + "shortconv.conv.weight", p + "conv.conv.weight", False),
                    (b + "shortconv.in_proj.weight", p + "conv.in_proj.weight", True),
                    (b + "shortconv.out_proj.weight", p + "conv.out_proj.weight", True)]
        else:
            out += [(b + "attn_q.weight", p + "self_attn.q_proj.weight", True),
                    (b + "attn_k.weight", p + "self_attn.k_proj.weight", True),
                    (b + "attn_v.weight", p + "self_attn.v_proj.weight", True),
                    (b + "attn_output.weight", p + "self_attn.out_proj.weight", True),
                    (b + "attn_q_norm.weight", p + "self_attn.q_layernorm.weight", False),
                    (b + "attn_k_norm.weight", p + "self_attn.k_layernorm.weight", False)]
    return out


def _qwen2_tensor_map(cfg) -> list[tuple[str, str, bool]]:
    """(gguf name, HF name, is_matrix) for a Qwen2ForCausalLM (convert_hf_to_gguf's names)."""
    out = [("token_embd.weight", "model.embed_tokens.weight", True), ("output_norm.weight", "model.norm.weight", False)]
    for i in range(cfg.num_hidden_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        out += [(b + "attn_norm.weight", p + "input_layernorm.weight", False),
                (b + "ffn_norm.weight", p + "post_attention_layernorm.weight", False),
                (b + "attn_output.weight", p + "self_attn.o_proj.weight", True),
                (b + "ffn_gate.weight", p + "mlp.gate_proj.weight", True),
                (b + "ffn_up.weight", p + "mlp.up_proj.weight", True),
                (b + "ffn_down.weight", p + "mlp.down_proj.weight", True)]
        for x in "qkv":
            out += [(b + f"attn_{x}.weight", p + f"self_attn.{x}_proj.weight", True),
                    (b + f"attn_{x}.bias", p + f"self_attn.{x}_proj.bias", False)]
    return out


def _add_vocab(writer, tokenizer, cfg, pre: str = "lfm2") -> None:
    """tokenizer.ggml.* keys from a `tokenizers` tokenizer (object or tokenizer.json path)."""
    gguf = _gguf()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer)) if isinstance(tokenizer, (str, Path)) else tokenizer
    spec = json.loads(tok.to_str())
    vocab = tok.get_vocab(with_added_tokens=True)
    if max(vocab.values(), default=-1) >= cfg.vocab_size:
        raise InputError(f"the tokenizer has ids up to {max(vocab.values())} but the model's vocab_size is {cfg.vocab_size}",
                         "pass the tokenizer the model was trained with")
    special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    tokens = [f"[PAD{i}]" for i in range(cfg.vocab_size)]
    types = [int(gguf.TokenType.UNUSED)] * cfg.vocab_size
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = int(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
    model = spec.get("model", {})
    if model.get("type") == "BPE":
        # byte-level BPE as LFM2's own tokenizer: llama.cpp's "gpt2" vocab
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        if merges:
            writer.add_token_merges(merges)
    else:
        # No llama.cpp tokenizer family matches (e.g. word-level): the tokens
        # are still written so that runtimes can print them.
        writer.add_tokenizer_model("none")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    for key, fn in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id),
                    ("pad_token_id", writer.add_pad_token_id)):
        v = getattr(cfg, key, None)
        if v is not None and 0 <= v < cfg.vocab_size:
            fn(int(v))


def _f16(a):
    return a.astype(np.float16)   # numpy rounds to nearest even, as ggml's fp32 -> fp16


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Rows of x (cols % 256 == 0) as ggml Q4_K blocks (uint8 [rows, cols / 256 * 144]).

    Per sub-block j of 32: min m_j = -min(0, min x), scale_j = (max - min) / 15;
    both quantized to 6 bits against the block's fp16 d = max scale / 63 and
    dmin = max m / 63; then q = round((x + dmin m_j) / (d sc_j)) in 0..15.
    A plain min-max fit (llama.cpp searches scales; this does not), packed in
    ggml-common.h's layout; gguf.quants dequantizes it."""
    rows, cols = x.shape
    b = x.reshape(-1, 8, 32).astype(np.float32)
    lo = np.minimum(b.min(axis=-1), 0.0)
    hi = b.max(axis=-1)
    scale = (hi - lo) / 15.0
    minv = -lo
    d = _f16(scale.max(axis=-1) / 63.0)
    dmin = _f16(minv.max(axis=-1) / 63.0)
    df, dmf = d.astype(np.float32)[:, None], dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df > 0, np.rint(scale / df), 0).clip(0, 63).astype(np.uint8)
        m = np.where(dmf > 0, np.rint(minv / dmf), 0).clip(0, 63).astype(np.uint8)
        step = df * sc
        q = np.where(step[..., None] > 0, np.rint((b + (dmf * m)[..., None]) / step[..., None]), 0)
    q = q.clip(0, 15).astype(np.uint8).reshape(-1, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    scales = np.empty((b.shape[0], 12), np.uint8)
    scales[:, 0:4] = (sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6)
    scales[:, 4:8] = (m[:, :4] & 63) | ((m[:, 4:] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:] & 0x0F) | ((m[:, 4:] & 0x0F) << 4)
    out = np.concatenate([d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), scales, qs], axis=1)
    return out.reshape(rows, -1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    """Rows of x (cols % 256 == 0) as ggml Q6_K blocks (uint8 [rows, cols / 256 * 210]).

    Per sub-block j of 16: scale_j = max |x| / 31, quantized to int8 against
    the block's fp16 d = max scale / 127; q = round(x / (d sc_j)) in -32..31."""
    rows, cols = x.shape
    b = x.reshape(-1, 16, 16).astype(np.float32)
    scale = np.abs(b).max(axis=-1) / 31.0
    d = _f16(scale.max(axis=-1) / 127.0)
    df = d.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(df > 0, np.rint(scale / df), 0).clip(-128, 127).astype(np.int8)
        step = (df * sc)[..., None]
        q = np.where(step > 0, np.rint(b / step), 0)
    q = (q.clip(-32, 31) + 32).astype(np.uint8).reshape(-1, 2, 4, 32)   # half n, quarter c, l
    ql = np.empty((q.shape[0], 2, 64), np.uint8)
    ql[:, :, :32] = (q[:, :, 0] & 0x0F) | ((q[:, :, 2] & 0x0F) << 4)
    ql[:, :, 32:] = (q[:, :, 1] & 0x0F) | ((q[:, :, 3] & 0x0F) << 4)
    qh = ((q[:, :, 0] >> 4) | ((q[:, :, 1] >> 4) << 2) | ((q[:, :, 2] >> 4) << 4) | ((q[:, :, 3] >> 4) << 6))
    out = np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), sc.view(np.uint8), d.view(np.uint8).reshape(-1, 2)], axis=1)
    return out.reshape(rows, -1)


def _check_qtypes(qtype: str, embed_qtype: str | None) -> tuple[str, str]:
    qtype = qtype.lower()
    # heads: q8_0 under q4_0 (edgevlm's default), q6_k under q4_k (llama-quantize's Q4_K_M)
    embed_qtype = (embed_qtype or {"q4_0": "q8_0", "q4_k": "q6_k"}.get(qtype, qtype)).lower()
    for q in (qtype, embed_qtype):
        if q not in QTYPES:
            raise InputError(f"unknown GGUF tensor type '{q}'", f"use one of {', '.join(QTYPES)}")
    return qtype, embed_qtype


def _write(path, arch: str, name: str, keys, entries, state_dict, qtype: str, embed_qtype: str, vocab) -> Path:
    """The GGUF file: general keys, keys(writer) for the architecture, vocab(writer), then the tensors.
    Written to a temporary name and renamed, so a failure never leaves a half-written GGUF behind."""
    gguf = _gguf()
    from gguf.quants import quantize

    T = gguf.GGMLQuantizationType
    qt = {"f32": T.F32, "f16": T.F16, "q8_0": T.Q8_0, "q4_0": T.Q4_0, "q5_0": T.Q5_0, "q4_k": T.Q4_K, "q6_k": T.Q6_K}
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
             "q4_k": gguf.LlamaFileType.MOSTLY_Q4_K_M, "q6_k": gguf.LlamaFileType.MOSTLY_Q6_K}
    k_quantize = {"q4_k": quantize_q4_k, "q6_k": quantize_q6_k}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        writer.add_name(name)
        keys(writer)
        writer.add_file_type(int(ftype[qtype]))
        vocab(writer)
        for gname, hf, is_matrix in entries:
            a = _numpy(state_dict[hf])
            if gname.endswith("shortconv.conv.weight"):
                a = a.reshape(a.shape[0], a.shape[-1])   # [hidden, 1, L] -> [hidden, L]
            want = (embed_qtype if gname in ("token_embd.weight", "output.weight") else qtype) if is_matrix else "f32"
            if want in _FALLBACK and a.shape[-1] % QK_K:
                want = _FALLBACK[want]
            if want in ("q8_0", "q5_0", "q4_0") and a.shape[-1] % 32:
                want = "f16"   # rows must be whole 32-element blocks; llama.cpp falls back the same way
            if want == "f32":
                writer.add_tensor(gname, a)
            elif want == "f16":
                writer.add_tensor(gname, a.astype(np.float16))
            elif want in k_quantize:
                writer.add_tensor(gname, k_quantize[want](a.reshape(-1, a.shape[-1])).reshape(*a.shape[:-1], -1),
                                  raw_dtype=qt[want])
            else:
                writer.add_tensor(gname, quantize(a, qt[want]), raw_dtype=qt[want])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.replace(path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path


def _vocab_writer(tokenizer, cfg, pre: str):
    def add(writer):
        if tokenizer is not None:
            _add_vocab(writer, tokenizer, cfg, pre)
        else:
            writer.add_tokenizer_model("none")   # llama.cpp requires the key; "none" = no vocab
    return add


def export_lfm2_gguf(path, config, state_dict, qtype: str = "q8_0", tokenizer=None,
                     embed_qtype: str | None = None, name: str = "edgevlm-lfm2") -> Path:
    """Write ``state_dict`` (HF Lfm2ForCausalLM names) as an ``lfm2`` GGUF at ``path``.

    qtype: type of the projection matrices, one of f32, f16, q8_0, q4_0,
        q4_k, q6_k (K-quants: rows not of whole 256-blocks fall back to
        q5_0 / q8_0 as llama-quantize does).
    embed_qtype: type of token_embd (and of output.weight when untied);
        defaults to qtype, except q8_0 for q4_0 and q6_k for q4_k (the tied
        output head is the most error-sensitive matrix, as llama.cpp's
        quantizer also treats it).
    tokenizer: optional `tokenizers.Tokenizer` or tokenizer.json path to embed.
    Returns the path written.  The file is written to a temporary name and
    renamed, so a failure never leaves a half-written GGUF behind.
    """
    qtype, embed_qtype = _check_qtypes(qtype, embed_qtype)
    cfg = _config(config)
    entries = _tensor_map(cfg)
    missing = [hf for _, hf, _ in entries if hf not in state_dict]
    if missing:
        raise CheckpointError(f"state dict lacks {len(missing)} LFM2 tensor(s), first: {missing[0]}",
                              "pass a Lfm2ForCausalLM state dict with Hugging Face parameter names")
    tied = cfg.tie_word_embeddings or "lm_head.weight" not in state_dict
    if not tied:
        entries.append(("output.weight", "lm_head.weight", True))
    ffn = int(state_dict["model.layers.0.feed_forward.w1.weight"].shape[0])

    def keys(writer):
        writer.add_context_length(int(cfg.max_position_embeddings))
        writer.add_embedding_length(int(cfg.hidden_size))
        writer.add_block_count(int(cfg.num_hidden_layers))
        writer.add_feed_forward_length(ffn)
        writer.add_head_count(int(cfg.num_attention_heads))
        writer.add_head_count_kv([0 if t == "conv" else int(cfg.num_key_value_heads) for t in cfg.layer_types])
        writer.add_rope_freq_base(float(cfg.rope_theta))
        writer.add_layer_norm_rms_eps(float(cfg.norm_eps))
        writer.add_vocab_size(int(cfg.vocab_size))
        writer.add_shortconv_l_cache(int(cfg.conv_L_cache))

    return _write(path, "lfm2", name, keys, entries, state_dict, qtype, embed_qtype,
                  _vocab_writer(tokenizer, cfg, "lfm2"))


def export_qwen2_gguf(path, config, state_dict, qtype: str = "q8_0", tokenizer=None,
                      embed_qtype: str | None = None, name: str = "edgevlm-qwen2",
                      max_position_embeddings: int | None = None) -> Path:
    """Write ``state_dict`` (HF Qwen2ForCausalLM names) as a ``qwen2`` GGUF at ``path``.

    As export_lfm2_gguf; keys and names as convert_hf_to_gguf.py's Qwen2Model.
    config: a dict (config.json), edgevlm's Qwen2Config or transformers'.
    max_position_embeddings: qwen2.context_length (default: the config's, else 32768).
    """
    from edgevlm.models.arch.qwen2 import Qwen2Config

    qtype, embed_qtype = _check_qtypes(qtype, embed_qtype)
    raw = config.to_dict() if hasattr(config, "to_dict") else config
    ctx = max_position_embeddings or (raw.get("max_position_embeddings") if isinstance(raw, dict) else None) or 32768
    cfg = _config(config, Qwen2Config)
    entries = _qwen2_tensor_map(cfg)
    missing = [hf for _, hf, _ in entries if hf not in state_dict]
    if missing:
        raise CheckpointError(f"state dict lacks {len(missing)} Qwen2 tensor(s), first: {missing[0]}",
                              "pass a Qwen2ForCausalLM state dict with Hugging Face parameter names")
    if not cfg.tie_word_embeddings and "lm_head.weight" in state_dict:
        entries.append(("output.weight", "lm_head.weight", True))

    def keys(writer):
        writer.add_context_length(int(ctx))
        writer.add_embedding_length(int(cfg.hidden_size))
        writer.add_block_count(int(cfg.num_hidden_layers))
        writer.add_feed_forward_length(int(cfg.intermediate_size))
        writer.add_head_count(int(cfg.num_attention_heads))
        writer.add_head_count_kv(int(cfg.num_key_value_heads))
        if cfg.head_dim != cfg.hidden_size // cfg.num_attention_heads:
            writer.add_key_length(int(cfg.head_dim))
            writer.add_value_length(int(cfg.head_dim))
        writer.add_rope_freq_base(float(cfg.rope_theta))
        writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))

    return _write(path, "qwen2", name, keys, entries, state_dict, qtype, embed_qtype,
                  _vocab_writer(tokenizer, cfg, "qwen2"))
