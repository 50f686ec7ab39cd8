"""Sensitivity indices, yield, quantiles and ranks against known answers (real Finesse runs)."""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from scipy.stats import norm

from katparallel import Ensemble, IncompleteDesignError, Normal, Uniform, load

# Ishigami (a = 7, b = 0.1) as a Finesse model: three variables and a math detector.
ISHIGAMI = """
var x1 0
var x2 0
var x3 0
l L0 P=1
mathd Y sin(x1)+7*sin(x2)**2+0.1*x3**4*sin(x1)
"""
ISHIGAMI_DISTS = {f"x{i}": Uniform(-np.pi, np.pi) for i in (1, 2, 3)}

# A laser through a mirror whose R follows T (R + T = 1 for every draw), plane waves.
PT = """
l L0 P=1
s s0 L0.p1 m1.p1 L=1
m m1 T=0.5 R=1-m1.T L=0
pd P m1.p2.o
"""
# s0.L does not enter the transmitted power.
PT_DISTS = {"L0.P": Uniform(0, 2), "m1.T": Uniform(0, 1), "s0.L": Uniform(1, 2)}


@pytest.fixture(scope="module")
def ishigami():
    ens = Ensemble(ISHIGAMI).sobol(ISHIGAMI_DISTS, n=4096, seed=11)
    pool = ens.run(backend="multiprocessing", workers=2, progress=False)
    serial = ens.run(backend="serial", progress=False)
    return pool, serial


@pytest.fixture(scope="module")
def pt():
    return Ensemble(PT).sobol(PT_DISTS, n=2048, seed=5).run(
        backend="multiprocessing", workers=2, progress=False
    )


def test_ishigami_indices(ishigami):
    pool, serial = ishigami
    x = pool.to_xarray()
    a, b = 7, 0.1
    expected = np.sin(x["x1"]) + a * np.sin(x["x2"]) ** 2 + b * x["x3"] ** 4 * np.sin(x["x1"])
    np.testing.assert_allclose(x["Y"].values, expected.values, rtol=1e-12, atol=1e-12)
    si = pool.sensitivity("Y")
    np.testing.assert_allclose(si["S1"].values, [0.3139, 0.4424, 0.0], atol=0.02)
    np.testing.assert_allclose(si["ST"].values, [0.5576, 0.4424, 0.2437], atol=0.02)
    assert (si["ST_low"] <= si["ST"]).all() and (si["ST"] <= si["ST_high"]).all()
    assert si.identical(serial.sensitivity("Y"))  # the same design evaluated serially


def test_product_of_power_and_transmission(pt):
    si = pt.sensitivity("P")
    np.testing.assert_allclose(si["S1"].sel(param=["L0.P", "m1.T"]).values, [3 / 7] * 2, atol=0.03)
    np.testing.assert_allclose(si["ST"].sel(param=["L0.P", "m1.T"]).values, [4 / 7] * 2, atol=0.03)
    assert abs(si["ST"].sel(param="s0.L")) < 0.01
    assert si.attrs["rows"] == 2048 * 5


def test_reloading_reproduces_the_indices_exactly(pt, tmp_path):
    pt.save(tmp_path / "pt.nc")
    again = load(tmp_path / "pt.nc")
    assert again.sensitivity("P").identical(pt.sensitivity("P"))
    assert again.rank("P").identical(pt.rank("P"))


def test_second_order(pt):
    res = Ensemble(PT).sobol(PT_DISTS, n=1024, seed=2, second_order=True).run(
        backend="serial", progress=False
    )
    si = res.sensitivity("P", n_resamples=200)
    # P*T: the interaction holds 1 - 3/7 - 3/7 = 1/7 of the variance
    assert abs(si["S2"].sel(param="L0.P", param_2="m1.T") - 1 / 7) < 0.05
    assert abs(si["S2"].sel(param="L0.P", param_2="s0.L")) < 0.02
    assert np.isnan(si["S2"].sel(param="L0.P", param_2="L0.P"))


def test_failed_rows_are_named_and_given_data_methods_offered():
    bad = PT.replace("R=1-m1.T L=0", "R=0.5")  # every T above 0.5 makes R + T > 1
    res = Ensemble(bad).sobol({"L0.P": Uniform(0, 2), "m1.T": Uniform(0, 0.6)}, n=64, seed=1).run(
        backend="serial", progress=False
    )
    assert res.failures
    with pytest.raises(IncompleteDesignError, match=r"method='delta'.*'pawn'") as caught:
        res.sensitivity("P")
    assert caught.value.rows == sorted(f.index for f in res.failures)
    message = str(caught.value)
    assert "InvalidRTLError" in message
    assert re.search(r"row \d+ \((A|B|AB\[m1\.T\])\): job \d+", message)
    pawn = res.sensitivity("P", method="pawn")
    assert pawn.attrs["failed_rows_skipped"] > 0
    assert np.isfinite(pawn["pawn_median"]).all()


