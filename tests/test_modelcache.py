"""Parsed models on disk: later processes load them instead of parsing, with the same results.

Every test has a cache folder of its own and proves its claim by itself: it
writes the entries it needs, and a claim about workers uses workers that
cannot inherit the parent's model. Nothing depends on how fast a parse is.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dill
import numpy as np
import pytest

import katparallel
from katparallel import Ensemble
from katparallel._testing import CAVITY_KATSCRIPT, HOM_KATSCRIPT
from katparallel.adapters import finesse as finesse_adapter
from katparallel.adapters import modelcache
from katparallel.backends.multiprocess import MultiprocessingBackend

MODEL = CAVITY_KATSCRIPT + "# {tag}\n"
OTHER_UID = 4242  # a user who is not us (the tests plant files as root)

# Runs in a new process: how many parses, and the study's outputs.
CHILD = """
import json, sys
import katparallel, katparallel.adapters.finesse as fa
from katparallel import Ensemble
calls = []
real = fa._parse
fa._parse = lambda text, syntax: calls.append(syntax) or real(text, syntax)
res = Ensemble(sys.argv[1]).vary("m1.T", [0.01, 0.02]).vary("m1.R", [0.97]).run(
    backend="serial", progress=False)
print(json.dumps({"parses": len(calls), "P": res["P"].values.ravel().tolist(),
                  "package": katparallel.__file__}))
"""


def _child(text: str, cwd: str | os.PathLike | None = None, **env) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, text], capture_output=True, text=True, check=True,
        env={**os.environ, **env}, cwd=cwd,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """A cache folder for this test alone (child processes inherit it)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    yield
    finesse_adapter.thread_cache("models").clear()  # no model read here outlives the test


@pytest.fixture
def cache_everything(monkeypatch):
    """Cache even models that parse fast (the suite's models are small)."""
    monkeypatch.setattr(modelcache, "MIN_PARSE_SECONDS", 0.0)


def _entry(text: str, syntax: str = "katscript") -> Path:
    return modelcache.cache_dir() / f"{modelcache.entry_key(text, syntax)}.dill"


def _settle(adapter) -> None:
    finesse_adapter.thread_cache("models")[adapter.key].settle()  # the background write


def _written(text: str, syntax: str | None = None) -> Path:
    """Run a one-job study of ``text`` here; its model is then written to the cache."""
    ens = Ensemble(text, syntax=syntax)
    ens.vary("L0.P", [1.0]).run(backend="serial", progress=False)
    _settle(ens._adapter)
    return _entry(text, syntax or "katscript")


def _power(text: str) -> list[float]:
    """Transmitted power of a two-job study of ``text``, read afresh in this process."""
    finesse_adapter.thread_cache("models").clear()
    ens = Ensemble(text)
    res = ens.vary("m1.T", [0.01, 0.005]).run(backend="serial", batch=False, progress=False)
    _settle(ens._adapter)
    return res["P"].values.ravel().tolist()


def _plant(text: str, power: float) -> Path:
    """Write, as we would, an entry for ``text`` whose laser has ``power`` W: a
    model that gives other numbers than ``text`` if it is loaded."""
    path = _written(text)
    model = modelcache.load(modelcache.entry_key(text, "katscript")).model
    model.L0.P = power
    path.write_bytes(dill.dumps({"model": model, "notes": []}))
    finesse_adapter.thread_cache("models").clear()
    return path


# ----------------------------------------------------------------- where workers read it
def test_workers_that_read_the_model_find_it_on_disk_before_they_start(cache_everything):
    text = MODEL.format(tag="before dispatch")
    adapter = Ensemble(text)._adapter
    assert not _entry(text).exists()  # nothing is written while parsing
    adapter.before_dispatch(workers_inherit=False)
    assert _entry(text).is_file()


def test_for_workers_that_inherit_it_the_model_is_written_after_the_run(cache_everything):
    text = MODEL.format(tag="after run")
    adapter = Ensemble(text)._adapter
    adapter.before_dispatch(workers_inherit=True)
    assert not _entry(text).exists()  # not on the way to the results
    adapter.after_run()
    _settle(adapter)
    assert _entry(text).is_file()


