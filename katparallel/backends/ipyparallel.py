"""IPyParallel backend: a cluster katparallel starts itself, or the user's own.

With no connection given, katparallel starts a local ``ipyparallel.Cluster`` of
``workers`` engines, waits for all of them, reuses it for the session and stops
it at :meth:`close`, at the end of a ``with`` block or at exit. Given a
``client``, ``profile``, ``url_file`` or ``cluster_id`` it uses that running
cluster and leaves it running. Given ``cluster=``, an ``ipyparallel.Cluster``
the user built (``engines="slurm"``, ``"pbs"``, ``"mpi"``… with ipyparallel's
own launchers and options), it starts that cluster if it is not running, waits
for its first engine and leaves it running: the cluster object stops its
controller and batch jobs itself (``cluster.stop_cluster_sync()``, a ``with
cluster:`` block, or at interpreter exit unless its ``shutdown_atexit`` is
false). Tasks go one per message through a load-balanced view and are yielded
as they complete; functions are pickled by reference, so engines import katparallel, never the user's ``__main__``. A task whose engine
died comes back as an ``EngineError`` naming that task, yielded as
:class:`~katparallel.errors.Failure` with ``crashed`` set; an owned cluster gets new engines before the next run.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import Failure
from .base import Backend, workers_or_cores
from .pinning import call_pinned, pinned_thread_env

LOGGER = logging.getLogger(__name__)

__all__ = ("IPyParallelBackend", "shutdown_clusters")

# (workers, threads) -> (Cluster, Client): clusters katparallel started.
_CLUSTERS: dict[tuple, tuple[Any, Any]] = {}


def _import_ipyparallel():
    try:
        import ipyparallel
    except ImportError as e:
        raise ImportError(
            "The ipyparallel backend needs ipyparallel: pip install ipyparallel"
        ) from e
    return ipyparallel


def _stop_cluster(key: tuple) -> None:
    entry = _CLUSTERS.pop(key, None)
    if entry is None:
        return
    cluster, client = entry
    client.close()
    cluster.stop_cluster_sync()
    LOGGER.info("stopped ipyparallel cluster %s", cluster.cluster_id)


def shutdown_clusters() -> None:
    """Stop every ipyparallel cluster katparallel started in this process."""
    for key in list(_CLUSTERS):
        _stop_cluster(key)


atexit.register(shutdown_clusters)


class IPyParallelBackend(Backend):
    """Run tasks on ipyparallel engines.

    Parameters
    ----------
    workers : int, optional
        Engines to start when katparallel starts the cluster (default one per
        core). Ignored when connecting to a running cluster or given ``cluster=``
        (its own ``n`` says how many engines it starts).
    client : ipyparallel.Client, optional
        A connected client of the user's cluster.
    profile, url_file, cluster_id : str, optional
        How to find the user's running cluster (as for ``ipyparallel.Client``).
    cluster : ipyparallel.Cluster, optional
        The user's cluster object, e.g. ``ipyparallel.Cluster(engines="slurm",
        n=2, ...)``: started here if it is not running, used as it is, never
        stopped here (see the module's description).
    connect_timeout : float, optional
        Seconds to wait for the connection and for the first engine to
        register; on a batch queue, allow for the engines' job to start. (A
        per-job ``timeout=`` is refused: an engine cannot stop a running task.)
    threads : int or None, optional
        OpenMP/BLAS threads per engine of a cluster katparallel starts or is
        given as ``cluster=`` (default 1). ``None`` leaves them alone.
    """

    name = "ipyparallel"

    def __init__(
        self,
        workers: int | None = None,
        client: Any = None,
        profile: str | None = None,
        url_file: str | os.PathLike | None = None,
        cluster_id: str | None = None,
        connect_timeout: float = 60.0,
        threads: int | None = 1,
        cluster: Any = None,
    ):
        super().__init__(workers_or_cores(workers))
        given = [k for k, v in dict(client=client, url_file=url_file, profile=profile,
                                    cluster_id=cluster_id).items() if v is not None]
        if cluster is not None and given:
            raise ValueError(
                f"give either cluster= or {given[0]}=, not both: cluster= is the "
                "ipyparallel.Cluster to run on, and katparallel connects to it itself"
            )
        if cluster is not None and not isinstance(cluster, _import_ipyparallel().Cluster):
            raise TypeError(
                f"cluster= takes an ipyparallel.Cluster, got {type(cluster).__name__}; "
                "give a connected ipyparallel.Client as client= instead"
            )
        self.connect_timeout = connect_timeout
        self._cluster = cluster
        self._client = client
        # ipyparallel 9 ignores a url_file= keyword: the file goes first, positionally.
        self._url_file = None if url_file is None else os.fspath(url_file)
        self._connect_kwargs = {
            k: v for k, v in dict(profile=profile, cluster_id=cluster_id).items() if v is not None
        }
        self.owns_cluster = not given and cluster is None
        self._key = (self.workers, threads)
        self._threads = threads

    @classmethod
    def enabled(cls) -> bool:
        try:
            _import_ipyparallel()
        except ImportError:
            return False
        return True

    @property
    def client(self) -> Any:
        """The connected ``ipyparallel.Client`` (starting a cluster if needed)."""
        ipp = _import_ipyparallel()
        if self._cluster is not None:
            return self._cluster_client()
        if not self.owns_cluster:
            if self._client is None:
                self._client = ipp.Client(
                    self._url_file, timeout=self.connect_timeout, **self._connect_kwargs
                )
            if not self._client.ids:
                self._client.wait_for_engines(1, timeout=self.connect_timeout)
            return self._client
        entry = _CLUSTERS.get(self._key)
        if entry is None:
            start = time.monotonic()
            from traitlets.config import Config

            config = Config()
            config.EngineLauncher.environment = pinned_thread_env(self._threads)
            cluster = ipp.Cluster(
                n=self.workers,
                engine_timeout=self.connect_timeout,
                config=config,
                log_level=logging.WARNING,
            )
            client = cluster.start_and_connect_sync()
            entry = _CLUSTERS[self._key] = (cluster, client)
            LOGGER.info(
                "started ipyparallel cluster %s with %d engines in %.1f s",
                cluster.cluster_id, len(client.ids), time.monotonic() - start,
            )
        cluster, client = entry
        missing = self.workers - len(client.ids)
        if missing > 0:  # engines died in an earlier run: replace them
            cluster.start_engines_sync(n=missing)
            client.wait_for_engines(self.workers, timeout=self.connect_timeout)
        return client

    def _cluster_client(self) -> Any:
        """A client of the user's ``cluster=``, started here if it is not running."""
        cluster = self._cluster
        if cluster.controller is None:
            LOGGER.info("starting the given ipyparallel cluster %s", cluster.cluster_id)
            cluster.start_cluster_sync()
        elif not cluster.engines:
            cluster.start_engines_sync()
        if self._client is None:
            self._client = cluster.connect_client_sync()
        if not self._client.ids:
            self._client.wait_for_engines(1, timeout=self.connect_timeout)
        return self._client

    @property
    def _pinned_threads(self) -> int | None:
        """Threads to pin on the engines: only on those katparallel started or was given."""
        return self._threads if self.owns_cluster or self._cluster is not None else None

    @property
    def n_workers(self) -> int:
        if self.owns_cluster:
            return self.workers
        if self._cluster is not None:  # engines asked for, some maybe still queued
            asked = sum(engine_set.n or 0 for engine_set in self._cluster.engines.values())
            return max(1, asked, len(self.client.ids))
        return max(1, len(self.client.ids))

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        ipp = _import_ipyparallel()
        client = self.client
        view = client.load_balanced_view()
        finished: queue.SimpleQueue = queue.SimpleQueue()
        pending = {}
        for i, task in enumerate(tasks):
            ar = view.apply_async(call_pinned, fn, self._pinned_threads, task)
            pending[ar] = i
            ar.add_done_callback(finished.put)
        clean_exit = False
        try:
            while pending:
                ar = finished.get()
                index = pending.pop(ar)
                try:
                    result = ar.get()
                except ipp.error.RemoteError as exc:
                    if exc.ename == "EngineError":
                        result = Failure.worker_crashed(
                            f"the ipyparallel engine running this job died "
                            f"({exc.evalue}); the job did not finish."
                        )
                    else:
                        tb = "\n".join(exc.traceback or [])
                        result = Failure(None, None, exc.ename, exc.evalue, tb)
                yield index, result
            clean_exit = True
        finally:
            if not clean_exit and pending:
                LOGGER.info("aborting %d unfinished ipyparallel tasks", len(pending))
                if self.owns_cluster:
                    # Running tasks cannot be cancelled: stop the engines.
                    self.close()
                else:
                    client.abort(list(pending))

    def close(self) -> None:
        """Stop the cluster katparallel started; leave a user's cluster running."""
        if self.owns_cluster:
            _stop_cluster(self._key)
        elif self._client is not None and (
            self._url_file or self._connect_kwargs or self._cluster is not None
        ):
            self._client.close()
            self._client = None
