"""Text-guided vision token pruning (numpy only: the PyTorch model and the build runner share it).

Each image token (after the projector, in the LM's embedding space) is
scored by its cosine similarity to the mean embedding of the prompt's words;
the ``keep`` best tokens stay, in their original order.  Unlike dct, pool
and merge, which run inside the encoder stage, pruning depends on the
prompt, so it runs between the projector and the LM prefill: in
``VisionLanguageModel.generate`` and in ``edgevlm.runner.BuildRunner``
(which reads the word embeddings from the build's text_embeddings.safetensors).
The prompt layout the pruning reads (``image_prompt_ids``) is defined here too.
"""
import numpy as np


def image_prompt_ids(bos_id: int, image_token_id: int, num_image_tokens: int, prompt_ids) -> list[int]:
    """A zoo VLM's prompt layout, ``<bos> <image> x N words``, as token ids (the one definition of it)."""
    return [bos_id] + [image_token_id] * num_image_tokens + list(prompt_ids)


def prompt_words(ids, image_token_id: int) -> list[int]:
    """The prompt's word ids in ``<bos> <image> x N words`` (what guides the pruning)."""
    return [i for i in list(ids)[1:] if i != image_token_id]


def text_guided_keep(image_embeds: np.ndarray, text_embeds: np.ndarray, keep: int) -> np.ndarray:
    """Indices (ascending) of the ``keep`` image tokens [N, H] most similar to the mean text embedding [T, H]."""
    image = np.asarray(image_embeds, dtype=np.float32)
    n = image.shape[0]
    if keep >= n:
        return np.arange(n)
    text = np.asarray(text_embeds, dtype=np.float32)
    query = text.mean(axis=0) if text.shape[0] else np.zeros(image.shape[1], np.float32)
    norms = np.linalg.norm(image, axis=1) * max(float(np.linalg.norm(query)), 1e-12)
    scores = image @ query / np.maximum(norms, 1e-12)
    # Stable: among equal scores the earlier token wins, so the choice is deterministic.
    best = np.argsort(-scores, kind="stable")[:keep]
    return np.sort(best)


def keep_for_prompt(image_embeds: np.ndarray, embed_words, ids, image_token_id: int, keep: int) -> np.ndarray:
    """``text_guided_keep`` guided by the prompt's words in ``ids``; ``embed_words(word ids) -> [W, H]``
    gives their LM embeddings (the PyTorch LM's table or the build's text_embeddings)."""
    return text_guided_keep(image_embeds, embed_words(prompt_words(ids, image_token_id)), keep)