def test_morris_screens_out_a_parameter_without_effect():
    res = Ensemble(PT).morris(PT_DISTS, trajectories=12, seed=3).run(backend="serial", progress=False)
    mo = res.sensitivity("P", method="morris")
    assert res.to_xarray().sizes["sample"] == 12 * 4
    assert mo["mu_star"].sel(param="s0.L") < 1e-9
    assert (mo["mu_star"].sel(param=["L0.P", "m1.T"]) > 0.2).all()


def test_given_data_methods_on_a_monte_carlo_study():
    res = Ensemble(PT).sample(600, PT_DISTS, seed=4).run(backend="serial", progress=False)
    delta = res.sensitivity("P", method="delta", n_resamples=4)
    assert delta["delta"].sel(param="s0.L") < delta["delta"].sel(param="L0.P")
    np.testing.assert_allclose(delta["S1"].sel(param=["L0.P", "m1.T"]).values, [3 / 7] * 2, atol=0.1)
    pawn = res.sensitivity("P", method="pawn")
    assert pawn["pawn_median"].sel(param="s0.L") < 0.1 < pawn["pawn_median"].sel(param="m1.T")
    with pytest.raises(ValueError, match=r"Ensemble.sobol\(...\)"):
        res.sensitivity("P", method="sobol")


def test_yield_agrees_with_the_normal_cdf():
    model = PT.replace("T=0.5 R=1-m1.T", "T=0.5 R=0.5")
    res = Ensemble(model).sample(4000, {"L0.P": Normal(1, 0.1)}, seed=8).run(
        backend="serial", progress=False
    )
    got = res.yield_({"P": (0.45, None)}, confidence=0.99)  # P T >= 0.45 <=> P >= 0.9
    expected = norm.cdf(1.0)
    assert got.low <= expected <= got.high
    assert got.total == 4000 and got.failed == 0
    same = res.yield_(lambda ds: ds["P"] >= 0.45, confidence=0.99)
    assert same == got


def test_yield_counts_failed_jobs_as_failing():
    bad = PT.replace("R=1-m1.T L=0", "R=0.5")
    res = Ensemble(bad).sample(200, {"m1.T": Uniform(0.3, 0.6)}, seed=1).run(
        backend="serial", progress=False
    )
    got = res.yield_({"P": (None, None)})
    assert got.failed == len(res.failures) > 0
    assert got.passed == 200 - got.failed
    assert "failed jobs counted as failing" in str(got)


def test_quantiles_and_ranks():
    model = PT.replace("T=0.5 R=1-m1.T", "T=0.5 R=0.5")
    res = Ensemble(model).sample(2000, {"L0.P": Normal(1, 0.1), "s0.L": Uniform(1, 2)}, seed=6).run(
        backend="serial", progress=False
    )
    q = res.quantiles([0.5, 0.9], "P", confidence=0.99)
    assert q["P_low"].sel(quantile=0.5) <= 0.5 <= q["P_high"].sel(quantile=0.5)
    true_q90 = 0.5 * (1 + 0.1 * norm.ppf(0.9))
    assert q["P_low"].sel(quantile=0.9) <= true_q90 <= q["P_high"].sel(quantile=0.9)
    rho = res.rank("P")["spearman"]
    assert rho.sel(param="L0.P") > 0.999 and abs(rho.sel(param="s0.L")) < 0.1


def test_plot_sensitivity(pt):
    ax = pt.plot_sensitivity("P")
    assert len(ax.patches) == 6  # S1 and ST bars for three parameters
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "s0.L"  # ranked by ST


def test_indices_over_an_output_axis():
    dists = {"L0.P": Uniform(0, 2), "m1.T": Uniform(0, 1)}
    res = Ensemble(PT).sobol(dists, n=512, seed=3).run(
        "xaxis(s0.L, lin, 1, 2, 2)", backend="serial", progress=False
    )
    si = res.sensitivity("P", n_resamples=100)
    assert si["ST"].dims == ("param", "s0.L") and si.sizes["s0.L"] == 3
    np.testing.assert_allclose(si["S1"].values, 3 / 7, atol=0.06)
    # plane waves: the power does not depend on s0.L, so every column gives the same indices
    np.testing.assert_allclose(si["ST"].values, si["ST"].values[:, :1].repeat(3, axis=1), rtol=1e-9)
    with pytest.raises(ValueError, match="select one point first"):
        res.plot_sensitivity("P")
