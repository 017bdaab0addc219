"""Errors a user can act on.

Every error raised for bad input is an :class:`EdgeVLMError`: it carries the
cause and the fix, and the CLI prints it as one line on stderr with exit
status 2 (never a traceback).
"""


class EdgeVLMError(Exception):
    """Base of all user-facing errors: ``cause`` plus an optional ``fix``."""

    def __init__(self, cause: str, fix: str | None = None):
        self.cause = cause
        self.fix = fix
        super().__init__(f"{cause} (fix: {fix})" if fix else cause)


class UnknownNameError(EdgeVLMError, KeyError):
    """An unknown target, model, backend or scheme name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return Exception.__str__(self)


class CheckpointError(EdgeVLMError):
    """A checkpoint is missing, unreadable, of a refused format, or mismatched."""


class UnsupportedOpError(EdgeVLMError):
    """The graph contains an op the target cannot run."""


class LoweringError(EdgeVLMError):
    """A backend failed to lower a stage (its toolchain rejected an op or the graph)."""


class BackendUnavailableError(EdgeVLMError):
    """An optional backend's library or SDK is not installed here."""


class InputError(EdgeVLMError, ValueError):
    """Bad data given to the API (shapes, images, calibration data, options)."""
