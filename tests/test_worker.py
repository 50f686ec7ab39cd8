"""The worker's promises: it never raises, keeps jobs apart, and reports honestly."""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import finesse
import numpy as np
import pytest

import katparallel.adapters.finesse as finesse_adapter
from katparallel import Ensemble
from katparallel._testing import CAVITY_KATSCRIPT
from katparallel.runner import make_chunks
from katparallel.worker import run_chunk

CAVITY = CAVITY_KATSCRIPT + "mathd Pm P*2\n"

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _thread_backend():
    """The example's backend class, without leaving its name in the registry
    (``test_every_engine_is_available`` lists exactly the engines katparallel has)."""
    from katparallel.backends import BACKENDS

    spec = importlib.util.spec_from_file_location("custom_backend", EXAMPLES / "custom_backend.py")
    module = importlib.util.module_from_spec(spec)
    before = dict(BACKENDS)
    spec.loader.exec_module(module)  # it registers "threads"
    BACKENDS.clear()
    BACKENDS.update(before)
    return module.ThreadBackend


def test_four_threads_give_exactly_the_serial_results():
    ts = np.linspace(0.001, 0.02, 40)
    sweep = Ensemble(CAVITY).vary({"m1.T": ts, "m1.R": 1 - ts})
    show, filters = warnings.showwarning, warnings.filters[:]
    with _thread_backend()(workers=4) as threads:
        on_threads = sweep.run(backend=threads, batch=False, progress=False)
    serial = sweep.run(backend="serial", batch=False, progress=False)
    assert not on_threads.failures
    assert np.array_equal(on_threads["P"].values, serial["P"].values)
    assert warnings.showwarning is show and warnings.filters == filters  # nothing left installed


def test_a_thread_backend_reports_a_raising_task_as_data():
    with _thread_backend()(workers=2) as threads:
        results = dict(threads.map_unordered(lambda x: 1 / x, [1, 0]))
    assert results[0] == 1.0 and results[1].type == "ZeroDivisionError"


def _chunk(ens, **fields):
    plan = ens.plan(seed=1)
    return make_chunks(
        plan, np.arange(plan.n_jobs), plan.n_jobs, adapter=ens._adapter, analysis=None, **fields
    )[0]


def test_a_perturb_that_cannot_be_loaded_fails_each_job_with_its_traceback():
    chunk = _chunk(Ensemble(CAVITY).vary("L0.P", [1.0, 2.0]), perturbs=b"not dill")
    result = run_chunk(chunk)
    assert [f.index for f in result.failures] == [0, 1]
    assert all("Traceback" in f.traceback and "dill" in f.traceback for f in result.failures)


def _factory(values, rng):
    model = finesse.Model()
    model.parse(CAVITY)
    if values["x"] > 0.5:  # later jobs have an output the first lacks
        model.parse("pd Pr m1.p1.o")
    return model


def test_jobs_whose_outputs_differ_come_back_apart_and_fail_in_the_collector():
    ens = Ensemble(_factory).vary("x", [0.0, 1.0, 2.0])
    result = run_chunk(_chunk(ens))
    assert result.indices.tolist() == [0] and set(result.outputs) == {"P", "Pm"}
    assert not result.failures and len(result.others) == 1
    assert result.others[0].indices.tolist() == [1, 2] and set(result.others[0].outputs) == {"P", "Pm", "Pr"}
    res = ens.run(backend="serial", progress=False)
    assert [f.index for f in res.failures] == [1, 2] and np.isfinite(res["P"].values[0])
    assert "extra output(s) ['Pr']" in res.failures[0].message


def test_an_all_failed_study_has_nan_outputs_of_the_right_shape():
    ens = Ensemble(CAVITY).vary("m1.T", [0.5, 0.6, 0.7])  # R + T > 1 for every job
    res = ens.run(backend="serial", progress=False)
    assert len(res.failures) == 3 and set(res.outputs) == {"P", "Pm"}
    assert res["P"].shape == (3,) and np.isnan(res["P"].values).all()
    swept = ens.run("xaxis(L0.P, lin, 1, 2, 4)", backend="serial", progress=False)
    assert swept["Pm"].shape == (3, 5) and np.isnan(swept["Pm"].values).all()


