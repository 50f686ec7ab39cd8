"""A study's outputs are job 0's, whatever order the jobs come back in.

A factory whose models give different outputs (one kind of job adds a
detector): the outputs are those of the lowest-index job that succeeded (job
0 unless it failed), every job whose outputs differ fails naming the extra or
missing outputs, nothing else fails -- the same on every backend, in any
arrival order, and after resuming from a store.
"""

from __future__ import annotations

import finesse
import numpy as np
import pytest

from katparallel import Ensemble
from katparallel._testing import CAVITY_KATSCRIPT
from katparallel.results import Collector
from katparallel.runner import Study, make_chunks
from katparallel.store import Store
from katparallel.worker import run_chunk

N_JOBS = 24


def _two_kinds(values, rng):
    """Jobs with x % 3 == 1 add a detector ``Pr``; x < 0 fails when run (no beam trace)."""
    model = finesse.Model()
    model.parse(CAVITY_KATSCRIPT)
    if values["x"] < 0:
        model.parse("modes(maxtem=1)")  # higher-order modes but no cavity or gauss
    if int(values["x"]) % 3 == 1:
        model.parse("pd Pr m1.p1.o")
    return model


def _odd_kind(i: int) -> bool:
    return i % 3 == 1


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_outputs_are_job_zeros_and_only_differing_jobs_fail(backend):
    res = Ensemble(_two_kinds).vary("x", np.arange(N_JOBS, dtype=float)).run(
        backend=backend, workers=2, progress=False
    )
    failed = [f.index for f in res.failures]
    assert failed == [i for i in range(N_JOBS) if _odd_kind(i)]
    assert res.outputs == ["P"]
    assert all("extra output(s) ['Pr']" in f.message and "job 0" in f.message for f in res.failures)
    good = [i for i in range(N_JOBS) if not _odd_kind(i)]
    assert np.isfinite(res["P"].values[good]).all() and np.isnan(res["P"].values[failed]).all()


def test_a_failed_job_0_leaves_the_lowest_index_success_as_reference():
    xs = np.arange(N_JOBS, dtype=float)
    xs[0] = -1.0  # job 0 raises; job 1 (with Pr) is the lowest-index success
    res = Ensemble(_two_kinds).vary("x", xs).run(backend="serial", progress=False)
    by_index = {f.index: f for f in res.failures}
    assert "ValueError" != by_index[0].type and "differ" not in by_index[0].message
    assert set(res.outputs) == {"P", "Pr"}
    differing = sorted(i for i in by_index if i != 0)
    assert differing == [i for i in range(2, N_JOBS) if not _odd_kind(i)]
    assert all("missing output(s) ['Pr']" in by_index[i].message and "job 1" in by_index[i].message
               for i in differing)


def _chunk_results(ens, size):
    plan = ens.plan(seed=1)
    chunks = make_chunks(plan, np.arange(plan.n_jobs), size, adapter=ens._adapter, analysis=None)
    return plan, [run_chunk(c) for c in chunks]


def _collected(plan, results):
    collector = Collector(plan)
    for result in results:
        collector.add(result)
    return collector


@pytest.mark.parametrize("size", [1, 5, N_JOBS])
def test_arrival_order_and_chunking_do_not_change_what_fails(size):
    ens = Ensemble(_two_kinds).vary("x", np.arange(N_JOBS, dtype=float))
    plan, results = _chunk_results(ens, size)
    forward = _collected(plan, results)
    backward = _collected(plan, results[::-1])  # job 0 arrives last
    expected = [i for i in range(N_JOBS) if _odd_kind(i)]
    for collector in (forward, backward):
        assert sorted(f.index for f in collector.failures) == expected
        assert list(collector.arrays) == ["P"]
    assert np.array_equal(forward.arrays["P"], backward.arrays["P"], equal_nan=True)


def test_a_resumed_study_decides_as_an_uninterrupted_one(tmp_path):
    ens = Ensemble(_two_kinds, seed=1).vary("x", np.arange(N_JOBS, dtype=float))
    store = tmp_path / "study.db"
    plan, results = _chunk_results(ens, 5)
    # An earlier run stored only jobs 10 on (not job 0), then stopped.
    with Store(store, write=True) as db:
        db.begin(Study(ens._adapter, ens.plan, 1).definition(plan, None), plan)
        for result in results[2:]:
            db.add(result, plan)
    partial = Store(store).results()
    assert "Pr" in partial.outputs  # for now job 10 leads, the lowest-index success
    resumed = ens.run(backend="serial", store=store, progress=False)
    assert [f.index for f in resumed.failures] == [i for i in range(N_JOBS) if _odd_kind(i)]
    assert resumed.outputs == ["P"]
