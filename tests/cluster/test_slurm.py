"""Studies through a real Slurm: the engines' own Slurm support, handed to katparallel.

The ``slurm`` fixture (conftest.py) starts a one-node Slurm when none runs.
Every batch job asks for one core; the node has as many as the machine. The
controller or scheduler listens on 127.0.0.2, the workers on 127.0.0.3, so
address options are exercised as on a real cluster. "Mid-study" is made
deterministic with :class:`katparallel._testing.Gate`: jobs wait for a file
while a test cancels the batch job running one of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import katparallel
from katparallel import Ensemble, Normal
from katparallel._testing import MPI_ENV, Gate, mpiexec_python

from slurmtools import DEADLINE, digest, study, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(4 * DEADLINE)]

HERE = Path(__file__).parent
SCHEDULER_HOST = "127.0.0.2"
WORKER_HOST = "127.0.0.3"


@pytest.fixture(scope="module")
def reference() -> str:
    """The study's digest, run serially in this process."""
    res = study().run(backend="serial", progress=False)
    assert len(set(res["P"].values.tolist())) == 12  # every job drew its own numbers
    return digest(res)


class Background:
    """``study.run(backend=...)`` in a thread, so a test can act while it runs."""

    def __init__(self, ensemble: Ensemble, backend):
        self.results = self.error = None
        self._thread = threading.Thread(target=self._run, args=(ensemble, backend), daemon=True)
        self._thread.start()

    def _run(self, ensemble, backend):
        try:
            self.results = ensemble.run(backend=backend, progress=False)
        except BaseException as exc:  # noqa: BLE001 - re-raised by join()
            self.error = exc

    def join(self):
        self._thread.join(DEADLINE)
        assert not self._thread.is_alive(), f"the study did not finish within {DEADLINE} s"
        if self.error is not None:
            raise self.error
        return self.results


def cancel_one_held_job(slurm, tmp_path) -> tuple[Gate, callable]:
    """A gate for a study, and ``cancel()``: once two batch jobs hold a study job, scancel one."""
    calls = tmp_path / "calls"
    calls.mkdir()
    gate = Gate(calls, tmp_path / "open", deadline=DEADLINE)

    def cancel() -> str:
        wait_for(lambda: len(set(Gate.slurm_jobs(calls))) >= 2, "two batch jobs to hold a study job")
        victim = sorted(set(Gate.slurm_jobs(calls)))[0]
        subprocess.run(["scancel", victim], check=True)
        slurm.wait_gone(victim)
        gate.gate.touch()
        return victim

    return gate, cancel


# --- ipyparallel.Cluster(engines="slurm") ----------------------------------------------


@pytest.fixture
def ipp_cluster(slurm, tmp_path, monkeypatch):
    """The user's own Slurm cluster object, not started (ipyparallel writes its
    batch script in the working directory)."""
    import ipyparallel

    monkeypatch.chdir(tmp_path)
    cluster = ipyparallel.Cluster(
        engines="slurm", n=2, controller_ip=SCHEDULER_HOST, log_level=logging.WARNING
    )
    yield cluster
    cluster.stop_cluster_sync()


def test_ipyparallel_over_slurm_matches_serial(ipp_cluster, reference, slurm):
    from katparallel.backends.ipyparallel import IPyParallelBackend

    with IPyParallelBackend(cluster=ipp_cluster, connect_timeout=DEADLINE) as backend:
        res = study().run(backend=backend, progress=False)
        backend.client.wait_for_engines(2, timeout=DEADLINE)  # both tasks of the engines' job
        engine_file = Path(ipp_cluster.profile_dir, "security",
                           f"ipcontroller-{ipp_cluster.cluster_id}-engine.json")
        assert json.loads(engine_file.read_text())["interface"] == f"tcp://{SCHEDULER_HOST}"
    assert not res.failures
    assert digest(res) == reference
    # Left as the user made it: controller and the engines' batch job still running.
    (engine_set,) = ipp_cluster.engines.values()
    assert slurm.jobs().get(engine_set.job_id) == "RUNNING"
    assert ipp_cluster.controller is not None


