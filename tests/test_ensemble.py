"""Ensemble end to end on real Finesse 3 simulations."""

import numpy as np
import pytest

from katparallel import Ensemble, Normal, Uniform, LogNormal, load
from katparallel.plan import SAMPLE_DIM


def test_tutorial_sweep_gives_transmitted_power(tutorial_kat2, transmissions):
    ts = transmissions
    res = Ensemble(tutorial_kat2).vary({"m1.T": ts, "m1.R": 1 - ts}).run(progress=False)
    power = res["P"]
    assert power.dims == ("m1.T", "l1.P")
    laser = power["l1.P"].values
    np.testing.assert_allclose(power.values, ts[:, None] * laser[None, :], rtol=1e-12)
    np.testing.assert_array_equal(power["m1.R"].values, 1 - ts)
    assert res.failures == []


def test_grid_is_outer_product_in_call_order(katscript):
    ts = np.array([0.1, 0.2, 0.3])
    ps = np.array([1.0, 2.0])
    res = (
        Ensemble(katscript)
        .vary({"m.T": ts, "m.R": 1 - ts})
        .vary("L0.P", ps)
        .run(progress=False)
    )
    power = res["P"]
    assert power.dims == ("m.T", "L0.P")
    assert power.shape == (3, 2)
    np.testing.assert_array_equal(power["L0.P"].values, ps)
    np.testing.assert_allclose(power.values, np.outer(ts, ps), rtol=1e-12)
    # the amplitude detector is complex and keeps its phase
    amplitude = res["a"]
    assert np.iscomplexobj(amplitude)
    np.testing.assert_allclose(abs(amplitude.values) ** 2, power.values, rtol=1e-12)


def test_model_sources_agree(katscript, finesse_model, tmp_path):
    kat2 = tmp_path / "model.kat"
    kat2.write_text(
        "l L0 1 0 n0\ns s0 1 n0 n1\nm m 0.5 0.5 0 n1 n2\npd P n2\n"
    )
    values = [0.5, 1.5]
    expected = np.array(values) * 0.5

    def factory(job_values, rng):
        import finesse

        model = finesse.Model()
        model.parse(katscript)
        return model

    for source in (katscript, finesse_model, kat2, str(kat2), factory):
        res = Ensemble(source).vary("L0.P", values).run(progress=False)
        np.testing.assert_allclose(res["P"].values, expected, rtol=1e-12, err_msg=repr(source))


def test_factory_receives_values_and_rng(katscript):
    def factory(values, rng):
        import finesse

        model = finesse.Model()
        model.parse(katscript)
        model.L0.P = values["power"] * 2  # a name only the factory understands
        return model

    res = Ensemble(factory).vary("power", [1.0, 3.0]).run(progress=False)
    np.testing.assert_allclose(res["P"].values, [1.0, 3.0], rtol=1e-12)


def test_analysis_as_action_or_text(katscript):
    from finesse.analysis.actions import Xaxis

    ens = Ensemble(katscript).vary({"m.T": [0.2, 0.4], "m.R": [0.8, 0.6]})
    by_text = ens.run("xaxis(L0.P, lin, 1, 2, 3)", progress=False)
    by_action = ens.run(Xaxis("L0.P", "lin", 1, 2, 3), progress=False)
    assert by_text["P"].dims == ("m.T", "L0.P")
    np.testing.assert_array_equal(by_text["P"].values, by_action["P"].values)
    np.testing.assert_allclose(
        by_text["P"].values, np.outer([0.2, 0.4], [1, 4 / 3, 5 / 3, 2]), rtol=1e-12
    )


def test_no_axes_runs_one_job(katscript):
    res = Ensemble(katscript).run(progress=False)
    assert res["P"].shape == ()
    assert float(res["P"]) == pytest.approx(0.5, rel=1e-12)


def test_failures_are_isolated(tutorial_kat2):
    # T alone above 0.5 makes R + T > 1: Finesse refuses those jobs.
    ts = np.array([0.1, 0.3, 0.7, 0.9])
    res = Ensemble(tutorial_kat2).vary("m1.T", ts).run(progress=False)
    assert [f.index for f in res.failures] == [2, 3]
    failure = res.failures[0]
    assert failure.type == "InvalidRTLError"
    assert "m1.L must satisfy" in failure.message
    assert failure.values == {"m1.T": 0.7}
    assert "Traceback" in failure.traceback
    power = res["P"].values
    assert np.isnan(power[2:]).all()
    np.testing.assert_allclose(power[:2], ts[:2, None] * res["P"]["l1.P"].values, rtol=1e-12)


