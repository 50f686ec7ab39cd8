"""Pool workers under a batch scheduler: a cancelled job signals every process,
and a parent killed outright (SIGKILL, out of memory) must leave no worker behind.

Each test runs a real parent script in a subprocess with real pools.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

#: Only a hang reaches this.
TIMEOUT = 60

#: A parent with two pools alive at once. The first pool loses a worker while
#: the second is alive, so its replacement is forked beside the second pool.
TWO_POOLS = """
import sys, time
from katparallel import _testing
from katparallel.backends import get_backend_class

if __name__ == "__main__":
    first = get_backend_class({first!r})(workers=2, **{first_kw!r})
    second = get_backend_class({second!r})(workers=1, **{second_kw!r})
    dict(first.map_unordered(_testing.square, [1, 2, 3]))
    dict(second.map_unordered(_testing.square, [1, 2]))
    dict(first.map_unordered(_testing.crash_on, [1, _testing.CRASH_VALUE, 2]))
    dict(second.map_unordered(_testing.square, [3]))
    print("ready", flush=True)
    time.sleep(600)
"""


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has exited; only its parent has not reaped it)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "first, first_kw, second, second_kw",
    [
        ("multiprocessing", {}, "multiprocessing", {}),  # both forked
        ("multiprocessing", {}, "multiprocessing", {"start_method": "forkserver"}),
        ("multiprocessing", {}, "pathos", {}),
    ],
    ids=["forked+forked", "forked+forkserver", "forked+pathos"],
)
def test_no_worker_outlives_a_killed_parent_with_two_pools(first, first_kw, second, second_kw,
                                                          tmp_path):
    script = tmp_path / "two_pools.py"
    script.write_text(TWO_POOLS.format(first=first, first_kw=first_kw,
                                       second=second, second_kw=second_kw))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    workers: list[psutil.Process] = []
    try:
        assert parent.stdout.readline().strip() == "ready", parent.stderr.read()[-2000:]
        workers = psutil.Process(parent.pid).children(recursive=True)
        assert len(workers) >= 3, workers
        parent.kill()
        parent.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while _alive(workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [(p.pid, " ".join(p.cmdline())[:80]) for p in _alive(workers)]
        assert left == [], f"processes left behind by the killed parent: {left}"
    finally:
        if parent.poll() is None:
            parent.kill()
        for process in _alive(workers):
            process.kill()


#: A user's script that saves its results when the batch system stops it. It
#: prints its workers' pids, then waits for the test to signal them.
SAVES_ON_TERM = """
import os, signal, sys, time
from pathlib import Path
from katparallel import _testing
from katparallel.backends import get_backend_class

MARKERS = Path(sys.argv[1])

def save_results(signum, frame):
    (MARKERS / f"{{os.getpid()}}-{{signum}}").write_text("")

signal.signal(signal.SIGTERM, save_results)  # at the top: spawned workers run it too
signal.signal(signal.SIGHUP, save_results)

if __name__ == "__main__":
    backend = get_backend_class({name!r})(workers=2, **{kw!r})
    pids = set()
    while len(pids) < 2:
        pids |= set(dict(backend.map_unordered(_testing.pid_of, [0.2] * 4)).values())
    print(*sorted(pids), flush=True)
    sys.stdin.readline()
    backend.close()
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "name, kw",
    [("multiprocessing", {}), ("multiprocessing", {"start_method": "forkserver"}),
     ("pathos", {}), ("dask", {})],
    ids=["forked", "forkserver", "pathos", "dask"],
)
def test_a_users_sigterm_and_sighup_handlers_do_not_run_in_workers(name, kw, tmp_path):
    """Slurm signals every process of a cancelled job: only the parent may save."""
    script = tmp_path / "saves_on_term.py"
    script.write_text(SAVES_ON_TERM.format(name=name, kw=kw))
    markers = tmp_path / "markers"
    markers.mkdir()
    parent = subprocess.Popen([sys.executable, str(script), str(markers)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()
        assert line, parent.stderr.read()[-2000:]
        workers = [psutil.Process(int(pid)) for pid in line.split()]
        signals = dict(zip(workers, (signal.SIGTERM, signal.SIGHUP)))
        for worker, signum in signals.items():
            worker.send_signal(signum)
        # each worker either dies of the signal or runs the handler: wait for either
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and any(
            w in _alive(workers) and not (markers / f"{w.pid}-{s}").exists()
            for w, s in signals.items()
        ):
            time.sleep(0.1)
        os.kill(parent.pid, signal.SIGTERM)  # the parent's own handler still runs
        _, err = parent.communicate("\n", timeout=TIMEOUT)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 0, err[-2000:]
    assert sorted(p.name for p in markers.iterdir()) == [f"{parent.pid}-{int(signal.SIGTERM)}"]


#: The same script under ``mpiexec``: MPI workers import it, handler included.
MPI_HANDLERS = """
import json, os, signal
from katparallel.backends.mpi import MPIBackend

def save_results(signum, frame):
    pass

signal.signal(signal.SIGTERM, save_results)
signal.signal(signal.SIGHUP, save_results)

def handlers(_):
    return os.getpid(), [getattr(signal.getsignal(s), "name", "a Python function")
                         for s in (signal.SIGTERM, signal.SIGHUP)]

if __name__ == "__main__":
    with MPIBackend() as backend:
        print(json.dumps([os.getpid(), dict(backend.map_unordered(handlers, range(6)))]))
"""


@pytest.mark.timeout(180)
def test_mpi_workers_do_not_keep_a_users_sigterm_and_sighup_handlers(tmp_path):
    """Under ``mpiexec`` worker ranks run the script's top level as a module; the
    handler it installs must not survive there (Slurm signals every rank)."""
    from katparallel._testing import MPI_ENV, mpiexec_python

    script = tmp_path / "mpi_handlers.py"
    script.write_text(MPI_HANDLERS)
    done = subprocess.run(mpiexec_python(3, str(script)), capture_output=True, text=True,
                          timeout=TIMEOUT * 2, env={**os.environ, **MPI_ENV})
    assert done.returncode == 0, done.stderr[-2000:]
    parent, results = json.loads(done.stdout.strip().splitlines()[-1])
    workers = {pid for pid, _ in results.values()}
    assert len(workers) >= 1 and parent not in workers
    assert {tuple(names) for _, names in results.values()} == {("SIG_DFL", "SIG_DFL")}
