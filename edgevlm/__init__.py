"""edgevlm: compile small vision-language models for edge NPUs.

Pipeline: models -> compiler.capture -> compiler.passes -> quant ->
compiler.backends -> verify -> report, with a small C runtime beside it
(edgevlm.runtime).  The one-call API is :func:`edgevlm.compile`.
"""
__version__ = "0.1.0"


def compile(*args, **kwargs):  # noqa: A001 - the public verb is `compile`
    """Compile a model for a target; see :func:`edgevlm.compiler.pipeline.compile`."""
    from edgevlm.compiler.pipeline import compile as _compile

    return _compile(*args, **kwargs)


__all__ = ["compile", "__version__"]
