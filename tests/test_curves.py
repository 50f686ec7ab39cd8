"""Signal curves (xaxis over fsig.f, FrequencyResponse, quantum noise, locks) on both paths.

A toy cavity for the logic; the aLIGO design model, where the build dominates
a job, for an axis longer than 64 points and for locked curves.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from finesse.analysis.actions import FrequencyResponse, RunLocks, Series, Xaxis

from katparallel import Ensemble, Normal, nesting
from katparallel._testing import CAVITY_KATSCRIPT, aligo_katscript
from katparallel.models import ALIGO_DARM_SIGNALS as ALIGO_SIGNALS
from katparallel.nesting import NestingCosts

#: The cavity with a mirror-motion signal, a quantum-noise-to-signal ratio,
#: shot noise, and demodulations at fsig (a power and an amplitude).
SIGNAL_CAVITY = CAVITY_KATSCRIPT + """
fsig(1)
sgen sg m2.mech.z
qnoised NSR m1.p1.o nsr=True
qshot QS m1.p1.o nsr=True
pd1 TF m1.p1.o f=fsig
ad AD m1.p1.o f=fsig
"""

CURVE = "xaxis(fsig.f, log, 1, 10k, 20)"
DTYPES = {"NSR": np.float64, "QS": np.float64, "TF": np.complex128, "AD": np.complex128}


def assert_identical(a, b, names):
    """The same outputs to the bit, with the same dtype and coordinates."""
    assert not a.failures and not b.failures
    for name in names:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].dims == b[name].dims, name
        assert np.array_equal(a[name].values, b[name].values), name
        for dim in a[name].dims:
            assert np.array_equal(a[name][dim].values, b[name][dim].values), dim


def signal_study(n=5):
    return Ensemble(SIGNAL_CAVITY).sample(
        n, {"cav.L": Normal(1, 1e-3), "m2.phi": Normal(0, 1), "L0.P": Normal(1, 0.1)}, seed=4)


def test_signal_curves_keep_their_dtypes_on_both_paths():
    ens = signal_study()
    stepped = ens.run(CURVE, backend="serial", batch=True, progress=False)
    alone = ens.run(CURVE, backend="serial", batch=False, progress=False)
    assert_identical(stepped, alone, DTYPES)
    for name, dtype in DTYPES.items():
        assert alone[name].dtype == dtype, name
        assert alone[name].dims == ("sample", "fsig.f")
    assert np.ptp(abs(alone["TF"].values), axis=0).max() > 0  # the draws move the curve
    assert (alone["NSR"].values > 0).all()


def test_frequency_response_is_labelled_by_frequency_output_and_input():
    f = np.geomspace(1, 1e4, 7)
    fr = FrequencyResponse(f, ["m2.mech.F_z"], ["m1.mech.z", "m2.mech.z"])
    ens = signal_study(3)
    stepped = ens.run(fr, backend="serial", batch=True, progress=False)
    alone = ens.run(fr, backend="multiprocessing", workers=2, batch=False, progress=False)
    assert_identical(stepped, alone, ["frequency_response"])
    tf = alone["frequency_response"]
    assert tf.dtype == np.complex128 and tf.dims == ("sample", "fsig.f", "output", "input")
    np.testing.assert_array_equal(tf["fsig.f"].values, f)
    assert list(tf["output"].values) == ["m1.mech.z", "m2.mech.z"]


def test_measured_costs_decide_and_are_remembered():
    ens, curve = signal_study(6), "xaxis(fsig.f, log, 1, 10k, 25)"
    key = nesting.study_key(ens._adapter, ens.plan().paths, curve)
    assert nesting.known(key) is None
    decided = ens.run(curve, backend="serial", progress=False)  # batch=None: measures
    costs = nesting.known(key)
    assert costs is not None and min(costs.build_seconds, costs.job_seconds) > 0
    assert_identical(decided, ens.run(curve, backend="serial", batch=False, progress=False), DTYPES)


def test_nesting_pays_when_the_build_dominates():
    aligo_like = NestingCosts(build_seconds=0.5, stepped_seconds=0.27, job_seconds=0.62)
    assert aligo_like.pays(32) and not aligo_like.pays(1)
    slowed_steps = NestingCosts(build_seconds=0.002, stepped_seconds=0.9, job_seconds=0.27)
    assert not slowed_steps.pays(50)
    about_even = NestingCosts(build_seconds=0.005, stepped_seconds=0.26, job_seconds=0.27)
    assert not about_even.pays(50)  # within the noise: jobs on their own balance better


def test_few_jobs_run_on_their_own_without_measuring():
    ens, curve = signal_study(2), "xaxis(fsig.f, log, 1, 10k, 30)"
    res = ens.run(curve, backend="serial", progress=False)
    assert nesting.known(nesting.study_key(ens._adapter, ens.plan().paths, curve)) is None
    assert res["NSR"].shape == (2, 31)


def test_a_band_of_sampled_curves_and_a_single_draw():
    res = signal_study(8).run(CURVE, backend="serial", progress=False)
    ax = res.plot("NSR")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    (median,) = ax.get_lines()
    np.testing.assert_array_equal(median.get_ydata(), np.median(res["NSR"].values, axis=0))
    band = ax.collections[0].get_paths()[0].vertices
    assert np.isclose(band[:, 1].max(), np.quantile(res["NSR"].values, 0.95, axis=0).max())
    one = res.plot("TF", draw=3)
    np.testing.assert_array_equal(one.get_lines()[0].get_ydata(), abs(res["TF"].values[3]))
    with pytest.raises(ValueError, match="draw= picks one draw"):
        Ensemble(SIGNAL_CAVITY).vary("L0.P", [1.0, 2.0]).run(CURVE, progress=False).plot("NSR", draw=0)


# ------------------------------------------------------------------ aLIGO
DRAWS = {"Xloss": Normal(60e-6, 10e-6), "Yloss": Normal(60e-6, 10e-6), "SRM.T": Normal(0.32, 0.01)}


@pytest.fixture(scope="module")
def aligo() -> str:
    return aligo_katscript() + ALIGO_SIGNALS


def test_aligo_sensitivity_curves_longer_than_64_points_stepped_equal_per_job(aligo):
    ens = Ensemble(aligo).sample(2, DRAWS, seed=6)
    curve = "xaxis(fsig.f, log, 5, 5000, 99)"  # 100 points
    stepped = ens.run(curve, backend="serial", batch=True, progress=False)
    alone = ens.run(curve, backend="serial", batch=False, progress=False)
    # The noise-to-signal ratio, a demodulation at fsig (the DARM transfer
    # function) and an amplitude detector of the model's own.
    assert_identical(stepped, alone, ["NSR", "DARMTF", "a_carrier_x"])
    assert alone["NSR"].dtype == np.float64 and alone["DARMTF"].dtype == np.complex128
    assert alone["NSR"].shape == (2, 100)


def test_aligo_locked_curves_start_each_draw_from_the_design_tunings(aligo):
    ens = Ensemble(aligo).sample(2, DRAWS, seed=7)
    locked = Series(RunLocks(method="newton"), Xaxis("fsig.f", "log", 5, 5000, 9))
    stepped = ens.run(locked, backend="serial", batch=True, progress=False)
    alone = ens.run(locked, backend="serial", batch=False, progress=False)
    for name in ("NSR", "DARMTF"):
        assert stepped[name].dtype == alone[name].dtype
        np.testing.assert_allclose(stepped[name].values, alone[name].values, rtol=1e-12, atol=0)
    model = ens._adapter.base_model()
    assert model.CARM.DC.value == 0 and model.SRCL.DC.value == 90  # the locks' tunings undone
