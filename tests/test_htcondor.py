"""A study on a real HTCondor pool, through dask-jobqueue's ``HTCondorCluster``.

The pool is Debian 13's ``minicondor`` in a ``debootstrap trixie`` chroot,
started by ``tests/cluster/htcondor.sh`` (built on first use, a few minutes;
needs root). ``condor_submit`` and ``condor_rm`` on PATH are that script's
wrappers, which run the pool's own commands inside the chroot as its
unprivileged user; the Dask workers are HTCondor jobs running this checkout's
Python, bind-mounted into the chroot at the same paths. The scheduler listens
on 127.0.0.2 and the workers on 127.0.0.3, as on two machines.
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from katparallel import Ensemble, Normal, _testing
from katparallel.backends.dask import DaskBackend

SCRIPT = Path(__file__).parent / "cluster" / "htcondor.sh"
#: Building the chroot on a fresh machine takes about 3 minutes; this is its limit.
SETUP_TIMEOUT = 1200
#: What the LIGO Data Grid requires in every submit file.
ACCOUNTING = {"accounting_group": "ligo.dev.o4.detchar.explore.test",
              "accounting_group_user": "albert.einstein"}

pytestmark = [pytest.mark.htcondor, pytest.mark.timeout(SETUP_TIMEOUT + 300)]


def _pool_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=SETUP_TIMEOUT)


@pytest.fixture(scope="module")
def condor_path():
    """Start the pool if it is not running (stopped again at the end); PATH reaches it."""
    if os.geteuid() != 0:
        pytest.skip("the HTCondor pool needs root to start (chroot, mount); CI runs as root")
    was_running = _pool_script("running").returncode == 0
    started = _pool_script("start", sys.executable)
    if started.returncode != 0:
        if not was_running:
            _pool_script("stop")  # what it mounted or started before failing
        raise RuntimeError(f"{SCRIPT} start failed:\n{started.stderr[-3000:]}")
    bin_dir = started.stdout.strip().splitlines()[-1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", bin_dir + os.pathsep + os.environ["PATH"])
        yield bin_dir
    if not was_running:
        stopped = _pool_script("stop")
        assert stopped.returncode == 0, stopped.stderr


@pytest.fixture
def cluster(condor_path):
    """A fresh HTCondorCluster (its own scheduler), closed after the test: its jobs removed."""
    from dask_jobqueue import HTCondorCluster

    cluster = HTCondorCluster(
        cores=1, processes=1, memory="1GB", disk="1GB",
        job_extra_directives=ACCOUNTING,
        scheduler_options={"host": "127.0.0.2", "dashboard_address": ":0"},
        worker_extra_args=["--host", "127.0.0.3"],
        python=sys.executable, death_timeout=60,
    )
    yield cluster
    cluster.close()


def _job_ads(client, chroot: Path) -> dict[str, dict[str, str]]:
    """Each Dask worker's HTCondor job ad, read from the chroot ({} for a worker outside HTCondor)."""
    ads = {}
    for worker, path in client.run(os.getenv, "_CONDOR_JOB_AD").items():
        text = (chroot / path.lstrip("/")).read_text() if path else ""
        ads[worker] = dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line)
    return ads


def test_the_job_description_carries_the_accounting_group(cluster):
    script = cluster.job_script()
    for key, value in ACCOUNTING.items():
        assert f"{key} = {value}" in script
    assert f"{sys.executable} -m distributed.cli.dask_worker tcp://127.0.0.2:" in script


def test_a_study_on_htcondor_workers_gives_the_serial_results_to_the_bit(
    cluster, condor_path, katscript
):
    backend = DaskBackend(cluster=cluster, workers=2, connect_timeout=120)
    ensemble = Ensemble(katscript, seed=7).sample(400, {"L0.P": Normal(1, 0.1)})
    got = ensemble.run(backend=backend, progress=False)
    ads = _job_ads(backend.client, Path(condor_path).parents[1])
    uids = backend.client.run(os.getuid)
    backend.close()
    assert got.failures == []
    serial = ensemble.run(backend="serial", progress=False)
    assert got.outputs == serial.outputs
    for name in serial.outputs:
        np.testing.assert_array_equal(got[name].values, serial[name].values)
    # The workers were HTCondor jobs, run as the pool's user, with the accounting group.
    assert ads and all(address.startswith("tcp://127.0.0.3:") for address in ads), ads
    assert set(uids.values()) == {2000}, uids
    for ad in ads.values():
        assert ad.get("Owner") == '"katp"', ad
        assert ad.get("AcctGroup") == f'"{ACCOUNTING["accounting_group"]}"', ad
        assert ad.get("AcctGroupUser") == f'"{ACCOUNTING["accounting_group_user"]}"', ad


def _wait(predicate, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:g} s")
        time.sleep(0.1)


def test_condor_rm_of_a_worker_job_mid_study_loses_nothing(cluster, condor_path):
    # Two workers held from the start (adapt would release an idle one), so
    # both run the study when one of their jobs is removed.
    cluster.adapt(minimum=2, maximum=2)
    backend = DaskBackend(cluster=cluster, connect_timeout=120)
    client = backend.client
    client.wait_for_workers(2, timeout=300)
    ensemble = Ensemble(_testing.HOM_KATSCRIPT, seed=13).sample(160, {"m1.xbeta": Normal(0, 1e-6)})
    got = {}

    def run() -> None:
        try:
            got["results"] = ensemble.run(backend=backend, batch=False, progress=False)
        except BaseException as exc:  # raised again below, in the test's thread
            got["error"] = exc

    study = threading.Thread(target=run)
    study.start()

    def both_workers_busy() -> bool:
        if not study.is_alive():
            raise AssertionError(f"the study ended before two HTCondor workers ran it: {got}")
        busy = client.processing()
        return len(busy) == 2 and all(busy.values())

    _wait(both_workers_busy, "two HTCondor workers running the study")
    victim = next(iter(client.processing()))
    ad = _job_ads(client, Path(condor_path).parents[1])[victim]
    job = f"{ad['ClusterId']}.{ad['ProcId']}"
    subprocess.run(["condor_rm", job], check=True, capture_output=True)
    _wait(lambda: victim not in client.scheduler_info(n_workers=-1)["workers"], "the worker leaving")
    removed_mid_study = study.is_alive()
    study.join(timeout=600)
    backend.close()

    if "error" in got:
        raise got["error"]
    assert removed_mid_study
    history = subprocess.run(["condor_history", job, "-af", "JobStatus"], check=True,
                             capture_output=True, text=True)
    assert history.stdout.split() == ["3"]  # removed
    assert got["results"].failures == []
    serial = ensemble.run(backend="serial", batch=False, progress=False)
    np.testing.assert_array_equal(got["results"]["P"].values, serial["P"].values)