def test_ipyparallel_engine_job_cancelled_mid_study(ipp_cluster, reference, slurm, tmp_path):
    """Two batch jobs of one engine each; one is cancelled while it runs a study job."""
    from katparallel.backends.ipyparallel import IPyParallelBackend

    # The controller notices a dead engine after missed heartbeats: 30 s by default.
    ipp_cluster.controller_args = [
        "--HeartMonitor.period=1000", "--HeartMonitor.max_heartmonitor_misses=3"
    ]
    ipp_cluster.start_controller_sync()
    ipp_cluster.start_engines_sync(n=1)
    ipp_cluster.start_engines_sync(n=1)
    gate, cancel = cancel_one_held_job(slurm, tmp_path)
    with IPyParallelBackend(cluster=ipp_cluster, connect_timeout=DEADLINE) as backend:
        run = Background(study(gate), backend)
        victim = cancel()
        res = run.join()
    assert victim not in slurm.jobs()
    assert not res.failures
    assert digest(res) == reference
    assert len(Gate.slurm_jobs(gate.calls)) > 12  # the lost study job ran again


# --- dask_jobqueue.SLURMCluster -----------------------------------------------------------


@pytest.fixture
def slurm_cluster(slurm, tmp_path):
    """The user's own SLURMCluster: one single-threaded worker per batch job, the
    scheduler here on 127.0.0.2, the workers on 127.0.0.3."""
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(
        cores=1, processes=1, memory="1GB", walltime="00:10:00", job_name="katparallel-test",
        python=sys.executable, log_directory=str(tmp_path / "logs"),
        scheduler_options={"host": SCHEDULER_HOST, "dashboard_address": f"{SCHEDULER_HOST}:0"},
        worker_extra_args=["--host", WORKER_HOST],
    )
    yield cluster
    cluster.close()


def test_dask_over_slurm_matches_serial(slurm_cluster, reference, tmp_path):
    from katparallel.backends.dask import DaskBackend

    with DaskBackend(cluster=slurm_cluster, workers=2, connect_timeout=DEADLINE) as backend:
        res = study().run(backend=backend, progress=False)
    assert not res.failures
    assert digest(res) == reference
    assert slurm_cluster.scheduler_address.startswith(f"tcp://{SCHEDULER_HOST}:")
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.err"))
    listening = re.findall(r"Listening to:\s+(\S+)", logs)
    assert listening and all(a.startswith(f"tcp://{WORKER_HOST}:") for a in listening), logs
    # Left as the user made it (but adaptive): the scheduler still runs.
    assert slurm_cluster.status.name == "running"


def test_dask_worker_job_cancelled_mid_study(slurm_cluster, reference, slurm, tmp_path):
    from katparallel.backends.dask import DaskBackend

    gate, cancel = cancel_one_held_job(slurm, tmp_path)
    with DaskBackend(cluster=slurm_cluster, workers=2, connect_timeout=DEADLINE) as backend:
        run = Background(study(gate), backend)
        victim = cancel()
        res = run.join()
    assert not res.failures
    assert digest(res) == reference
    calls = Gate.slurm_jobs(gate.calls)
    assert len(calls) > 12  # the cancelled job's study job ran again elsewhere
    assert victim in calls


# --- a whole study in one batch job ------------------------------------------------------


def sbatch(script: Path, env: dict | None = None) -> str:
    """Submit ``script`` (it gets this environment, and ``env``); return its job id."""
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def batch_script(path: Path, *lines: str, ntasks: int = 1) -> Path:
    """Write a batch script running ``lines``; its output goes beside it."""
    path.write_text(
        "#!/bin/bash\n#SBATCH --job-name=katparallel-test\n"
        f"#SBATCH --ntasks={ntasks}\n#SBATCH --output={path.parent}/slurm-%j.out\n"
        + "\n".join(lines) + "\n"
    )
    return path


