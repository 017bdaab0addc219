"""Qwen2 language model (FastVLM's LM) with the same explicit-state API as the LFM2 LM.

Every layer is GQA attention (q/k/v with bias, no QK norm) plus a SwiGLU MLP;
parameter names are transformers' ``Qwen2ForCausalLM`` names.  The state is
:class:`~edgevlm.models.arch.lfm2.LMState` with an empty conv cache, and the KV
cache is written and masked exactly as in lfm2.py (one-hot products, static
shapes), so the same prefill/decode stage modules serve it.
"""
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from edgevlm.errors import CheckpointError
from edgevlm.models.arch.lfm2 import LMState, Lfm2RMSNorm, _one_hot, cache_step, cached_attention


@dataclass
class Qwen2Config:
    """The keys of transformers' Qwen2Config that shape the network."""

    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int = 32
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    use_sliding_window: bool = False
    head_dim: int | None = None

    def __post_init__(self):
        if self.use_sliding_window:
            raise CheckpointError("Qwen2 sliding-window attention is not supported", "use a checkpoint with use_sliding_window false")
        if self.num_attention_heads % self.num_key_value_heads:
            raise CheckpointError("num_attention_heads must be a multiple of num_key_value_heads", "fix config.json")
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, cfg: dict) -> "Qwen2Config":
        cfg = dict(cfg)
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise CheckpointError(f"Qwen2 rope_type '{rope.get('rope_type', rope.get('type'))}' is not supported",
                                  "only the default RoPE is implemented")
        if "rope_theta" in rope:
            cfg.setdefault("rope_theta", rope["rope_theta"])
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in names})


class Qwen2Attention(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=True)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, key_cache, value_cache, write, mask):
        bsz, seq, _ = x.shape
        q = self.q_proj(x).view(bsz, seq, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(bsz, seq, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(bsz, seq, self.n_kv, self.head_dim).transpose(1, 2)
        out, key_cache, value_cache = cached_attention(q, k, v, cos, sin, key_cache, value_cache, write, mask)
        return self.o_proj(out), key_cache, value_cache


class Qwen2MLP(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.self_attn = Qwen2Attention(cfg)
        self.mlp = Qwen2MLP(cfg)
        self.input_layernorm = Lfm2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = Lfm2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen2Model(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = Lfm2RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen2ForCausalLM(nn.Module):
    """``init_state``, ``prefill``, ``decode`` with the signatures of lfm2.Lfm2ForCausalLM."""

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.config = cfg
        self.model = Qwen2Model(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        hd = cfg.head_dim
        self.register_buffer("inv_freq", 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float) / hd)),
                             persistent=False)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def embed(self, ids):
        return self.model.embed_tokens(ids)

    def logits(self, hidden):
        weight = self.model.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight
        return F.linear(hidden, weight)

    def init_state(self, max_len: int, batch: int = 1, dtype=torch.float32) -> LMState:
        cfg, dev = self.config, self.inv_freq.device
        kv = torch.zeros(cfg.num_hidden_layers, batch, cfg.num_key_value_heads, max_len, cfg.head_dim, dtype=dtype, device=dev)
        conv = torch.zeros(0, batch, cfg.hidden_size, 0, dtype=dtype, device=dev)
        return LMState(conv, kv, kv.clone(), torch.zeros(1, dtype=torch.long, device=dev))

    def prefill(self, ids=None, embeds=None, state: LMState = None, n_valid=None, last_only: bool = False):
        """As lfm2.Lfm2ForCausalLM.prefill."""
        if (ids is None) == (embeds is None) or state is None:
            raise ValueError("pass exactly one of ids or embeds, and a state")
        x = self.embed(ids) if embeds is None else embeds
        seq, max_len = x.shape[1], state.key.shape[3]
        if n_valid is None:
            n_valid = torch.full((1,), seq, dtype=torch.long, device=x.device)
        positions = state.pos + torch.arange(seq, device=x.device)
        cos, sin, write, mask = cache_step(positions, max_len, self.inv_freq, x.dtype)
        keys, values = list(state.key.unbind(0)), list(state.value.unbind(0))
        for i, layer in enumerate(self.model.layers):
            h, keys[i], values[i] = layer.self_attn(layer.input_layernorm(x), cos, sin, keys[i], values[i], write, mask)
            x = x + h
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        x = self.model.norm(x)
        if last_only:
            x = torch.matmul(_one_hot(n_valid - 1, seq, x.dtype), x)[:, 0]
        return self.logits(x), LMState(state.conv, torch.stack(keys), torch.stack(values), state.pos + n_valid)

    def decode(self, token, state: LMState):
        logits, state = self.prefill(ids=token.reshape(-1, 1), state=state)
        return logits[:, 0], state
