"""The checkpoint store: commit as jobs finish, resume after any death, refuse what it must."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from katparallel import Ensemble, Normal
from katparallel.store import Store, StoreError, StoreLocked, StudyMismatch

#: Only a deadlock reaches this.
TIMEOUT = 120

# A small cavity with higher-order modes; the study's jobs after the first few wait
# at a gate (katparallel._testing.Gate) until the test opens it, so the run is
# killed with some jobs committed and the rest held: halfway without timing.
SLOW_MODEL = """
l L0 P=1
s s0 L0.p1 m1.p1 L=1
m m1 R=0.99 T=0.01 Rc=-10
s sc m1.p2 m2.p1 L=5
m m2 R=0.99 T=0.01 Rc=10
cav c m1.p2.o
modes(maxtem=3)
pd P m2.p2.o
ad a m2.p2.o f=0
"""
SLOW_ANALYSIS = "xaxis(m2.phi, lin, 0, 90, 2000)"
SLOW_POWERS = np.linspace(1, 2, 24)
FREE_JOBS = 6  # jobs that pass the gate before it opens

CHILD = """
import sys
import numpy as np
from katparallel import Ensemble
from katparallel._testing import Gate

if __name__ == "__main__":
    db, calls, gate = sys.argv[1:4]
    Ensemble({model!r}).vary("L0.P", np.linspace(1, 2, 24)).perturb(
        Gate(calls, gate, free={free})).run(
        {analysis!r}, backend="multiprocessing", workers=2, progress=False, store=db
    )
