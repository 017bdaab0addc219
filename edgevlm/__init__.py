"""edgevlm: compile small vision-language models for edge NPUs.

Pipeline: models -> compiler.capture -> compiler.passes -> quant ->
compiler.backends -> verify -> report, with a small C runtime beside it
(edgevlm.runtime).  The one-call API is :func:`edgevlm.compile`.
"""
__version__ = "0.1.0"


def compile(*args, **kwargs):  # noqa: A001 - the public verb is `compile`
    """Compile a model for a target; see :func:`edgevlm.compiler.pipeline.compile`.

    A VLM build's shapes accuracy is measured by :func:`edgevlm.accuracy.build_accuracy`
    unless ``accuracy_check`` (or ``eval_n=0``) says otherwise.
    """
    from edgevlm.accuracy import build_accuracy
    from edgevlm.compiler.pipeline import compile as _compile

    kwargs.setdefault("accuracy_check", build_accuracy)
    return _compile(*args, **kwargs)


__all__ = ["compile", "__version__"]
