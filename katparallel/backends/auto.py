"""Auto backend: serial for tiny studies, a process pool for everything else.

Starting worker processes and importing Finesse in them costs about a second,
so a study whose whole expected work is below :data:`SERIAL_BELOW` seconds, or
that has a single task, runs in this process. Anything bigger runs on the
multiprocessing backend with one worker per core. The caller (the runner)
supplies the cost estimate through :meth:`AutoBackend.choose`.
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

    def choose(self, n_tasks: int, seconds_per_task: float | None = None) -> Backend:
        """Return the backend that should run ``n_tasks`` tasks.

        Parameters
        ----------
        n_tasks : int
            Number of tasks the study will submit.
        seconds_per_task : float, optional
            Estimated seconds per task (default: the value given at
            construction; unknown counts as expensive).

        Returns
        -------
        Backend
            A :class:`SerialBackend` when ``n_tasks <= 1``, when there is one
            worker, or when ``n_tasks * seconds_per_task < SERIAL_BELOW``, unless
            a timeout is set; otherwise a :class:`MultiprocessingBackend` with
            ``workers`` processes.
        """
        if seconds_per_task is None:
            seconds_per_task = self.seconds_per_task
        tiny = seconds_per_task is not None and n_tasks * seconds_per_task < SERIAL_BELOW
        if self.timeout is None and (n_tasks <= 1 or self.workers == 1 or tiny):
            chosen: Backend = SerialBackend()
        else:
            chosen = MultiprocessingBackend(workers=self.workers, timeout=self.timeout)
        cost = "unknown" if seconds_per_task is None else f"{seconds_per_task:.3g} s"
        LOGGER.info("auto backend: %s for %d tasks of %s each", chosen.name, n_tasks, cost)
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
