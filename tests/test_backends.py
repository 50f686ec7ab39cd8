"""Contract tests, written once and run on every available backend.

Real engines, no mocks: process pools, a local ipyparallel cluster, MPI
workers. Functions shipped to workers live in :mod:`katparallel._testing`.
Slow engines start once per module (``scope="module"``).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from katparallel import _testing
from katparallel.backends import Backend, available, get_backend_class, make_backend
from katparallel.errors import Failure

#: Only a deadlock reaches this.
TIMEOUT = 60
HERE = Path(__file__).parent
IPCLUSTER = str(Path(sys.executable).with_name("ipcluster"))

# Open MPI refuses to spawn as root without these (containers, CI).
if os.geteuid() == 0:
    for _key, _value in _testing.MPI_ENV.items():
        os.environ.setdefault(_key, _value)

#: Every engine: all are installed by `make test` (`pip install -e .[mpi,cluster,uq,test]`),
#: so a missing one fails test_every_engine_is_available instead of skipping.
BACKENDS = ["serial", "multiprocessing", "pathos", "ipyparallel", "mpi", "dask", "auto"]
#: Backends whose workers are processes this one starts from Python.
POOLS = ["multiprocessing", "pathos", "dask", "auto"]
#: Backends that run tasks in other processes.
REMOTE = [n for n in BACKENDS if n != "serial"]
#: Backends that can lose one worker and carry on. Under MPI a killed rank
#: aborts the whole job (tested below with mpiexec); serial would kill pytest.
RECOVERING = [n for n in REMOTE if n != "mpi"]


def test_every_engine_is_available():
    assert sorted(available()) == sorted(BACKENDS)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request):
    b = get_backend_class(request.param)(workers=2)
    dict(b.map_unordered(_testing.square, [1, 2]))  # start the engine once
    yield b
    b.close()


def run_all(backend, fn, tasks):
    return dict(backend.map_unordered(fn, tasks))


@pytest.mark.timeout(TIMEOUT)
def test_all_results_with_their_indices(backend):
    tasks = list(range(25))
    out = []
    for index, result in backend.map_unordered(_testing.square, tasks):
        out.append((index, result))
    assert sorted(i for i, _ in out) == tasks
    assert dict(out) == {i: i * i for i in tasks}


@pytest.mark.timeout(TIMEOUT)
def test_shared_data_reaches_every_task(backend):
    results = dict(backend.map_shared(_testing.scaled, 10, range(12)))
    assert results == {i: 10 * i for i in range(12)}
    assert list(backend.map_shared(_testing.scaled, 10, [])) == []


@pytest.mark.timeout(TIMEOUT)
def test_no_tasks(backend):
    assert list(backend.map_unordered(_testing.square, [])) == []


@pytest.mark.timeout(TIMEOUT)
def test_results_stream_as_they_complete(backend):
    if backend.name == "serial":  # in order, but still one at a time
        tasks, first_expected = [(0.0, "fast"), (1.5, "slow")], 0
    else:
        tasks, first_expected = [(1.5, "slow"), (0.0, "fast")], 1
    start = time.monotonic()
    it = backend.map_unordered(_testing.sleep_then, tasks)
    index, _ = next(it)
    first = time.monotonic() - start
    rest = list(it)
    assert index == first_expected
    assert first < 1.0, f"first result after {first:.2f} s: results are not streamed"
    assert len(rest) == 1


@pytest.mark.timeout(TIMEOUT)
def test_workers_are_reused_across_runs(backend):
    first = set(run_all(backend, _testing.pid_of, [0.05] * 8).values())
    second = set(run_all(backend, _testing.pid_of, [0.05] * 8).values())
    if backend.name == "serial":
        assert first == second == {os.getpid()}
    else:
        assert os.getpid() not in first
        assert second <= first


@pytest.mark.parametrize("backend", REMOTE, indirect=True)
@pytest.mark.timeout(TIMEOUT)
def test_worker_threads_pinned_to_one(backend):
    assert set(run_all(backend, _testing.omp_threads, range(4)).values()) == {1}


@pytest.mark.parametrize("backend", RECOVERING, indirect=True)
@pytest.mark.timeout(TIMEOUT)
def test_killed_worker_costs_only_its_task(backend):
    tasks = [1, 2, _testing.CRASH_VALUE, 3, 4, 5]
    results = run_all(backend, _testing.crash_on, tasks)
    assert sorted(results) == list(range(len(tasks)))
    assert isinstance(results[2], Failure) and results[2].crashed
    assert {i: r for i, r in results.items() if i != 2} == {
        i: x * x for i, x in enumerate(tasks) if i != 2
    }
    # The backend recovers: later runs complete in full.
    assert run_all(backend, _testing.square, range(6)) == {i: i * i for i in range(6)}


@pytest.mark.timeout(TIMEOUT)
def test_worker_killed_while_idle_is_replaced_before_it_gets_a_task():
    from katparallel.backends.multiprocess import MultiprocessingBackend

    with MultiprocessingBackend(workers=2, threads=2) as backend:  # a pool of its own
        idle = backend.pool.pids()[0]
        os.kill(idle, signal.SIGKILL)
        psutil.Process(idle).wait(timeout=10)
        results = run_all(backend, _testing.sleep_then, [(0.1, i) for i in range(6)])
        assert results == {i: i for i in range(6)}  # no task lost, no WorkerCrashed
        assert idle not in backend.pool.pids()


HOM_THEN_POOL = """
import sys
from katparallel import _testing
from katparallel.backends import get_backend_class
if __name__ == "__main__":
    print(_testing.hom_power(0.0), flush=True)   # OpenMP now running in the parent
    with get_backend_class(sys.argv[1])(workers=2) as backend:
        out = dict(backend.map_unordered(_testing.hom_power, [0.0, 1e-6, 2e-6, 3e-6]))
    print(sorted(out), flush=True)
