"""Exceptions raised by katparallel.

Every message says what happened, why, and how to fix it.
"""

__all__ = (
    "KatParallelError",
    "UnknownParameterError",
    "InvalidValuesError",
    "BackendUnavailable",
    "ModelSourceError",
    "JobError",
    "WorkerCrashed",
)


class KatParallelError(Exception):
    """Base class of every katparallel error."""


class UnknownParameterError(KatParallelError, KeyError):
    """A parameter path does not name a parameter of the model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidValuesError(KatParallelError, ValueError):
    """Values given to ``vary`` or ``sample`` cannot be used."""


class BackendUnavailable(KatParallelError, ImportError):
    """A backend was asked for that is unknown or cannot start here."""


class ModelSourceError(KatParallelError, TypeError):
    """The object given as a model cannot be turned into jobs."""


class JobError(KatParallelError):
    """A job failed; raised only when ``raise_on_error=True``.

    The worker's formatted traceback is chained as ``__cause__``.
    """


class WorkerCrashed(KatParallelError):
    """The process running a job died (killed, segfault, out of memory)."""


class RemoteTraceback(Exception):
    """Carries a worker's formatted traceback as a ``__cause__``."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb
