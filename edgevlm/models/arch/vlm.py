"""Vision-language model assembly: encoder -> projector -> LFM2-style LM.

The prompt is laid out as ``<bos> <image> x N  prompt words``; the N image
placeholder embeddings are replaced by the projected vision tokens
(splicing), the LM prefills the whole sequence and then decodes greedily
until ``<eos>``.  The same object yields the compiler's four stages
(:func:`vlm_stages`): encoder, projector, llm-prefill (fixed length S,
padded prompts marked by ``n_valid``) and llm-decode (one token, explicit
state in and out).
"""
import torch
from torch import nn

from edgevlm.core.stage import Stage, StageKind, StageName
from edgevlm.errors import InputError
from edgevlm.models.arch.lfm2 import DecodeStage, Lfm2ForCausalLM, LMState, PrefillStage, STATE_NAMES
from edgevlm.progress import track


class VisionLanguageModel(nn.Module):
    """encoder (may be None when only image features are supplied) + projector + lm."""

    def __init__(self, encoder: nn.Module | None, projector: nn.Module, lm: Lfm2ForCausalLM, image_token_id: int,
                 image_size: int, num_image_tokens: int, prefill_len: int = 32, max_len: int = 64,
                 mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.lm = lm
        self.image_token_id = image_token_id
        self.image_size = image_size
        self.num_image_tokens = num_image_tokens
        self.prefill_len = prefill_len
        self.max_len = max_len
        self.prune_to: int | None = None  # text-guided pruning keeps this many image tokens (None: all)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    # -- inputs ------------------------------------------------------------
    def pixel_values(self, images) -> torch.Tensor:
        """PIL images (or one) -> normalized [B, 3, S, S] at the model's image size."""
        from edgevlm.data.image import preprocess

        return torch.from_numpy(preprocess(images, self.image_size, self.mean.flatten().tolist(), self.std.flatten().tolist()))

    def prompt_ids(self, prompt_ids: list[int], bos_id: int) -> list[int]:
        """``<bos> <image> x N prompt`` as token ids."""
        from edgevlm.models.arch.token_pruning import image_prompt_ids

        return image_prompt_ids(bos_id, self.image_token_id, self.num_image_tokens, prompt_ids)

    # -- compute -----------------------------------------------------------
    def image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] -> projected image tokens [B, N, hidden]."""
        if self.encoder is None:
            raise InputError("this model has no vision encoder", "project the vision tower's features with vlm.projector")
        return self.projector(self.encoder(pixel_values))

    def splice(self, ids: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """Token embeddings of ``ids`` [B,S] with the k-th image placeholder replaced by image token k."""
        text = self.lm.embed(ids)
        is_image = ids == self.image_token_id
        slot = (torch.cumsum(is_image.long(), dim=1) - 1).clamp(0, image_embeds.shape[1] - 1)
        gathered = torch.gather(image_embeds, 1, slot.unsqueeze(-1).expand(-1, -1, image_embeds.shape[-1]))
        return torch.where(is_image.unsqueeze(-1), gathered.to(text.dtype), text)

    def forward(self, pixel_values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B,S,V] for ``ids`` holding N image placeholders each."""
        return self.lm(self.splice(ids, self.image_embeds(pixel_values)))

    @torch.no_grad()
    def select_image_tokens(self, image_embeds: torch.Tensor, ids: list[int]) -> torch.Tensor:
        """Text-guided pruning of [1, N, H] image embeddings to ``prune_to`` tokens, guided by the prompt in ``ids``."""
        if self.prune_to is None or image_embeds.shape[1] <= self.prune_to:
            return image_embeds
        from edgevlm.models.arch.token_pruning import keep_for_prompt

        def embed_words(words):
            return self.lm.embed(torch.tensor(words, dtype=torch.long)).float().numpy()

        keep = keep_for_prompt(image_embeds[0].float().numpy(), embed_words, ids, self.image_token_id, self.prune_to)
        return image_embeds[:, torch.from_numpy(keep)]

    @torch.no_grad()
    def generate(self, image_embeds: torch.Tensor, ids: list[int], eos_id: int, max_new_tokens: int = 24) -> list[int]:
        """Greedy decoding for one sample through prefill + decode with explicit state.

        ``image_embeds`` are the projector's tokens; text-guided pruning (if set) picks among them here.
        """
        image_embeds = self.select_image_tokens(image_embeds, ids)
        if len(ids) > self.prefill_len:
            raise InputError(f"prompt is {len(ids)} tokens, the model's prefill length is {self.prefill_len}",
                             "shorten the prompt")
        ids_t = torch.tensor([ids + [0] * (self.prefill_len - len(ids))])
        embeds = self.splice(ids_t, image_embeds)
        state = self.lm.init_state(self.max_len)
        logits, state = self.lm.prefill(embeds=embeds, state=state, n_valid=torch.tensor([len(ids)]), last_only=True)
        out: list[int] = []
        budget = min(max_new_tokens, self.max_len - len(ids))
        while len(out) < budget:
            token = int(logits[0].argmax())
            if token == eos_id:
                break
            out.append(token)
            logits, state = self.lm.decode(torch.tensor([token]), state)
        return out


