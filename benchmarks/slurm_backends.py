"""W4 (aLIGO tolerance Monte Carlo) through Slurm-launched workers, beside the process pool.

Needs a running Slurm (``tests/cluster/slurm.sh start`` as root starts a
one-node one). Rows, all in one run, all with 2 workers and the results
checked equal to the pool's bit for bit:

* katparallel's multiprocessing pool, warm (the reference);
* Dask workers in 2 Slurm jobs (``dask_jobqueue.SLURMCluster``, one core each),
  warm: the jobs running, each worker has run the study once;
* ipyparallel engines in a Slurm job (``ipyparallel.Cluster(engines="slurm")``), warm;
* from ``run()`` to the first result on a SLURMCluster with no job running yet
  (``adapt`` asks Slurm for jobs, the workers start, parse the model, run a chunk),
  and to the whole study.

Run::

    python benchmarks/slurm_backends.py              # 2,000 draws, best of 2
    python benchmarks/slurm_backends.py --draws 200 --repeat 1   # a smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _real_models  # noqa: E402

from katparallel.backends.base import Backend  # noqa: E402

WORKERS = 2


class FirstResult(Backend):
    """A backend that runs on ``inner`` and notes when the first result arrives."""

    def __init__(self, inner: Backend):
        super().__init__(None)
        self.inner, self.name, self.first = inner, inner.name, None

    @property
    def n_workers(self) -> int:
        return self.inner.n_workers

    def map_unordered(self, fn, tasks):
        for item in self.inner.map_unordered(fn, tasks):
            if self.first is None:
                self.first = time.perf_counter()
            yield item


def timed_runs(ensemble, backend, repeat: int):
    """Best time of ``repeat`` runs after one warm-up run; the last results."""
    ensemble.run(backend=backend, progress=False)
    best, res = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        res = ensemble.run(backend=backend, progress=False)
        best = min(best, time.perf_counter() - start)
    return best, res


def slurm_cluster(logs: str):
    from dask_jobqueue import SLURMCluster

    # OpenMP as many threads as the job has cores: this test node binds no CPUs
    # (TaskPlugin=task/none), so without it each worker runs one thread per core.
    return SLURMCluster(cores=1, processes=1, memory="2GB", walltime="00:30:00",
                        python=sys.executable, log_directory=logs,
                        job_script_prologue=["export OMP_NUM_THREADS=1"],
                        scheduler_options={"dashboard_address": ":0"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    import distributed  # noqa: F401 - sets up its loggers, quietened below
    import ipyparallel

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("distributed").setLevel(logging.WARNING)

    from katparallel import Ensemble
    from katparallel.backends.dask import DaskBackend
    from katparallel.backends.ipyparallel import IPyParallelBackend
    from katparallel.backends.multiprocess import MultiprocessingBackend

    study = _real_models.w4_study(args.draws)
    ensemble = study.ensemble(study.n, Ensemble(study.text))
    rows, results = [], {}
    with MultiprocessingBackend(workers=WORKERS) as pool:
        seconds, results["pool"] = timed_runs(ensemble, pool, args.repeat)
    rows.append(("multiprocessing pool, warm", seconds))

    logs = tempfile.mkdtemp(prefix="kp-slurm-bench-")
    os.chdir(logs)  # ipyparallel writes its batch script in the working directory
    with slurm_cluster(logs) as cluster:
        backend = FirstResult(DaskBackend(cluster=cluster, workers=WORKERS, connect_timeout=600))
        start = time.perf_counter()
        results["dask cold"] = ensemble.run(backend=backend, progress=False)
        rows.append(("Dask over Slurm, no job running: run() to first result",
                     backend.first - start))
        rows.append(("Dask over Slurm, no job running: whole study", time.perf_counter() - start))
    with slurm_cluster(logs) as cluster:
        cluster.scale(WORKERS)  # fixed, not adaptive: idle jobs would be released between runs
        with DaskBackend(cluster=cluster, connect_timeout=600) as backend:
            backend.client.wait_for_workers(WORKERS, timeout=600)
            seconds, results["dask"] = timed_runs(ensemble, backend, args.repeat)
    rows.append(("Dask over Slurm (2 jobs of 1 core), warm", seconds))
    cluster = ipyparallel.Cluster(engines="slurm", n=WORKERS, log_level=logging.WARNING)
    try:
        with IPyParallelBackend(cluster=cluster, connect_timeout=600) as backend:
            backend.client.wait_for_engines(WORKERS, timeout=600)
            seconds, results["ipyparallel"] = timed_runs(ensemble, backend, args.repeat)
    finally:
        cluster.stop_cluster_sync()
    rows.append(("ipyparallel over Slurm (1 job of 2 engines), warm", seconds))

    ref, _ = study.matrix(results["pool"], study.n)
    for name, res in results.items():
        got, note = study.matrix(res, study.n)
        assert not note and np.array_equal(got, ref), f"{name} differs from the pool: {note}"
    pool_seconds = rows[0][1]
    print(f"W4, {study.n} draws, {WORKERS} workers, best of {args.repeat}; "
          "every result equal to the pool's bit for bit")
    for name, seconds in rows:
        ratio = "" if "whole" in name or "first" in name else f"  {pool_seconds / seconds:5.2f}x the pool"
        print(f"  {name:58s} {seconds:7.2f} s{ratio}")


if __name__ == "__main__":
    main()
