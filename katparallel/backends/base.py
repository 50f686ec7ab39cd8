"""The Backend contract: where tasks run.

A backend knows nothing of Finesse. It receives a picklable function and a
sequence of picklable tasks, runs ``fn(task)`` somewhere, and yields
``(position, result)`` pairs as tasks complete, in any order::

    tasks ──► Backend.map_unordered(fn, tasks) ──► (i, fn(tasks[i])) as completed

A task that did not return yields ``(i, Failure(...))`` instead of a result:
``fn`` raised (its traceback as text), or its process died
(``Failure.crashed``; the caller decides whether to retry it).
"""

from __future__ import annotations

import abc
import functools
import numbers
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

__all__ = ("Backend", "check_workers", "workers_or_cores")


def check_workers(workers: Any) -> int | None:
    """Return ``workers`` as an int, or None; refuse anything but a count of at least 1.

    Raises
    ------
    TypeError
        If ``workers`` is not None and not an integer (``True`` and ``2.5`` included).
    ValueError
        If ``workers`` is below 1 (``0`` does not mean "all cores": give None for that).
    """
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral):
        raise TypeError(
            f"workers must be a whole number of processes, got {workers!r}; "
            "give None for one per CPU core"
        )
    if workers < 1:
        raise ValueError(
            f"workers must be at least 1, got {workers!r}; give None (the default) "
            "for one worker per CPU core"
        )
    return int(workers)


def workers_or_cores(workers: Any) -> int:
    """``workers`` checked by :func:`check_workers`, or one per CPU core when None."""
    checked = check_workers(workers)
    return (os.cpu_count() or 1) if checked is None else checked


class Backend(abc.ABC):
    """Base class of every backend.

    Subclasses implement :meth:`map_unordered`, and usually :meth:`close`.
    A backend may be used as a context manager, which closes it on exit.

    Parameters
    ----------
    workers : int, optional
        Number of parallel workers; ``None`` lets the backend choose.
    """

    #: Registry name, e.g. ``"multiprocessing"``.
    name: ClassVar[str] = ""
    #: True when tasks run in other processes (so they must pickle).
    remote: ClassVar[bool] = True
    #: True when the constructor takes ``timeout=`` (seconds one task may run)
    #: and enforces it on every worker by stopping a task that overruns.
    supports_timeout: ClassVar[bool] = False

    def __init__(self, workers: int | None = None):
        self.workers = check_workers(workers)

    @classmethod
    def enabled(cls) -> bool:
        """Return True when this backend's engine can be imported here."""
        return True

    @abc.abstractmethod
    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        """Run ``fn`` on every task; yield ``(index, result)`` as each completes.

        Parameters
        ----------
        fn : callable
            A picklable function of one argument.
        tasks : sequence
            Picklable arguments, one per task.

        Yields
        ------
        (int, object)
            The task's position in ``tasks`` and ``fn``'s return value, or a
            :class:`~katparallel.errors.Failure` if it raised or its process died.
        """

    def map_shared(
        self, fn: Callable[[Any, Any], Any], shared: Any, tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        """Run ``fn(shared, task)`` on every task; yield as :meth:`map_unordered` does.

        ``shared`` is the same for every task (for katparallel: the model's
        recipe and the analysis). This default sends it along with every task;
        an engine that can keep data on its workers overrides this to send it
        once per worker.
        """
        return self.map_unordered(functools.partial(fn, shared), tasks)

    @property
    def inherits_memory(self) -> bool:
        """True if tasks run in this process, or in workers forked from it that
        have not started yet: they see what this process has read already."""
        return not self.remote

    @property
    def n_workers(self) -> int:
        """How many tasks can run at once (used to size chunks)."""
        return self.workers or 1

    def close(self) -> None:
        """Release the engine's resources (processes, connections)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