@pytest.fixture
def held_writer(monkeypatch, tmp_path):
    """Writers wait, before they pickle, until the test lets them go (a file appears)."""
    release, parent = tmp_path / "release", os.getpid()
    real = finesse_adapter._parameter_state

    def state(model):
        while os.getpid() != parent and not release.exists():
            time.sleep(0.01)
        return real(model)

    monkeypatch.setattr(finesse_adapter, "_parameter_state", state)
    return release


def _saving(adapter) -> modelcache.Saving:
    return finesse_adapter.thread_cache("models")[adapter.key].saving


def test_for_workers_that_inherit_it_the_writer_gives_way_to_the_jobs(
        cache_everything, held_writer):
    text = MODEL.format(tag="make way")
    adapter = Ensemble(text)._adapter
    writer = _saving(adapter).pid
    assert os.getpriority(os.PRIO_PROCESS, writer) == os.getpriority(os.PRIO_PROCESS, 0)
    adapter.before_dispatch(workers_inherit=True)
    assert os.getpriority(os.PRIO_PROCESS, writer) == 19
    held_writer.touch()
    adapter.after_run()
    _settle(adapter)
    assert _entry(text).is_file()


def test_a_writer_does_not_wait_through_the_run_the_parent_names_its_file(cache_everything):
    text = MODEL.format(tag="named here")
    adapter = Ensemble(text)._adapter
    assert _saving(adapter).wait(300.0)  # the writer has ended, before any run
    assert not _entry(text).exists()
    adapter.after_run()  # no waiting: a rename here
    assert _entry(text).is_file()
    assert modelcache.load(modelcache.entry_key(text, "katscript")) is not None


def test_a_model_let_go_of_is_written(cache_everything):
    text = MODEL.format(tag="let go")
    assert _saving(Ensemble(text)._adapter).wait(300.0)  # its file is written, not named
    finesse_adapter.thread_cache("models").clear()
    gc.collect()
    assert _entry(text).is_file()  # named here


def test_a_model_let_go_of_while_its_writer_works_is_written_by_the_writer(
        cache_everything, held_writer):
    text = MODEL.format(tag="let go, writer at work")
    writer = _saving(Ensemble(text)._adapter).pid
    finesse_adapter.thread_cache("models").clear()
    gc.collect()  # the writer is told before it could say where its file is
    held_writer.touch()
    deadline = time.monotonic() + 300
    while not _entry(text).exists() and Path(f"/proc/{writer}").exists():
        assert time.monotonic() < deadline, "the writer neither wrote nor ended"
        time.sleep(0.05)  # not our child: nothing to wait on but its file or its end
    assert _entry(text).is_file()


def test_a_forked_process_that_drops_the_model_says_nothing_to_its_writer(
        cache_everything, held_writer):
    text = MODEL.format(tag="a worker lets go")
    adapter = Ensemble(text)._adapter
    worker = os.fork()  # as a pool worker inherits the model
    if worker == 0:
        try:
            finesse_adapter.thread_cache("models").clear()
            gc.collect()
        finally:
            os._exit(0)
    os.waitpid(worker, 0)
    held_writer.touch()
    assert _saving(adapter).wait(300.0)
    assert not _entry(text).exists()  # the word is the parent's alone
    adapter.after_run()
    assert _entry(text).is_file()


def test_which_backends_run_where_the_model_already_is():
    from katparallel.backends.serial import SerialBackend

    assert SerialBackend().inherits_memory
    assert not MultiprocessingBackend(workers=2, start_method="forkserver").inherits_memory
    assert not MultiprocessingBackend(workers=2, threads=None).inherits_memory


def test_a_later_process_loads_the_model_instead_of_parsing_it(cache_everything):
    text = MODEL.format(tag="later process")
    path = _written(text)
    assert path.is_file() and oct(path.stat().st_mode & 0o777) == "0o600"
    cached = _child(text)
    parsed = _child(text, KATPARALLEL_MODEL_CACHE="0")
    assert cached["parses"] == 0 and parsed["parses"] == 1
    assert cached["P"] == parsed["P"]


def test_a_broken_entry_means_a_parse_not_an_error(cache_everything):
    text = MODEL.format(tag="broken entry")
    path = _written(text)
    path.write_bytes(b"not a pickle")
    assert _child(text)["parses"] == 1


def test_models_that_parse_faster_than_the_threshold_are_not_written(monkeypatch):
    monkeypatch.setattr(modelcache, "MIN_PARSE_SECONDS", 3600.0)  # every parse is faster
    text = MODEL.format(tag="fast")
    assert not _written(text).exists()