"""


def stored_indices(path) -> list[int]:
    """Every job index committed to the store, one entry per commit."""
    with Store(path) as store:
        return [int(i) for r in store.chunk_results() for i in r.indices] + [
            f.index for f in store.failures()
        ]


def assert_same_results(a, b):
    assert a.outputs == b.outputs
    for name in a.outputs:
        assert a[name].dims == b[name].dims
        np.testing.assert_array_equal(a[name].values, b[name].values)
        for dim in a[name].dims:
            np.testing.assert_array_equal(a[name][dim].values, b[name][dim].values)


def _wait_until_gone(group: int, deadline: float) -> None:
    """Wait until no live process is left in process group ``group``."""
    while True:
        alive = []
        for proc in psutil.process_iter(["status"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getpgid(proc.pid) == group and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(proc.pid)
        if not alive:
            return
        assert time.monotonic() < deadline, f"processes {alive} outlived SIGKILL"
        time.sleep(0.05)


@pytest.mark.timeout(TIMEOUT)
def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path):
    from katparallel._testing import Gate

    db, calls, gate = tmp_path / "study.db", tmp_path / "calls", tmp_path / "open"
    calls.mkdir()
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(model=SLOW_MODEL, analysis=SLOW_ANALYSIS, free=FREE_JOBS))
    child = subprocess.Popen(
        [sys.executable, str(script), str(db), str(calls), str(gate)],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        # The gate is closed: the study cannot end; wait until a free job is committed.
        deadline = time.monotonic() + TIMEOUT / 2
        done = 0
        while done == 0 and time.monotonic() < deadline and child.poll() is None:
            if db.exists():
                with contextlib.suppress(StoreError):
                    done = len(stored_indices(db))
            time.sleep(0.05)
        assert child.poll() is None, f"the study ended before its kill: {child.stderr.read()}"
        assert 0 < done <= FREE_JOBS
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:  # the workers notice their parent is gone; make sure of it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.stderr.close()
    _wait_until_gone(child.pid, time.monotonic() + TIMEOUT / 2)  # they hold the store's lock
    gate.touch()

    before = stored_indices(db)
    assert len(before) == len(set(before)) and 0 < len(before) < len(SLOW_POWERS)
    with Store(db) as store:
        seed = store.seed

    ensemble = Ensemble(SLOW_MODEL).vary("L0.P", SLOW_POWERS).perturb(
        Gate(calls, gate, free=FREE_JOBS))  # the same study; no seed: the stored one is reused
    resumed = ensemble.run(
        SLOW_ANALYSIS, backend="multiprocessing", workers=2, progress=False, store=db
    )
    after = stored_indices(db)
    # every job committed exactly once, and the resume ran only the missing ones
    assert sorted(after) == list(range(len(SLOW_POWERS)))
    assert after[: len(before)] == before
    assert resumed.seed == seed and resumed.failures == []

    fresh = Ensemble(SLOW_MODEL, seed=seed).vary("L0.P", SLOW_POWERS).run(
        SLOW_ANALYSIS, backend="multiprocessing", workers=2, progress=False
    )
    assert_same_results(resumed, fresh)
    assert not (tmp_path / "study.db.lock").exists()


def test_rerun_with_complete_store_runs_nothing_and_returns_same_results(tmp_path, katscript):
    db = tmp_path / "s.db"
    ensemble = Ensemble(katscript, seed=2).vary("L0.P", [1.0, 2.0, 3.0]).vary("m.phi", [0, 45])
    first = ensemble.run(progress=False, store=db)
    commits = stored_indices(db)
    again = ensemble.run(progress=False, store=db)
    assert stored_indices(db) == commits
    assert_same_results(first, again)
    assert np.iscomplexobj(again["a"])


def test_partial_store_resumes_batched_monte_carlo_bit_for_bit(tmp_path, katscript):
    """Lose some chunks (as a crash would), resume with other chunk boundaries."""
    db = tmp_path / "mc.db"
    ensemble = Ensemble(katscript, seed=11).sample(
        12000, {"L0.P": Normal(1, 0.1), "m.phi": Normal(0, 5)}
    )
    full = ensemble.run(progress=False, store=db)
    with sqlite3.connect(db) as con:
        ids = [r[0] for r in con.execute("SELECT id FROM chunks ORDER BY id")]
        lost = ids[1::2]
        con.executemany("DELETE FROM outputs WHERE chunk = ?", [(i,) for i in lost])
        con.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in lost])
    with Store(db) as store:
        done, total = store.progress()
        partial = store.results()
    assert 0 < done < total == 12000
    assert np.isnan(partial["P"].values).sum() == total - done

    resumed = ensemble.run(progress=False, store=db, backend="multiprocessing", workers=2)
    assert sorted(stored_indices(db)) == list(range(12000))
    assert_same_results(full, resumed)


def test_failures_are_stored_and_not_rerun(tmp_path, katscript):
    db = tmp_path / "f.db"
    ensemble = Ensemble(katscript, seed=1).vary("m.R", [0.2, 0.4, 0.6, 0.8])  # T=0.5: R+T>1 fails
    first = ensemble.run(progress=False, store=db)
    assert sorted(f.index for f in first.failures) == [2, 3]
    again = ensemble.run(progress=False, store=db)
    assert [(f.index, f.type, f.message) for f in again.failures] == [
        (f.index, f.type, f.message) for f in first.failures
    ]
    assert again.failures[0].values == {"m.R": 0.6}
    assert stored_indices(db) == [0, 1, 2, 3]


def test_definition_mismatch_is_refused_naming_the_difference(tmp_path, katscript):
    db = tmp_path / "d.db"
    base = Ensemble(katscript, seed=4).vary("L0.P", [1.0, 2.0])
    base.run(progress=False, store=db)
    cases = {
        "the model": Ensemble(katscript.replace("L=1", "L=2"), seed=4).vary("L0.P", [1.0, 2.0]),
        "the varied or sampled values": Ensemble(katscript, seed=4).vary("L0.P", [1.0, 2.5]),
        "the seed": Ensemble(katscript, seed=5).vary("L0.P", [1.0, 2.0]),
        "the plan": Ensemble(katscript, seed=4).vary("L0.P", [1.0, 2.0, 3.0]),
    }
    for what, ensemble in cases.items():
        with pytest.raises(StudyMismatch) as info:
            ensemble.run(progress=False, store=db)
        message = str(info.value)
        assert what in message and "new store path" in message and "delete" in message
    with pytest.raises(StudyMismatch, match="the analysis"):
        base.run("xaxis(L0.P, lin, 1, 2, 3)", progress=False, store=db)
    with pytest.raises(StudyMismatch, match="already holds a study"):
        base.run(progress=False, store=db, resume=False)
    with pytest.raises(StudyMismatch, match="Nothing to resume"):
        base.run(progress=False, store=tmp_path / "new.db", resume=True)
    assert stored_indices(db) == [0, 1]  # untouched


def _assert_refused(path, match):
    before = path.read_bytes()
    with pytest.raises(StoreError, match=match):
        Store(path, write=True)
    assert path.read_bytes() == before  # never written
    assert not path.with_name(path.name + ".lock").exists()


def test_foreign_files_are_refused_untouched(tmp_path, katscript):
    png = tmp_path / "plot.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    _assert_refused(png, "not an SQLite database")

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as con:
        con.execute("CREATE TABLE customers (name TEXT)")
    _assert_refused(other, "another application")

    with pytest.raises(StoreError, match="not an SQLite database"):
        Ensemble(katscript).vary("L0.P", [1.0]).run(progress=False, store=png)


def test_corrupt_stores_are_refused(tmp_path, katscript):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"SQLite format 3\x00" + os.urandom(8000))
    _assert_refused(garbage, "damaged")

    db = tmp_path / "real.db"
    Ensemble(katscript, seed=1).sample(500, {"L0.P": Normal(1, 0.1)}).run(
        progress=False, store=db, batch=False
    )
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(db.read_bytes()[: db.stat().st_size // 2])  # a disk filled up
    with pytest.raises(StoreError, match="damaged"):
        with Store(truncated) as store:
            store.results()


HOLDER = """
import sys, time
from katparallel.store import Store
store = Store(sys.argv[1], write=True)
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.timeout(TIMEOUT)
def test_second_writer_is_refused_and_a_dead_writer_frees_the_store(tmp_path, katscript):
    db = tmp_path / "c.db"
    ensemble = Ensemble(katscript, seed=3).vary("L0.P", [1.0, 2.0])
    ensemble.run(progress=False, store=db)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLocked, match=rf"pid {holder.pid}.*different store path"):
            ensemble.run(progress=False, store=db)
        with Store(db) as reader:  # readers need no lock
            assert reader.progress() == (2, 2)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
        holder.stdout.close()
    again = ensemble.run(progress=False, store=db)
    assert again.failures == [] and stored_indices(db) == [0, 1]


