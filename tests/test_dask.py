"""The Dask backend beyond the contract suite: what it sends, crashes, stores, connections.

Real engines: a ``distributed.LocalCluster`` katparallel starts (once for the
module), and a ``dask scheduler`` and ``dask worker`` started as commands on two
different loopback addresses, as on a cluster.
"""

import contextlib
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import cloudpickle
import numpy as np
import psutil
import pytest

from katparallel import Ensemble, Normal, _testing
from katparallel.backends.dask import DaskBackend
from katparallel.backends.multiprocess import MultiprocessingBackend
from katparallel.runner import CHUNKS_PER_WORKER

#: Only a deadlock reaches this.
TIMEOUT = 120
DASK = str(Path(sys.executable).with_name("dask"))


@pytest.fixture(scope="module")
def local():
    backend = DaskBackend(workers=2)
    dict(backend.map_unordered(_testing.square, [1, 2]))  # start the cluster once
    yield backend
    backend.close()


def assert_same_results(a, b):
    assert a.outputs == b.outputs
    for name in a.outputs:
        np.testing.assert_array_equal(a[name].values, b[name].values)


# --- what goes to the workers -------------------------------------------------------


def _unpickled_per_process(backend, shared, n_tasks):
    results = dict(backend.map_shared(_testing.unpickled_here, shared, range(n_tasks)))
    assert sorted(results) == list(range(n_tasks))
    most = defaultdict(int)
    for pid, count in results.values():
        most[pid] = max(most[pid], count)
    return dict(most)


@pytest.mark.timeout(TIMEOUT)
def test_shared_data_reaches_each_dask_worker_once(local):
    shared = _testing.Counted(uuid.uuid4().hex, 200_000)
    counts = _unpickled_per_process(local, shared, 40)
    assert counts and set(counts.values()) == {1}, counts


@pytest.mark.timeout(TIMEOUT)
def test_without_an_engine_cache_shared_data_travels_with_every_task():
    """What the count above would be without ``map_shared``: the test can fail."""
    with MultiprocessingBackend(workers=2) as pool:
        counts = _unpickled_per_process(pool, _testing.Counted(uuid.uuid4().hex, 1000), 40)
    assert sum(counts.values()) == 40


