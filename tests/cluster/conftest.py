"""A real one-node Slurm for the tests marked ``slurm``.

The session fixture :func:`slurm` runs ``slurm.sh start``: it uses a Slurm that
already answers (and leaves it alone), or starts munged, slurmctld and slurmd
itself and stops them, by process id, when the session ends. Without Slurm
installed (``make test`` installs it as root) the tests fail under ``CI=true``
and are skipped elsewhere, with the command that installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from slurmtools import DEADLINE, Slurm, wait_for

SLURM_SH = Path(__file__).with_name("slurm.sh")


def _queued() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.fixture(scope="session")
def slurm():
    """A running one-node Slurm; started here (and stopped after the session) if none runs."""
    missing = shutil.which("sinfo") is None or shutil.which("sbatch") is None
    if missing or os.geteuid() != 0 and subprocess.run(
        [str(SLURM_SH), "status"], capture_output=True
    ).returncode:
        why = ("Slurm is not installed: as root, run `make slurm` (tests/cluster/slurm.sh install)"
               if missing else "no Slurm is running, and starting one needs root")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    proc = subprocess.run([str(SLURM_SH), "start"], capture_output=True, text=True,
                          timeout=4 * DEADLINE)
    if proc.returncode:
        pytest.fail(f"could not start Slurm:\n{proc.stdout}{proc.stderr}")
    started = proc.stdout.split()[-1] == "started"
    cluster = Slurm(before=frozenset(_queued()))
    yield cluster
    leftover = list(cluster.jobs())
    if leftover:  # a failed test's jobs: this session's only
        subprocess.run(["scancel", *leftover], check=False)
    # Jobs cancelled by the tests may still be ending: let slurmd stop their processes.
    wait_for(lambda: not cluster.jobs(), "this session's Slurm jobs to end")
    if started:
        subprocess.run([str(SLURM_SH), "stop"], check=True, timeout=4 * DEADLINE)
