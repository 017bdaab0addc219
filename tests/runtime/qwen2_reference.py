"""PyTorch reference for the runtime's qwen2 tests: transformers' Qwen2ForCausalLM with random weights."""
from __future__ import annotations

import functools

import torch

from edgevlm._compat import import_timm
from lfm2_reference import train_on_permutation


def qwen2_reference(seed: int = 0, vocab: int = 512, hidden: int = 64, ffn: int = 128, tied: bool = True,
                    init_std: float = 0.1, layers: int = 3, heads: int = 4, kv_heads: int = 2):
    """A small random Qwen2 (GQA, by default 4 heads / 2 KV heads), eager attention, f32, eval mode.

    Norms and q/k/v biases are randomized: at their initial values (1 and 0)
    a mistake in their use would not show.
    """
    import_timm()  # makes torchvision importable here, which transformers imports
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=1024,
                      rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=tied,
                      initializer_range=init_std, attn_implementation="eager")
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn_like(p))
    return cfg, model


@functools.lru_cache(maxsize=1)
def trained_qwen2(seed: int = 0, vocab: int = 256, steps: int = 150):
    """A small Qwen2 briefly trained on next = perm[token] with 10 % noise, so
    that greedy choices have margins (random weights give near-ties); as
    lfm2_reference.trained_reference_model."""
    cfg, model = qwen2_reference(seed=seed, vocab=vocab, init_std=0.02)
    return cfg, train_on_permutation(model, vocab, seed, steps)
