"""Auto backend: serial for tiny studies, a process pool for everything else.

Starting worker processes and importing Finesse in them costs about a second,
so a study whose whole expected work is below :data:`SERIAL_BELOW` seconds, or
that has a single task, runs in this process. So does a study that a pool
would not finish sooner: each worker first pays a start-up of its own
(reading a big model, building its simulation) that this process has already
paid. Anything bigger runs on the multiprocessing backend with one worker per
core. The caller (the runner) supplies the estimates through
:meth:`AutoBackend.choose`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .base import Backend, workers_or_cores
from .multiprocess import MultiprocessingBackend
from .serial import SerialBackend

LOGGER = logging.getLogger(__name__)

__all__ = ("AutoBackend", "SERIAL_BELOW")

#: Expected total work (seconds) under which running serially is faster than
#: starting a pool (pool start-up plus ``import finesse`` in each worker ≈ 1-2 s;
#: the margin keeps small studies snappy and debuggable).
SERIAL_BELOW = 0.5
#: Seconds to start a pool that is not running yet (forkserver, worker imports).
POOL_START = 1.0
#: Seconds to start a pool whose workers are forked from this process.
FORK_START = 0.05


class AutoBackend(Backend):
    """Pick serial or multiprocessing from the size of the study.

    Parameters
    ----------
    workers : int, optional
        Workers for the process pool (default one per core).
    seconds_per_task : float or None, optional
        Estimated cost of one task; ``None`` (unknown) counts as expensive, so
        only single-task studies run serially.
    timeout : float or None, optional
        Seconds a task may take on the pool. Only a pool can stop a task, so
        with a timeout the choice is always the pool.
    """

    name = "auto"
    supports_timeout = True

    def __init__(
        self,
        workers: int | None = None,
        seconds_per_task: float | None = None,
        timeout: float | None = None,
    ):
        super().__init__(workers_or_cores(workers))
        self.seconds_per_task = seconds_per_task
        self.timeout = timeout
        self._chosen: Backend | None = None

    def choose(
        self,
        n_tasks: int,
        seconds_per_task: float | None = None,
        startup_seconds: float = 0.0,
        read_seconds: float = 0.0,
    ) -> Backend:
        """Return the backend that should run ``n_tasks`` tasks.

        Parameters
        ----------
        n_tasks : int
            Number of tasks the study will submit.
        seconds_per_task : float, optional
            Estimated seconds per task (default: the value given at
            construction; unknown counts as expensive).
        startup_seconds : float
            What each worker pays before its first task that this process
            has paid already (building a simulation).
        read_seconds : float
            What reading the model cost this process; a worker pays about as
            much, unless it is forked from this process.

        Returns
        -------
        Backend
            A :class:`SerialBackend` when ``n_tasks <= 1``, when there is one
            worker, when ``n_tasks * seconds_per_task < SERIAL_BELOW``, or when
            the pool would finish no sooner (its start-up included), unless a
            timeout is set; otherwise a :class:`MultiprocessingBackend` with
            ``workers`` processes.
        """
        if seconds_per_task is None:
            seconds_per_task = self.seconds_per_task
        pool = MultiprocessingBackend(workers=self.workers, timeout=self.timeout)
        if pool.inherits_memory:  # a pool started now forks its workers from here
            startup_seconds += FORK_START
        else:
            startup_seconds += read_seconds + (0.0 if pool.running else POOL_START)
        serial = self.timeout is None and (
            n_tasks <= 1 or self.workers == 1
            or not self._pool_is_faster(n_tasks, seconds_per_task, startup_seconds)
        )
        chosen: Backend = SerialBackend() if serial else pool
        cost = "unknown" if seconds_per_task is None else f"{seconds_per_task:.3g} s"
        LOGGER.info(
            "auto backend: %s for %d tasks of %s each (worker start-up %.3g s)",
            chosen.name, n_tasks, cost, startup_seconds,
        )
        return chosen

    def _pool_is_faster(self, n_tasks: int, seconds_per_task, startup_seconds: float) -> bool:
        if seconds_per_task is None:  # unknown counts as expensive
            return True
        here = n_tasks * seconds_per_task
        return here >= SERIAL_BELOW and startup_seconds + here / self.workers < here

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        self._chosen = self.choose(len(tasks))
        return self._chosen.map_unordered(fn, tasks)

    def close(self) -> None:
        """Close the backend chosen last (its pool, if it started one)."""
        if self._chosen is not None:
            self._chosen.close()
            self._chosen = None
