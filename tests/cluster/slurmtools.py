"""Helpers of the Slurm tests: the cluster's jobs, bounded waits, result digests."""

from __future__ import annotations

import hashlib
import subprocess
import time
from dataclasses import dataclass

import numpy as np
import pytest

from katparallel import Ensemble, Normal, Uniform
from katparallel._testing import MIRROR_KATSCRIPT as KATSCRIPT, Gate

#: Seconds any wait on Slurm may take: only a deadlock or a broken daemon reaches it.
DEADLINE = 120


def study(gate: Gate | None = None) -> Ensemble:
    """Twelve seeded draws; with ``gate``, a perturb that holds jobs (results unchanged)."""
    ens = Ensemble(KATSCRIPT, seed=2026).sample(
        12, {"L0.P": Normal(1, 0.1), "m.T": Uniform(0.1, 0.5)}
    )
    return ens if gate is None else ens.perturb(gate)


@dataclass
class Slurm:
    """The running cluster, and the jobs queued on it before this session."""

    before: frozenset[str]

    def jobs(self) -> dict[str, str]:
        """Job id -> state of this session's jobs still known to slurmctld."""
        out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True,
                             check=True).stdout
        jobs = dict(line.split() for line in out.splitlines())
        return {j: s for j, s in jobs.items() if j not in self.before}

    def wait_gone(self, job_id: str) -> None:
        """Wait until ``job_id`` has left the queue (cancelled or finished)."""
        wait_for(lambda: job_id not in self.jobs(), f"Slurm job {job_id} to end")


def wait_for(condition, what: str, deadline: float = DEADLINE) -> None:
    """Poll ``condition()`` until true; fail after ``deadline`` s (a deadlock, not slowness)."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"waited {deadline} s for {what}")
        time.sleep(0.1)


def digest(results) -> str:
    """SHA-256 of every output array of ``results`` (as examples/laser_power_jitter.py prints)."""
    sha = hashlib.sha256()
    for name in sorted(results.outputs):
        sha.update(np.ascontiguousarray(results[name].values).tobytes())
    return sha.hexdigest()
