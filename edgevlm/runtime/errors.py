"""Exceptions for errors reported by the C runtime (code + message)."""
from edgevlm.errors import EdgeVLMError, InputError

_FIXES = {
    "EV_ERR_IO": "check that the path exists and is a readable regular file",
    "EV_ERR_BAD_MAGIC": "pass a .gguf file (llama.cpp's convert_hf_to_gguf.py or edgevlm.runtime.gguf_export writes one)",
    "EV_ERR_BAD_VERSION": "re-export the model with a current gguf writer (GGUF v3)",
    "EV_ERR_UNSUPPORTED_ARCH": "the runtime runs LFM2 and Qwen2 models (general.architecture 'lfm2' or 'qwen2')",
    "EV_ERR_BAD_TENSOR_TYPE": ("quantize with a type the runtime reads: F32, F16, Q8_0, Q5_0, Q5_1, Q4_0, Q4_K, Q5_K, Q6_K "
                               "(llama-quantize Q4_0, Q4_K_S/M, Q5_K_M, Q6_K, Q8_0; edgevlm.runtime.gguf_export)"),
    "EV_ERR_CONTEXT_FULL": "open the session with a larger n_ctx, or reset it",
    "EV_ERR_NOMEM": "use a smaller n_ctx or a more quantized model",
}
_LOAD_FIX = "the GGUF file is damaged or not an LFM2 / Qwen2 export; re-export it"


class RuntimeCError(EdgeVLMError):
    """An error reported by the C runtime; ``code`` and ``name`` are the ev_status."""

    def __init__(self, code: int, name: str, message: str, fix: str | None = None):
        self.code = code
        self.name = name
        super().__init__(f"{message} [{name}]", fix)


class RuntimeLoadError(RuntimeCError):
    """A GGUF file could not be loaded: missing, damaged, or not an LFM2 / Qwen2 export."""


class RuntimeInputError(RuntimeCError, InputError):
    """Bad arguments to the runtime (token out of range, context full, ...)."""


def from_c(code: int, name: str, message: str) -> RuntimeCError:
    """The exception for one C error (called by the binding)."""
    fix = _FIXES.get(name)
    if name in ("EV_ERR_INVALID_ARG", "EV_ERR_CONTEXT_FULL"):
        return RuntimeInputError(code, name, message, fix)
    if name in ("EV_ERR_NOMEM", "EV_ERR_INTERNAL"):
        return RuntimeCError(code, name, message, fix)
    return RuntimeLoadError(code, name, message, fix or _LOAD_FIX)