class _Recording(DaskBackend):
    """The Dask backend, recording the pickled size of what each run sends."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.shared_bytes, self.task_bytes = [], []

    def map_shared(self, fn, shared, tasks):
        self.shared_bytes.append(len(cloudpickle.dumps(shared)))
        self.task_bytes.extend(len(cloudpickle.dumps(t)) for t in tasks)
        return super().map_shared(fn, shared, tasks)


@pytest.mark.timeout(TIMEOUT)
def test_a_study_sends_the_model_once_not_with_every_chunk(local, katscript):
    big = katscript + "".join(f"# padding line {i:06d} of a big model\n" for i in range(400))
    ensemble = Ensemble(big, seed=3).sample(64, {"L0.P": Normal(1, 0.1)})
    recording = _Recording(workers=2)  # the module's cluster (same settings)
    got = ensemble.run(backend=recording, batch=False, progress=False)
    assert len(recording.shared_bytes) == 1 and recording.shared_bytes[0] > len(big)
    assert len(recording.task_bytes) == 2 * CHUNKS_PER_WORKER
    assert max(recording.task_bytes) < 1_000
    assert_same_results(got, ensemble.run(backend="serial", batch=False, progress=False))


def _katparallel_tasks(dask_scheduler) -> list[str]:
    return [str(k) for k in dask_scheduler.tasks if str(k).startswith("katparallel-")]


@pytest.mark.timeout(TIMEOUT)
def test_stopping_early_cancels_the_tasks_not_yet_done(local):
    dict(local.map_shared(_testing.unpickled_here, _testing.Counted(uuid.uuid4().hex, 10), [1]))
    it = local.map_unordered(_testing.sleep_then, [(0.0, 0)] + [(0.5, i) for i in range(1, 60)])
    next(it)
    assert local.client.run_on_scheduler(_katparallel_tasks)  # still queued
    it.close()
    deadline = time.monotonic() + 30
    while local.client.run_on_scheduler(_katparallel_tasks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert local.client.run_on_scheduler(_katparallel_tasks) == []
    plugins = local.client.run(lambda dask_worker: [p for p in dask_worker.plugins
                                                    if p.startswith("katparallel-shared-")])
    assert set(map(tuple, plugins.values())) == {()}  # no run's shared data left on a worker


# --- a study on Dask: crashes, stores ---------------------------------------------------


@pytest.mark.timeout(TIMEOUT)
def test_a_worker_killed_mid_study_is_retried_and_the_study_finishes(local, katscript, tmp_path):
    marker = tmp_path / "killed"
    ensemble = (
        Ensemble(katscript, seed=5).sample(12, {"L0.P": Normal(1, 0.1)})
        .perturb(_testing.KillOnce(marker))
    )
    got = ensemble.run(backend=local, progress=False)
    assert marker.exists()  # a worker did die
    assert got.failures == []
    assert_same_results(got, ensemble.run(backend="serial", progress=False))
    assert dict(local.map_unordered(_testing.square, range(4))) == {i: i * i for i in range(4)}


@pytest.mark.timeout(TIMEOUT)
def test_store_resumes_on_dask_bit_for_bit(local, katscript, tmp_path):
    db = tmp_path / "mc.db"
    ensemble = Ensemble(katscript, seed=11).sample(6000, {"L0.P": Normal(1, 0.1)})
    full = ensemble.run(backend=local, progress=False, store=db)  # batched chunks
    with sqlite3.connect(db) as con:
        lost = [r[0] for r in con.execute("SELECT id FROM chunks ORDER BY id")][::2]
        con.executemany("DELETE FROM outputs WHERE chunk = ?", [(i,) for i in lost])
        con.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in lost])
    resumed = ensemble.run(backend=local, progress=False, store=db)
    assert_same_results(full, resumed)
    assert_same_results(full, ensemble.run(backend="serial", progress=False))


# --- connecting to a user's Dask --------------------------------------------------------


def test_one_way_to_the_scheduler_at_a_time():
    with pytest.raises(ValueError, match="give at most one of client=, address="):
        DaskBackend(address="tcp://127.0.0.1:8786", scheduler_file="s.json")
    with pytest.raises(ValueError, match="workers=2 cannot resize a running Dask scheduler"):
        DaskBackend(workers=2, address="tcp://127.0.0.1:8786")


@pytest.mark.timeout(TIMEOUT)
def test_an_unreachable_scheduler_is_a_clear_error_after_the_connect_timeout():
    port = _free_port()
    backend = DaskBackend(address=f"tcp://127.0.0.1:{port}", connect_timeout=2)
    problem = f"could not reach the Dask scheduler at tcp://127.0.0.1:{port} within 2 s"
    with pytest.raises(ConnectionError, match=problem):
        dict(backend.map_unordered(_testing.square, [1]))


def test_a_user_client_is_used_and_left_open(local):
    import distributed

    with distributed.Client(local.client.scheduler.address, set_as_default=False) as client:
        backend = DaskBackend(client=client)
        assert dict(backend.map_unordered(_testing.square, [3, 4])) == {0: 9, 1: 16}
        assert backend.n_workers == 2
        backend.close()
        assert client.status == "running"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- not only localhost: scheduler and worker on two loopback addresses -------------


def _wait_for(predicate, what: str, proc_list) -> None:
    deadline = time.monotonic() + 60
    while not predicate():
        for proc in proc_list:
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: {proc.args[1]} exited: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within 60 s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    """``dask scheduler`` on 127.0.0.2 and one ``dask worker`` on 127.0.0.3."""
    import json

    scheduler_file = tmp_path_factory.mktemp("dask") / "scheduler.json"
    port = _free_port()
    procs = []
    try:
        procs.append(subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.2", "--port", str(port),
             "--dashboard-address", ":0", "--scheduler-file", str(scheduler_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        ))
        _wait_for(scheduler_file.exists, "the scheduler wrote its file", procs)
        address = json.loads(scheduler_file.read_text())["address"]
        procs.append(subprocess.Popen(
            [DASK, "worker", address, "--host", "127.0.0.3", "--nworkers", "1",
             "--nthreads", "1", "--no-dashboard", "--memory-limit", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        ))
        import distributed

        with distributed.Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
            workers = list(client.scheduler_info()["workers"])
        yield address, scheduler_file, workers
    finally:
        # By pid: the worker (and its nanny's child), then the scheduler.
        for proc in reversed(procs):
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
            proc.kill()
            proc.wait(timeout=30)
            proc.stderr.close()


@pytest.mark.timeout(TIMEOUT)
def test_scheduler_and_worker_on_other_addresses_give_the_serial_digest(two_hosts, katscript):
    address, scheduler_file, workers = two_hosts
    assert address.startswith("tcp://127.0.0.2:")
    assert [w.split(":")[1] for w in workers] == ["//127.0.0.3"]
    ensemble = Ensemble(katscript, seed=8).sample(
        40, {"L0.P": Normal(1, 0.1), "m.phi": Normal(0, 5)})
    serial = ensemble.run(backend="serial", batch=False, progress=False)
    for backend in (DaskBackend(address=address), DaskBackend(scheduler_file=scheduler_file)):
        with backend:
            assert backend.n_workers == 1
            got = ensemble.run(backend=backend, batch=False, progress=False)
        assert got.to_xarray().attrs["backend"] == "dask"
        assert_same_results(got, serial)


@pytest.mark.timeout(TIMEOUT)
def test_the_command_line_runs_on_a_scheduler_file(two_hosts, katscript, tmp_path):
    """What an ``sbatch`` script does once its scheduler and workers are up."""
    import katparallel

    _, scheduler_file, _ = two_hosts
    model = tmp_path / "m.kat"
    model.write_text(katscript)
    out = tmp_path / "mc.nc"
    proc = subprocess.run(
        [sys.executable, "-m", "katparallel", "run", str(model), "-n", "40",
         "--sample", "L0.P=normal(1,0.1)", "--seed", "8", "--backend", "dask",
         "--scheduler-file", str(scheduler_file), "-q", "--out", str(out)],
        capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "on dask (1 worker" in proc.stdout
    serial = Ensemble(katscript, seed=8).sample(40, {"L0.P": Normal(1, 0.1)}).run(
        backend="serial", progress=False)
    assert_same_results(katparallel.load(out), serial)


@pytest.mark.parametrize("args, problem", [
    (["--backend", "multiprocessing", "--scheduler", "tcp://127.0.0.1:1"],
     "--scheduler connects to a running Dask scheduler: add --backend dask"),
    (["--backend", "dask", "--scheduler-file", "s.json", "--workers", "2"],
     "--workers cannot resize a running Dask scheduler's workers"),
    (["--backend", "dask", "--scheduler", "tcp://127.0.0.1:1", "--connect-timeout", "1"],
     "could not reach the Dask scheduler at tcp://127.0.0.1:1 within 1 s"),
    (["--backend", "dask", "--scheduler-file", "missing.json", "--connect-timeout", "1"],
     "no Dask scheduler address in 'missing.json' after 1 s"),
])
@pytest.mark.timeout(TIMEOUT)
def test_command_line_scheduler_mistakes_are_one_clear_error(args, problem, katscript, tmp_path,
                                                             monkeypatch, capsys):
    from katparallel.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.kat").write_text(katscript)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "m.kat", "--vary", "L0.P=1,2", *args])
    assert exit_.value.code == 2
    assert problem in capsys.readouterr().err


@pytest.mark.timeout(TIMEOUT)
def test_a_user_cluster_is_made_adaptive_and_left_running(katscript):
    """What katparallel does to a dask-jobqueue cluster, on a LocalCluster with no workers."""
    import distributed

    with distributed.LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                                  dashboard_address="127.0.0.1:0") as cluster:
        assert not cluster.workers
        ensemble = Ensemble(katscript, seed=6).sample(24, {"L0.P": Normal(1, 0.1)})
        with DaskBackend(cluster=cluster, workers=2) as backend:
            got = ensemble.run(backend=backend, batch=False, progress=False)
            assert backend.n_workers == 2
        assert_same_results(got, ensemble.run(backend="serial", batch=False, progress=False))
        assert cluster._adaptive is not None  # adapt(minimum=0, maximum=2) was called
        assert (cluster._adaptive.minimum, cluster._adaptive.maximum) == (0, 2)
        assert cluster.status.name == "running"  # not closed by katparallel
