"""edgevlm.runtime: the small C runtime (batch-one LLM decode) and its Python API.

``Model.load(path, threads=N)`` loads an LFM2 or Qwen2 GGUF (llama.cpp's
converter and llama-quantize files included: F32, F16, Q8_0, Q5_0, Q5_1, Q4_0,
Q4_K, Q5_K, Q6_K); ``model.session(n_ctx)`` prefills and steps;
``model.generate(ids, max_new_tokens, sampler)`` streams tokens with the
per-token loop in C.  ``gguf_export.export_lfm2_gguf`` and
``export_qwen2_gguf`` write the GGUF files.
"""
from edgevlm.runtime._rt import cpu_features as _cpu_features
from edgevlm.runtime.errors import RuntimeCError, RuntimeInputError, RuntimeLoadError
from edgevlm.runtime.model import Model, Sampler, Session


def cpu_features() -> list[str]:
    """SIMD levels the C runtime detected on this CPU at run time.

    Examples: ``['avx2', 'avx512f', 'avx512_vnni', 'fma', 'f16c']`` on a recent
    x86_64 server, ``['neon', 'neon_dotprod']`` on an ARMv8.2 phone core.
    """
    return list(_cpu_features())


__all__ = ["Model", "Sampler", "Session", "RuntimeCError", "RuntimeInputError", "RuntimeLoadError", "cpu_features"]
