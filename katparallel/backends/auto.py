"""Auto backend: a process pool whenever it would finish sooner, else this process.

A pool pays a start-up before its first task: forking workers from this
process (:data:`FORK_START`), or starting them afresh and importing Finesse
(:data:`POOL_START`) and reading the model, plus whatever each worker must
ready that this process has already (building a batched simulation). Then
it runs the tasks ``workers`` at a time, in whole tasks. :func:`pool_is_faster`
weighs that against running every task here, one after the other; the caller
(the runner) supplies the measured costs through :meth:`AutoBackend.choose`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .base import Backend, workers_or_cores
from .multiprocess import MultiprocessingBackend
from .serial import SerialBackend

LOGGER = logging.getLogger(__name__)

__all__ = ("AutoBackend", "pool_is_faster")

#: Seconds to start a pool that is not running yet (forkserver, worker imports):
#: ``import finesse`` alone is ≈ 1.6 s a process.
POOL_START = 2.0
#: Seconds to start a pool whose workers are forked from this process, until
#: both have answered a first task: 0.08 s with Finesse imported, 0.23 s with
#: the aLIGO model read and run (``python benchmarks/bench_fork_start.py``,
#: 2026-12-06, the shared 2-core machine).
FORK_START = 0.25
#: Seconds a running pool takes to hand out tasks and send the first results
#: back (4 trivial tasks on 2 warm workers: 0.003-0.024 s, same benchmark).
ROUND_TRIP = 0.01


def pool_is_faster(
    n_tasks: int, seconds_per_task: float | None, workers: int, startup_seconds: float
) -> bool:
    """True if a pool of ``workers`` finishes ``n_tasks`` sooner than this process alone.

    This process takes ``n_tasks * seconds_per_task``; the pool takes
    ``startup_seconds`` plus ``ceil(n_tasks / workers)`` rounds of one task
    each (tasks are whole: three tasks on two workers take two rounds).

    Parameters
    ----------
    n_tasks : int
        Tasks still to run.
    seconds_per_task : float or None
        Measured (or estimated) seconds per task; None (unknown) counts as
        expensive, so the pool is faster whenever it has tasks to share.
    workers : int
        Workers of the pool.
    startup_seconds : float
        What the pool pays before its workers run their first task.
    """
    if n_tasks <= 1 or workers <= 1:
        return False
    if seconds_per_task is None:
        return True
    here = n_tasks * seconds_per_task
    return startup_seconds + math.ceil(n_tasks / workers) * seconds_per_task < here


class AutoBackend(Backend):
    """Pick serial or multiprocessing, whichever finishes the study sooner.

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
            would not (the runner passes none: a batched simulation's build
            is paid by the rest of the jobs here too).
        read_seconds : float
            What reading the model cost this process; a worker pays about as
            much, unless it is forked from this process.

        Returns
        -------
        Backend
            A :class:`MultiprocessingBackend` with ``workers`` processes when
            :func:`pool_is_faster` (its start-up included), or when a timeout
            is set; otherwise a :class:`SerialBackend`.
        """
        if seconds_per_task is None:
            seconds_per_task = self.seconds_per_task
        pool = MultiprocessingBackend(workers=self.workers, timeout=self.timeout)
        if pool.inherits_memory:  # a pool started now forks its workers from here
            startup_seconds += FORK_START
        else:
            startup_seconds += read_seconds + (ROUND_TRIP if pool.running else POOL_START)
        serial = self.timeout is None and not pool_is_faster(
            n_tasks, seconds_per_task, self.workers, startup_seconds
        )
        chosen: Backend = SerialBackend() if serial else pool
        cost = "unknown" if seconds_per_task is None else f"{seconds_per_task:.3g} s"
        LOGGER.info(
            "auto backend: %s for %d tasks of %s each (worker start-up %.3g s)",
            chosen.name, n_tasks, cost, startup_seconds,
        )
        return chosen

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
