"""Parsed models on disk: later processes load them instead of parsing, with the same results."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from katparallel import Ensemble
from katparallel._testing import CAVITY_KATSCRIPT
from katparallel.adapters import finesse as finesse_adapter
from katparallel.adapters import modelcache

MODEL = CAVITY_KATSCRIPT + "# {tag}\n"

# Runs in a new process: how many parses, and the study's outputs.
CHILD = """
import json, sys
import katparallel.adapters.finesse as fa
from katparallel import Ensemble
calls = []
real = fa._parse
fa._parse = lambda text, syntax: calls.append(syntax) or real(text, syntax)
res = Ensemble(sys.argv[1]).vary("m1.T", [0.01, 0.02]).vary("m1.R", [0.97]).run(
    backend="serial", progress=False)
print(json.dumps({"parses": len(calls), "P": res["P"].values.ravel().tolist()}))
"""


def _child(text: str, **env) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, text], capture_output=True, text=True, check=True,
        env={**os.environ, **env},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def cache_everything(monkeypatch):
    """Cache even models that parse fast (the suite's models are small)."""
    monkeypatch.setattr(modelcache, "MIN_PARSE_SECONDS", 0.0)


def _entry(text: str):
    return modelcache.cache_dir() / f"{modelcache.entry_key(text, 'katscript')}.dill"


def _written(text: str):
    """Run a one-job study of ``text`` here; its model is then written to the cache."""
    ens = Ensemble(text)
    ens.vary("L0.P", [1.0]).run(backend="serial", progress=False)
    finesse_adapter.thread_cache("models")[ens._adapter.key].settle()  # the background write
    return _entry(text)


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
    finesse_adapter.thread_cache("models")[adapter.key].settle()
    assert _entry(text).is_file()


def test_which_backends_run_where_the_model_already_is():
    from katparallel.backends.multiprocess import MultiprocessingBackend
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


def test_fast_parsing_models_are_not_written():
    text = MODEL.format(tag="fast")
    assert not _written(text).exists()  # parsed in well under MIN_PARSE_SECONDS


def test_workers_get_the_same_numbers_from_a_loaded_model(cache_everything):
    text = MODEL.format(tag="workers")
    _written(text)
    ens = Ensemble(text).vary("L0.P", np.linspace(1, 2, 6)).vary("cav.L", [1.0, 1.5])
    pool = ens.run(backend="multiprocessing", workers=2, batch=False, progress=False)
    finesse_adapter.thread_cache("models").clear()  # this process parses again
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KATPARALLEL_MODEL_CACHE", "0")
        serial = Ensemble(text).vary("L0.P", np.linspace(1, 2, 6)).vary("cav.L", [1.0, 1.5]).run(
            backend="serial", batch=False, progress=False)
    assert np.array_equal(pool["P"].values, serial["P"].values)
