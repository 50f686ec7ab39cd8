"""Exceptions raised by katparallel.

Every message says what happened, why, and how to fix it.
"""

import pickle
import traceback as _traceback
from collections.abc import Mapping
from typing import Any

__all__ = (
    "KatParallelError",
    "UnknownParameterError",
    "InvalidValuesError",
    "BackendUnavailable",
    "ModelSourceError",
    "JobError",
    "IncompleteDesignError",
    "Failure",
    "WORKER_CRASHED",
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

    The first failed job's :class:`Failure`, with its traceback in the
    worker, is chained as ``__cause__``.
    """


class IncompleteDesignError(KatParallelError, ValueError):
    """Rows of a sensitivity design failed, and its estimator needs every row.

    ``rows`` lists the failed rows (job indices); the message names them and
    the given-data methods that can use the rows that ran.
    """

    def __init__(self, message: str, rows: list[int]):
        super().__init__(message)
        self.rows = rows


#: ``Failure.type`` of a task whose process died (killed, segfault, out of memory).
WORKER_CRASHED = "WorkerCrashed"


class Failure(KatParallelError):
    """An exception raised elsewhere, carried back as data.

    The one form a failure takes on its way home: it pickles everywhere (type
    name, message and the formatted traceback as text, like CPython's
    ``_ExceptionWithTraceback``), so no worker-side exception class has to be
    importable in the parent. Backends yield one for a task whose process
    died (``type == "WorkerCrashed"``) or overran its timeout; the worker
    records one per failed job, with the job's index and values;
    :attr:`Results.failures <katparallel.Results.failures>` lists them.

    Parameters
    ----------
    index : int or None
        The job's index in the study (None for a task not yet tied to a job).
    values : mapping or None
        The job's parameter values.
    type : str
        Name of the exception's class, e.g. ``"ValueError"``.
    message : str
        The exception's message.
    traceback : str
        The formatted traceback where it was raised (empty if none).
    """

    def __init__(
        self,
        index: int | None,
        values: Mapping[str, float] | None,
        type: str,  # noqa: A002 - the public field name since 0.1
        message: str,
        traceback: str = "",
    ):
        super().__init__(index, values, type, message, traceback)
        self.index = index
        self.values = dict(values or {})
        self.type = type
        self.message = message
        self.traceback = traceback

    @classmethod
    def capture(
        cls, exc: BaseException, index: int | None = None, values: Mapping[str, float] | None = None
    ) -> "Failure":
        """The failure of ``exc``, with its traceback formatted here."""
        tb = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
        failure = cls(index, values, type(exc).__name__, str(exc).strip(), tb)
        try:
            failure.pickled = pickle.dumps(exc)
            pickle.loads(failure.pickled)  # some exceptions pickle but do not unpickle
        except Exception:  # noqa: BLE001 - type, message and traceback remain
            failure.pickled = None
        return failure

    def original(self) -> BaseException:
        """The exception itself if it could be carried, else this failure.

        The original's ``__cause__`` is this failure, whose :attr:`traceback`
        says where it was raised.
        """
        if not getattr(self, "pickled", None):
            return self
        exc = pickle.loads(self.pickled)
        exc.__cause__ = self
        return exc

    @classmethod
    def worker_crashed(cls, message: str) -> "Failure":
        """A task whose worker process died before it finished."""
        return cls(None, None, WORKER_CRASHED, message)

    @property
    def crashed(self) -> bool:
        """True if the process running the task died."""
        return self.type == WORKER_CRASHED

    def for_job(self, index: int, values: Mapping[str, float]) -> "Failure":
        """This failure, recorded against job ``index`` with ``values``."""
        return Failure(index, values, self.type, self.message, self.traceback)

    def as_dict(self) -> dict[str, Any]:
        """The fields, for JSON (results files, checkpoints)."""
        return {
            "index": self.index, "values": self.values, "type": self.type,
            "message": self.message, "traceback": self.traceback,
        }

    @property
    def summary(self) -> str:
        """One line: the job, its values, the exception's type and message."""
        what = f"{self.type}: {self.message}"
        if self.index is None:
            return what
        where = ", ".join(f"{k}={v:.6g}" for k, v in self.values.items())
        return f"job {self.index} ({where or 'no parameters'}): {what}"

    def __str__(self) -> str:
        # As a ``__cause__`` this is what Python prints: show where it was raised.
        if not self.traceback:
            return self.summary
        return f"{self.summary}\n\nTraceback where it was raised:\n{self.traceback.rstrip()}"
