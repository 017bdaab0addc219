"""Random-weight Hugging Face checkpoints at the published configs of LFM2-VL-450M, LFM2-VL-1.6B and FastVLM-0.5B.

No model hub is reachable here, so tests and benchmarks use checkpoint
directories with the published *structure* and random weights, written the
way a user's download looks:

- config.json + model.safetensors written by transformers' own classes
  (``Lfm2VlForConditionalGeneration``, ``FastVlmForConditionalGeneration``);
- tokenizer.json built with the ``tokenizers`` library: a byte-level BPE
  (Qwen2's split regex) trained on a small built-in corpus, carrying the
  family's special tokens at their published ids (LFM2: <|pad|> 0,
  <|startoftext|> 1, ..., <|im_start|> 6, <|im_end|> 7, <image> 396,
  <|img_row_R_col_C|> 397-496, <|img_thumbnail|> 497, <|image_start|> 498,
  <|image_end|> 499; Qwen2: <|endoftext|> 151643, <|im_start|> 151644,
  <|im_end|> 151645, FastVLM's <image> 151646).  Ids between the trained
  merges and the specials are filled with unreachable ``<|reserved_N|>``
  entries so every id the config names exists;
- tokenizer_config.json, chat_template.jinja, preprocessor_config.json and
  processor_config.json written by the family's transformers processor
  (``Lfm2VlProcessor`` with ``Lfm2VlImageProcessorFast``; ``LlavaProcessor``
  with ``CLIPImageProcessor`` for FastVLM) from the published settings.

Sources for the published settings: LFM2-VL's config.json/preprocessor
settings (transformers' Lfm2VlConfig / Lfm2VlImageProcessor defaults are the
450M's), LFM2-350M/1.2B's text configs (llama.cpp's conversion/lfm2.py reads
the same block_ff_dim / auto-adjust keys), the FastVLM-7B processor_config's
chat template (the 0.5B's is the same Qwen2 ChatML with "<image>\\n"), and
transformers' FastVlmConfig (FastViTHD ``fastvit_mci3`` under TimmWrapper).

``--tiny`` keeps every structural choice (tower type, projector, layer-type
pattern, special tokens, templates, processors) with small dims, for tests.
``--layout transformers4`` writes the tensor names checkpoints had before
transformers 5 (``model.vision_tower.vision_model.*`` for SigLIP2, the timm
tower without ``timm_model.``), which llama.cpp's converter needs.

Weights: transformers' initialisers for the SigLIP2 tower.  The language
model and the projector are redrawn at unit gain (matrices and kernels
N(0, 1/fan_in), word embeddings N(0, 1)): at transformers' std 0.02 a random
LM's blocks add little to the residual stream, so a tied-embedding model
only repeats its last input token and the image barely moves the answer;
at unit gain, with the residual branches' output projections x4 (measured
on the tiny LFM2-VL: at x1 greedy decoding still repeats the last prompt
token for 32 steps, at x2-x8 it does not), every block's output is O(1) and
greedy answers depend on the image and the prompt.  FastVLM's reparameterised timm tower, whose
transformers init leaves its output ~0, is redrawn N(0, 1/fan_in) and its
output rescaled so features are O(1) (stated in the printed summary).

    python benchmarks/hf_checkpoints.py lfm2-vl-450m --tiny --out /tmp/ckpt
    flock /tmp/edgevlm-bigmem.lock python benchmarks/hf_checkpoints.py lfm2-vl-450m   # -> /work/ckpt/lfm2-vl-450m
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

NAMES = ("lfm2-vl-450m", "lfm2-vl-1.6b", "fastvlm-0.5b")
LAYOUTS = ("transformers5", "transformers4")
DEFAULT_ROOT = Path("/work/ckpt")

# LFM2-350M and LFM2-1.2B put attention at layers 2, 5, 8, 10, 12, 14 of 16; the rest are short convolutions.
LFM2_ATTENTION_LAYERS = (2, 5, 8, 10, 12, 14)

LFM2_SPECIALS = {0: "<|pad|>", 1: "<|startoftext|>", 2: "<|endoftext|>", 3: "<|fim_pre|>", 4: "<|fim_mid|>",
                 5: "<|fim_suf|>", 6: "<|im_start|>", 7: "<|im_end|>", 8: "<|tool_list_start|>",
                 9: "<|tool_list_end|>", 10: "<|tool_call_start|>", 11: "<|tool_call_end|>",
                 12: "<|tool_response_start|>", 13: "<|tool_response_end|>", 396: "<image>",
                 **{397 + 10 * (r - 1) + (c - 1): f"<|img_row_{r}_col_{c}|>" for r in range(1, 11) for c in range(1, 11)},
                 497: "<|img_thumbnail|>", 498: "<|image_start|>", 499: "<|image_end|>"}
QWEN2_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # at 151643.. in Qwen2's tokenizer
QWEN2_FIRST_SPECIAL = 151643
FASTVLM_IMAGE_TOKEN = "<image>"  # id 151646 (config.image_token_index) right after Qwen2's specials

# LFM2-VL's chat template (chat_template.jinja of the LFM2-VL repos): bos, optional system turn, content
# lists flattened with "<image>" where an image item is, generation prompt.
LFM2_VL_TEMPLATE = """{{- bos_token -}}
{%- set ns = namespace(system_prompt="") -%}
{%- if messages[0]["role"] == "system" -%}
    {%- set ns.system_prompt = messages[0]["content"] -%}
    {%- set messages = messages[1:] -%}
{%- endif -%}
{%- if ns.system_prompt -%}
    {{- "<|im_start|>system\\n" + ns.system_prompt + "<|im_end|>\\n" -}}
{%- endif -%}
{%- for message in messages -%}
    {{- "<|im_start|>" + message["role"] + "\\n" -}}
    {%- set content = message["content"] -%}
    {%- if content is not string -%}
        {%- set ns.content = "" -%}
        {%- for item in content -%}
            {%- if item["type"] == "image" -%}
                {%- set ns.content = ns.content + "<image>" -%}
            {%- elif item["type"] == "text" -%}
                {%- set ns.content = ns.content + item["text"] -%}
            {%- else -%}
                {%- set ns.content = ns.content + item | tojson -%}
            {%- endif -%}
        {%- endfor -%}
        {%- set content = ns.content -%}
    {%- endif -%}
    {{- content + "<|im_end|>\\n" -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- "<|im_start|>assistant\\n" -}}
{%- endif -%}
"""

# FastVLM's (Qwen2 ChatML, default system turn, "<image>\n" for an image item).
FASTVLM_TEMPLATE = """{%- for message in messages -%}
    {%- if loop.first and messages[0]['role'] != 'system' -%}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' -}}
    {%- endif -%}
    {{- '<|im_start|>' + message['role'] + '\\n' -}}
    {%- if message['content'] is string -%}
        {{- message['content'] -}}
    {%- else -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{- '<image>\\n' -}}
            {%- elif item['type'] == 'text' -%}
                {{- item['text'] -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
    {{- '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""

# Qwen2's pre-tokenizer split (contractions, letters, single digits, punctuation runs, newlines, spaces).
_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")

_CORPUS = """A photo of a red circle on a white background. Describe this image in one sentence.
What is in the picture? There is a small blue square next to a large green triangle.
How many objects can you see? I can see three objects: two circles and one star.
The quick brown fox jumps over the lazy dog. A cat is sitting on the mat near the window.
Read the text in the image. The sign says STOP. The car is parked in front of the house.
What color is the sky? The sky is blue and there are a few white clouds in it.
Is there a person in this photo? Yes, a woman is walking her dog along the beach at sunset.
Count the apples on the table: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10. The answer is 10.
Explain what you see, step by step, and then answer the question briefly.
You are a helpful assistant. Answer the user's questions about images accurately.
The chart shows sales rising from 2019 to 2024; the highest value is in December.
A street at night with lights, cars, buses and people crossing the road in the rain.
"""


def _import_transformers():
    """transformers with edgevlm's torchvision shim (its image utilities import torchvision)."""
    from edgevlm._compat import import_timm

    import_timm()
    import transformers

    return transformers


# ---------------------------------------------------------------- configs

def _lfm2_text(hidden, ff_dim, heads, vocab, layers=16, attention=LFM2_ATTENTION_LAYERS, kv=8, multiple_of=256):
    return dict(model_type="lfm2", vocab_size=vocab, hidden_size=hidden, intermediate_size=ff_dim,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                layer_types=["full_attention" if i in attention else "conv" for i in range(layers)],
                block_multiple_of=multiple_of, block_ffn_dim_multiplier=1.0, block_auto_adjust_ff_dim=True,
                conv_L_cache=3, conv_bias=False, norm_eps=1e-5, max_position_embeddings=128000,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                bos_token_id=1, eos_token_id=7, pad_token_id=0, tie_word_embeddings=True)


def _siglip2(hidden, inter, layers, heads, num_patches=256, patch=16):
    return dict(model_type="siglip2_vision_model", hidden_size=hidden, intermediate_size=inter,
                num_hidden_layers=layers, num_attention_heads=heads, num_channels=3, num_patches=num_patches,
                patch_size=patch, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=False)


def lfm2_vl_config(name: str, tiny: bool) -> dict:
    """Lfm2VlConfig kwargs: LFM2-VL-450M (SigLIP2 NaFlex base + LFM2-350M) or -1.6B (so400m + LFM2-1.2B)."""
    if tiny:
        text = _lfm2_text(64, 192, 4, 1024, layers=6, attention=(2, 4), kv=2, multiple_of=32)
        vision, projector = _siglip2(32, 64, 2, 2, num_patches=16), 96
    elif name == "lfm2-vl-450m":
        text, vision, projector = _lfm2_text(1024, 6656, 16, 65536), _siglip2(768, 3072, 12, 12), 2560
    else:
        text, vision, projector = _lfm2_text(2048, 12288, 32, 65536), _siglip2(1152, 4304, 26, 16), 2560
    return dict(text_config=text, vision_config=vision, image_token_id=396, downsample_factor=2,
                projector_hidden_size=projector, projector_hidden_act="gelu", projector_bias=True,
                projector_use_layernorm=True, tie_word_embeddings=True)


def lfm2_vl_image_settings(tiny: bool) -> dict:
    """Lfm2VlImageProcessorFast settings as LFM2-VL's preprocessor_config.json has them (tile 512, 64-256 tokens)."""
    if tiny:  # one 64 px tile: 4x4 patches of 16 -> 4 tokens after the 2x2 unshuffle
        return dict(tile_size=64, size={"height": 64, "width": 64}, min_image_tokens=1, max_image_tokens=4, encoder_patch_size=16, downsample_factor=2,
                    do_image_splitting=True, use_thumbnail=True, min_tiles=2, max_tiles=10,
                    image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], max_pixels_tolerance=2.0)
    return dict(tile_size=512, size={"height": 512, "width": 512}, min_image_tokens=64, max_image_tokens=256, encoder_patch_size=16, downsample_factor=2,
                do_image_splitting=True, use_thumbnail=True, min_tiles=2, max_tiles=10,
                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], max_pixels_tolerance=2.0)


def fast_vlm_config(tiny: bool, vocab: int, image_token_id: int) -> dict:
    """FastVlmConfig kwargs: FastViTHD (timm fastvit_mci3, reparameterised) + projector + Qwen2-0.5B."""
    args = {"inference_mode": True}
    hidden = 3072
    if tiny:  # FastViTHD's five stages, one block each, <= 64 channels (final conv: 2 x 64 = 128 features)
        args.update(layers=[1, 1, 1, 1, 1], embed_dims=[8, 16, 32, 32, 64])
        hidden = 128
        text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=4096)
    else:
        text = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                    num_key_value_heads=2, max_position_embeddings=32768)
    text.update(model_type="qwen2", vocab_size=vocab, rms_norm_eps=1e-6, hidden_act="silu",
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True,
                bos_token_id=QWEN2_FIRST_SPECIAL, eos_token_id=QWEN2_FIRST_SPECIAL + 2, use_sliding_window=False)
    vision = dict(model_type="timm_wrapper", architecture="fastvit_mci3", hidden_size=hidden, do_pooling=False,
                  global_pool="avg", model_args=args)
    side = 128 if tiny else 1024
    return dict(vision_config=vision, text_config=text, image_token_id=image_token_id,
                image_seq_length=(side // 64) ** 2, projector_hidden_act="gelu", multimodal_projector_bias=True,
                vision_feature_select_strategy="full", vision_feature_layer=-1, tie_word_embeddings=True)


def fast_vlm_image_settings(tiny: bool) -> dict:
    """CLIPImageProcessor settings of FastVLM's preprocessor_config.json (1024 px, no mean/std shift)."""
    side = 128 if tiny else 1024
    return dict(size={"shortest_edge": side}, crop_size={"height": side, "width": side}, do_center_crop=True,
                do_resize=True, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0], resample=3, do_convert_rgb=True)


