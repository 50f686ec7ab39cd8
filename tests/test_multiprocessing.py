"""The multiprocessing backend with real Finesse: persistence, the fork deadlock, Ctrl-C."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from katparallel import Ensemble
from katparallel._testing import HOM_KATSCRIPT


def child_processes(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


@pytest.mark.timeout(180)
def test_hom_simulation_in_parent_then_ensemble_does_not_deadlock():
    """A worker forked after an OpenMP region deadlocks in libgomp unless it is pinned
    to one thread before its first parallel region, or is not forked: either way
    the ensemble finishes."""
    script = textwrap.dedent(
        f"""
        import finesse, numpy as np
        from katparallel import Ensemble
        model = finesse.Model()
        model.parse({HOM_KATSCRIPT!r})
        model.run()          # OpenMP threads now exist in this process
        res = Ensemble(model).vary("L0.P", [1.0, 2.0, 3.0, 4.0]).run(
            backend="multiprocessing", workers=2, progress=False)
        print("P", *res["P"].values)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=150
    )
    assert done.returncode == 0, done.stderr[-2000:]
    values = [float(v) for v in done.stdout.split("P", 1)[1].split()]
    assert values[1] == pytest.approx(2 * values[0], rel=1e-12)


FORK_OR_NOT = """
import os, sys, threading
import finesse
from katparallel._testing import HOM_KATSCRIPT
from katparallel.backends.procpool import ProcessPool

def parent_of(_):
    return os.getppid()

def forked(threads):
    pool = ProcessPool(2, threads=threads)
    try:
        return set(dict(pool.map_unordered(parent_of, [0, 1, 2, 3])).values()) == {os.getpid()}
    finally:
        pool.shutdown()

if __name__ == "__main__":
    model = finesse.Model()
    model.parse(HOM_KATSCRIPT)
    model.run()  # libgomp's thread pool and tqdm's monitor thread now exist here
    print("pinned", forked(1))
    print("unpinned", forked(None))
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    print("beside a thread", forked(1))
    stop.set()
"""


@pytest.mark.timeout(180)
def test_workers_are_forked_only_when_that_is_safe(tmp_path):
    """Forked after an OpenMP region when pinned to one thread (libgomp then runs
    without its pool); never unpinned, nor beside another Python thread."""
    script = tmp_path / "fork_or_not.py"
    script.write_text(FORK_OR_NOT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:3] == ["pinned True", "unpinned False", "beside a thread False"]


