"""PyTorch reference for the runtime tests: transformers' Lfm2ForCausalLM with random weights."""
from __future__ import annotations

import functools

import torch

from edgevlm._compat import import_timm


def reference_model(seed: int = 0, vocab: int = 512, hidden: int = 64, ffn: int = 128, init_std: float = 0.1):
    """A small random LFM2 (conv, attention, conv, attention), eager attention, f32, eval mode.

    init_std is larger than the usual 0.02 so that logits are spread out like
    a trained model's and greedy choices are not coin flips between ties.
    """
    import_timm()  # makes torchvision importable here, which transformers imports
    from transformers import Lfm2Config, Lfm2ForCausalLM

    torch.manual_seed(seed)
    cfg = Lfm2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        layer_types=["conv", "full_attention", "conv", "full_attention"], block_auto_adjust_ff_dim=False,
        conv_L_cache=3, initializer_range=init_std, norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        attn_implementation="eager",
    )
    model = Lfm2ForCausalLM(cfg).eval()
    with torch.no_grad():   # norms at 1 hide mistakes in their use: randomize them
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    return cfg, model


@torch.no_grad()
def full_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits [n, vocab] of every position of one sequence (no cache)."""
    return model(ids.view(1, -1)).logits[0].float()


@torch.no_grad()
def greedy(model, prompt: torch.Tensor, n_new: int) -> torch.Tensor:
    """prompt followed by n_new greedy tokens, decoded with transformers' cache."""
    out = model.generate(prompt.view(1, -1), max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                         pad_token_id=0, eos_token_id=None)
    return out[0]


def greedy_agreement(model, runtime_model, prompt: torch.Tensor, n_new: int) -> float:
    """Share of n_new teacher-forced steps where the runtime's argmax equals PyTorch's greedy token."""
    seq = greedy(model, prompt, n_new)
    s = runtime_model.session(n_ctx=len(seq))
    logits = s.prefill(ids=prompt.numpy())
    agree = 0
    for t in range(len(prompt), len(seq)):
        agree += int(logits.argmax()) == int(seq[t])
        logits = s.step(int(seq[t]))
    return agree / n_new


@functools.lru_cache(maxsize=1)
def trained_reference_model(seed: int = 0, vocab: int = 256, steps: int = 150):
    """A small LFM2 briefly trained on a deterministic rule (next = perm[token]).

    Random weights give near-tied logits (the median top-2 gap is a fraction of
    the quantization error), which says nothing about quantized decoding of a
    real model; a model that has learned something predicts with margins, as
    the trained demo model does.  Training takes ~10 s with one torch thread.
    """
    cfg, model = reference_model(seed=seed, vocab=vocab, init_std=0.02)
    return cfg, train_on_permutation(model, vocab, seed, steps)


def train_on_permutation(model, vocab: int, seed: int, steps: int):
    """Train a causal LM in place on next = perm[token] (10 % noise tokens), then return it in eval mode."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(vocab, generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        x = torch.empty(16, 48, dtype=torch.long)
        x[:, 0] = torch.randint(0, vocab, (16,), generator=g)
        for t in range(1, 48):
            x[:, t] = perm[x[:, t - 1]]
        noise = torch.rand(x.shape, generator=g) < 0.1   # some off-rule tokens so the state matters
        x = torch.where(noise, torch.randint(0, vocab, x.shape, generator=g), x)
        loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).logits.reshape(-1, vocab), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def small_bpe_tokenizer(vocab_size: int = 320):
    """A byte-level BPE `tokenizers` tokenizer (LFM2's kind) trained on two phrases; ids 0, 1 are <s>, </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world", "hello there world"] * 20, trainer)
    return tok
