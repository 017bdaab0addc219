"""Fuzz target: a GGUF file through the CPython binding (edgevlm.runtime: Model.load, info, vocab, sessions, generate).

    python tests/fuzz/fuzz_runtime_binding.py CORPUS_DIR [libFuzzer flags]   (needs atheris)

A documented error (an EdgeVLMError: RuntimeLoadError naming the ev_status,
RuntimeInputError, InputError) is the expected outcome of a bad file; any
other exception escaping the API is a bug and atheris reports it.  The C
code is not instrumented here (the gguf_model target fuzzes it with
coverage); this target's feedback is the Python wrapper's.
"""
import os
import sys

from fuzz_support import scratch_dir

N_CTX = 8
_PATH = os.path.join(scratch_dir("ev-fuzz-binding-"), "model.gguf")


def run(data: bytes):
    """The model loaded from a GGUF file holding ``data``; raises RuntimeLoadError if bad."""
    from edgevlm.runtime import Model

    with open(_PATH, "wb") as f:
        f.write(data)
    return Model.load(_PATH, threads=1)


def one_input(data: bytes) -> None:
    import numpy as np

    from edgevlm.errors import EdgeVLMError
    from edgevlm.runtime import Sampler

    try:
        m = run(data)
    except EdgeVLMError:
        return
    nv, ne = m.n_vocab, m.n_embd
    assert nv >= 1 and ne >= 1 and -1 <= m.info["eos_token"] < nv and -1 <= m.info["bos_token"] < nv, m.info
    for tok in (-1, 0, nv - 1, nv):
        text = m.token_text(tok)
        assert text is None or isinstance(text, bytes)
        assert isinstance(m.token_type(tok), int)
    try:
        s = m.session(n_ctx=N_CTX)
        logits = s.prefill(ids=[0, 1 % nv, nv - 1])
        assert logits.shape == (nv,) and logits.dtype == np.float32
        s.step(int(np.nan_to_num(logits, nan=0.0).argmax()))
        eos = m.info["eos_token"]
        got = list(s.generate(2, Sampler(temperature=0.7, top_k=4, top_p=0.9, seed=1), stop_token=eos if eos >= 0 else None))
        assert all(0 <= t < nv for t in got), got
        s.prefill(embeds=np.zeros((1, ne), np.float32))
        s.reset()
        assert s.n_past == 0
        assert all(0 <= t < nv for t in m.generate([0], 2, n_ctx=N_CTX))
    except EdgeVLMError:
        return   # NOMEM / INTERNAL from odd shapes are documented results too


if __name__ == "__main__":
    import atheris

    import edgevlm.runtime  # noqa: F401  (the code under test, instrumented below)
    from fuzz_support import instrument

    instrument("edgevlm")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
