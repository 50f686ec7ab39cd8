"""Pathos backend: a persistent pathos ``ProcessPool`` that ships functions with dill.

dill carries lambdas, closures and ``__main__`` functions to the workers. pathos
caches pools as singletons by ``id`` and refuses a closed one ("Pool not
running"): katparallel uses its own ids, reuses its pools and replaces a closed
one. Workers start with ``forkserver`` (pathos forks, which deadlocks in libgomp
once this process has run a higher-order-mode Finesse model).

A ``multiprocess`` pool silently loses the task of a worker that dies, so each
worker writes the task it starts into its own file (no lock a kill could leave
held), which the parent reads to name the task: that task is reported crashed
and the run goes on. A worker that dies while idle is worse: it waited for
tasks holding the pool's task-queue lock, so its replacements, every later task
and even ``Pool.terminate()`` wait on that lock for ever. Such a pool is
replaced, before a run or during one (the unfinished tasks are sent again), and
stopping a pool kills its workers and frees the locks they held first, with a
deadline on every wait.
"""

from __future__ import annotations

import atexit
import importlib.util
import itertools
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Failure
from .base import Backend, workers_or_cores
from .pinning import pin_threads
from .procpool import reset_signals, worker_start_failed

LOGGER = logging.getLogger(__name__)

__all__ = ("PathosBackend", "shutdown_pools")

_POOLS: dict[tuple, "_Pool"] = {}
_RUNS = itertools.count(1)
_GRACE = 0.5  # seconds a dead worker's result may still be in flight
_DEADLINE = 10.0  # seconds to wait for a pool to stop; only a hang reaches it
_STATE_FILE = -1  # in a worker: fd of its "current task" file


def _init_worker(threads: int | None, state_dir: str) -> None:
    global _STATE_FILE
    reset_signals()
    pin_threads(threads)
    path = os.path.join(state_dir, str(os.getpid()))
    _STATE_FILE = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)


def _run_task(fn: Callable[[Any], Any], run: int, index: int, task: Any) -> Any:
    os.lseek(_STATE_FILE, 0, os.SEEK_SET)  # not os.pwrite: Windows has none
    os.write(_STATE_FILE, b"%20d %20d" % (run, index))
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


@dataclass
class _Pool:
    """A pathos pool, the ``multiprocess`` pool it serves and its state files."""

    pathos: Any
    raw: Any
    state_dir: str
    pids: set[int] = field(default_factory=set)  # workers of the last run, dead ones unhandled

    def live_pids(self) -> set[int]:
        return {p.pid for p in self.raw._pool if p.exitcode is None}

    def lost_a_worker(self) -> bool:
        """True if a worker of the last run has died, then or since."""
        return bool(self.pids - self.live_pids())

    def stop(self) -> None:
        """Stop the workers and the pool's threads, whatever locks dead workers hold."""
        _kill(self.raw._pool)
        for lock in (self.raw._inqueue._rlock, self.raw._outqueue._wlock):
            _free(lock)
        stopper = threading.Thread(target=self._terminate, daemon=True)
        stopper.start()
        stopper.join(_DEADLINE)
        if stopper.is_alive():
            LOGGER.warning("a pathos pool did not stop within %g s; abandoned it", _DEADLINE)
        _kill(self.raw._pool)  # any the pool started meanwhile
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _terminate(self) -> None:
        self.raw.terminate()
        self.raw.join()
        self.pathos.clear()


def _kill(processes: list) -> None:
    for process in list(processes):
        if process.exitcode is None:
            process.kill()
    for process in list(processes):
        process.join(_DEADLINE)


def _free(lock: Any) -> None:
    """Release ``lock`` if a (now dead) worker left it taken; every worker is dead."""
    lock.acquire(block=False)  # now taken: by this call, or by a dead worker
    lock.release()


def _stop(key: tuple) -> None:
    pool = _POOLS.pop(key, None)
    if pool is not None:
        pool.stop()


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

    def _pool(self) -> _Pool:
        """The pool for these settings: started, or replaced if it cannot run."""
        from multiprocess.pool import RUN

        pool = _POOLS.get(self._key)
        if pool is not None and pool.raw._state != RUN:
            _stop(self._key)  # closed through pathos' own API: start afresh
            pool = None
        elif pool is not None and pool.lost_a_worker():
            LOGGER.warning("a pathos worker died since the last run; replacing the pool")
            _stop(self._key)
            pool = None
        return pool or self._start()

    def _start(self) -> _Pool:
        from pathos.pools import ProcessPool

        state_dir = tempfile.mkdtemp(prefix="katparallel-pathos-")
        pathos_pool = ProcessPool(
            nodes=self.workers,
            id=("katparallel", *self._key, next(_RUNS)),  # a fresh pathos singleton
            context=self._context,
            initializer=_init_worker,
            initargs=(self._threads, state_dir),
        )
        pool = _POOLS[self._key] = _Pool(pathos_pool, pathos_pool._serve(), state_dir)
        return pool

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        pool = self._pool()
        done: queue.SimpleQueue = queue.SimpleQueue()
        remaining = set(range(len(tasks)))
        run = _submit(pool, fn, tasks, remaining, done)
        workers = {p.pid: p for p in pool.raw._pool}
        dead: dict[int, float] = {}  # pid -> when its death was noticed
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
                workers.update((p.pid, p) for p in pool.raw._pool)
                for pid, exitcode in _deaths(workers, dead):
                    held = _held_task(pool.state_dir, pid)
                    if held is None:
                        raise worker_start_failed(exitcode)
                    if held[0] == run and held[1] in remaining:
                        remaining.discard(held[1])
                        yield held[1], _crashed(exitcode)
                    else:  # died idle, maybe holding the task-queue lock
                        LOGGER.warning("a pathos worker died while idle; replacing the pool")
                        _stop(self._key)
                        pool = self._start()
                        run = _submit(pool, fn, tasks, remaining, done)
                        workers, dead = {p.pid: p for p in pool.raw._pool}, {}
                        break
            workers.update((p.pid, p) for p in pool.raw._pool)
            pool.pids = set(workers)  # one that died unnoticed gets the pool replaced
        except BaseException:  # Ctrl-C or abandoned: tasks cannot be cancelled
            LOGGER.info("stopping the pathos pool after an interrupted run")
            self.close()
            raise

    def close(self) -> None:
        """Stop this backend's pool (a later run starts a fresh one)."""
        _stop(self._key)


def _submit(pool: _Pool, fn: Callable, tasks: Sequence[Any], indices: set[int],
            done: queue.SimpleQueue) -> int:
    """Send ``tasks[i]`` for every ``i`` in ``indices``; return the run's number."""
    run = next(_RUNS)
    for i in sorted(indices):
        pool.raw.apply_async(
            _run_task,
            (fn, run, i, tasks[i]),
            callback=lambda r, i=i: done.put((i, r)),
            error_callback=lambda e, i=i: done.put((i, Failure.capture(e))),
        )
    return run


def _deaths(workers: dict[int, Any], dead: dict[int, float]) -> list[tuple[int, int]]:
    """(pid, exit code) of workers dead for longer than the grace period; forgets them."""
    now, ended = time.monotonic(), []
    for pid, process in list(workers.items()):
        if process.exitcode is None or now - dead.setdefault(pid, now) < _GRACE:
            continue
        del workers[pid]
        ended.append((pid, process.exitcode))
    return ended


def _crashed(exitcode: int) -> Failure:
    return Failure.worker_crashed(
        f"the pathos worker running this job was killed (exit code {exitcode}: a "
        "segfault, the OOM killer or a kill); the job did not finish."
    )
