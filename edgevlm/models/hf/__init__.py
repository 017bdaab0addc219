"""Hugging Face checkpoint import: a local checkpoint directory (safetensors only) as a ModelBundle.

loaders: config.json + weights -> the architectures of edgevlm.models.arch (LFM2, LFM2-VL, FastVLM);
processing: the checkpoint's tokenizer, chat template and image processing, as transformers applies them.
"""
