"""edgevlm: compile small vision-language models for edge NPUs.

Pipeline: models -> compiler.capture -> compiler.passes -> quant ->
compiler.backends -> verify -> report, with a small C runtime beside it
(edgevlm.runtime).  The one-call API is :func:`edgevlm.compile`.
"""
__version__ = "0.1.0"

from edgevlm._compat import quiet_torchao_cuda_extensions as _quiet

_quiet()  # logging only: torchao is not imported here


def compile(*args, **kwargs):  # noqa: A001 - the public verb is `compile`
    """Compile a model for a target; see :func:`edgevlm.compiler.pipeline.compile` and
    :class:`edgevlm.core.config.CompileConfig` (every option).

    A VLM build's accuracy is measured by :func:`edgevlm.accuracy.build_accuracy`
    unless ``accuracy_check`` (a keyword, or the ``config``'s when set) or
    ``eval_n=0`` says otherwise.
    """
    from edgevlm.accuracy import build_accuracy
    from edgevlm.compiler.pipeline import compile as _compile

    config = kwargs.get("config", args[3] if len(args) > 3 else None)
    if "accuracy_check" not in kwargs and getattr(config, "accuracy_check", None) is None:
        kwargs["accuracy_check"] = build_accuracy
    return _compile(*args, **kwargs)


__all__ = ["compile", "__version__"]
