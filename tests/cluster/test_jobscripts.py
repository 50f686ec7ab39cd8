"""The job descriptions dask-jobqueue writes for the README's options (no batch queue needed).

HTCondor and PBS were not run on a real pool here (Debian 12 packages neither);
these tests hold what ``examples/slurm_study.py`` would submit: one
single-threaded worker per job, this venv's Python, the scheduler's address,
the ``--lifetime`` that ends a worker before its walltime, and HTCondor's
``accounting_group`` / ``accounting_group_user``, which the LIGO Data Grid
requires in every submit.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("dask_jobqueue")

EXAMPLE = Path(__file__).parents[2] / "examples" / "slurm_study.py"
_spec = importlib.util.spec_from_file_location("slurm_study", EXAMPLE)
slurm_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(slurm_study)


def job_script(*argv: str) -> str:
    args = slurm_study.parse_args(["--scheduler-host", "127.0.0.2", *argv])
    with slurm_study.make_cluster(args) as cluster:
        return cluster.job_script()


def worker_command(script: str) -> str:
    (command,) = re.findall(rf"{re.escape(sys.executable)} -m distributed.cli.dask_worker .*", script)
    return command


def check_worker(command: str) -> None:
    assert re.search(r" tcp://127\.0\.0\.2:\d+ ", command)
    assert " --nthreads 1 " in command
    assert "--lifetime 55m --lifetime-stagger 4m" in command


def test_htcondor_submit_has_accounting_group_and_one_core(tmp_path):
    script = job_script("--queue", "htcondor", "--accounting-group", "ligo.prod.o4.cbc.pe.bilby",
                        "--accounting-group-user", "marie.curie", "--logs", str(tmp_path))
    lines = script.splitlines()
    assert "accounting_group = ligo.prod.o4.cbc.pe.bilby" in lines
    assert "accounting_group_user = marie.curie" in lines
    assert "MY.DaskWorkerCores = 1" in lines and "RequestCpus = MY.DaskWorkerCores" in lines
    assert "MY.DaskWorkerDisk = 1000000000" in lines
    assert "Queue" in lines
    check_worker(worker_command(script))


def test_slurm_script_has_partition_account_walltime(tmp_path):
    script = job_script("--partition", "compute", "--account", "ligo", "--logs", str(tmp_path))
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for expected in ("-p compute", "-A ligo", "-n 1", "--cpus-per-task=1", "-t 01:00:00",
                     "--job-name=katparallel"):
        assert f"#SBATCH {expected}" in directives, directives
    check_worker(worker_command(script))


def test_pbs_script_has_queue_account_walltime(tmp_path):
    script = job_script("--queue", "pbs", "--partition", "workq", "--account", "ligo",
                        "--logs", str(tmp_path))
    directives = [line for line in script.splitlines() if line.startswith("#PBS")]
    for expected in ("-q workq", "-A ligo", "-l walltime=01:00:00"):
        assert f"#PBS {expected}" in directives, directives
    assert any(d.startswith("#PBS -l select=1:ncpus=1:") for d in directives), directives
    check_worker(worker_command(script))


def test_site_directives_can_be_skipped(tmp_path):
    """A site that refuses ``--mem`` (memory is per core there): dask-jobqueue's own skip list."""
    from dask_jobqueue import SLURMCluster

    with SLURMCluster(cores=1, memory="2GB", job_directives_skip=["--mem"],
                      scheduler_options={"host": "127.0.0.2", "dashboard_address": ":0"}) as cluster:
        script = cluster.job_script()
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH -n 1" in directives
    assert not [d for d in directives if d.startswith("#SBATCH --mem")], directives
