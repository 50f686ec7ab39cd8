"""The aLIGO design model: symbolic parameters, variables, math detectors, locks.

The model (213 elements) comes from the finesse-ligo wheel, downloaded once
into a cache (:func:`katparallel.models.aligo`); a failed download
fails these tests. Studies are a few jobs: the model parses in 2-3 s.
"""

from __future__ import annotations

import numpy as np
import pytest
from finesse.analysis.actions import Noxaxis, RunLocks, Series

from katparallel import Ensemble, Normal
from katparallel.models import aligo as aligo_design

LOCKED = Series(RunLocks(method="newton"), Noxaxis())


@pytest.fixture(scope="module")
def aligo() -> str:
    return aligo_design() + "\nmodes(maxtem=1)\n"


def test_batched_equals_per_job_for_symbolic_parameters_variables_and_math_detectors(aligo):
    # ITMX.L is Xloss/2 in the model; Xloss is a variable that ETMX.L follows.
    ens = Ensemble(aligo).sample(
        3, {"ITMX.L": Normal(30e-6, 5e-6), "Xloss": Normal(60e-6, 5e-6), "ETMX.Rcx": Normal(2245, 5)},
        seed=3,
    )
    batched = ens.run(batch=True, backend="serial", progress=False)
    per_job = ens.run(batch=False, backend="multiprocessing", workers=2, progress=False)
    assert not batched.failures and not per_job.failures
    assert batched.outputs == per_job.outputs and {"PRG", "AGX"} <= set(per_job.outputs)
    for name in per_job.outputs:
        assert batched[name].dtype == per_job[name].dtype, name
        np.testing.assert_allclose(batched[name].values, per_job[name].values, rtol=1e-12, atol=0)
    assert per_job["PRG"].dtype == np.float64
    assert np.ptp(per_job["AGX"].values) > 0  # the draws changed the arm gain


def test_a_varied_variable_moves_its_dependents(aligo):
    res = Ensemble(aligo).vary("Xloss", [60e-6, 600e-6]).run(backend="serial", progress=False)
    base = Ensemble(aligo).vary("ETMX.L", [30e-6, 300e-6]).vary("ITMX.L", [30e-6, 300e-6])
    both = base.run(backend="serial", progress=False)
    # Xloss sets ITMX.L and ETMX.L (both Xloss/2): the same as setting them directly.
    np.testing.assert_allclose(res["AGX"].values, np.diag(both["AGX"].values), rtol=1e-12)


def test_lock_studies_are_identical_across_backends_paths_and_job_order(aligo):
    ens = Ensemble(aligo).vary("PRM.T", [0.03, 0.031, 0.029])
    serial = ens.run(LOCKED, backend="serial", batch=False, progress=False)
    pool = ens.run(LOCKED, backend="multiprocessing", workers=2, batch=False, progress=False)
    stepped = ens.run(LOCKED, backend="serial", batch=True, progress=False)  # locks at each point
    alone = Ensemble(aligo).vary("PRM.T", [0.029]).run(LOCKED, backend="serial", batch=False,
                                                      progress=False)
    assert not serial.failures and stepped.outputs == serial.outputs
    for name in serial.outputs:
        assert np.array_equal(serial[name].values, pool[name].values, equal_nan=True), name
        assert np.array_equal(serial[name].values[2:], alone[name].values, equal_nan=True), name
        np.testing.assert_allclose(stepped[name].values, serial[name].values, rtol=1e-12, atol=0)
    model = ens._adapter.base_model()  # the in-process model the serial jobs ran on
    assert model.CARM.DC.value == 0 and model.SRCL.DC.value == 90  # the locks' tunings undone


def test_a_lost_lock_is_a_job_failure_with_finesses_message(aligo):
    ens = Ensemble(aligo).vary("PRM.T", [0.03, 0.031])
    lost = Series(RunLocks(max_iterations=2), Noxaxis())
    res = ens.run(lost, backend="serial", batch=True, progress=False)
    per_job = ens.run(lost, backend="serial", batch=False, progress=False)
    assert [f.type for f in res.failures] == ["LostLock", "LostLock"]
    assert [(f.index, f.type, f.message) for f in res.failures] == [
        (f.index, f.type, f.message) for f in per_job.failures]
    assert np.isnan(res["PRG"].values).all()
    assert "Locks failed" in res.failures[0].message and "LostLock" in res.failures[0].traceback
