"""The batched fast path gives exactly what the per-job path gives."""

from __future__ import annotations

import numpy as np
import pytest

from katparallel import Ensemble, Normal
from katparallel._testing import CAVITY_KATSCRIPT
from katparallel.runner import RunOptions, Study, batch_chunk_size, decide_batch

CAVITY = CAVITY_KATSCRIPT + "ad a m1.p2.o f=0\n"

BACKENDS = ["serial", "multiprocessing"]


def assert_same(batched, per_job):
    """Same outputs (1e-12 relative, NaN where NaN) and the same failures."""
    assert batched.outputs == per_job.outputs
    for name in per_job.outputs:
        np.testing.assert_allclose(batched[name].values, per_job[name].values, rtol=1e-12, atol=0)
        assert batched[name].dims == per_job[name].dims
    got = [(f.index, f.type, f.message) for f in batched.failures]
    assert got == [(f.index, f.type, f.message) for f in per_job.failures]


def both(ens, backend, analysis=None):
    kwargs = dict(backend=backend, workers=2, progress=False)
    return ens.run(analysis, batch=True, **kwargs), ens.run(analysis, batch=False, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_parameter(backend):
    ens = Ensemble(CAVITY).vary("L0.P", np.linspace(0.5, 2, 7))
    assert_same(*both(ens, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_grid(backend):
    ens = Ensemble(CAVITY).vary("L0.P", [1.0, 2.0, 3.0]).vary("cav.L", [1.0, 1.0001, 1.3])
    batched, per_job = both(ens, backend)
    assert batched["P"].shape == (3, 3)
    assert_same(batched, per_job)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zipped_mirror(backend):
    ts = np.linspace(0.001, 0.02, 9)
    ens = Ensemble(CAVITY).vary({"m1.T": ts, "m1.R": 1 - ts - 1e-5})
    assert_same(*both(ens, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_sample_of_several_parameters(backend):
    ens = Ensemble(CAVITY).sample(
        40, {"L0.P": Normal(1, 0.1), "cav.L": Normal(1, 1e-4)}, seed=5
    )
    assert_same(*both(ens, backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_with_a_short_xaxis(backend):
    ens = Ensemble(CAVITY).vary("cav.L", [1.0, 1.1, 1.2])
    batched, per_job = both(ens, backend, "xaxis(L0.P, lin, 1, 10, 4)")
    assert batched["P"].shape == (3, 5)
    assert_same(batched, per_job)


@pytest.mark.parametrize("backend", BACKENDS)
def test_invalid_points_fail_alike(backend):
    # m1.R stays 0.99: every T above 0.01 gives R + T > 1.
    ens = Ensemble(CAVITY).vary("m1.T", np.linspace(0.002, 0.03, 8))
    batched, per_job = both(ens, backend)
    assert 0 < len(per_job.failures) < 8
    assert all(f.type == "InvalidRTLError" for f in per_job.failures)
    assert np.isnan(batched["P"].values[[f.index for f in batched.failures]]).all()
    assert_same(batched, per_job)


def test_invalid_points_in_a_sample_fail_alike():
    ens = Ensemble(CAVITY).sample(30, {"L0.P": Normal(1, 0.1), "m1.T": Normal(0.01, 0.003)}, seed=2)
    batched, per_job = both(ens, "serial")
    assert per_job.failures
    assert_same(batched, per_job)


def test_unstable_points_fail_alike():
    """A point whose beam trace fails masks in a batch; it must fail as it does per job."""
    model = CAVITY.replace("m1 R=0.99 T=0.01", "m1 R=0.99 T=0.01 Rc=-10").replace(
        "m2 R=0.99 T=0.01", "m2 R=0.99 T=0.01 Rc=10"
    ) + "cav FP m1.p2.o\nmodes(maxtem=1)\n"
    ens = Ensemble(model).vary("cav.L", [1.0, 15.0, 21.0, 2.0])
    batched, per_job = both(ens, "serial")
    assert [f.index for f in per_job.failures] == [2]
    assert_same(batched, per_job)


def test_batch_true_with_a_factory_raises():
    def factory(values, rng):
        import finesse

        model = finesse.Model()
        model.parse(CAVITY)
        return model

    ens = Ensemble(factory).vary("L0.P", [1.0, 2.0])
    with pytest.raises(ValueError, match="factory"):
        ens.run(batch=True, progress=False)


def test_auto_decision():
    ens = Ensemble(CAVITY).vary("L0.P", [1.0, 2.0])
    plan = ens.plan()
    study, options = Study(ens._adapter, ens.plan, None), RunOptions()
    perturbed = Study(ens._adapter, ens.plan, None, (lambda model, rng: None,))
    long_axis = ens._adapter.parse_analysis("xaxis(cav.L, lin, 1, 2, 1000)")
    assert decide_batch(None, study, plan, None, options)
    assert not decide_batch(None, perturbed, plan, None, options)
    assert decide_batch(None, study, plan, long_axis, options)  # the runner measures whether to step
    own_axis = ens._adapter.parse_analysis("xaxis(L0.P, lin, 1, 10, 1000)")
    assert not decide_batch(None, study, plan, own_axis, options)  # sweeps what the plan varies
    assert not decide_batch(False, study, plan, None, options)

    def factory(values, rng):
        import finesse

        model = finesse.Model()
        model.parse(CAVITY)
        return model

    fac = Ensemble(factory).vary("L0.P", [1.0, 2.0])
    assert not decide_batch(None, Study(fac._adapter, fac.plan, None), fac.plan(), None, options)


def test_perturb_runs_per_job_and_batch_true_refuses():
    ens = Ensemble(CAVITY).vary("L0.P", [1.0, 2.0]).perturb(lambda model, rng: None)
    assert ens.run(progress=False)["P"].shape == (2,)
    with pytest.raises(ValueError, match="perturb"):
        ens.run(batch=True, progress=False)


def test_chunks_are_whole_numbers_per_worker():
    assert batch_chunk_size(2, 2) == 1
    assert batch_chunk_size(10_000, 2) == 5_000
    size = batch_chunk_size(1_000_000, 2)
    assert 1_000_000 // size >= 2 and (1_000_000 // size) % 2 == 0


def test_auto_weighs_what_a_pool_worker_pays_before_its_first_job():
    from katparallel.backends.auto import AutoBackend

    auto = AutoBackend(workers=2)
    # 100 jobs of 10 ms: 1 s here, against 3 s of start-up per worker before 0.5 s each.
    assert auto.choose(100, 0.01, startup_seconds=3.0).name == "serial"
    assert auto.choose(10_000, 0.01, startup_seconds=3.0).name == "multiprocessing"
    assert auto.choose(100, 0.1).name == "multiprocessing"
