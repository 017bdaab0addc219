"""A corpus of broken GGUF files, each with the error code the C reader must give.

Files are built byte by byte (not with the `gguf` package) so that every
field can be set to a hostile value: huge counts, lengths past the end,
overlapping offsets, and so on.  ``valid_model()`` is a tiny but complete
LFM2 (one conv layer, one attention layer) that loads and runs.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

T_U32, T_I32, T_F32, T_STRING, T_ARRAY = 4, 5, 6, 8, 9
F32, F16, Q4_0, Q8_0 = 0, 1, 2, 8
Q5_0, Q5_1, Q2_K, Q4_K, Q5_K, Q6_K = 6, 7, 10, 12, 13, 14

E, FF, HEADS, KV_HEADS, HEAD_DIM, VOCAB, L_CACHE = 32, 64, 2, 1, 16, 16, 3


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


@dataclass
class Tensor:
    name: str
    dims: list[int]          # ggml order: dims[0] is the row length
    type: int = F32
    data: bytes = b""
    offset: int | None = None   # None: laid out in order


@dataclass
class GGUF:
    kvs: list[tuple[str, int, object]] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)
    magic: bytes = b"GGUF"
    version: int = 3
    n_tensors: int | None = None
    n_kv: int | None = None
    alignment: int = 32

    def kv_bytes(self, key, typ, value) -> bytes:
        out = _str(key) + struct.pack("<I", typ)
        if isinstance(value, bytes):   # raw bytes: hostile or hand-made values
            return out + value
        if typ == T_U32:
            return out + struct.pack("<I", value)
        if typ == T_I32:
            return out + struct.pack("<i", value)
        if typ == T_F32:
            return out + struct.pack("<f", value)
        if typ == T_STRING:
            return out + _str(value)
        if typ == T_ARRAY:
            etype, items = value
            out += struct.pack("<IQ", etype, len(items))
            if etype == T_STRING:
                return out + b"".join(_str(x) for x in items)
            return out + b"".join(struct.pack("<i", x) for x in items)
        raise ValueError(f"unsupported type {typ}")

    def to_bytes(self) -> bytes:
        head = self.magic + struct.pack("<IQQ", self.version,
                                        len(self.tensors) if self.n_tensors is None else self.n_tensors,
                                        len(self.kvs) if self.n_kv is None else self.n_kv)
        head += b"".join(self.kv_bytes(*kv) for kv in self.kvs)
        offsets, pos = [], 0
        for t in self.tensors:
            pos = (pos + self.alignment - 1) // self.alignment * self.alignment
            offsets.append(pos if t.offset is None else t.offset)
            pos += len(t.data)
        for t, off in zip(self.tensors, offsets):
            head += _str(t.name) + struct.pack("<I", len(t.dims))
            head += b"".join(struct.pack("<Q", d) for d in t.dims) + struct.pack("<IQ", t.type, off)
        data_start = (len(head) + self.alignment - 1) // self.alignment * self.alignment
        out = bytearray(head + b"\0" * (data_start - len(head)))
        for t, off in zip(self.tensors, offsets):
            if t.offset is None:
                end = data_start + off
                out += b"\0" * (end - len(out)) + t.data
        return bytes(out)


def _f32(shape, rng, scale=0.3) -> bytes:
    return (rng.standard_normal(shape) * scale).astype(np.float32).tobytes()


def valid_model(seed: int = 0) -> GGUF:
    """A tiny complete LFM2 GGUF: layer 0 short conv, layer 1 attention, tied output."""
    rng = np.random.default_rng(seed)
    ones = np.ones(E, np.float32).tobytes()
    g = GGUF()
    g.kvs = [
        ("general.architecture", T_STRING, "lfm2"),
        ("lfm2.block_count", T_U32, 2),
        ("lfm2.context_length", T_U32, 128),
        ("lfm2.embedding_length", T_U32, E),
        ("lfm2.feed_forward_length", T_U32, FF),
        ("lfm2.attention.head_count", T_U32, HEADS),
        ("lfm2.attention.head_count_kv", T_ARRAY, (T_I32, [0, KV_HEADS])),
        ("lfm2.rope.freq_base", T_F32, 10000.0),
        ("lfm2.attention.layer_norm_rms_epsilon", T_F32, 1e-5),
        ("lfm2.shortconv.l_cache", T_U32, L_CACHE),
        ("tokenizer.ggml.model", T_STRING, "none"),
        ("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, [f"t{i}" for i in range(VOCAB)])),
    ]
    t = [Tensor("token_embd.weight", [E, VOCAB], F32, _f32((VOCAB, E), rng, 1.0)),
         Tensor("token_embd_norm.weight", [E], F32, ones)]
    for i in range(2):
        b = f"blk.{i}."
        t += [Tensor(b + "attn_norm.weight", [E], F32, ones), Tensor(b + "ffn_norm.weight", [E], F32, ones),
              Tensor(b + "ffn_gate.weight", [E, FF], F32, _f32((FF, E), rng)),
              Tensor(b + "ffn_up.weight", [E, FF], F32, _f32((FF, E), rng)),
              Tensor(b + "ffn_down.weight", [FF, E], F32, _f32((E, FF), rng))]
    t += [Tensor("blk.0.shortconv.conv.weight", [L_CACHE, E], F32, _f32((E, L_CACHE), rng)),
          Tensor("blk.0.shortconv.in_proj.weight", [E, 3 * E], F32, _f32((3 * E, E), rng)),
          Tensor("blk.0.shortconv.out_proj.weight", [E, E], F32, _f32((E, E), rng))]
    qd, kd = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    t += [Tensor("blk.1.attn_q.weight", [E, qd], F32, _f32((qd, E), rng)),
          Tensor("blk.1.attn_k.weight", [E, kd], F32, _f32((kd, E), rng)),
          Tensor("blk.1.attn_v.weight", [E, kd], F32, _f32((kd, E), rng)),
          Tensor("blk.1.attn_output.weight", [qd, E], F32, _f32((E, qd), rng)),
          Tensor("blk.1.attn_q_norm.weight", [HEAD_DIM], F32, np.ones(HEAD_DIM, np.float32).tobytes()),
          Tensor("blk.1.attn_k_norm.weight", [HEAD_DIM], F32, np.ones(HEAD_DIM, np.float32).tobytes())]
    g.tensors = t
    return g


def _tensor(g: GGUF, name: str) -> Tensor:
    return next(t for t in g.tensors if t.name == name)


def _set_kv(g: GGUF, key: str, typ: int, value) -> GGUF:
    g.kvs = [(k, typ, value) if k == key else (k, t, v) for k, t, v in g.kvs]
    return g


def _padding(g: GGUF) -> int:
    pos, total = 0, 0
    for t in g.tensors:
        aligned = (pos + g.alignment - 1) // g.alignment * g.alignment
        total += aligned - pos
        pos = aligned + len(t.data)
    return total


def valid_qwen2(seed: int = 0) -> GGUF:
    """A tiny complete Qwen2 GGUF (two attention layers with q/k/v biases, tied output)."""
    rng = np.random.default_rng(seed)
    ones = np.ones(E, np.float32).tobytes()
    qd, kd = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    g = GGUF()
    g.kvs = [("general.architecture", T_STRING, "qwen2"), ("qwen2.block_count", T_U32, 2),
             ("qwen2.context_length", T_U32, 128), ("qwen2.embedding_length", T_U32, E),
             ("qwen2.feed_forward_length", T_U32, FF), ("qwen2.attention.head_count", T_U32, HEADS),
             ("qwen2.attention.head_count_kv", T_U32, KV_HEADS), ("qwen2.rope.freq_base", T_F32, 1000000.0),
             ("qwen2.attention.layer_norm_rms_epsilon", T_F32, 1e-6), ("tokenizer.ggml.model", T_STRING, "none")]
    t = [Tensor("token_embd.weight", [E, VOCAB], F32, _f32((VOCAB, E), rng, 1.0)),
         Tensor("output_norm.weight", [E], F32, ones)]
    for i in range(2):
        b = f"blk.{i}."
        t += [Tensor(b + "attn_norm.weight", [E], F32, ones), Tensor(b + "ffn_norm.weight", [E], F32, ones),
              Tensor(b + "ffn_gate.weight", [E, FF], F32, _f32((FF, E), rng)),
              Tensor(b + "ffn_up.weight", [E, FF], F32, _f32((FF, E), rng)),
              Tensor(b + "ffn_down.weight", [FF, E], F32, _f32((E, FF), rng)),
              Tensor(b + "attn_q.weight", [E, qd], F32, _f32((qd, E), rng)), Tensor(b + "attn_q.bias", [qd], F32, _f32(qd, rng)),
              Tensor(b + "attn_k.weight", [E, kd], F32, _f32((kd, E), rng)), Tensor(b + "attn_k.bias", [kd], F32, _f32(kd, rng)),
              Tensor(b + "attn_v.weight", [E, kd], F32, _f32((kd, E), rng)), Tensor(b + "attn_v.bias", [kd], F32, _f32(kd, rng)),
              Tensor(b + "attn_output.weight", [qd, E], F32, _f32((E, qd), rng))]
    g.tensors = t
    return g


def _add_qwen2_cases(add) -> None:
    """Qwen2 files the model loader must refuse with its own code."""
    g = valid_qwen2(); g.tensors = [t for t in g.tensors if t.name != "blk.1.attn_k.bias"]
    add("qwen2_missing_bias", g, "EV_ERR_MISSING_TENSOR")
    g = valid_qwen2(); _tensor(g, "blk.0.attn_v.bias").dims = [HEADS * HEAD_DIM]; _tensor(g, "blk.0.attn_v.bias").data = b"\0" * 4 * HEADS * HEAD_DIM
    add("qwen2_bias_shape", g, "EV_ERR_TENSOR_SHAPE")
    g = _set_kv(valid_qwen2(), "qwen2.attention.head_count_kv", T_U32, 0); add("qwen2_zero_kv_heads", g, "EV_ERR_BAD_KEY")
    g = valid_qwen2(); g.kvs.append(("qwen2.rope.scaling.type", T_STRING, "yarn")); add("qwen2_rope_scaling", g, "EV_ERR_BAD_KEY")
    g = valid_qwen2(); g.kvs = [kv for kv in g.kvs if kv[0] != "qwen2.feed_forward_length"]
    add("qwen2_missing_key", g, "EV_ERR_MISSING_KEY")


def _add_kquant_cases(add) -> None:
    """K-quant (and Q5_0 / Q5_1 fallback) tensors whose sizes only the type
    table (256-value blocks of 144 / 176 / 210 bytes, 32-value blocks of 22 /
    24) can get right."""
    g = valid_model(); t = _tensor(g, "blk.0.ffn_up.weight"); t.type = Q4_K   # E = 32: not a multiple of 256
    add("q4_k_row_not_block_multiple", g, "EV_ERR_BAD_SHAPE")
    g = valid_model(); g.tensors.append(Tensor("x.q6_k", [256, 2], Q6_K, b"\0" * 210))   # 2 rows need 420 bytes
    add("q6_k_data_past_end", g, "EV_ERR_BAD_OFFSET")
    g = valid_model()   # 2 rows of Q5_K are 352 bytes; laid out as if 176, the next tensor starts inside
    g.tensors[1:1] = [Tensor("x.q5_k", [256, 2], Q5_K, b"\0" * 176)]
    add("q5_k_overlaps_next", g, "EV_ERR_OVERLAP")
    g = valid_model(); t = _tensor(g, "blk.0.ffn_up.weight"); t.type = Q5_0; t.dims = [E + 16, FF]   # 22-byte blocks of 32
    add("q5_0_row_not_block_multiple", g, "EV_ERR_BAD_SHAPE")
    g = valid_model(); t = _tensor(g, "blk.0.ffn_up.weight"); t.type = Q5_1; t.dims = [E + 16, FF]   # 24-byte blocks of 32
    add("q5_1_row_not_block_multiple", g, "EV_ERR_BAD_SHAPE")
    g = valid_model()   # 3 rows of Q5_1 (32 wide) are 72 bytes; laid out as if 24 (one row), the next starts inside
    g.tensors[1:1] = [Tensor("x.q5_1", [32, 3], Q5_1, b"\0" * 24)]
    add("q5_1_overlaps_next", g, "EV_ERR_OVERLAP")
    g = valid_model(); g.tensors.append(Tensor("x.q5_1", [64, 2], Q5_1, b"\0" * 48))   # 2 rows of 2 blocks: 96 bytes
    add("q5_1_data_past_end", g, "EV_ERR_BAD_OFFSET")


def corpus() -> list[tuple[str, bytes, str]]:
    """(case name, file bytes, expected ev_status name) for every broken file."""
    cases: list[tuple[str, bytes, str]] = []

    def add(name, g_or_bytes, code):
        cases.append((name, g_or_bytes if isinstance(g_or_bytes, bytes) else g_or_bytes.to_bytes(), code))

    v = valid_model()
    good = v.to_bytes()
    add("bad_magic", b"GGUX" + good[4:], "EV_ERR_BAD_MAGIC")
    add("empty_after_magic", b"GGUF", "EV_ERR_TRUNCATED")
    g = valid_model(); g.version = 2; add("wrong_version", g, "EV_ERR_BAD_VERSION")
    g = valid_model(); g.n_tensors = 1 << 62; add("huge_tensor_count", g, "EV_ERR_BAD_COUNT")
    g = valid_model(); g.n_kv = (1 << 64) - 1; add("huge_kv_count", g, "EV_ERR_BAD_COUNT")
    # a key whose length field claims 1 TiB
    g = valid_model(); g.kvs.insert(0, ("x", 99, b"")); b = g.to_bytes()
    add("oversized_key_string", b[:24] + struct.pack("<Q", 1 << 40) + b[32:], "EV_ERR_BAD_STRING")
    g = valid_model(); g.kvs.append(("general.name", T_STRING, "n")); b = bytearray(g.to_bytes())
    i = b.index(b"general.name") + len("general.name") + 4
    b[i:i + 8] = struct.pack("<Q", 1 << 50); add("oversized_value_string", bytes(b), "EV_ERR_BAD_STRING")
    g = valid_model(); b = bytearray(g.to_bytes())
    i = b.index(b"tokenizer.ggml.tokens") + len("tokenizer.ggml.tokens") + 8
    b[i:i + 8] = struct.pack("<Q", 1 << 60); add("huge_string_array_count", bytes(b), "EV_ERR_BAD_COUNT")
    g = valid_model(); b = bytearray(g.to_bytes())
    i = b.index(b"lfm2.attention.head_count_kv") + len("lfm2.attention.head_count_kv") + 8
    b[i:i + 8] = struct.pack("<Q", 1 << 60); add("huge_int_array_count", bytes(b), "EV_ERR_BAD_COUNT")
    g = valid_model(); g.kvs.append(("x.nested", T_ARRAY, struct.pack("<IQ", T_ARRAY, 0)))
    add("nested_array", g, "EV_ERR_BAD_KV_TYPE")
    g = valid_model(); g.kvs.append(("x.bad", 99, b"")); add("bad_kv_type", g, "EV_ERR_BAD_KV_TYPE")
    g = valid_model(); g.kvs.append(("general.alignment", T_U32, 24)); add("bad_alignment_value", g, "EV_ERR_MISALIGNED")
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").offset = 0; add("overlapping_offsets", g, "EV_ERR_OVERLAP")
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").offset = 1 << 40; add("offset_out_of_range", g, "EV_ERR_BAD_OFFSET")
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").offset = 8; add("misaligned_offset", g, "EV_ERR_MISALIGNED")
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").type = 99; add("bad_tensor_type", g, "EV_ERR_BAD_TENSOR_TYPE")
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").type = Q2_K; add("unsupported_q2_k", g, "EV_ERR_BAD_TENSOR_TYPE")
    _add_kquant_cases(add)
    _add_qwen2_cases(add)
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").dims = [1 << 40, 1 << 40]; add("shape_overflow", g, "EV_ERR_BAD_SHAPE")
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").dims = [E, FF, 1, 1, 1]; add("five_dims", g, "EV_ERR_BAD_SHAPE")
    g = valid_model(); t = _tensor(g, "blk.0.ffn_up.weight"); t.type = Q8_0; t.dims = [E + 1, FF]
    add("q8_row_not_block_multiple", g, "EV_ERR_BAD_SHAPE")
    g = valid_model(); g.tensors.append(Tensor("blk.0.ffn_up.weight", [4], F32, b"\0" * 16)); add("duplicate_tensor", g, "EV_ERR_DUPLICATE")
    g = valid_model(); g.tensors = [t for t in g.tensors if t.name != "blk.1.attn_k.weight"]
    add("missing_tensor", g, "EV_ERR_MISSING_TENSOR")
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").dims = [FF, E]; add("tensor_shape_mismatch", g, "EV_ERR_TENSOR_SHAPE")
    g = _set_kv(valid_model(), "general.architecture", T_STRING, "llama"); add("wrong_architecture", g, "EV_ERR_UNSUPPORTED_ARCH")
    g = valid_model(); g.kvs = [kv for kv in g.kvs if kv[0] != "lfm2.shortconv.l_cache"]; add("missing_key", g, "EV_ERR_MISSING_KEY")
    g = _set_kv(valid_model(), "lfm2.attention.head_count_kv", T_ARRAY, (T_I32, [0, 1, 1])); add("head_count_kv_length", g, "EV_ERR_BAD_KEY")
    g = _set_kv(valid_model(), "lfm2.block_count", T_STRING, "2"); add("key_wrong_type", g, "EV_ERR_BAD_KEY")
    g = _set_kv(valid_model(), "lfm2.embedding_length", T_U32, 0); add("zero_embedding_length", g, "EV_ERR_BAD_KEY")
    g = _set_kv(valid_model(), "lfm2.attention.head_count", T_U32, 4096)
    g.kvs.append(("lfm2.attention.key_length", T_U32, 1 << 20)); add("huge_attention_width", g, "EV_ERR_BAD_KEY")
    g = _set_kv(valid_model(), "tokenizer.ggml.tokens", T_ARRAY, (T_STRING, ["a"] * (VOCAB + 1))); add("vocab_too_long", g, "EV_ERR_BAD_KEY")
    g = valid_model(); g.kvs.append(("tokenizer.ggml.token_type", T_ARRAY, (T_I32, [1] * (VOCAB + 1))))
    add("token_types_too_long", g, "EV_ERR_BAD_KEY")
    g = valid_model(); g.kvs.append(("tokenizer.ggml.token_type", T_ARRAY, (T_STRING, ["1"] * VOCAB)))
    add("token_types_not_int32", g, "EV_ERR_BAD_KEY")
    # truncation inside the header: every field boundary region reports TRUNCATED or BAD_STRING
    data_end = len(good) - sum(len(t.data) for t in v.tensors) - _padding(v)
    add("truncated_in_version", good[:6], "EV_ERR_TRUNCATED")
    add("truncated_in_counts", good[:20], "EV_ERR_TRUNCATED")
    add("truncated_in_tensor_data", good[:len(good) - 7], "EV_ERR_BAD_OFFSET")
    add("truncated_before_data", good[:data_end - 3], "EV_ERR_TRUNCATED")
    _add_test_gguf_classes(add)
    return cases


def _add_test_gguf_classes(add) -> None:
    """The bad-file classes of llama.cpp's tests/test-gguf.cpp (HANDCRAFTED_*), on the valid model."""
    add("empty_file", b"", "EV_ERR_BAD_MAGIC")                                               # HEADER_EMPTY
    for name, version in [("version_0", 0), ("version_1", 1), ("version_future", 4), ("version_big_endian", 3 << 24)]:
        g = valid_model(); g.version = version; add(name, g, "EV_ERR_BAD_VERSION")          # HEADER_BAD_VERSION_*
    add("tensor_count_past_header", b"GGUF" + struct.pack("<IQQ", 3, 1, 0), "EV_ERR_BAD_COUNT")  # HEADER_BAD_N_TENSORS
    g = valid_model(); g.n_kv = len(g.kvs) + 1; add("kv_count_one_too_many", g, "EV_ERR_BAD_STRING")  # HEADER_BAD_N_KV
    g = valid_model(); g.kvs.append(("x.t", 13, b"")); add("kv_type_count", g, "EV_ERR_BAD_KV_TYPE")  # KV_BAD_TYPE
    g = valid_model(); g.kvs.append(("x.arr", T_ARRAY, struct.pack("<IQ", 99, 1) + b"\0" * 8))
    add("array_unknown_element_type", g, "EV_ERR_BAD_KV_TYPE")
    g = valid_model(); g.kvs.append(("x.s", T_ARRAY, struct.pack("<IQQ", T_STRING, 1, 1 << 40)))
    add("array_string_length_past_end", g, "EV_ERR_BAD_STRING")
    g = valid_model(); g.kvs.append(("general.name", T_STRING, "a")); g.kvs.append(("general.name", T_STRING, "b"))
    add("duplicate_key", g, "EV_ERR_DUPLICATE")                                              # KV_DUPLICATE_KEY
    g = valid_model(); g.kvs.insert(0, ("lfm2.block_count", T_U32, 1)); add("duplicate_required_key", g, "EV_ERR_DUPLICATE")
    g = valid_model(); g.kvs.append(("general.alignment", T_U32, 0)); add("alignment_zero", g, "EV_ERR_MISALIGNED")  # KV_BAD_ALIGN
    g = valid_model(); g.kvs.append(("general.alignment", T_I32, 32)); add("alignment_wrong_type", g, "EV_ERR_MISALIGNED")  # KV_WRONG_TYPE_ALIGN
    # a power of two so large that the data section would start past the end of the file
    g = valid_model(); g.kvs.append(("general.alignment", T_U32, 1 << 31)); add("alignment_past_end", g, "EV_ERR_TRUNCATED")
    # offsets laid out for alignment 1 in a file that declares none (default 32): TENSORS_INCONSISTENT_ALIGN
    g = valid_model(); g.alignment = 1; g.tensors[1].data += b"\0"; add("inconsistent_alignment", g, "EV_ERR_MISALIGNED")
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").name = "blk.0." + "x" * 60; add("tensor_name_too_long", g, "EV_ERR_BAD_STRING")
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").dims = []; add("zero_dims", g, "EV_ERR_BAD_SHAPE")  # TENSORS_BAD_N_DIMS
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").dims = [(1 << 64) - 1, FF]; add("negative_dim", g, "EV_ERR_BAD_SHAPE")  # BAD_SHAPE
    g = valid_model(); t = _tensor(g, "blk.0.ffn_up.weight"); t.dims = [E, 0]; t.data = b""
    add("zero_sized_dim", g, "EV_ERR_TENSOR_SHAPE")                                          # TENSORS_ZERO_DIM
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").dims = [4 * (2**31 - 1)] * 2; add("ne_too_big", g, "EV_ERR_BAD_SHAPE")
    # element count fits in int64, byte count (x4 for F32) does not fit in uint64: TENSORS_NBYTES_TOO_BIG
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").dims = [1 << 31, 1 << 31]; add("nbytes_overflow", g, "EV_ERR_BAD_SHAPE")
    # F32 [4, 2^30-1, 2^30+1]: 2^64 - 16 bytes, where rounding up to the alignment wraps: TENSORS_NBYTES_PAD_WRAP
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").dims = [4, 2**30 - 1, 2**30 + 1]; add("nbytes_pad_wrap", g, "EV_ERR_BAD_OFFSET")
    g = valid_model(); _tensor(g, "blk.0.ffn_up.weight").offset = (1 << 64) - 32; add("offset_wraps", g, "EV_ERR_BAD_OFFSET")  # BAD_OFFSET
    g = valid_model(); g.tensors[2].offset = 32; add("partial_overlap", g, "EV_ERR_OVERLAP")
    # two tensors at the same offset whose sizes each fit, but not together (DATA_MEM_SIZE_OVERFLOW's intent)
    g = valid_model(); g.tensors[-1].offset = 0; add("same_offset", g, "EV_ERR_OVERLAP")
    # the model's own checks on values the reader accepts
    g = _set_kv(valid_model(), "general.architecture", T_U32, 7); add("architecture_not_a_string", g, "EV_ERR_UNSUPPORTED_ARCH")
    g = _set_kv(valid_model(), "lfm2.shortconv.l_cache", T_U32, 65); add("l_cache_too_long", g, "EV_ERR_BAD_KEY")
    g = valid_model(); g.kvs.append(("lfm2.attention.key_length", T_U32, 15)); add("odd_head_dim", g, "EV_ERR_BAD_KEY")
    g = _set_kv(valid_model(), "lfm2.attention.head_count_kv", T_ARRAY, (T_I32, [0, 3]))
    add("heads_not_multiple_of_kv_heads", g, "EV_ERR_BAD_KEY")
    g = _set_kv(valid_model(), "lfm2.rope.freq_base", T_F32, float("nan")); add("rope_base_nan", g, "EV_ERR_BAD_KEY")
    g = valid_model(); g.kvs.append(("tokenizer.ggml.eos_token_id", T_U32, VOCAB)); add("eos_id_out_of_range", g, "EV_ERR_BAD_KEY")
    g = valid_model(); g.kvs.append(("lfm2.vocab_size", T_U32, VOCAB + 1)); add("vocab_size_mismatch", g, "EV_ERR_TENSOR_SHAPE")
    g = valid_model(); _tensor(g, "token_embd.weight").dims = [E, VOCAB, 1]; add("embedding_three_dims", g, "EV_ERR_TENSOR_SHAPE")


def truncations(step: int = 7) -> list[bytes]:
    """The valid model cut at many points (every `step` bytes through the header, a few in the data)."""
    good = valid_model().to_bytes()
    header = len(good) - sum(len(t.data) for t in valid_model().tensors)
    cuts = list(range(0, header, step)) + [header + 1, len(good) // 2, len(good) - 1]
    return [good[:c] for c in cuts]


def mutations(count: int = 300, seed: int = 0) -> list[bytes]:
    """The valid model with 1-4 header bytes overwritten (random or extreme values), deterministically."""
    good = valid_model().to_bytes()
    header = len(good) - sum(len(t.data) for t in valid_model().tensors)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        b = bytearray(good)
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(4, header))
            b[i] = int(rng.choice([0x00, 0xFF, 0x7F, 0x80, int(rng.integers(0, 256))]))
        out.append(bytes(b))
    return out
