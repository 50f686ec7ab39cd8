"""PyKat end to end: kat objects in ensembles, and ParaKat, through whichever ``kat`` is found.

Every job runs the real ``kat`` program PyKat finds (a real Finesse 2, else
katparallel's Finesse-3-backed one), so each costs seconds: the tests keep to
a handful of jobs and run the multi-job ones on two workers.
"""

import os

import numpy as np
import pytest

from katparallel import Ensemble, Normal, ParaKat, UnknownParameterError
from katparallel.finesse2 import ensure_kat

ensure_kat()  # before pykat's import, which looks for the kat program
import pykat  # noqa: E402  (a hard dependency: missing, these tests fail, never skip)

# The mirror-transmission tutorial: 1 W through a mirror, power detected behind it.
TUTORIAL = """
l l1 1 0 n1
s s1 1 n1 n2
m m1 0.5 0.5 0 n2 n3
s s2 1 n3 n4
pd P n4
ad a1 0 n4
noxaxis
"""


def make_kat(text: str = TUTORIAL, **values: float):
    kat = pykat.finesse.kat()
    kat.verbose = False
    kat.parse(text)
    for path, value in values.items():
        name, attr = path.split("__")
        setattr(getattr(kat, name), attr, value)
    return kat


@pytest.fixture(scope="module")
def kat():
    return make_kat()


# --------------------------------------------------------------------- Ensemble(kat)
def test_tutorial_sweep_is_T_times_P_and_equals_finesse2_text(kat):
    ts = np.array([0.1, 0.5, 0.9])
    spec = {"m1.T": ts, "m1.R": 1 - ts}
    res = Ensemble(kat).vary(spec).run(backend="multiprocessing", workers=2, progress=False,
                                       keep_solutions=True)
    assert res.failures == []
    power = res["P"]
    assert power.dims == ("m1.T",)
    np.testing.assert_allclose(power.values, ts * 1.0, rtol=1e-14)  # P = T * P_laser
    np.testing.assert_allclose(abs(res["a1"].values) ** 2, ts, rtol=1e-12)
    assert all(type(s).__name__ == "KatRun" for s in res.solutions)
    assert " 0.9 0.1 " in res.solutions[0].katScript  # each job ran its own values
    same = Ensemble(TUTORIAL, syntax="finesse2").vary(spec).run(progress=False)
    np.testing.assert_allclose(power.values, same["P"].values, rtol=1e-14, atol=0)
    assert kat.m1.T.value == 0.5  # the user's kat is never changed


def test_xaxis_becomes_a_named_dimension(kat):
    ts = np.array([0.25, 0.75])
    res = (
        Ensemble(kat)
        .vary({"m1.T": ts, "m1.R": 1 - ts})
        .run("xaxis l1 P lin 1 10 3", backend="multiprocessing", workers=2, progress=False)
    )
    power = res["P"]
    assert power.dims == ("m1.T", "l1.P")
    laser = power["l1.P"].values
    np.testing.assert_allclose(laser, [1, 4, 7, 10])
    np.testing.assert_allclose(power.values, np.outer(ts, laser), rtol=1e-14)


def test_x2axis_gives_two_dimensions_xaxis_first():
    text = TUTORIAL.replace("noxaxis", "xaxis l1 P lin 1 3 2\nx2axis m1 phi lin 0 90 1")
    res = Ensemble(make_kat(text)).vary("s1.L", [2.0]).run(progress=False)
    power = res["P"]
    assert power.dims == ("s1.L", "l1.P", "m1.phi")
    np.testing.assert_allclose(power["m1.phi"].values, [0, 90])
    np.testing.assert_allclose(power.values[0], 0.5 * np.array([[1, 1], [2, 2], [3, 3]]),
                               rtol=1e-14)


def test_sample_and_perturb_act_on_each_jobs_copy(kat):
    def half_transmission_to_point_three(model, rng):
        model.m1.T, model.m1.R = 0.3, 0.7

    res = (
        Ensemble(kat, seed=7)
        .sample(2, {"l1.P": Normal(2.0, 0.1)})
        .perturb(half_transmission_to_point_three)
        .run(backend="multiprocessing", workers=2, progress=False)
    )
    assert res.failures == []
    power = res["P"]
    assert power.dims == ("sample",)
    np.testing.assert_allclose(power.values, 0.3 * power["l1.P"].values, rtol=1e-14)
    assert len(set(power["l1.P"].values)) == 2


def test_unknown_paths_fail_before_any_job_with_close_matches(kat):
    with pytest.raises(UnknownParameterError, match=r"Did you mean 'm1\.T'"):
        Ensemble(kat).vary("m1.TT", [0.1])
    with pytest.raises(UnknownParameterError, match=r"'m1\.T'.*names are components"):
        Ensemble(kat).vary("m2.T", [0.1])
    with pytest.raises(UnknownParameterError):
        Ensemble(kat).sample(3, {"laser.P": Normal(1, 0.1)})


def test_a_failing_job_is_isolated(kat):
    # m1.R stays 0.5, so T = 0.7 makes R + T > 1: pykat refuses that job only.
    res = Ensemble(kat).vary("m1.T", [0.3, 0.7]).run(progress=False)
    assert [f.index for f in res.failures] == [1]
    assert "R+T" in res.failures[0].message
    np.testing.assert_allclose(res["P"].values[0], 0.3, rtol=1e-14)
    assert np.isnan(res["P"].values[1])


# --------------------------------------------------------------------- ParaKat
def cwd_and_length(commands, pwd, IFO, scale):
    """A parakat-style custom job."""
    return os.getcwd() == pwd, scale * commands.count("\n")


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_parakat_keeps_order_and_isolates_failures(backend, kat):
    # Finesse 2 refuses a sweep of a mirror's loss ("no parameter 'L' at mirror").
    broken = make_kat(TUTORIAL.replace("noxaxis", "xaxis m1 L lin 0 0.1 1"))
    with ParaKat(backend=backend, workers=2, progress=False) as pk:
        pk.run(make_kat(m1__T=0.2, m1__R=0.8))
        pk.run(broken)
        pk.run(make_kat(m1__T=0.4, m1__R=0.6))
        pk.run(kat, cwd_and_length, 2)
        assert len(pk) == 4
        outs = pk.getResults()
        assert len(outs) == 4
        assert type(outs[0]).__name__ == "KatRun"
        assert outs[0]["P"] == pytest.approx(0.2, rel=1e-14)
        assert isinstance(outs[1], pykat.exceptions.FinesseRunError)
        assert outs[1].__cause__ is not None  # the worker's traceback
        assert outs[2]["P"] == pytest.approx(0.4, rel=1e-14)
        assert outs[3] == (True, 2 * "".join(kat.generateKatScript()).count("\n"))
        pk.clear()
        assert len(pk) == 0 and pk._run_count == 0
        assert pk.getResults() == []


def test_parakat_lambda_that_raises_gets_its_slot():
    with ParaKat(backend="multiprocessing", workers=2, progress=False) as pk:
        pk.run(make_kat(), lambda commands, pwd, IFO: 1 / 0)
        pk.run(make_kat(), lambda commands, pwd, IFO, k=0: commands.count("m1") + k, k=10)
        first, second = pk.getResults()
    assert isinstance(first, ZeroDivisionError)
    assert "1 / 0" in str(first.__cause__)
    assert second == 11