def make_answerer(vlm: VisionLanguageModel, tokenizer, max_new_tokens: int = 24):
    """An ``answer(image, prompt) -> str`` function running the float model in PyTorch."""

    def answer(image, prompt: str) -> str:
        with torch.no_grad():
            embeds = vlm.image_embeds(vlm.pixel_values(image))
        ids = vlm.prompt_ids(tokenizer.encode(prompt), tokenizer.bos_id)
        return tokenizer.decode(vlm.generate(embeds, ids, tokenizer.eos_id, max_new_tokens))

    return answer


def vlm_stages(vlm: VisionLanguageModel, calibration: list | None = None) -> list[Stage]:
    """The four compiler stages at static shape, with example inputs from ``calibration[0]`` when given.

    ``calibration`` is a list of (pixel_values [1,3,S,S], prompt ids) pairs;
    each stage's calibration inputs are the real intermediate tensors of
    those samples (encoder tokens, projected embeddings, prefill state).
    """
    calibration = calibration or [(torch.zeros(1, 3, vlm.image_size, vlm.image_size), vlm.prompt_ids([], bos_id=1))]
    enc_in, proj_in, pre_in, dec_in = [], [], [], []
    # Every prefill starts from the same zeroed state (prefill returns a new one): one copy, shared by the
    # samples, instead of a KV cache per sample.
    state = vlm.lm.init_state(vlm.max_len)
    with torch.no_grad():
        for px, ids in track(calibration, "float model on image + prompt", len(calibration)):
            tokens = vlm.encoder(px)
            embeds = vlm.select_image_tokens(vlm.projector(tokens), list(ids))
            ids_t = torch.tensor([list(ids) + [0] * (vlm.prefill_len - len(ids))])
            spliced = vlm.splice(ids_t, embeds)
            n_valid = torch.tensor([len(ids)])
            logits, after = vlm.lm.prefill(embeds=spliced, state=state, n_valid=n_valid, last_only=True)
            enc_in.append((px,))
            proj_in.append((tokens,))
            pre_in.append((spliced, n_valid, *state))
            dec_in.append((logits.argmax(-1).reshape(1, 1), *after))
    return [
        Stage(StageName.ENCODER, vlm.encoder, enc_in[0], kind=StageKind.ENCODER, input_names=("pixel_values",),
              output_names=("image_tokens",), calibration=enc_in),
        Stage(StageName.PROJECTOR, vlm.projector, proj_in[0], kind=StageKind.PROJECTOR, input_names=("image_tokens",),
              output_names=("image_embeds",), calibration=proj_in),
        *llm_stages(vlm.lm, pre_in[0], dec_in[0], pre_in, dec_in),
    ]


class _NonEmptyState(nn.Module):
    """A prefill or decode stage module without the state parts that hold no element.

    An LM without short convs (Qwen2) has a [0, ...] conv state, one of short convs only an empty KV cache:
    nothing flows through them, and QNN refuses a zero-sized graph tensor (its Quantize fails
    graphAddNode with error 6005).  The stage then takes and returns only the other parts; the empty ones
    are made inside (a constant, which export drops with the pass-through that returned it).
    """

    def __init__(self, stage: nn.Module, n_lead: int, empty: dict[int, tuple[tuple, torch.dtype]]):
        super().__init__()
        self.stage, self.n_lead, self.empty = stage, n_lead, empty

    def forward(self, *args):
        kept = iter(args[self.n_lead:])
        state = [torch.zeros(self.empty[i][0], dtype=self.empty[i][1]) if i in self.empty else next(kept)
                 for i in range(len(STATE_NAMES))]
        logits, *out = self.stage(*args[:self.n_lead], *state)
        return (logits, *(t for i, t in enumerate(out) if i not in self.empty))


def _drop_empty_state(inputs: tuple, n_lead: int, empty) -> tuple:
    return (*inputs[:n_lead], *(t for i, t in enumerate(inputs[n_lead:]) if i not in empty))


def llm_stages(lm, prefill_inputs: tuple, decode_inputs: tuple, prefill_calibration: list | None = None,
               decode_calibration: list | None = None) -> list[Stage]:
    """The LM's two stages with explicit state I/O: llm-prefill (embeds, n_valid, state) and llm-decode
    (token, state), both -> (logits, state); a state part with no element is left out (_NonEmptyState)."""
    state = prefill_inputs[2:]
    empty = {i: (tuple(t.shape), t.dtype) for i, t in enumerate(state) if t.numel() == 0}
    names = tuple(n for i, n in enumerate(STATE_NAMES) if i not in empty)
    stages = []
    for name, module, n_lead, lead_names, inputs, calibration in (
            (StageName.LLM_PREFILL, PrefillStage(lm), 2, ("embeds", "n_valid"), prefill_inputs, prefill_calibration),
            (StageName.LLM_DECODE, DecodeStage(lm), 1, ("token",), decode_inputs, decode_calibration)):
        if empty:
            module = _NonEmptyState(module, n_lead, empty)
            inputs = _drop_empty_state(inputs, n_lead, empty)
            calibration = None if calibration is None else [_drop_empty_state(c, n_lead, empty) for c in calibration]
        stages.append(Stage(name, module, inputs, kind=StageKind.LLM, input_names=(*lead_names, *names),
                            output_names=("logits", *names), calibration=calibration))
    return stages


__all__ = ["LMState", "VisionLanguageModel", "llm_stages", "make_answerer", "vlm_stages"]