UNSTABLE = CAVITY.replace("m1 R=0.99 T=0.01", "m1 R=0.99 T=0.01 Rc=-10").replace(
    "m2 R=0.99 T=0.01", "m2 R=0.99 T=0.01 Rc=10"
) + "cav FP m1.p2.o\nmodes(maxtem=1)\n"


def test_a_finesse_warning_is_reported_once_per_study_with_a_count(caplog):
    lengths = [1.0, 21.0, 2.0, 22.0]  # the cavity is unstable at 21 and 22
    traced = Ensemble(UNSTABLE + "gauss g1 L0.p1.o w0=1e-3 z=0\n").vary("cav.L", lengths)
    untraced = Ensemble(UNSTABLE).vary("cav.L", lengths)  # unstable jobs fail: no beam
    with caplog.at_level(logging.INFO):
        traced.run(backend="serial", batch=True, progress=False)
        assert len(untraced.run(backend="serial", batch=True, progress=False).failures) == 2
    messages = [r.getMessage() for r in caplog.records]
    reports = [m for m in messages if "jobs: " in m and "is unstable with g =" in m]
    # The failed jobs' points ran again job by job (which fails without the warning):
    # only the traced study's two jobs count.
    assert reports == ["raised in 2 of 4 jobs: CavityUnstableWarning: Cavity 'FP' is unstable with g = #"]
    assert not [m for m in messages if "Masking simulation outputs" in m]


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_warnings_from_jobs_are_counted_across_workers(backend, caplog):
    def factory(values, rng):
        import warnings

        if values["x"] > 1:
            warnings.warn(f"x = {values['x']} is large")
        model = finesse.Model()
        model.parse(CAVITY)
        return model

    ens = Ensemble(factory).vary("x", [0.0, 2.0, 3.0, 4.0])
    with caplog.at_level(logging.WARNING, logger="katparallel"):
        ens.run(backend=backend, workers=2, progress=False)
    reports = [r.getMessage() for r in caplog.records if "jobs: " in r.getMessage()]
    assert reports == ["raised in 3 of 4 jobs: UserWarning: x = # is large"]


def test_unparse_notes_are_not_shown(caplog):
    model = finesse.Model()
    model.parse(CAVITY)  # mathd makes unparse() log its regeneration notes
    with caplog.at_level(logging.INFO):
        Ensemble(model).vary("L0.P", [1.0, 2.0]).run(backend="serial", progress=False)
    assert not [r for r in caplog.records if "Intent-preserving" in r.getMessage()]


def test_a_model_kat_script_would_change_is_shipped_with_dill():
    model = finesse.Model()
    model.parse(CAVITY)
    text = model.unparse()
    model.unparse = lambda: text.replace("P=1", "P=2")  # KatScript that differs from the model
    ens = Ensemble(model)
    assert ens._adapter.kind == "dill"
    res = ens.vary("m2.T", [0.01]).run(backend="multiprocessing", workers=1, progress=False)
    reference = model.run()["P"]
    assert res["P"].values[0] == pytest.approx(reference, rel=1e-12)


def test_a_model_that_cannot_unparse_is_handled_before_any_job_runs():
    model = finesse.Model()
    model.parse(CAVITY)

    def broken():
        raise RuntimeError("cannot unparse this")

    model.unparse = broken
    res = Ensemble(model).vary("L0.P", [1.0, 2.0]).run(backend="serial", progress=False)
    assert not res.failures and "cannot unparse this" in res.to_xarray().attrs["model"]


def test_the_parent_parses_the_model_once(monkeypatch):
    calls = []
    real = finesse_adapter._parse

    def counting(text, syntax):
        calls.append(syntax)
        return real(text, syntax)

    monkeypatch.setattr(finesse_adapter, "_parse", counting)
    text = CAVITY + "\n# a text of its own, so no earlier test's parse is reused\n"
    ens = Ensemble(text).vary("L0.P", [1.0, 2.0, 3.0])
    ens.run(backend="serial", batch=False, progress=False)
    ens.run(backend="serial", batch=True, progress=False)
    Ensemble(text).vary("L0.P", [4.0]).run(backend="serial", progress=False)
    assert calls == ["katscript"]