"""


@pytest.mark.parametrize("name", POOLS)
def test_pool_after_hom_simulation_in_parent(name, tmp_path):
    """A fork-started pool would deadlock in libgomp here."""
    script = tmp_path / "hom_then_pool.py"
    script.write_text(HOM_THEN_POOL)
    proc = subprocess.run(
        [sys.executable, str(script), name], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[0, 1, 2, 3]"


INTERRUPTED = """
import signal
import sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
from katparallel import _testing
from katparallel.backends import get_backend_class
if __name__ == "__main__":
    backend = get_backend_class(sys.argv[1])(workers=2)
    tasks = [(0.0, 0)] + [(0.5, i) for i in range(1, 200)]
    for index, _ in backend.map_unordered(_testing.sleep_then, tasks):
        print("RUNNING", flush=True)
"""


def _alive(pids):
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.parametrize("name", BACKENDS)
def test_ctrl_c_leaves_no_processes(name, tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    # A new session, signalled as a group: what Ctrl-C in a terminal does.
    child = subprocess.Popen(
        [sys.executable, str(script), name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout.readline().strip() == "RUNNING", child.stderr.read()
        time.sleep(0.3)
        descendants = [p.pid for p in psutil.Process(child.pid).children(recursive=True)]
        if name not in ("serial", "auto"):
            assert descendants, "expected worker processes"
        os.killpg(child.pid, signal.SIGINT)
        _, stderr = child.communicate(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
    assert "KeyboardInterrupt" in stderr
    deadline = time.monotonic() + 15
    while _alive(descendants) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(descendants) == [], [
        psutil.Process(p).cmdline() for p in _alive(descendants)
    ]


# --- make_backend: arguments checked before anything starts -------------------------


def _children():
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("workers", [0, -2])
def test_fewer_than_one_worker_is_an_error_before_anything_starts(name, workers, katscript):
    from katparallel import Ensemble

    before = _children()
    with pytest.raises(ValueError, match=f"workers must be at least 1, got {workers}; give None"):
        Ensemble(katscript).vary("L0.P", [1.0, 2.0, 3.0]).run(
            backend=name, workers=workers, progress=False)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        get_backend_class(name)(workers=workers)
    assert _children() == before  # no pool, cluster or MPI process was started


@pytest.mark.parametrize("workers", [2.5, True, "2"])
def test_a_worker_count_must_be_a_whole_number(workers):
    with pytest.raises(TypeError, match="workers must be a whole number of processes"):
        make_backend("multiprocessing", workers=workers)


@pytest.mark.parametrize("name", ["serial", "pathos", "ipyparallel", "mpi", "dask"])
def test_timeout_is_refused_where_it_cannot_be_enforced(name, katscript):
    """ipyparallel took it as its connection timeout and never stopped a job."""
    from katparallel import Ensemble

    before = _children()
    with pytest.raises(ValueError, match=f"the '{name}' backend cannot stop a job that runs"):
        Ensemble(katscript).vary("L0.P", [1.0, 2.0]).run(
            backend=name, timeout=5, progress=False)
    assert _children() == before


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), "5"])
def test_timeout_must_be_a_positive_number(timeout):
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        make_backend("multiprocessing", timeout=timeout)


def test_timeout_reaches_the_backends_that_enforce_it():
    assert make_backend("multiprocessing", workers=1, timeout=3).timeout == 3
    assert make_backend("auto", timeout=3).timeout == 3


class _BrokenBackend(Backend):
    """Takes timeout=, but its constructor has a bug of its own."""

    supports_timeout = True

    def __init__(self, workers=None, timeout=None):
        raise TypeError("a bug inside the constructor")

    def map_unordered(self, fn, tasks):
        raise NotImplementedError


def test_a_type_error_inside_a_constructor_is_not_read_as_no_timeout(katscript):
    from katparallel import Ensemble
    from katparallel.backends import BACKENDS, register_backend

    register_backend("broken", _BrokenBackend)
    try:
        with pytest.raises(TypeError, match="a bug inside the constructor"):
            Ensemble(katscript).vary("L0.P", [1.0]).run(
                backend="broken", timeout=1, progress=False)
    finally:
        del BACKENDS["broken"]


def test_a_backend_instance_is_used_as_configured():
    from katparallel.backends.serial import SerialBackend

    serial = SerialBackend()
    assert make_backend(serial) is serial
    with pytest.raises(ValueError, match=r"give it its workers when you create it"):
        make_backend(serial, workers=2)
    with pytest.raises(ValueError, match="SerialBackend cannot stop a job"):
        make_backend(serial, timeout=2)


# --- pathos, auto --------------------------------------------------------------


@pytest.mark.timeout(TIMEOUT)
def test_pathos_pool_closed_through_pathos_is_restarted():
    from katparallel.backends.pathos import _POOLS, PathosBackend

    with PathosBackend(workers=1) as backend:
        assert run_all(backend, _testing.square, [3]) == {0: 9}
        pathos_pool = _POOLS[backend._key].pathos  # a pathos.pools.ProcessPool
        pathos_pool.close()  # pathos alone would now say "Pool not running"
        assert run_all(backend, _testing.square, [4]) == {0: 16}


@pytest.mark.timeout(TIMEOUT)
def test_pathos_recovers_after_idle_workers_are_killed():
    """An idle worker waits for tasks holding the pool's task-queue lock; killed (the
    OOM killer between two studies), it holds it for ever, and the workers that
    replace it, the next study and even ``terminate()`` waited on it for ever."""
    from katparallel.backends.pathos import PathosBackend

    with PathosBackend(workers=2, threads=2) as backend:  # a pool of its own
        first = set(run_all(backend, _testing.pid_of, [0.05] * 4).values())
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while _alive(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert run_all(backend, _testing.square, range(6)) == {i: i * i for i in range(6)}
        assert not first & set(run_all(backend, _testing.pid_of, [0.05] * 4).values())
        # Killed idle during a run, once the queue is empty: this run and the next finish.
        it = backend.map_unordered(_testing.pid_of, [2.0, 0.0])
        _, idle = next(it)
        os.kill(idle, signal.SIGKILL)
        assert len(list(it)) == 1
        assert run_all(backend, _testing.square, range(6)) == {i: i * i for i in range(6)}
        # A worker killed mid-job still costs only its job.
        results = run_all(backend, _testing.crash_on, [1, _testing.CRASH_VALUE, 3])
        assert results[1].crashed and (results[0], results[2]) == (1, 9)


def test_auto_chooses_serial_only_for_tiny_studies():
    from katparallel.backends.auto import SERIAL_BELOW, AutoBackend

    auto = AutoBackend(workers=2)
    assert auto.choose(1).name == "serial"
    assert auto.choose(100, SERIAL_BELOW / 1000).name == "serial"
    assert auto.choose(100, 0.1).name == "multiprocessing"
    assert auto.choose(100).name == "multiprocessing"  # unknown cost: a pool
    assert AutoBackend(workers=1).choose(100).name == "serial"


# --- ipyparallel -------------------------------------------------------------


@pytest.mark.timeout(2 * TIMEOUT)
def test_ipyparallel_stops_the_cluster_it_started():
    from katparallel.backends.ipyparallel import IPyParallelBackend

    backend = IPyParallelBackend(workers=1)
    pids = set(run_all(backend, _testing.pid_of, [0.0] * 3).values())
    assert len(backend.client.ids) == 1
    backend.close()
    deadline = time.monotonic() + 15
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _alive(pids) == []


@pytest.fixture(scope="module")
def user_cluster():
    """A cluster started the way a user would: ``ipcluster start --daemonize``."""
    import ipyparallel

    cluster_id = f"katparallel-test-{os.getpid()}"
    subprocess.run(
        [IPCLUSTER, "start", "-n", "2", "--daemonize", f"--cluster-id={cluster_id}"],
        check=True,
        timeout=TIMEOUT,
    )
    client = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while client is None:
            try:
                client = ipyparallel.Client(cluster_id=cluster_id, timeout=5)
            except OSError:  # connection file not written yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        client.wait_for_engines(2, timeout=TIMEOUT)
        yield cluster_id, client
    finally:
        if client is not None:
            client.close()
        subprocess.run(
            [IPCLUSTER, "stop", f"--cluster-id={cluster_id}"], timeout=TIMEOUT
        )


@pytest.fixture(scope="module")
def user_profile(user_cluster):
    """A profile of its own whose connection file leads to ``user_cluster``."""
    from IPython.core.profiledir import ProfileDir
    from IPython.paths import get_ipython_dir

    cluster_id, _ = user_cluster
    ipython_dir = get_ipython_dir()
    default = ProfileDir.find_profile_dir_by_name(ipython_dir, "default")
    url_file = Path(default.security_dir, f"ipcontroller-{cluster_id}-client.json")
    name = f"katparallel-test-{os.getpid()}"
    profile = ProfileDir.create_profile_dir_by_name(ipython_dir, name)
    try:
        shutil.copy(url_file, Path(profile.security_dir, "ipcontroller-client.json"))
        yield name, url_file
    finally:
        shutil.rmtree(profile.location, ignore_errors=True)


@pytest.mark.timeout(3 * TIMEOUT)
def test_ipyparallel_connects_and_leaves_user_cluster_running(user_cluster, user_profile):
    """By cluster id, url file (ipyparallel 9 ignored url_file=), profile and client."""
    from katparallel.backends.ipyparallel import IPyParallelBackend

    cluster_id, client = user_cluster
    profile, url_file = user_profile
    engine_pids = set(client[:].apply_sync(os.getpid))
    for backend in (
        IPyParallelBackend(cluster_id=cluster_id, connect_timeout=10),
        IPyParallelBackend(url_file=url_file, connect_timeout=10),
        IPyParallelBackend(profile=profile, connect_timeout=10),
        IPyParallelBackend(client=client),
    ):
        with backend:
            assert not backend.owns_cluster
            assert backend.n_workers == 2
            assert run_all(backend, _testing.square, range(10)) == {
                i: i * i for i in range(10)
            }
            assert set(run_all(backend, _testing.pid_of, [0.05] * 6).values()) <= engine_pids
    # Still running, same engines.
    assert set(client[:].apply_sync(os.getpid)) == engine_pids
    assert set(_alive(engine_pids)) == engine_pids


# --- MPI under mpiexec -------------------------------------------------------


def _mpiexec(*args):
    cmd = _testing.mpiexec_python(3, str(HERE / "mpi" / "run_mpi_backend.py"), *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)


def test_mpi_backend_under_mpiexec():
    proc = _mpiexec()
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    info, squares, order, workers = lines
    assert info["n_workers"] == 2
    assert squares["squares"] == [i * i for i in range(20)]
    (first, t_first), (second, _) = order["order"]
    assert (first, second) == (1, 0) and t_first < 1.0
    assert len(workers["worker_pids"]) == 2 and info["parent"] not in workers["worker_pids"]
    assert workers["threads"] == [1]


def test_mpi_killed_worker_aborts_the_job_without_hanging():
    proc = _mpiexec("--crash")
    assert proc.returncode != 0
    done = [json.loads(line) for line in proc.stdout.splitlines() if '"index"' in line]
    assert {d["index"] for d in done} <= {0, 1, 3}


SPAWN_WITHOUT_LAUNCHER = """
from katparallel import _testing
from katparallel.backends import mpi
mpi._launcher_on_path = lambda: None   # as before the fix: prte not on PATH
mpi.STARTUP_TIMEOUT = 5
with mpi.MPIBackend(workers=2) as backend:
    dict(backend.map_unordered(_testing.square, [1, 2]))
"""


def test_mpi_spawn_failure_is_an_error_not_a_hang(tmp_path):
    """Open MPI's singleton spawn fails without ``prte`` on PATH; mpi4py then waits forever."""
    script = tmp_path / "spawn.py"
    script.write_text(SPAWN_WITHOUT_LAUNCHER)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT,
        env={**os.environ, "PATH": str(tmp_path)},  # no prte anywhere, system MPI included
    )
    assert proc.returncode == 1
    assert "BackendUnavailable: MPI workers did not start within 5 s" in proc.stderr
    assert "mpiexec -n N python -m mpi4py.futures" in proc.stderr
