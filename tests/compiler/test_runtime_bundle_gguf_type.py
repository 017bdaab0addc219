"""The GGUF type of a build's llm.gguf follows the LLM scheme (runtime_bundle.gguf_type_for)."""
import pytest

from edgevlm.compiler.runtime_bundle import gguf_type_for
from edgevlm.quant.schemes import get_scheme


@pytest.mark.parametrize("scheme,want", [
    ("w4a8-g32", "q4_k"),    # per-group 4-bit (cpu targets): Q4_K blocks, Q6_K head
    ("w4a16-g128", "q4_k"),
    ("w4a16", "q4_0"),       # per-channel 4-bit (e.g. sa8295p)
    ("w8a8", "q8_0"),
    ("w8a16-g32", "q8_0"),
])
def test_gguf_type_for_scheme(scheme, want):
    assert gguf_type_for(get_scheme(scheme)) == want


def test_float_llm_is_f32():
    assert gguf_type_for(None) == "f32"

