"""edgevlm.runtime: the small C runtime (batch-one LLM decode) and its Python API."""
from edgevlm.runtime._rt import cpu_features as _cpu_features


def cpu_features() -> list[str]:
    """SIMD levels the C runtime detected on this CPU at run time.

    Examples: ``['avx2', 'avx512f', 'avx512_vnni', 'fma', 'f16c']`` on a recent
    x86_64 server, ``['neon', 'neon_dotprod']`` on an ARMv8.2 phone core.
    """
    return list(_cpu_features())


__all__ = ["cpu_features"]
