"""Dask backend: a ``distributed.LocalCluster`` katparallel starts, or the user's own Dask.

With no connection given, katparallel starts a ``distributed.LocalCluster`` of
``workers`` single-threaded worker processes -- spawned, never forked; OpenMP
and BLAS pinned to ``threads``; no memory limit, so no nanny restarts a worker
for its size; its HTTP server on a free loopback port; Dask's loggers in this
process at ERROR -- reuses it for the session and closes it at
:meth:`DaskBackend.close`, at the end of a ``with`` block or at exit.
Given ``client=``, ``address=`` or ``scheduler_file=`` it uses that running
scheduler and its workers as they are and leaves them running. Given
``cluster=`` (a ``dask_jobqueue.SLURMCluster``, ``HTCondorCluster``,
``PBSCluster`` or any Dask cluster object) it connects a client and, when
``workers`` is given, calls ``cluster.adapt(minimum=0, maximum=workers)``: the
cluster asks its batch queue for jobs while tasks wait and releases jobs that
stay idle. That is the only change katparallel makes to a user's cluster: it
stays adaptive after the run, and is never closed.

Tasks are yielded as they complete. A task that raised comes back as a
:class:`~katparallel.errors.Failure` with the remote traceback; a task whose
worker died as ``Failure.worker_crashed`` (Dask's ``KilledWorker``). On a
cluster katparallel starts, the scheduler gives up on a task the first time
its worker dies (``allowed-failures`` 0) and keeps one task per worker thread
(``worker-saturation`` 1.0), so a crash costs that task alone and the runner
retries it once, as on every engine. A user's scheduler keeps its own
settings (Dask's default retries a task on 3 more workers first).

:meth:`DaskBackend.map_shared` sends data common to every task once per
worker, as a worker plugin (:mod:`._dask_shared`), instead of inside every task.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import BackendUnavailable, Failure
from .base import Backend, workers_or_cores
from .pinning import call_pinned, pinned_thread_env

LOGGER = logging.getLogger(__name__)

__all__ = ("DaskBackend", "shutdown_clusters")

# (workers, threads) -> (LocalCluster, Client): clusters katparallel started.
_CLUSTERS: dict[tuple, tuple[Any, Any]] = {}
#: Scheduler settings of a cluster katparallel starts (see the module docstring).
OWN_SCHEDULER_CONFIG = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.0,
}
_NO_SHARED = object()


def _import_distributed():
    try:
        import distributed
    except ImportError as e:
        raise ImportError(
            "The dask backend needs dask and distributed: pip install 'katparallel[cluster]'"
        ) from e
    return distributed


def _stop_cluster(key: tuple) -> None:
    entry = _CLUSTERS.pop(key, None)
    if entry is None:
        return
    cluster, client = entry
    with contextlib.suppress(Exception):  # at exit the loop may be gone already
        client.close()
        cluster.close()
    LOGGER.info("stopped the Dask LocalCluster at %s", cluster.scheduler_address)


def shutdown_clusters() -> None:
    """Close every Dask cluster katparallel started in this process."""
    for key in list(_CLUSTERS):
        _stop_cluster(key)


atexit.register(shutdown_clusters)


def _start_local_cluster(workers: int, threads: int | None) -> tuple[Any, Any]:
    """A quiet LocalCluster of ``workers`` single-threaded processes, and its client."""
    distributed = _import_distributed()
    import dask

    started = time.monotonic()
    # Its scheduler and nannies run in this process and log every connection at
    # INFO (Dask's own config sets that level): keep errors only.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.update(pinned_thread_env(threads))
    config = {**OWN_SCHEDULER_CONFIG, "distributed.nanny.pre-spawn-environ": environ}
    try:
        with dask.config.set(config):
            cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address="127.0.0.1:0", silence_logs=logging.CRITICAL, memory_limit=0,
            )
    except RuntimeError as exc:  # "Nanny failed to start."
        raise BackendUnavailable(
            f"the Dask workers did not start ({exc}). Dask spawns worker processes, "
            "which import the script that started them: put the code that runs the "
            'ensemble under `if __name__ == "__main__":` (the multiprocessing docs, '
            "'Safe importing of main module')."
        ) from exc
    client = distributed.Client(cluster, set_as_default=False)
    from ._dask_shared import ResetSignals

    client.register_plugin(ResetSignals(), name="katparallel-reset-signals")
    LOGGER.info("started a Dask LocalCluster of %d workers at %s in %.1f s",
                workers, cluster.scheduler_address, time.monotonic() - started)
    return cluster, client


class DaskBackend(Backend):
    """Run tasks on Dask workers.

    Give at most one of ``client``, ``address``, ``scheduler_file`` and
    ``cluster``; with none, katparallel starts a ``LocalCluster`` of its own.

    Parameters
    ----------
    workers : int, optional
        Worker processes of the LocalCluster katparallel starts (default one
        per core); with ``cluster=``, the most workers ``adapt`` may ask for
        (``None`` leaves the cluster's scaling alone). Not allowed with a
        running scheduler, whose workers are used as they are.
    client : distributed.Client, optional
        A connected client; left open.
    address : str, optional
        A running scheduler's address, e.g. ``"tcp://10.0.0.5:8786"``.
    scheduler_file : str or path, optional
        The file a scheduler wrote with ``dask scheduler --scheduler-file``.
    cluster : distributed cluster object, optional
        E.g. a ``dask_jobqueue.SLURMCluster``: made adaptive (see above), not closed.
    connect_timeout : float, optional
        Seconds to wait for the scheduler and for its first worker.
    threads : int or None, optional
        OpenMP/BLAS threads per worker of a cluster katparallel starts
        (default 1). ``None`` leaves them alone. Workers of a user's cluster
        keep their own setting (Dask's nanny sets ``OMP_NUM_THREADS=1``).
    """

    name = "dask"

    def __init__(
        self,
        workers: int | None = None,
        client: Any = None,
        address: str | None = None,
        scheduler_file: str | os.PathLike | None = None,
        cluster: Any = None,
        connect_timeout: float = 60.0,
        threads: int | None = 1,
    ):
        given = {k: v for k, v in dict(client=client, address=address,
                                       scheduler_file=scheduler_file, cluster=cluster).items()
                 if v is not None}
        if len(given) > 1:
            raise ValueError(
                f"give at most one of client=, address=, scheduler_file= and cluster= "
                f"(got {', '.join(sorted(given))}): each names the scheduler to use"
            )
        if workers is not None and (client is not None or address or scheduler_file):
            raise ValueError(
                f"workers={workers} cannot resize a running Dask scheduler's workers; drop "
                "workers= (its workers are used as they are), or give cluster= to let "
                "katparallel scale it"
            )
        self.owns_cluster = not given
        super().__init__(workers_or_cores(workers) if self.owns_cluster else workers)
        self.connect_timeout = connect_timeout
        self._threads = threads
        self._key = (self.workers, threads)
        self._client = client
        self._address = address
        self._scheduler_file = None if scheduler_file is None else os.fspath(scheduler_file)
        self._cluster = cluster
        self._adapted = False

    @classmethod
    def enabled(cls) -> bool:
        try:
            _import_distributed()
        except ImportError:
            return False
        return True

    @property
    def client(self) -> Any:
        """The connected ``distributed.Client`` (starting a LocalCluster if needed)."""
        if self.owns_cluster:
            entry = _CLUSTERS.get(self._key)
            if entry is None:
                entry = _CLUSTERS[self._key] = _start_local_cluster(self.workers, self._threads)
            return entry[1]
        if self._client is None:
            self._client = self._connect()
        if self._cluster is not None and self.workers is not None and not self._adapted:
            LOGGER.info("letting %s adapt between 0 and %d workers", type(self._cluster).__name__,
                        self.workers)
            self._cluster.adapt(minimum=0, maximum=self.workers)
            self._adapted = True
        return self._client

    def _connect(self) -> Any:
        distributed = _import_distributed()
        if self._cluster is not None:
            target, where = self._cluster, "the cluster's scheduler"
        else:
            target = self._address or _address_in(self._scheduler_file, self.connect_timeout)
            where = target if self._address else f"{target} (from {self._scheduler_file})"
        try:
            return distributed.Client(target, timeout=self.connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(
                f"could not reach the Dask scheduler at {where} within "
                f"{self.connect_timeout:g} s ({type(exc).__name__}: {exc}). Check that "
                "`dask scheduler` is running there and that this machine can reach its "
                "address (on a cluster: the network interface it listens on)."
            ) from None

    @property
    def n_workers(self) -> int:
        if self.owns_cluster or (self._cluster is not None and self.workers is not None):
            return self.workers
        return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))

    @property
    def _pinned_threads(self) -> int | None:
        """Threads to pin on the workers: only on those katparallel started."""
        return self._threads if self.owns_cluster else None

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        return self._map(fn, _NO_SHARED, tasks)

    def map_shared(
        self, fn: Callable[[Any, Any], Any], shared: Any, tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        """Run ``fn(shared, task)`` for every task, sending ``shared`` once per worker
        (workers that join during the run included)."""
        return self._map(fn, shared, tasks)

    def _map(
        self, fn: Callable[..., Any], shared: Any, tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        if not len(tasks):
            return
        distributed = _import_distributed()
        client = self.client
        if not self.owns_cluster and not self._adapted:  # an adaptive cluster starts its own
            self.wait_for_workers()
        run = uuid.uuid4().hex
        threads, n = self._pinned_threads, len(tasks)
        keys = [f"katparallel-{i}-{run}" for i in range(n)]
        if shared is _NO_SHARED:
            futures = client.map(call_pinned, [fn] * n, [threads] * n, tasks, key=keys)
        else:
            from ._dask_shared import SharedData, call_shared

            plugin = f"katparallel-shared-{run}"
            client.register_plugin(SharedData(shared), name=plugin)
            futures = client.map(call_shared, [fn] * n, [threads] * n, [plugin] * n, tasks,
                                 key=keys)
        pending = {future: i for i, future in enumerate(futures)}
        del futures
        finished = distributed.as_completed(list(pending), loop=client.loop, with_results=True,
                                            raise_errors=False)
        try:
            for future, result in finished:
                yield pending.pop(future), _outcome(future, result)
                future.release()
        finally:
            if pending:
                LOGGER.info("cancelling %d unfinished Dask tasks", len(pending))
                client.cancel(list(pending))
            finished.clear()
            if shared is not _NO_SHARED:
                with contextlib.suppress(Exception):  # workers lost, or the loop closing
                    client.unregister_worker_plugin(plugin)

    def wait_for_workers(self) -> None:
        """Connect, and wait up to ``connect_timeout`` for a first worker.

        Raises
        ------
        ConnectionError
            If the scheduler cannot be reached in time.
        TimeoutError
            If it has no worker in time.
        """
        client = self.client
        try:
            client.wait_for_workers(1, timeout=self.connect_timeout)
        except TimeoutError:
            raise TimeoutError(
                f"the Dask scheduler at {client.scheduler.address} has no workers after "
                f"{self.connect_timeout:g} s; start some with `dask worker "
                f"{client.scheduler.address}`"
            ) from None

    def close(self) -> None:
        """Close the LocalCluster katparallel started (a later run starts a fresh
        one), or the client it connected; leave a user's cluster running."""
        if self.owns_cluster:
            _stop_cluster(self._key)
        elif self._client is not None and (
            self._address or self._scheduler_file or self._cluster is not None
        ):
            self._client.close()
            self._client = None


def _address_in(scheduler_file: str, timeout: float) -> str:
    """The address in a scheduler file, waiting up to ``timeout`` for the file to be written.

    (Dask's own client would wait for a missing file for ever.)
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(scheduler_file) as f:
                return json.load(f)["address"]
        except (OSError, ValueError, KeyError) as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"no Dask scheduler address in {scheduler_file!r} after {timeout:g} s "
                    f"({type(exc).__name__}: {exc}); start one with `dask scheduler "
                    f"--scheduler-file {scheduler_file}` (on a shared file system, so both "
                    "ends read the same file)"
                ) from None
        time.sleep(0.1)


def _outcome(future: Any, result: Any) -> Any:
    """A finished future's result, or the Failure it stands for."""
    distributed = _import_distributed()
    if future.status == "finished":
        return result
    if future.status == "cancelled" or not isinstance(result, BaseException):
        return Failure.worker_crashed(
            "Dask cancelled this task (its scheduler lost track of it); "
            "it did not finish."
        )
    if isinstance(result, distributed.KilledWorker):
        return Failure.worker_crashed(f"the Dask worker running this task died ({result})")
    return Failure.capture(result.with_traceback(future.traceback()))