def test_workers_that_cannot_inherit_the_model_load_it_and_get_the_same_numbers(cache_everything):
    text = MODEL.format(tag="workers")
    path = _written(text)
    day_ago = time.time() - 86400
    os.utime(path, (day_ago, day_ago))
    backend = MultiprocessingBackend(workers=2, start_method="spawn")
    backend.close()  # a pool started now, in this test's environment (its cache folder)
    try:
        ens = Ensemble(text).vary("L0.P", np.linspace(1, 2, 6)).vary("cav.L", [1.0, 1.5])
        pool = ens.run(backend=backend, batch=False, progress=False)
    finally:
        backend.close()
    assert path.stat().st_mtime > day_ago + 3600  # the workers read it (a load touches it)
    assert not pool.failures
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KATPARALLEL_MODEL_CACHE", "0")
        finesse_adapter.thread_cache("models").clear()
        serial = Ensemble(text).vary("L0.P", np.linspace(1, 2, 6)).vary("cav.L", [1.0, 1.5]).run(
            backend="serial", batch=False, progress=False)
    assert np.array_equal(pool["P"].values, serial["P"].values)


# ----------------------------------------------------------------- 1: only our own files
def test_an_entry_owned_by_another_user_is_ignored(cache_everything, caplog):
    text = MODEL.format(tag="planted")
    parsed = _power(text)
    path = _plant(text, power=7.0)
    assert _power(text) == pytest.approx(7 * np.array(parsed))  # a planted entry of ours: used
    os.chown(path, OTHER_UID, -1)
    caplog.set_level(logging.DEBUG, logger=modelcache.LOGGER.name)
    assert modelcache.load(modelcache.entry_key(text, "katscript")) is None
    assert _power(text) == parsed
    said = [r.getMessage() for r in caplog.records if path.name[:12] in r.getMessage()]
    assert len(said) == 1 and "owned by" in said[0]  # once, however often it is met


def test_a_symbolic_link_is_not_followed(cache_everything, tmp_path):
    text = MODEL.format(tag="symlink")
    parsed = _power(text)
    path = _plant(text, power=7.0)
    elsewhere = tmp_path / "elsewhere.dill"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    assert _power(text) == parsed


def test_a_folder_others_can_write_is_neither_read_nor_written_nor_changed(cache_everything):
    text = MODEL.format(tag="group-writable")
    parsed = _power(text)
    path = _plant(text, power=7.0)
    path.parent.chmod(0o770)
    assert _power(text) == parsed
    assert not _written(MODEL.format(tag="not written there")).exists()
    assert path.parent.stat().st_mode & 0o777 == 0o770  # refused, not tightened
    path.parent.chmod(0o700)
    assert _power(text) == pytest.approx(7 * np.array(parsed))  # nothing was written there


# ----------------------------------------------------------------- 2: stale entries
def test_the_key_changes_with_katparallels_own_source(cache_everything, tmp_path):
    text = MODEL.format(tag="source changed")
    _written(text)
    copy = tmp_path / "copy"
    shutil.copytree(Path(katparallel.__file__).parent, copy / "katparallel",
                    ignore=shutil.ignore_patterns("__pycache__"))
    same = _child(text, cwd=copy, PYTHONPATH=str(copy))
    assert same["package"].startswith(str(copy)) and same["parses"] == 0
    front_end = copy / "katparallel" / "finesse2" / "frontend.py"
    front_end.write_text(front_end.read_text() + "\n# a change\n")
    changed = _child(text, cwd=copy, PYTHONPATH=str(copy))
    assert changed["package"].startswith(str(copy)) and changed["parses"] == 1


def test_the_key_names_every_version_that_shapes_the_pickle(monkeypatch):
    key = modelcache.entry_key(CAVITY_KATSCRIPT, "katscript")
    monkeypatch.setattr(np, "__version__", "0.0.1")
    assert modelcache.entry_key(CAVITY_KATSCRIPT, "katscript") != key


