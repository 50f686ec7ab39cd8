"""A Monte Carlo study on a batch queue, run from a login node: Dask workers in batch jobs.

The cluster object is dask-jobqueue's own (``SLURMCluster``, ``HTCondorCluster``,
``PBSCluster``), built with its own options; katparallel is handed it and lets it
adapt between 0 and ``--workers`` batch jobs of one single-threaded worker
each, so jobs are asked for while draws wait and released when idle. The
results are those of ``backend="serial"`` to the bit (compare the ``digest``
line with ``--backend serial``).

Run::

    python examples/slurm_study.py                                  # on Slurm
    python examples/slurm_study.py --backend serial                 # same digest, here
    python examples/slurm_study.py --queue htcondor --job-script    # print the HTCondor submit
                                                                    # description, submit nothing
"""

import argparse
import hashlib
import sys
from pathlib import Path

from katparallel import Ensemble, Normal

#: A laser through a 50 % mirror (the model examples/slurm_sbatch.sh runs too).
MODEL = (Path(__file__).parent / "laser_mirror.kat").read_text()


def make_cluster(args: argparse.Namespace):
    """The batch queue's Dask cluster, with the options a site usually needs."""
    import dask_jobqueue

    common = dict(
        cores=1,  # one single-threaded worker per batch job
        processes=1,
        memory="2GB",
        python=sys.executable,  # the workers run this Python (this venv), not the node's
        # Leave the job before its walltime, so Dask moves the worker's work first.
        walltime="01:00:00",
        worker_extra_args=["--lifetime", "55m", "--lifetime-stagger", "4m",
                           *(["--host", args.worker_host] if args.worker_host else [])],
        # The address the workers reach the scheduler at: an interface name
        # ("ib0", "eth0") on a real cluster, or a host address.
        scheduler_options={"host": args.scheduler_host, "dashboard_address": ":0"},
        log_directory=args.logs,
    )
    if args.queue == "slurm":
        return dask_jobqueue.SLURMCluster(
            queue=args.partition, account=args.account,
            job_extra_directives=["--job-name=katparallel"], **common,
        )
    if args.queue == "htcondor":
        del common["walltime"]  # HTCondor has none: jobs run until done or evicted
        return dask_jobqueue.HTCondorCluster(
            disk="1GB",
            job_extra_directives={  # the LIGO Data Grid refuses jobs without these
                "accounting_group": args.accounting_group,
                "accounting_group_user": args.accounting_group_user,
            },
            **common,
        )
    return dask_jobqueue.PBSCluster(queue=args.partition, account=args.account, **common)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=2, help="most batch jobs at once")
    parser.add_argument("--queue", choices=["slurm", "htcondor", "pbs"], default="slurm")
    parser.add_argument("--backend", choices=["dask", "serial"], default="dask")
    parser.add_argument("--partition", help="Slurm partition / PBS queue (default: the site's)")
    parser.add_argument("--account", help="account to charge, where the site asks for one")
    parser.add_argument("--accounting-group", default="ligo.dev.o4.cbc.explore.test")
    parser.add_argument("--accounting-group-user", default="albert.einstein")
    parser.add_argument("--scheduler-host", default=None, help="address the scheduler listens on")
    parser.add_argument("--worker-host", default=None, help="address the workers listen on")
    parser.add_argument("--logs", default="dask-logs", help="batch jobs' output directory")
    parser.add_argument("--job-script", action="store_true", help="print the job script and exit")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    ensemble = Ensemble(MODEL).sample(args.draws, {"L0.P": Normal(1.0, 0.1)}, seed=args.seed)
    if args.backend == "serial":
        res = ensemble.run(backend="serial", progress=False)
    else:
        from katparallel.backends.dask import DaskBackend

        with make_cluster(args) as cluster:
            if args.job_script:
                print(cluster.job_script())
                return
            with DaskBackend(cluster=cluster, workers=args.workers, connect_timeout=600) as dask:
                res = ensemble.run(backend=dask, progress=False)
    power = res["P"]
    print(f"{power.size} draws: mean P = {power.mean().item():.6f} W, failures {len(res.failures)}")
    print(f"digest {hashlib.sha256(power.values.tobytes()).hexdigest()[:16]} on {args.backend}")


if __name__ == "__main__":
    main()
