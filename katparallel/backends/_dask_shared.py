"""Worker plugins of katparallel's Dask runs: shared data, and signal dispositions.

Data every task of a Dask run shares is kept on each worker by a worker plugin.

The plugin travels to the scheduler once and from there to every worker once,
including workers that join later (an adaptive batch-queue cluster) or that a
nanny restarted. Tasks carry only the plugin's name: the scheduler sees no
dependency, so it places them by load alone (a dependency would pin every
task that is not queued to the workers holding it). Imported only on workers
and by :mod:`katparallel.backends.dask`, once distributed is known to import.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from .pinning import call_pinned
from .procpool import reset_signals

__all__ = ("ResetSignals", "SharedData", "call_shared")


class ResetSignals(WorkerPlugin):
    """Give each worker of a LocalCluster katparallel starts the signal dispositions
    of its pool workers (:func:`~katparallel.backends.procpool.reset_signals`).

    The spawned worker imports the user's script, so a SIGTERM handler installed
    at its top level would run in every worker too (Slurm signals every process
    of a cancelled job); only the parent should run it. Setup runs on the
    worker's main thread, where its event loop lives.
    """

    def setup(self, worker) -> None:
        if threading.current_thread() is threading.main_thread():
            reset_signals()


class SharedData(WorkerPlugin):
    """A value held by every worker for the length of one run."""

    def __init__(self, value: Any):
        self.value = value


def call_shared(fn: Callable[[Any, Any], Any], threads: int | None, name: str, task: Any) -> Any:
    """``fn(shared, task)`` with the value of the plugin ``name``, threads pinned first."""
    shared = get_worker().plugins[name].value
    return call_pinned(lambda t: fn(shared, t), threads, task)