# ---------------------------------------------------------------- tokenizer

def build_tokenizer(specials: dict[int, str], trained_size: int, total: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` with ``specials`` at their ids.

    Ids below ``trained_size`` that no special takes hold the byte alphabet
    and merges learnt from the built-in corpus (in the order learnt,
    skipping the specials' ids); the remaining ids up to the
    largest special (or ``total``) are unreachable ``<|reserved_N|>`` entries,
    so the vocabulary has exactly the ids the checkpoint's config names.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    n_total = max(total, max(specials) + 1)
    low = [i for i in specials if i < trained_size]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=trained_size - len(low), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS.splitlines() * 4, trainer)
    state = json.loads(tok.to_str())
    learnt = sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab, next_id = {}, 0
    for piece, _ in learnt:
        while next_id in specials:
            next_id += 1
        vocab[piece] = next_id
        next_id += 1
    taken = set(vocab.values()) | set(specials)
    for i in range(n_total):
        if i not in taken:
            vocab[f"<|reserved_{i}|>"] = i
    for i, text in specials.items():  # specials live in the model vocab too, as in the published tokenizer.json
        vocab[text] = i
    state["model"]["vocab"] = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    out = Tokenizer.from_str(json.dumps(state))
    out.add_special_tokens([AddedToken(specials[i], special=True, normalized=False) for i in sorted(specials)])
    for i, text in specials.items():
        assert out.token_to_id(text) == i, (text, out.token_to_id(text), i)
    return out


def _fast_tokenizer(tok, **special):
    transformers = _import_transformers()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **special)


# ---------------------------------------------------------------- weights

def _layout_transformers4(state: dict, model_type: str) -> dict:
    """Tensor names as transformers 4.x saved them (SigLIP2 under vision_model.; timm tower without timm_model.)."""
    out = {}
    for k, v in state.items():
        if model_type == "lfm2_vl" and k.startswith("model.vision_tower."):
            k = "model.vision_tower.vision_model." + k[len("model.vision_tower."):]
        elif model_type == "fast_vlm" and k.startswith("model.vision_tower.timm_model."):
            k = "model.vision_tower." + k[len("model.vision_tower.timm_model."):]
        out[k] = v
    return out


BRANCH_GAIN = 4.0
BRANCH_OUTPUTS = ("out_proj", "o_proj", "w2", "down_proj")  # LFM2 conv/attention/MLP, Qwen2 attention/MLP


def _unit_gain(module, gen: torch.Generator, branch_gain: float = 1.0) -> None:
    """Matrices and kernels of ``module`` redrawn N(0, 1/fan_in) (x ``branch_gain`` for the residual branches'
    output projections); embedding tables N(0, 1); vectors kept."""
    with torch.no_grad():
        for mod_name, sub in module.named_modules():
            if isinstance(sub, torch.nn.Embedding):
                sub.weight.copy_(torch.randn(sub.weight.shape, generator=gen))
                continue
            gain = branch_gain if mod_name.rsplit(".", 1)[-1] in BRANCH_OUTPUTS else 1.0
            for name, p in sub.named_parameters(recurse=False):
                if p.dim() >= 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * (gain / math.sqrt(p[0].numel())))


INITS = ("unit-gain", "trained-like")
RESIDUAL_GROWTH = 8.0  # trained-like default: final residual RMS / embedding RMS


class _Stop(Exception):
    pass


def _branch_outputs(layer) -> list:
    """The residual branches' output projections of one decoder layer, in forward order (operator, then MLP)."""
    return [m for n, m in layer.named_modules() if n and n.rsplit(".", 1)[-1] in BRANCH_OUTPUTS]


def _trained_like(lm, gen: torch.Generator, growth: float, tokens: int = 128) -> dict:
    """Condition a unit-gain random LM like a trained pre-norm one: the residual stream grows by the same factor
    at every branch, ``growth`` over the whole depth, so each branch adds a bounded fraction of the stream.

    Facts this follows (none of them is a trained LFM2's measured figure; no trained weights are reachable here):
    GPT-2 and Megatron-LM scale the residual output projections' init by 1/sqrt(2L) so the stream does not blow up
    with depth; trained models' residual norms grow roughly exponentially over depth (about 1.045 per layer in
    GPT2-XL, ~8x over its 48 layers; a 43-model survey finds last/first-layer ratios from 5x, OLMo-2, to 2747x,
    Qwen3-1.7B), their "reading" weights keep stable norms while the "writing" (output) weights grow with depth.
    So: reading weights stay N(0, 1/fan_in) (block activations O(1) after each RMSNorm), embeddings N(0, 1), and
    each output projection (out_proj/o_proj, w2/down_proj) is rescaled, layer by layer on ``tokens`` random token
    ids, so that the stream's RMS after its branch is q = growth^(1/(2L)) times the RMS before it (solved
    exactly for the measured branch output, its correlation with the stream included).  Returns the measured
    per-branch fractions rms(branch) / rms(stream before it) and the stream's RMS after each layer.
    """
    layers = list(lm.layers)
    n_branches = 2 * len(layers)
    q = growth ** (1.0 / n_branches)
    ids = torch.randint(500, min(8000, lm.embed_tokens.num_embeddings), (1, tokens), generator=gen)
    seen = {}

    def grab(key):
        def hook(mod, args, out=None):
            seen[key] = (args[0] if out is None else out).detach().double()
        return hook

    def run_to(layer_index):
        try:
            lm(input_ids=ids, use_cache=False)
        except _Stop:
            pass

    def stop(mod, args, out):
        raise _Stop

    fractions, stream = [], []
    with torch.no_grad():
        for i, layer in enumerate(layers):
            branches = _branch_outputs(layer)
            if len(branches) != 2:
                raise RuntimeError(f"layer {i}: expected 2 residual branches, found {len(branches)}")
            handles = [layer.register_forward_pre_hook(grab("x")), layer.register_forward_hook(stop)]
            handles += [b.register_forward_hook(grab(k)) for b, k in zip(branches, ("b0", "b1"))]
            try:
                x = None
                for k, branch in enumerate(branches):
                    run_to(i)
                    x = seen["x"] if k == 0 else seen["x"] + seen["b0"]
                    b = seen[f"b{k}"]
                    # rms(x + s b)^2 = q^2 rms(x)^2  ->  s^2 <b,b> + 2 s <x,b> + (1 - q^2) <x,x> = 0
                    bb, xb, xx = float((b * b).sum()), float((x * b).sum()), float((x * x).sum())
                    s = (-xb + math.sqrt(xb * xb + bb * (q * q - 1.0) * xx)) / bb
                    branch.weight.mul_(s)
                    fractions.append(round(s * math.sqrt(bb / xx), 4))
                run_to(i)
                stream.append(round(float((seen["x"] + seen["b0"] + seen["b1"]).pow(2).mean().sqrt()), 4))
            finally:
                for h in handles:
                    h.remove()
    with torch.no_grad():
        emb = float(lm.embed_tokens(ids).pow(2).mean().sqrt())
    return {"init": "trained-like", "residual_growth": growth, "per_branch_growth": round(q, 5),
            "branch_fraction": fractions, "stream_rms": [round(emb, 4)] + stream}


def _live_timm_tower(model, side: int, gen: torch.Generator) -> float:
    """Redraw FastVLM's reparameterised tower N(0, 1/fan_in), then scale its final conv so features have std ~1.

    transformers' init leaves this tower's output ~0 (it expects the
    released weights); a random tower of 40+ residual blocks drawn at
    fan-in scale stays finite but its scale drifts, so the last layer is
    rescaled from a few measurements.  Returns the feature std after scaling.
    """
    tower = model.model.vision_tower
    with torch.no_grad():
        for name, p in tower.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith(("layer_scale", "gamma")) or "layer_scale" in name:
                p.fill_(1.0 / math.sqrt(8))
        # measured at <= 256 px: the tower is convolutional up to two attention stages, and at 1024 px each
        # forward costs tens of seconds here
        side = min(side, 256)
        pixels = torch.rand(1, 3, side, side, generator=gen)
        final = tower.timm_model.final_conv
        for _ in range(4):  # final_conv ends in GELU: a few multiplicative steps settle the std near 1
            std = tower(pixels).last_hidden_state.std().item()
            if not math.isfinite(std) or std == 0:
                raise RuntimeError(f"random FastViTHD tower gives feature std {std}")
            for p in final.parameters():
                p.mul_(1.0 / std)
        return tower(pixels).last_hidden_state.std().item()


# ---------------------------------------------------------------- writers

def _save(model, out: Path, layout: str, model_type: str) -> None:
    from safetensors.torch import save_file

    model.save_pretrained(out)
    if layout == "transformers4":
        files = sorted(out.glob("*.safetensors"))
        for path in files:
            from safetensors.torch import load_file

            state = _layout_transformers4(load_file(str(path)), model_type)
            save_file(state, str(path), metadata={"format": "pt"})
        index = out / "model.safetensors.index.json"
        if index.is_file():
            data = json.loads(index.read_text())
            data["weight_map"] = _layout_transformers4(data["weight_map"], model_type)
            index.write_text(json.dumps(data, indent=2))


def _condition_lm(lm, gen: torch.Generator, init: str, growth: float) -> dict:
    """The LM's weights as ``init`` names: unit-gain (the default, branches x BRANCH_GAIN) or trained-like."""
    if init == "unit-gain":
        _unit_gain(lm, gen, BRANCH_GAIN)
        return {"init": init, "branch_gain": BRANCH_GAIN}
    _unit_gain(lm, gen)
    return _trained_like(lm, gen, growth)


def _check_text_layers(text_layers: int, published: int, what: str = "text_layers") -> None:
    if not 1 <= text_layers <= published:
        raise ValueError(f"{what} must be in 1..{published} (got {text_layers})")


def _write_lfm2_vl(name: str, out: Path, tiny: bool, layout: str, seed: int, init: str = "unit-gain",
                   growth: float = RESIDUAL_GROWTH, text_layers: int | None = None,
                   vision_layers: int | None = None) -> dict:
    transformers = _import_transformers()
    from transformers.models.lfm2_vl.image_processing_lfm2_vl import Lfm2VlImageProcessor

    torch.manual_seed(seed)
    kw = lfm2_vl_config(name, tiny)
    if text_layers is not None:  # the published pattern's first text_layers layers (4: attention at layer 2 only)
        text = kw["text_config"]
        _check_text_layers(text_layers, text["num_hidden_layers"])
        text.update(num_hidden_layers=text_layers, layer_types=text["layer_types"][:text_layers])
    if vision_layers is not None:  # SigLIP2's encoder layers are all alike: the first vision_layers of them
        vision = kw["vision_config"]
        _check_text_layers(vision_layers, vision["num_hidden_layers"], "vision_layers")
        vision["num_hidden_layers"] = vision_layers
    cfg = transformers.Lfm2VlConfig(**kw)
    model = transformers.Lfm2VlForConditionalGeneration(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    conditioning = _condition_lm(model.model.language_model, gen, init, growth)
    _unit_gain(model.model.multi_modal_projector, gen)
    _save(model, out, layout, "lfm2_vl")
    vocab = kw["text_config"]["vocab_size"]
    tok = build_tokenizer(LFM2_SPECIALS, trained_size=vocab if tiny else 8192, total=vocab)
    fast = _fast_tokenizer(tok, bos_token="<|startoftext|>", eos_token="<|im_end|>", pad_token="<|pad|>")
    fast.chat_template = LFM2_VL_TEMPLATE
    image_processor = Lfm2VlImageProcessor(**lfm2_vl_image_settings(tiny))
    processor = transformers.Lfm2VlProcessor(image_processor, fast, chat_template=LFM2_VL_TEMPLATE)
    processor.save_pretrained(out)
    image_processor.save_pretrained(out)  # preprocessor_config.json, as the published repos carry it
    return {"params": sum(p.numel() for p in model.parameters()), "lm_init": conditioning}


def _write_fast_vlm(out: Path, tiny: bool, layout: str, seed: int, init: str = "unit-gain",
                    growth: float = RESIDUAL_GROWTH, text_layers: int | None = None) -> dict:
    transformers = _import_transformers()

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    vocab = 1024 if tiny else 151936
    first = 1000 if tiny else QWEN2_FIRST_SPECIAL  # tiny: the specials sit at the top of its small vocabulary
    specials = {first + i: t for i, t in enumerate((*QWEN2_SPECIALS, FASTVLM_IMAGE_TOKEN))}
    kw = fast_vlm_config(tiny, vocab, first + 3)
    if tiny:
        kw["text_config"].update(bos_token_id=first, eos_token_id=first + 2)
    if text_layers is not None:  # Qwen2's layers are all alike: the first text_layers of them
        _check_text_layers(text_layers, kw["text_config"]["num_hidden_layers"])
        kw["text_config"]["num_hidden_layers"] = text_layers
    cfg = transformers.FastVlmConfig(**kw)
    model = transformers.FastVlmForConditionalGeneration(cfg).eval()
    side = fast_vlm_image_settings(tiny)["crop_size"]["height"]
    feature_std = _live_timm_tower(model, side, gen)
    conditioning = _condition_lm(model.model.language_model, gen, init, growth)
    _unit_gain(model.model.multi_modal_projector, gen)
    _save(model, out, layout, "fast_vlm")
    tok = build_tokenizer(specials, trained_size=first if tiny else 8192, total=first + 4)
    fast = _fast_tokenizer(tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = FASTVLM_TEMPLATE
    image_processor = transformers.CLIPImageProcessor(**fast_vlm_image_settings(tiny))
    processor = transformers.LlavaProcessor(image_processor, fast, patch_size=64, vision_feature_select_strategy="full",
                                            chat_template=FASTVLM_TEMPLATE, image_token=FASTVLM_IMAGE_TOKEN,
                                            num_additional_image_tokens=0)
    processor.save_pretrained(out)
    image_processor.save_pretrained(out)
    return {"params": sum(p.numel() for p in model.parameters()), "vision_feature_std": round(feature_std, 3),
            "lm_init": conditioning}


def write_checkpoint(name: str, out, *, tiny: bool = False, layout: str = "transformers5", seed: int = 0,
                     init: str = "unit-gain", residual_growth: float = RESIDUAL_GROWTH,
                     text_layers: int | None = None, vision_layers: int | None = None) -> Path:
    """Write checkpoint ``name`` (one of NAMES) into directory ``out`` (replaced atomically); returns ``out``.

    ``init``: "unit-gain" (default; the figures measured before trained-like existed use it) or "trained-like"
    (see _trained_like).  ``text_layers``: keep the published widths with fewer LM layers (LFM2-VL: the
    published layer-type pattern's first ones), for reduced-size measurements.  ``vision_layers``: the same for
    the vision tower (LFM2-VL's SigLIP2 only; FastVLM's FastViTHD stages are not a stack of like layers)."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    if name not in NAMES:
        raise ValueError(f"unknown checkpoint {name!r}; choose one of {', '.join(NAMES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if vision_layers is not None and not name.startswith("lfm2-vl"):
        raise ValueError(f"vision_layers applies to LFM2-VL's SigLIP2 tower only, not {name}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if name.startswith("lfm2-vl"):
            info = _write_lfm2_vl(name, tmp, tiny, layout, seed, init, residual_growth, text_layers, vision_layers)
        else:
            info = _write_fast_vlm(tmp, tiny, layout, seed, init, residual_growth, text_layers)
        info.update(name=name, tiny=tiny, layout=layout, seed=seed)
        (tmp / "edgevlm_checkpoint.json").write_text(json.dumps(info, indent=2) + "\n")
        for f in tmp.iterdir():  # mkdtemp's 0700 and save_pretrained's 0600: others read these checkpoints
            f.chmod(0o644)
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=NAMES + ("all",))
    ap.add_argument("--tiny", action="store_true", help="same structure, small dims (for tests)")
    ap.add_argument("--layout", choices=LAYOUTS, default="transformers5",
                    help="tensor names: transformers 5 (default) or pre-5 (llama.cpp's converter needs them)")
    ap.add_argument("--out", type=Path, help="output directory (default /work/ckpt/<name>[-tiny][-t4]); "
                    "with 'all', the parent directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", choices=INITS, default="unit-gain",
                    help="LM weights: unit-gain (default, branch outputs x%g) or trained-like (residual stream "
                    "grows by --residual-growth over the depth, each branch a bounded fraction)" % BRANCH_GAIN)
    ap.add_argument("--residual-growth", type=float, default=RESIDUAL_GROWTH,
                    help="trained-like: final residual RMS / embedding RMS (default %(default)g)")
    ap.add_argument("--text-layers", type=int, default=None,
                    help="this many LM layers at the published widths (reduced-depth measurements)")
    ap.add_argument("--vision-layers", type=int, default=None,
                    help="LFM2-VL: this many SigLIP2 encoder layers at the published widths")
    args = ap.parse_args(argv)
    if args.residual_growth <= 1:
        ap.error(f"--residual-growth must be > 1 (got {args.residual_growth:g})")
    if args.vision_layers is not None and not args.name.startswith("lfm2-vl"):
        ap.error(f"--vision-layers applies to LFM2-VL's SigLIP2 tower only, not {args.name}")
    names = NAMES if args.name == "all" else (args.name,)
    for name in names:
        suffix = ("-tiny" if args.tiny else "") + ("-t4" if args.layout == "transformers4" else "")
        if args.out is None:
            out = DEFAULT_ROOT / (name + suffix)
        else:
            out = args.out / (name + suffix) if args.name == "all" else args.out
        path = write_checkpoint(name, out, tiny=args.tiny, layout=args.layout, seed=args.seed, init=args.init,
                                residual_growth=args.residual_growth, text_layers=args.text_layers,
                                vision_layers=args.vision_layers)
        info = json.loads((path / "edgevlm_checkpoint.json").read_text())
        print(f"{name}: {path} ({info['params'] / 1e6:.1f}M params"
              + (f", vision feature std {info['vision_feature_std']}" if "vision_feature_std" in info else "") + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
