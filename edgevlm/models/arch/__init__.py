"""The architectures: nn.Modules and how a VLM splits into stages, with no names and no weights.

The LM (lfm2, qwen2), the vision towers (siglip2, encoders/), the projector, the VLM and its stages
(vlm: ``vlm_stages``, ``llm_stages``), token reduction and pruning, and MAC counting (flops).  The
zoo (edgevlm.models.zoo) and checkpoint import (edgevlm.models.hf) build them.
"""
