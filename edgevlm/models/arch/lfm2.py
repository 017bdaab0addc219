"""LFM2-style hybrid language model with explicit, fixed-size state.

The layers are those of Liquid AI's LFM2 (gated short causal convolutions
plus a few grouped-query attention layers with RoPE and per-head QK RMSNorm,
SwiGLU feed-forward, RMSNorm), written here rather than wrapped from
transformers: transformers hides its caches in Python objects that grow with
the sequence, while an NPU graph needs every tensor at a fixed shape.  Here
prefill and decode are pure functions of (input, state) -> (logits, state):

- state.conv  [n_conv_layers, B, hidden, L_cache - 1]  last inputs of each short conv
- state.key / state.value [n_attn_layers, B, n_kv_heads, max_len, head_dim]
- state.pos   [1] int64, the number of tokens already consumed

Cache writes and reads use one-hot matrix products instead of scatter/gather
with data-dependent indices, so the same graph exports with torch.export at
static shape and maps onto matmul/elementwise ops that every NPU runs.

Parameter names and config keys are exactly those of transformers'
``Lfm2Config`` / ``Lfm2ForCausalLM``, so Hugging Face checkpoints load
directly and one GGUF exporter (HF naming) serves both.
"""
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.errors import CheckpointError


@dataclass
class Lfm2Config:
    """The keys of transformers' Lfm2Config that shape the network (same names, same defaults)."""

    vocab_size: int = 65536
    hidden_size: int = 2560
    intermediate_size: int = 12288
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    max_position_embeddings: int = 128000
    norm_eps: float = 1e-5
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    tie_word_embeddings: bool = True
    rope_theta: float = 1000000.0
    conv_bias: bool = False
    conv_L_cache: int = 3
    block_multiple_of: int = 256
    block_ffn_dim_multiplier: float | None = 1.0
    block_auto_adjust_ff_dim: bool = True
    layer_types: list = field(default_factory=list)

    def __post_init__(self):
        if not self.layer_types:
            self.layer_types = ["full_attention"] * self.num_hidden_layers
        if len(self.layer_types) != self.num_hidden_layers:
            raise CheckpointError(
                f"layer_types has {len(self.layer_types)} entries but num_hidden_layers is {self.num_hidden_layers}",
                "make layer_types list one entry ('conv' or 'full_attention') per layer",
            )
        bad = sorted(set(self.layer_types) - {"conv", "full_attention"})
        if bad:
            raise CheckpointError(f"unsupported LFM2 layer type(s) {bad}", "layer_types entries must be 'conv' or 'full_attention'")
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise CheckpointError(
                f"hidden_size {self.hidden_size}, num_attention_heads {self.num_attention_heads}, "
                f"num_key_value_heads {self.num_key_value_heads} do not divide evenly",
                "hidden_size must be a multiple of num_attention_heads, and that of num_key_value_heads",
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def ffn_dim(self) -> int:
        """The SwiGLU width, adjusted as transformers' Lfm2MLP does."""
        dim = self.intermediate_size
        if self.block_auto_adjust_ff_dim:
            dim = int(2 * dim / 3)
            if self.block_ffn_dim_multiplier is not None:
                dim = int(self.block_ffn_dim_multiplier * dim)
                dim = self.block_multiple_of * ((dim + self.block_multiple_of - 1) // self.block_multiple_of)
        return dim

    @classmethod
    def from_dict(cls, cfg: dict) -> "Lfm2Config":
        """Read a Hugging Face LFM2 config dict (v4 or v5 layout); unknown keys are ignored."""
        cfg = dict(cfg)
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise CheckpointError(f"LFM2 rope_type '{rope_type}' is not supported", "only the default RoPE (rope_type 'default') is implemented")
        if "rope_theta" in rope:
            cfg.setdefault("rope_theta", rope["rope_theta"])
        if "block_ff_dim" in cfg:
            cfg["intermediate_size"] = cfg["block_ff_dim"]
        if "tie_embedding" in cfg:
            cfg["tie_word_embeddings"] = cfg["tie_embedding"]
        if not cfg.get("layer_types"):
            n = cfg.get("num_hidden_layers", cls.num_hidden_layers)
            attn = cfg.get("full_attn_idxs")
            attn = range(n) if attn is None else attn
            cfg["layer_types"] = ["full_attention" if i in attn else "conv" for i in range(n)]
        if isinstance(cfg.get("eos_token_id"), list):
            cfg["eos_token_id"] = cfg["eos_token_id"][0]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in names})

    def to_dict(self) -> dict:
        """A config.json that transformers' Lfm2Config reads back."""
        d = asdict(self)
        d["rope_parameters"] = {"rope_type": "default", "rope_theta": d.pop("rope_theta")}
        d["model_type"] = "lfm2"
        d["architectures"] = ["Lfm2ForCausalLM"]
        return d


