"""Executor backend: any ``concurrent.futures.Executor`` the user already has.

For engines katparallel does not name: a stdlib ``ProcessPoolExecutor``,
Dask's ``client.get_executor()``, mpi4py's ``MPIPoolExecutor``, Parsl's
``ParslPoolExecutor``, loky's reusable executor. Tasks go one per
``executor.submit`` and are yielded as they complete
(``concurrent.futures.as_completed``). The executor is the user's: katparallel
never shuts it down.

A task whose worker died comes back as ``Failure.worker_crashed``: the
executor raised ``concurrent.futures.BrokenExecutor`` (``BrokenProcessPool``,
``BrokenThreadPool``) or Dask's ``KilledWorker``. A stdlib
``ProcessPoolExecutor`` is broken for good once one of its workers dies: every
task still pending fails as crashed, and so does the runner's retry; make a new
executor (or use ``backend="multiprocessing"``, which replaces dead workers).
Dask's executor goes on (the nanny restarts the worker), but tasks submitted one at
a time are placed on workers as they arrive, so those already placed on the worker
that died fail with it as crashed (with ``allowed-failures`` 0, as on the cluster
``DaskBackend`` starts); the runner retries each crashed task once.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import Failure
from .base import Backend, check_workers
from .pinning import call_pinned

LOGGER = logging.getLogger(__name__)

__all__ = ("ExecutorBackend",)

#: Exceptions that say the worker running a task died, not that the task raised.
_CRASHES = (concurrent.futures.BrokenExecutor,)
_CRASH_NAMES = frozenset({"KilledWorker"})  # Dask's, without importing Dask


class ExecutorBackend(Backend):
    """Run tasks on a ``concurrent.futures.Executor``.

    Parameters
    ----------
    executor : concurrent.futures.Executor
        Anything with ``submit(fn, *args)`` returning
        ``concurrent.futures.Future`` objects. Left running.
    workers : int, optional
        How many tasks it runs at once, to size chunks. Default: the
        executor's ``_max_workers`` if it has one (the stdlib pools,
        mpi4py), else one per core.
    threads : int or None, optional
        OpenMP/BLAS threads each task pins its process to before it runs
        (default 1, as on every engine). ``None`` leaves them alone (use it
        with a ``ThreadPoolExecutor``, whose tasks run in this process).
    """

    name = "executor"

    def __init__(self, executor: Any, workers: int | None = None, threads: int | None = 1):
        if not callable(getattr(executor, "submit", None)):
            raise TypeError(
                f"ExecutorBackend needs a concurrent.futures.Executor (an object with "
                f"submit()), got {type(executor).__name__}; for a Dask client pass "
                "client.get_executor(), or use DaskBackend(client=client)"
            )
        workers = check_workers(workers)
        if workers is None:
            workers = getattr(executor, "_max_workers", None) or os.cpu_count() or 1
        super().__init__(workers)
        self.executor = executor
        self._threads = threads

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        pending: dict[concurrent.futures.Future, int] = {}
        for i, task in enumerate(tasks):
            try:
                pending[self.executor.submit(call_pinned, fn, self._threads, task)] = i
            except _CRASHES as exc:
                yield i, _crashed(exc)
        try:
            for future in concurrent.futures.as_completed(list(pending)):
                yield pending.pop(future), _outcome(future)
        finally:
            if pending:
                LOGGER.info("cancelling %d unfinished tasks", len(pending))
                for future in pending:
                    future.cancel()


def _crashed(exc: BaseException) -> Failure:
    return Failure.worker_crashed(
        f"the executor's worker running this task died ({type(exc).__name__}: {exc})"
    )


def _outcome(future: concurrent.futures.Future) -> Any:
    """A finished future's result, or the Failure it stands for."""
    if future.cancelled():
        return Failure.worker_crashed("the executor cancelled this task; it did not finish")
    exc = future.exception()
    if exc is None:
        return future.result()
    if isinstance(exc, _CRASHES) or type(exc).__name__ in _CRASH_NAMES:
        return _crashed(exc)
    return Failure.capture(exc)