COUNTS_PARSES = """
import os, sys
from pathlib import Path
import finesse
from katparallel import Ensemble
from katparallel._testing import CAVITY_KATSCRIPT
from katparallel.backends.multiprocess import MultiprocessingBackend

PARSES = Path(sys.argv[1])
_parse = finesse.Model.parse


def counted_parse(self, *args, **kwargs):
    with open(PARSES / str(os.getpid()), "a") as marker:  # written by the parsing process
        marker.write("parse\\n")
    return _parse(self, *args, **kwargs)


# At the top, so a worker that is not forked but imports this script counts too.
finesse.Model.parse = counted_parse

if __name__ == "__main__":
    backend = MultiprocessingBackend(workers=2, start_method=sys.argv[2] or None)
    ens = Ensemble(CAVITY_KATSCRIPT).vary("m1.phi", [0.0, 1.0, 2.0, 3.0])
    res = ens.run(backend=backend, batch=False, progress=False)
    print(os.getpid(), len(res.failures), res.to_xarray().attrs["backend"])
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "start_method, workers_parse", [("", False), ("forkserver", True)],
    ids=["forked", "forkserver"],
)
def test_forked_workers_use_the_model_the_parent_parsed(start_method, workers_parse, tmp_path):
    """Workers forked from the parent inherit the model it parsed: only the parent
    parses. Workers from a forkserver parse it themselves, which shows the count
    sees a parse in a worker. The disk cache is off, so a worker can only parse."""
    script = tmp_path / "counts_parses.py"
    script.write_text(COUNTS_PARSES)
    parses = tmp_path / "parses"
    parses.mkdir()
    env = {**os.environ, "KATPARALLEL_MODEL_CACHE": "0"}
    done = subprocess.run(
        [sys.executable, str(script), str(parses), start_method],
        capture_output=True, text=True, timeout=150, env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    parent, failures, backend = done.stdout.split()
    assert (failures, backend) == ("0", "multiprocessing")
    parsed_in = {marker.name for marker in parses.iterdir()}
    assert parent in parsed_in
    assert (parsed_in != {parent}) is workers_parse, parsed_in


def test_pool_is_reused_across_runs(katscript):
    from katparallel.backends.multiprocess import MultiprocessingBackend

    ens = Ensemble(katscript).vary("L0.P", [1.0, 2.0])
    ens.run(backend="multiprocessing", workers=2, progress=False)
    pids = MultiprocessingBackend(workers=2).pool.pids()
    started = time.perf_counter()
    res = ens.run(backend="multiprocessing", workers=2, progress=False)
    elapsed = time.perf_counter() - started
    assert MultiprocessingBackend(workers=2).pool.pids() == pids
    np.testing.assert_allclose(res["P"].values, [0.5, 1.0], rtol=1e-12)
    assert elapsed < 30  # a deadlock guard, not a speed claim (see benchmarks/)


def test_worker_killed_mid_job_is_retried_then_recorded(katscript):
    """A job that kills its worker twice fails alone; the others finish."""

    def factory(values, rng):
        import finesse

        if values["L0.P"] == 3.0:
            os.kill(os.getpid(), signal.SIGKILL)
        model = finesse.Model()
        model.parse(katscript)
        return model

    res = Ensemble(factory).vary("L0.P", [1.0, 2.0, 3.0, 4.0]).run(
        backend="multiprocessing", workers=2, progress=False
    )
    assert [(f.index, f.type) for f in res.failures] == [(2, "WorkerCrashed")]
    np.testing.assert_allclose(res["P"].values[[0, 1, 3]], [0.5, 1.0, 2.0], rtol=1e-12)


@pytest.mark.timeout(180)
def test_ctrl_c_stops_workers_and_leaves_no_orphans(tmp_path):
    script = tmp_path / "long_study.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import signal
            import numpy as np
            from katparallel import Ensemble
            # As in a terminal, even when this test runs where SIGINT is ignored
            # (a shell's background job): children inherit an ignored SIGINT.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if __name__ == "__main__":
                ens = Ensemble({HOM_KATSCRIPT!r}).vary("L0.P", np.linspace(1, 2, 400))
                print("started", flush=True)
                ens.run("xaxis(m1.phi, lin, 0, 180, 3000)", backend="multiprocessing",
                        workers=2, progress=False)
            """
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 120
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            # forked workers are children; forkserver-started ones, grandchildren
            children = child_processes(proc.pid)
            workers = children + [g for c in children for g in child_processes(c)]
        assert len(workers) >= 2, "workers never started"
        time.sleep(3)  # let them get busy
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "KeyboardInterrupt" in err
    time.sleep(1)
    alive = [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
    assert alive == [], f"orphan workers {alive}"


def test_auto_keeps_tiny_studies_here_and_pools_the_rest(katscript):
    """``auto`` (the default) times the first job in this process, then chooses."""
    tiny = Ensemble(katscript).vary("L0.P", [1.0, 2.0]).run(progress=False)
    assert tiny.to_xarray().attrs["backend"] == "serial"

    def slow(model, rng):  # 0.1 s a job: 12 jobs are worth a pool
        time.sleep(0.1)

    ens = Ensemble(katscript, seed=3).vary("L0.P", np.linspace(1, 2, 12)).perturb(slow)
    auto = ens.run(workers=2, progress=False)
    serial = ens.run(backend="serial", progress=False)
    assert auto.to_xarray().attrs["backend"] == "multiprocessing"
    np.testing.assert_array_equal(auto["P"].values, serial["P"].values)


BESIDE_A_THREAD = "import threading\nthreading.Thread(target=threading.Event().wait, daemon=True).start()\n"


@pytest.mark.parametrize(
    "backend, preamble", [("pathos", ""), ("multiprocessing", BESIDE_A_THREAD)]
)
def test_script_without_main_guard_gets_advice_not_a_hang(backend, preamble, katscript, tmp_path):
    """Workers that are not forked import the script that started them; unguarded,
    it fails at once. (Beside another thread, multiprocessing workers are not forked.)"""
    script = tmp_path / "unguarded.py"
    script.write_text(
        f"{preamble}from katparallel import Ensemble\n"
        f"Ensemble({katscript!r}).vary('L0.P', [1.0, 2.0, 3.0]).run("
        f"backend={backend!r}, workers=2, progress=False)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("katparallel.errors.BackendUnavailable: a worker process exited")
    assert 'if __name__ == "__main__":' in last


def test_script_without_main_guard_runs_on_forked_workers(katscript, tmp_path):
    """Forked workers do not import the script: it needs no main guard."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from katparallel import Ensemble\n"
        f"res = Ensemble({katscript!r}).vary('L0.P', [1.0, 2.0, 3.0]).run("
        "backend='multiprocessing', workers=2, progress=False)\n"
        "print(*res['P'].values)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [float(v) for v in proc.stdout.split()] == pytest.approx([0.5, 1.0, 1.5], rel=1e-12)