class LMState(NamedTuple):
    """Fixed-size generation state (a pytree: torch.export flattens it to tensors)."""

    conv: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    pos: torch.Tensor


class Lfm2RMSNorm(nn.Module):
    """RMSNorm computed in fp32, scaled by ``weight`` (as transformers' Lfm2RMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Lfm2MLP(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: Lfm2Config):
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden_size, cfg.ffn_dim, bias=False)
        self.w3 = nn.Linear(cfg.hidden_size, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def _one_hot(index: torch.Tensor, size: int, dtype) -> torch.Tensor:
    """[..., size] with a 1 where arange(size) == index (all-zero rows when out of range)."""
    return (torch.arange(size, device=index.device) == index.unsqueeze(-1)).to(dtype)


class Lfm2ShortConv(nn.Module):
    """Gated short causal convolution: in_proj -> (B, C, x); C * conv(B * x) -> out_proj."""

    def __init__(self, cfg: Lfm2Config):
        super().__init__()
        h, k = cfg.hidden_size, cfg.conv_L_cache
        self.conv = nn.Conv1d(h, h, kernel_size=k, groups=h, bias=cfg.conv_bias, padding=k - 1)
        self.in_proj = nn.Linear(h, 3 * h, bias=cfg.conv_bias)
        self.out_proj = nn.Linear(h, h, bias=cfg.conv_bias)

    def forward(self, x: torch.Tensor, conv_state: torch.Tensor, n_valid: torch.Tensor):
        """x [B,S,H], conv_state [B,H,L-1] -> (y [B,S,H], new conv_state).

        The new state holds the L-1 conv inputs ending at token ``n_valid - 1``,
        so padded tokens after ``n_valid`` leave no trace.
        """
        seq = x.shape[1]
        b, c, xx = self.in_proj(x).transpose(1, 2).chunk(3, dim=1)
        bx = torch.cat([conv_state, b * xx], dim=2)  # [B, H, L-1+S]
        y = F.conv1d(bx, self.conv.weight, self.conv.bias, groups=bx.shape[1])  # no padding: S outputs
        hist = conv_state.shape[2]
        # Select columns n_valid .. n_valid+L-2 of bx with a one-hot product (static shape, no gather).
        select = _one_hot(n_valid + torch.arange(hist, device=x.device), hist + seq, bx.dtype)  # [L-1, L-1+S]
        new_state = torch.matmul(bx, select.transpose(0, 1))
        return self.out_proj((c * y).transpose(1, 2)), new_state

    def forward_full(self, x: torch.Tensor) -> torch.Tensor:
        """Stateless causal form over a whole sequence (training): left zero padding instead of a state."""
        b, c, xx = self.in_proj(x).transpose(1, 2).chunk(3, dim=1)
        y = self.conv(b * xx)[..., : x.shape[1]]
        return self.out_proj((c * y).transpose(1, 2))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor, dtype):
    """RoPE (cos, sin) [S, head_dim] for the tokens at ``positions``."""
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def cache_step(positions: torch.Tensor, max_len: int, inv_freq: torch.Tensor, dtype):
    """(cos, sin, write, mask) for the tokens at ``positions`` over a fixed-size KV cache of ``max_len`` slots.

    ``write`` [S, T] one-hot cache slots; ``mask`` [S, T] 1.0 where a query
    may attend (slot <= its position), the form cached_attention takes.
    """
    cos, sin = rope_tables(positions, inv_freq, dtype)
    write = _one_hot(positions, max_len, dtype)
    mask = (torch.arange(max_len, device=positions.device)[None, :] <= positions[:, None]).to(torch.float32)
    return cos, sin, write, mask


def cached_attention(q, k, v, cos, sin, key_cache, value_cache, write, mask):
    """RoPE + fixed-size KV-cache update + grouped-query attention, shared by the LMs here.

    q [B,h,S,hd] and k, v [B,kv,S,hd] before RoPE; caches [B,kv,T,hd];
    ``write`` [S,T] one-hot cache slots; ``mask`` [S,T] 1.0 where a query
    may attend, 0.0 elsewhere.  Returns (out [B,S,h*hd], key_cache, value_cache).

    The mask multiplies the exponentials instead of adding -inf (or
    finfo.min) to the scores: mathematically the same softmax, but every
    tensor keeps a small range, so per-tensor 8/16-bit quantization of the
    scores is not ruined by one huge negative constant (and no float Where
    op is left in the graph for an integer-only NPU).
    """
    bsz, _, seq, head_dim = q.shape
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    # Write the new keys/values into their slots: cache * (1 - used) + write^T @ new.
    used = write.sum(0).view(1, 1, -1, 1)
    wt = write.transpose(0, 1)
    key_cache = key_cache * (1 - used) + torch.matmul(wt, k)
    value_cache = value_cache * (1 - used) + torch.matmul(wt, v)
    rep = q.shape[1] // k.shape[1]
    keys = key_cache.repeat_interleave(rep, dim=1) if rep > 1 else key_cache
    values = value_cache.repeat_interleave(rep, dim=1) if rep > 1 else value_cache
    scores = (torch.matmul(q, keys.transpose(2, 3)) * head_dim**-0.5).float()
    weights = torch.exp(scores - scores.max(dim=-1, keepdim=True).values) * mask  # max.dim: TVM has no amax
    probs = weights / weights.sum(dim=-1, keepdim=True)
    out = torch.matmul(probs.to(q.dtype), values)
    return out.transpose(1, 2).reshape(bsz, seq, -1), key_cache, value_cache


class Lfm2Attention(nn.Module):
    """GQA attention with per-head QK RMSNorm and RoPE over a fixed-size KV cache."""

    def __init__(self, cfg: Lfm2Config):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=False)
        self.out_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)
        self.q_layernorm = Lfm2RMSNorm(self.head_dim, cfg.norm_eps)
        self.k_layernorm = Lfm2RMSNorm(self.head_dim, cfg.norm_eps)

    def forward(self, x, cos, sin, key_cache, value_cache, write, mask):
        """x [B,S,H]; caches [B,kv,T,hd]; write [S,T] one-hot slots; mask [S,T] 1 = may attend."""
        bsz, seq, _ = x.shape
        q = self.q_layernorm(self.q_proj(x).view(bsz, seq, self.n_heads, self.head_dim)).transpose(1, 2)
        k = self.k_layernorm(self.k_proj(x).view(bsz, seq, self.n_kv, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(bsz, seq, self.n_kv, self.head_dim).transpose(1, 2)
        out, key_cache, value_cache = cached_attention(q, k, v, cos, sin, key_cache, value_cache, write, mask)
        return self.out_proj(out), key_cache, value_cache

    def forward_full(self, x, cos, sin):
        """Stateless causal attention over a whole sequence (training)."""
        bsz, seq, _ = x.shape
        q = self.q_layernorm(self.q_proj(x).view(bsz, seq, self.n_heads, self.head_dim)).transpose(1, 2)
        k = self.k_layernorm(self.k_proj(x).view(bsz, seq, self.n_kv, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(bsz, seq, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_heads != self.n_kv)
        return self.out_proj(out.transpose(1, 2).reshape(bsz, seq, -1))


class Lfm2DecoderLayer(nn.Module):
    def __init__(self, cfg: Lfm2Config, layer_type: str):
        super().__init__()
        self.is_attention_layer = layer_type == "full_attention"
        if self.is_attention_layer:
            self.self_attn = Lfm2Attention(cfg)
        else:
            self.conv = Lfm2ShortConv(cfg)
        self.feed_forward = Lfm2MLP(cfg)
        self.operator_norm = Lfm2RMSNorm(cfg.hidden_size, cfg.norm_eps)
        self.ffn_norm = Lfm2RMSNorm(cfg.hidden_size, cfg.norm_eps)


class Lfm2Model(nn.Module):
    def __init__(self, cfg: Lfm2Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Lfm2DecoderLayer(cfg, t) for t in cfg.layer_types)
        # transformers names the final norm "embedding_norm"; kept for checkpoint compatibility.
        self.embedding_norm = Lfm2RMSNorm(cfg.hidden_size, cfg.norm_eps)


class Lfm2ForCausalLM(nn.Module):
    """The LM: ``init_state``, ``prefill``, ``decode``, and a stateless ``forward`` for training."""

    def __init__(self, cfg: Lfm2Config):
        super().__init__()
        self.config = cfg
        self.model = Lfm2Model(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        hd = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.conv_layers = [i for i, t in enumerate(cfg.layer_types) if t == "conv"]
        self.attn_layers = [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"]
        self._init_weights()

    def _init_weights(self, std: float = 0.02) -> None:
        # transformers' initialization (normal, initializer_range 0.02): torch's N(0, 1) embedding
        # default would make tied-embedding logits huge at the start of training.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.model.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight
        return F.linear(hidden, weight)

    def init_state(self, max_len: int, batch: int = 1, dtype=torch.float32) -> LMState:
        """Zeroed state for up to ``max_len`` tokens (prompt + generated)."""
        cfg = self.config
        dev = self.inv_freq.device
        conv = torch.zeros(len(self.conv_layers), batch, cfg.hidden_size, cfg.conv_L_cache - 1, dtype=dtype, device=dev)
        kv_shape = (len(self.attn_layers), batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
        zeros = torch.zeros(kv_shape, dtype=dtype, device=dev)
        return LMState(conv, zeros, zeros.clone(), torch.zeros(1, dtype=torch.long, device=dev))

    def prefill(self, ids=None, embeds=None, state: LMState = None, n_valid=None, last_only: bool = False):
        """Consume S tokens (``ids`` [B,S] or ``embeds`` [B,S,H]) from ``state.pos``.

        ``n_valid`` ([1] int64, default S) marks tokens after it as padding: the
        returned state advances by ``n_valid`` and keeps no trace of them, so a
        graph compiled for a fixed S serves shorter prompts.  Returns logits
        [B,S,V] (or [B,V] at token ``n_valid - 1`` with ``last_only``) and the
        new state.  Tokens beyond the KV cache's max_len are not stored.
        """
        if (ids is None) == (embeds is None):
            raise ValueError("pass exactly one of ids or embeds")
        if state is None:
            raise ValueError("pass a state from init_state(max_len)")
        x = self.embed(ids) if embeds is None else embeds
        seq = x.shape[1]
        if n_valid is None:
            n_valid = torch.full((1,), seq, dtype=torch.long, device=x.device)
        hidden, state = self._run(x, state, n_valid)
        if last_only:
            pick = _one_hot(n_valid - 1, seq, hidden.dtype)  # [1, S]
            hidden = torch.matmul(pick, hidden)[:, 0]
        return self.logits(hidden), state

    def decode(self, token: torch.Tensor, state: LMState):
        """One step: ``token`` [B] or [B,1] int64 -> (logits [B,V], new state)."""
        logits, state = self.prefill(ids=token.reshape(-1, 1), state=state)
        return logits[:, 0], state

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """Stateless causal forward over [B,S,H] embeddings -> logits [B,S,V] (training).

        A separate, cheaper code path than prefill (fused causal attention, a
        padded convolution, no cache bookkeeping); tests check both agree.
        """
        x = embeds
        cos, sin = self._rope(torch.arange(x.shape[1], device=x.device), x.dtype)
        for layer in self.model.layers:
            h = layer.operator_norm(x)
            h = layer.self_attn.forward_full(h, cos, sin) if layer.is_attention_layer else layer.conv.forward_full(h)
            x = x + h
            x = x + layer.feed_forward(layer.ffn_norm(x))
        return self.logits(self.model.embedding_norm(x))

    def _rope(self, positions: torch.Tensor, dtype):
        return rope_tables(positions, self.inv_freq, dtype)

    def _run(self, x: torch.Tensor, state: LMState, n_valid: torch.Tensor):
        seq, max_len = x.shape[1], state.key.shape[3]
        positions = state.pos + torch.arange(seq, device=x.device)  # [S]
        cos, sin, write, mask = cache_step(positions, max_len, self.inv_freq, x.dtype)
        convs, keys, values = list(state.conv.unbind(0)), list(state.key.unbind(0)), list(state.value.unbind(0))
        ci = ai = 0
        for layer in self.model.layers:
            h = layer.operator_norm(x)
            if layer.is_attention_layer:
                h, keys[ai], values[ai] = layer.self_attn(h, cos, sin, keys[ai], values[ai], write, mask)
                ai += 1
            else:
                h, convs[ci] = layer.conv(h, convs[ci], n_valid)
                ci += 1
            x = x + h
            x = x + layer.feed_forward(layer.ffn_norm(x))
        x = self.model.embedding_norm(x)
        new_state = LMState(
            torch.stack(convs) if convs else state.conv,
            torch.stack(keys) if keys else state.key,
            torch.stack(values) if values else state.value,
            state.pos + n_valid,
        )
        return x, new_state


class PrefillStage(nn.Module):
    """Stage module "llm-prefill": (embeds [1,S,H], n_valid [1], conv, key, value, pos) ->
    (logits of token n_valid-1 [1,V], conv, key, value, pos)."""

    def __init__(self, lm: Lfm2ForCausalLM):
        super().__init__()
        self.lm = lm

    def forward(self, embeds, n_valid, conv, key, value, pos):
        logits, s = self.lm.prefill(embeds=embeds, state=LMState(conv, key, value, pos), n_valid=n_valid, last_only=True)
        return logits, s.conv, s.key, s.value, s.pos


class DecodeStage(nn.Module):
    """Stage module "llm-decode": (token [1,1] int64, conv, key, value, pos) -> (logits [1,V], conv, key, value, pos)."""

    def __init__(self, lm: Lfm2ForCausalLM):
        super().__init__()
        self.lm = lm

    def forward(self, token, conv, key, value, pos):
        logits, s = self.lm.decode(token, LMState(conv, key, value, pos))
        return logits, s.conv, s.key, s.value, s.pos


STATE_NAMES = ("conv_state", "key_cache", "value_cache", "pos")