# ----------------------------------------------------------------- 3: the fresh parse
def test_the_entry_is_the_fresh_parse_not_the_model_after_the_run(cache_everything):
    text = HOM_KATSCRIPT + "# after a run\n"
    ens = Ensemble(text)
    ens.vary("m1.T", [0.01, 0.005]).run(backend="serial", batch=False, progress=False)
    _settle(ens._adapter)
    used = finesse_adapter.thread_cache("models")[ens._adapter.key].model
    assert used.last_trace is not None  # the jobs left a beam trace on the base model
    cached = modelcache.load(modelcache.entry_key(text, "katscript")).model
    assert cached.last_trace is None
    assert finesse_adapter._parse(text, "katscript").last_trace is None  # as a fresh parse
    assert finesse_adapter._parameter_state(cached) == finesse_adapter._parameter_state(used)


# ----------------------------------------------------------------- 4: durable, pruned, LRU
def _note(record: Path, *event: object) -> None:
    """Append ``event`` to ``record``: a spy's finding, whichever process finds it."""
    with open(record, "a") as out:
        out.write(json.dumps([os.getpid(), *event]) + "\n")


def _noted(record: Path) -> list[list]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_an_entry_is_on_disk_before_it_gets_its_name(cache_everything, monkeypatch, tmp_path):
    record = tmp_path / "events"
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        _note(record, "fsync", os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def replace(src, dst, **kw):
        _note(record, "replace", str(src))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _written(MODEL.format(tag="durable"))
    events = [tuple(event[1:]) for event in _noted(record)]
    replaced = [i for i, (what, _) in enumerate(events) if what == "replace"]
    assert len(replaced) == 1
    temporary = events[replaced[0]][1]
    assert ("fsync", temporary) in events[: replaced[0]]


def test_leftover_partial_writes_older_than_an_hour_are_removed(cache_everything):
    folder = _written(MODEL.format(tag="first")).parent
    old, new = folder / ".writing-old", folder / ".writing-new"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    _written(MODEL.format(tag="second"))
    assert not old.exists() and new.exists()  # a write under way is left alone


def test_the_least_recently_used_entries_go_first(cache_everything, monkeypatch):
    monkeypatch.setattr(modelcache, "MAX_ENTRIES", 2)
    first, second = MODEL.format(tag="lru first"), MODEL.format(tag="lru second")
    a, b = _written(first), _written(second)
    for age, path in ((7200, a), (3600, b)):  # first written first
        os.utime(path, (time.time() - age, time.time() - age))
    assert modelcache.load(modelcache.entry_key(first, "katscript")) is not None  # used since
    c = _written(MODEL.format(tag="lru third"))
    assert a.exists() and c.exists() and not b.exists()


def test_a_truncated_entry_is_replaced_by_the_next_save(cache_everything):
    text = MODEL.format(tag="truncated")
    path = _written(text)
    path.write_bytes(path.read_bytes()[:100])
    finesse_adapter.thread_cache("models").clear()
    _written(text)
    assert modelcache.load(modelcache.entry_key(text, "katscript")) is not None


# ----------------------------------------------------------------- 5: a child process writes
def test_a_fork_that_fails_loses_no_results(cache_everything, monkeypatch):
    text, other = MODEL.format(tag="no fork"), MODEL.format(tag="no second fork")
    real_fork, parent = os.fork, os.getpid()

    def refuse():
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    res = Ensemble(text).vary("m1.T", [0.01, 0.005]).run(  # no writer can start
        backend="serial", batch=False, progress=False)
    monkeypatch.setattr(os, "fork", lambda: real_fork() if os.getpid() == parent else refuse())
    ens = Ensemble(other)  # the middle process starts, the writer cannot
    also = ens.vary("m1.T", [0.01, 0.005]).run(backend="serial", batch=False, progress=False)
    _settle(ens._adapter)  # returns: the writer that never was is not awaited
    monkeypatch.undo()
    assert not res.failures and not also.failures
    assert not _entry(text).exists() and not _entry(other).exists()
    assert _power(text) == res["P"].values.ravel().tolist() == also["P"].values.ravel().tolist()


# Runs in a new process whose SIGPIPE kills it (as some programs set it): its
# model's writer dies, then the run tells it to write.
WRITER_DIES = """
import os, signal, sys
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
from katparallel import Ensemble
from katparallel.adapters import finesse as fa, modelcache
modelcache.MIN_PARSE_SECONDS = 0.0
real, parent = fa._parameter_state, os.getpid()
fa._parameter_state = lambda m: real(m) if os.getpid() == parent else signal.pause()
ens = Ensemble(sys.argv[1]).vary("L0.P", [1.0, 2.0])
writer = fa.thread_cache("models")[ens._adapter.key].saving.pid  # waits in _parameter_state
os.kill(writer, signal.SIGKILL)
res = ens.run(backend="serial", progress=False)
fa.thread_cache("models")[ens._adapter.key].settle()
print(res["P"].values.ravel().tolist())
"""


def test_a_writer_that_died_takes_nothing_down():
    text = MODEL.format(tag="writer dies")
    done = subprocess.run([sys.executable, "-c", WRITER_DIES, text], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == pytest.approx([1.0, 2.0])
    assert not _entry(text).exists()


def test_the_parents_recursion_limit_never_changes_during_a_cached_parse(
        cache_everything, monkeypatch):
    changed = []
    real = sys.setrecursionlimit
    monkeypatch.setattr(sys, "setrecursionlimit", lambda n: changed.append(n) or real(n))
    before = sys.getrecursionlimit()
    assert _written(MODEL.format(tag="recursion limit")).is_file()
    assert not changed and sys.getrecursionlimit() == before  # a child's own limit is not ours


def test_the_parent_never_pickles_the_model(cache_everything, monkeypatch, tmp_path):
    record, here = tmp_path / "pickled", []
    real = dill.dumps

    def spy(obj, *args, **kwargs):
        if isinstance(obj, dict) and "model" in obj:  # an entry
            here.append(obj)  # in this process's memory, or in a child's copy of it
            _note(record, "dumps")
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(dill, "dumps", spy)
    text = MODEL.format(tag="pickled elsewhere")
    ens = Ensemble(text)
    assert not here  # Ensemble(...) returned without pickling its model
    ens.vary("L0.P", [1.0]).run(backend="serial", progress=False)
    _settle(ens._adapter)
    pickled_by = [pid for pid, _ in _noted(record)]
    assert _entry(text).is_file() and not here
    assert len(pickled_by) == 1 and pickled_by[0] != os.getpid()


def test_a_model_is_cached_after_the_parent_ran_higher_order_modes(cache_everything):
    first = Ensemble(HOM_KATSCRIPT + "# run first\n").vary("m1.T", [0.01, 0.005]).run(
        backend="serial", batch=False, progress=False)  # OpenMP has run here
    assert not first.failures
    text = HOM_KATSCRIPT + "# parsed after a run\n"
    assert _written(text).is_file()  # its writer, forked after OpenMP ran, did not hang
    cached = modelcache.load(modelcache.entry_key(text, "katscript")).model
    parsed = finesse_adapter._parse(text, "katscript")
    assert finesse_adapter._parameter_state(cached) == finesse_adapter._parameter_state(parsed)


def _children() -> set[int]:
    """This process's child processes, running or zombie (ended, not reaped)."""
    children = set()
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == os.getpid():
            children.add(int(stat_file.parent.name))
    return children


def test_no_process_of_ours_is_left_behind_by_a_run(cache_everything):
    before = _children()
    text = MODEL.format(tag="no zombie")
    ens = Ensemble(text)
    ens.vary("L0.P", [1.0, 2.0]).run(backend="serial", progress=False)
    assert _children() == before  # the writer is not our child: it can never be our zombie
    _settle(ens._adapter)
    assert _entry(text).is_file() and _children() == before


# ----------------------------------------------------------------- 6: notes
FINESSE2_QUIRK = """\
l L0 1 0 n0
s s1 1 n0 n1
m m1 0.9 0.1 0 n1 n2
s s2 1 n2 n3
m m2 0.9 0.1 0 n3 n4
pd P n2
xaxis m1 phi lin 0 90 10_000
"""


def test_a_loaded_model_says_the_notes_its_parse_said(cache_everything, caplog, monkeypatch):
    caplog.set_level(logging.WARNING)
    path = _written(FINESSE2_QUIRK, syntax="finesse2")
    parsed = [r.getMessage() for r in caplog.records if "10_000" in r.getMessage()]
    assert len(parsed) == 1 and path.is_file()
    caplog.clear()
    finesse_adapter.thread_cache("models").clear()
    monkeypatch.setattr(finesse_adapter, "_parse", lambda *a: pytest.fail("parsed, not loaded"))
    Ensemble(FINESSE2_QUIRK, syntax="finesse2")
    loaded = [r for r in caplog.records if "10_000" in r.getMessage()]
    assert [r.getMessage() for r in loaded] == parsed and loaded[0].levelno == logging.WARNING