def test_sbatch_study_cancelled_then_resubmitted_resumes_from_its_store(slurm, reference, tmp_path):
    from katparallel.store import Store

    calls, gate, store, out = tmp_path / "calls", tmp_path / "open", tmp_path / "study.db", tmp_path / "study.nc"
    calls.mkdir()
    script = batch_script(
        tmp_path / "study.sbatch",
        f"exec {sys.executable} {HERE / 'store_study.py'} {calls} {gate} {store} {out}",
    )
    first = sbatch(script)
    wait_for(lambda: len(Gate.slurm_jobs(calls)) == 5, "the batch job to hold its fifth study job")
    with Store(store) as stored:
        assert stored.done_indices().tolist() == [0, 1, 2, 3]
    subprocess.run(["scancel", first], check=True)
    slurm.wait_gone(first)
    assert not out.exists()
    gate.touch()
    second = sbatch(script)
    slurm.wait_gone(second)
    ran = Gate.slurm_jobs(calls)
    assert ran.count(first) == 5 and ran.count(second) == 12 - 4
    res = katparallel.load(out)
    assert not res.failures
    assert digest(res) == reference


def test_mpiexec_under_sbatch_matches_serial(slurm, reference, tmp_path):
    """Open MPI reads the allocation from Slurm (two slots); three ranks oversubscribe it."""
    out = tmp_path / "mpi.nc"
    command = " ".join(mpiexec_python(3, str(HERE / "mpi_study.py"), str(out)))
    job = sbatch(batch_script(tmp_path / "mpi.sbatch", f"exec {command}", ntasks=2), env=MPI_ENV)
    slurm.wait_gone(job)
    log = (tmp_path / f"slurm-{job}.out").read_text()
    assert out.exists(), log
    res = katparallel.load(out)
    assert not res.failures
    assert digest(res) == reference


def test_slurm_example_gives_the_serial_digest(slurm, tmp_path):
    """``examples/slurm_study.py`` as the README runs it, against its study run serially here."""
    example = HERE.parents[1] / "examples" / "slurm_study.py"
    done = subprocess.run(
        [sys.executable, str(example), "-n", "12", "--scheduler-host", SCHEDULER_HOST,
         "--worker-host", WORKER_HOST, "--logs", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE,
    )
    assert done.returncode == 0, done.stderr
    (printed,) = re.findall(r"^digest (\w+) on dask$", done.stdout, flags=re.M)
    model = (HERE.parents[1] / "examples" / "laser_mirror.kat").read_text()
    res = Ensemble(model).sample(12, {"L0.P": Normal(1.0, 0.1)}, seed=42).run(
        backend="serial", progress=False)
    assert printed == hashlib.sha256(res["P"].values.tobytes()).hexdigest()[:16]


def test_sbatch_example_runs_the_cli_on_its_own_scheduler(slurm, tmp_path):
    """``examples/slurm_sbatch.sh``: scheduler, srun'd workers and ``katparallel run
    --scheduler-file`` in one job; the same results as the command line run serially."""
    root = HERE.parents[1]
    env = {"PYTHON": sys.executable, "MODEL": str(root / "examples" / "laser_mirror.kat"),
           "DRAWS": "12", "SCHEDULER_ADDRESS": f"--host {SCHEDULER_HOST}",
           "WORKER_ADDRESS": f"--host {WORKER_HOST}"}
    done = subprocess.run(["sbatch", "--parsable", str(root / "examples" / "slurm_sbatch.sh")],
                          cwd=tmp_path, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=DEADLINE)
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip()
    slurm.wait_gone(job)
    log = (tmp_path / f"katparallel-{job}.out").read_text()
    assert (tmp_path / "study.nc").exists(), log
    subprocess.run(
        [sys.executable, "-m", "katparallel", "run", env["MODEL"], "--sample", "L0.P=normal(1,0.1)",
         "-n", "12", "--seed", "42", "-b", "serial", "-o", str(tmp_path / "serial.nc"), "-q"],
        check=True, timeout=DEADLINE,
    )
    got, expected = katparallel.load(tmp_path / "study.nc"), katparallel.load(tmp_path / "serial.nc")
    assert got.to_xarray().attrs["backend"] == "dask"
    assert not got.failures
    assert digest(got) == digest(expected)