def test_store_round_trips_xaxis_outputs_and_unseeded_study(tmp_path, katscript):
    db = tmp_path / "x.db"
    ensemble = Ensemble(katscript).vary("L0.P", [1.0, 2.0])
    first = ensemble.run("xaxis(m.phi, lin, 0, 90, 4)", progress=False, store=db)
    with Store(db) as store:
        assert store.seed == first.seed
        stored = store.results()
    assert_same_results(first, stored)
    assert stored["P"].dims == ("L0.P", "m.phi")


def test_retry_failed_reruns_only_the_failed_jobs(tmp_path, katscript):
    """A job that failed for a passing reason (here a missing file) succeeds on retry."""
    db, marker = tmp_path / "r.db", tmp_path / "broken"
    marker.touch()
    calls = tmp_path / "calls"
    calls.mkdir()

    def factory(values, rng):
        import finesse

        (calls / str(values["L0.P"])).touch()
        if values["L0.P"] == 3.0 and marker.exists():
            raise MemoryError("out of memory (for now)")
        model = finesse.Model()
        model.parse(katscript)
        return model

    ensemble = Ensemble(factory, seed=5).vary("L0.P", [1.0, 2.0, 3.0, 4.0])
    first = ensemble.run(backend="serial", progress=False, store=db)
    assert [(f.index, f.type) for f in first.failures] == [(2, "MemoryError")]
    marker.unlink()
    with pytest.raises(ValueError, match="needs store="):
        ensemble.run(progress=False, retry_failed=True)
    for call in calls.iterdir():
        call.unlink()
    retried = ensemble.run(backend="serial", progress=False, store=db, retry_failed=True)
    assert sorted(p.name for p in calls.iterdir()) == ["3.0"]  # nothing else ran again
    assert retried.failures == []
    clean = ensemble.run(backend="serial", progress=False)
    np.testing.assert_array_equal(retried["P"].values, clean["P"].values)
    with Store(db) as store:
        assert store.failures() == [] and store.progress() == (4, 4)