def test_failing_factory_is_recorded(katscript):
    def factory(values, rng):
        if values["L0.P"] > 2:
            raise RuntimeError("cannot build this one")
        import finesse

        model = finesse.Model()
        model.parse(katscript)
        return model

    res = Ensemble(factory).vary("L0.P", [1.0, 3.0]).run(progress=False)
    assert [(f.index, f.type, f.message) for f in res.failures] == [
        (1, "RuntimeError", "cannot build this one")
    ]
    assert res["P"].values[0] == pytest.approx(0.5)


def test_raise_on_error_chains_worker_traceback(tutorial_kat2):
    from katparallel import JobError

    with pytest.raises(JobError, match="1 of 2 jobs failed") as info:
        Ensemble(tutorial_kat2).vary("m1.T", [0.1, 0.9]).run(progress=False, raise_on_error=True)
    assert "InvalidRTLError" in str(info.value.__cause__)


def test_samples_have_sample_dim_and_coordinates(katscript):
    res = Ensemble(katscript).sample(
        50, {"L0.P": Normal(1, 0.1), "m.T": Uniform(0.1, 0.4)}, seed=3
    ).run(progress=False)
    power = res["P"]
    assert power.dims == (SAMPLE_DIM,)
    np.testing.assert_allclose(
        power.values, power["L0.P"].values * power["m.T"].values, rtol=1e-12
    )
    assert res.seed == 3


def test_lognormal_and_callable_distributions(katscript):
    def fixed(rng, n):
        return np.full(n, 2.0)

    res = Ensemble(katscript).sample(
        5, {"L0.P": LogNormal(0, 0.1), "s0.L": fixed}, seed=1
    ).run(progress=False)
    assert (res["P"]["L0.P"].values > 0).all()
    np.testing.assert_array_equal(res["P"]["s0.L"].values, 2.0)


def test_progress_bar_can_be_silenced(katscript, capsys):
    Ensemble(katscript).vary("L0.P", [1, 2]).run(progress=False)
    assert capsys.readouterr().err == ""
    Ensemble(katscript).vary("L0.P", [1, 2]).run(progress=True)
    assert "job" in capsys.readouterr().err


def test_save_load_round_trip(katscript, tmp_path):
    res = (
        Ensemble(katscript)
        .vary({"m.T": [0.1, 0.2], "m.R": [0.9, 0.8]})
        .sample(3, {"L0.P": Normal(1, 0.1)}, seed=5)
        .run(progress=False)
    )
    path = tmp_path / "study.nc"
    res.save(path)
    back = load(path)
    assert back.seed == 5
    for name in ("P", "a"):
        np.testing.assert_array_equal(back[name].values, res[name].values)
        assert back[name].dims == res[name].dims
    np.testing.assert_array_equal(back["P"]["m.R"].values, [0.9, 0.8])
    assert back.to_xarray().attrs["plan"] == res.to_xarray().attrs["plan"]


def test_save_load_keeps_failures(tutorial_kat2, tmp_path):
    res = Ensemble(tutorial_kat2).vary("m1.T", [0.1, 0.9]).run(progress=False)
    res.save(tmp_path / "f.nc")
    back = load(tmp_path / "f.nc")
    assert [(f.index, f.type) for f in back.failures] == [(1, "InvalidRTLError")]


def test_keep_solutions(katscript):
    from finesse.solutions import ArraySolution

    res = Ensemble(katscript).vary("L0.P", [1, 2]).run(progress=False, keep_solutions=True)
    assert len(res.solutions) == 2
    assert all(isinstance(s, ArraySolution) for s in res.solutions)
    assert res.solutions[1]["P"] == pytest.approx(1.0)
    plain = Ensemble(katscript).vary("L0.P", [1, 2]).run(progress=False)
    with pytest.raises(AttributeError, match="keep_solutions=True"):
        plain.solutions


def test_vary_returns_new_ensemble(katscript):
    base = Ensemble(katscript)
    one = base.vary("L0.P", [1, 2])
    assert base.paths == ()
    assert one.paths == ("L0.P",)
    assert "2 jobs" in one.describe()
