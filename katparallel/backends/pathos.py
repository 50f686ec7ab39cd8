"""Pathos backend: a persistent pathos ``ProcessPool`` that ships functions with dill.

dill carries lambdas, closures and ``__main__`` functions to the workers. pathos
caches pools as singletons by ``id`` and refuses a closed one ("Pool not
running"): katparallel uses its own ids, reuses its pools and replaces a closed
one. Workers start with ``forkserver`` (pathos forks, which deadlocks in libgomp
once this process has run a higher-order-mode Finesse model). A ``multiprocess``
pool silently loses the task of a worker that dies, so each worker writes the
task it starts into its own file (no lock a kill could leave held), which the
parent reads to name the task. A worker killed while idle may hold the pool's
task-queue lock, which deadlocks a ``multiprocess`` pool; the ``multiprocessing``
backend has no shared queue and recovers from that too.
"""

from __future__ import annotations

import atexit
import importlib.util
import itertools
import logging
import os
import queue
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import Failure
from .base import Backend, workers_or_cores
from .pinning import pin_threads
from .procpool import worker_start_failed

LOGGER = logging.getLogger(__name__)

__all__ = ("PathosBackend", "shutdown_pools")

# key -> (pathos ProcessPool, directory of per-worker "current task" files)
_POOLS: dict[tuple, tuple[Any, str]] = {}
_RUNS = itertools.count(1)
_GRACE = 0.5  # seconds a dead worker's result may still be in flight
_STATE_FILE = -1  # in a worker: fd of its "current task" file


def _init_worker(threads: int | None, state_dir: str) -> None:
    global _STATE_FILE
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pin_threads(threads)
    path = os.path.join(state_dir, str(os.getpid()))
    _STATE_FILE = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)


def _run_task(fn: Callable[[Any], Any], run: int, index: int, task: Any) -> Any:
    os.pwrite(_STATE_FILE, b"%20d %20d" % (run, index), 0)
    return fn(task)


def _held_task(state_dir: str, pid: int) -> tuple[int, int] | None:
    """(run, index) a worker last started; (0, -1) if none yet; None if it died starting.

    ``_init_worker`` creates the file empty, so a missing file means the worker
    never got that far.
    """
    path = Path(state_dir, str(pid))
    if not path.exists():
        return None
    fields = path.read_bytes().split()
    return (int(fields[0]), int(fields[1])) if fields else (0, -1)


def _stop(key: tuple) -> None:
    entry = _POOLS.pop(key, None)
    if entry is None:
        return
    pool, state_dir = entry
    pool.terminate()  # close+join never returns once a crashed worker lost a task
    pool.join()
    pool.clear()
    shutil.rmtree(state_dir, ignore_errors=True)


def shutdown_pools() -> None:
    """Stop every pathos pool katparallel started in this process."""
    for key in list(_POOLS):
        _stop(key)


atexit.register(shutdown_pools)


class PathosBackend(Backend):
    """Run tasks on a persistent pathos (dill) process pool.

    Parameters
    ----------
    workers : int, optional
        Number of processes; default one per CPU core.
    threads : int or None, optional
        OpenMP/BLAS threads per worker (default 1). ``None`` leaves them alone.
    start_method : {"forkserver", "spawn"}, optional
        How workers start (default ``forkserver``); ``fork`` is refused because
        it deadlocks in Finesse's OpenMP runtime.
    """

    name = "pathos"

    def __init__(
        self,
        workers: int | None = None,
        threads: int | None = 1,
        start_method: str | None = None,
    ):
        super().__init__(workers_or_cores(workers))
        try:
            import multiprocess
        except ImportError as e:
            raise ImportError("The pathos backend needs pathos: pip install pathos") from e
        if start_method is None:
            forkserver = "forkserver" in multiprocess.get_all_start_methods()
            start_method = "forkserver" if forkserver else "spawn"
        if start_method == "fork":
            raise ValueError(
                "start_method='fork' deadlocks in Finesse's OpenMP runtime once this "
                "process has simulated higher-order modes; use 'forkserver' or 'spawn'."
            )
        self._context = multiprocess.get_context(start_method)
        self._threads = threads
        self._key = (self.workers, threads, start_method)

    @classmethod
    def enabled(cls) -> bool:
        return importlib.util.find_spec("pathos") is not None

    def _pool(self) -> tuple[Any, str]:
        """The raw ``multiprocess`` pool for these settings and its state dir."""
        from multiprocess.pool import RUN
        from pathos.pools import ProcessPool

        entry = _POOLS.get(self._key)
        if entry is not None and entry[0]._serve()._state != RUN:
            _stop(self._key)  # closed through pathos' own API: start afresh
            entry = None
        if entry is None:
            state_dir = tempfile.mkdtemp(prefix="katparallel-pathos-")
            pool = ProcessPool(
                nodes=self.workers,
                id=("katparallel",) + self._key,
                context=self._context,
                initializer=_init_worker,
                initargs=(self._threads, state_dir),
            )
            entry = _POOLS[self._key] = (pool, state_dir)
        return entry[0]._serve(), entry[1]

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        raw, state_dir = self._pool()
        run = next(_RUNS)
        done: queue.SimpleQueue = queue.SimpleQueue()
        for i, task in enumerate(tasks):
            raw.apply_async(
                _run_task,
                (fn, run, i, task),
                callback=lambda r, i=i: done.put((i, r)),
                error_callback=lambda e, i=i: done.put((i, Failure.capture(e))),
            )
        workers = {p.pid: p for p in raw._pool}
        dead: dict[int, float] = {}  # pid -> when its death was noticed
        remaining = set(range(len(tasks)))
        try:
            while remaining:
                try:
                    i, result = done.get(timeout=0.1)
                except queue.Empty:
                    pass
                else:
                    if i in remaining:
                        remaining.discard(i)
                        yield i, result
                    continue
                workers.update((p.pid, p) for p in raw._pool)
                now = time.monotonic()
                for pid, process in list(workers.items()):
                    if process.exitcode is None or now - dead.setdefault(pid, now) < _GRACE:
                        continue
                    del workers[pid]
                    held = _held_task(state_dir, pid)
                    if held is None:
                        raise worker_start_failed(process.exitcode)
                    if held[0] == run and held[1] in remaining:
                        remaining.discard(held[1])
                        yield held[1], Failure.worker_crashed(
                            f"the pathos worker running this job was killed (exit "
                            f"code {process.exitcode}: a segfault, the OOM killer or "
                            "a kill); the job did not finish."
                        )
        except BaseException:  # Ctrl-C or abandoned: tasks cannot be cancelled
            LOGGER.info("stopping the pathos pool after an interrupted run")
            self.close()
            raise

    def close(self) -> None:
        """Stop this backend's pool (a later run starts a fresh one)."""
        _stop(self._key)
