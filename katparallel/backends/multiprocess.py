"""Multiprocessing backend: a persistent pool of local worker processes."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .base import Backend, workers_or_cores
from .procpool import ProcessPool, can_fork

__all__ = ("MultiprocessingBackend", "shutdown_pools")

# Pools live for the whole session, keyed by their settings, so the second
# run() pays neither process start-up nor `import finesse` again.
_POOLS: dict[tuple, ProcessPool] = {}


def shutdown_pools() -> None:
    """Stop every pool katparallel started in this process."""
    for pool in _POOLS.values():
        pool.shutdown()
    _POOLS.clear()


atexit.register(shutdown_pools)


class MultiprocessingBackend(Backend):
    """Run tasks on a pool of local processes, started once and reused.

    Parameters
    ----------
    workers : int, optional
        Number of processes; default one per CPU core.
    threads : int or None, optional
        OpenMP threads per worker (default 1: two workers with default
        threads ran Finesse 2x slower on two cores). ``None`` leaves them alone.
    timeout : float, optional
        Seconds a single task may run before its worker is stopped and the
        task recorded as failed.
    start_method : {"forkserver", "spawn"}, optional
        How workers start. By default a worker is forked from this process
        while that is safe (:func:`~.procpool.can_fork`: it then inherits
        the parsed model), else started with ``forkserver``. A plain ``fork``
        is refused: it deadlocks in OpenMP.
    """

    name = "multiprocessing"
    supports_timeout = True

    def __init__(
        self,
        workers: int | None = None,
        threads: int | None = 1,
        timeout: float | None = None,
        start_method: str | None = None,
    ):
        super().__init__(workers_or_cores(workers))
        self.timeout = timeout
        self._key = (self.workers, threads, start_method)
        self._threads = threads
        self._start_method = start_method

    @property
    def running(self) -> bool:
        """True if this backend's pool has started and not been shut down."""
        pool = _POOLS.get(self._key)
        return pool is not None and not pool.closed

    @property
    def would_fork(self) -> bool:
        """True if a pool started now would fork its workers from this process
        (they then inherit what it has imported and read)."""
        return self._start_method is None and can_fork(self._threads)

    @property
    def inherits_memory(self) -> bool:
        return not self.running and self.would_fork

    @property
    def pool(self) -> ProcessPool:
        """The shared pool for these settings, started on first use."""
        pool = _POOLS.get(self._key)
        if pool is None or pool.closed:
            pool = _POOLS[self._key] = ProcessPool(
                self.workers, start_method=self._start_method, threads=self._threads
            )
        return pool

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        pool = self.pool
        try:
            yield from pool.map_unordered(fn, tasks, timeout=self.timeout)
        except KeyboardInterrupt:
            self.close()
            raise

    def close(self) -> None:
        """Stop this backend's pool (a later run starts a fresh one)."""
        pool = _POOLS.pop(self._key, None)
        if pool is not None:
            pool.shutdown()
