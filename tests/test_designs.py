"""Quasi-random and sensitivity designs: placement, refusals, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from katparallel import Ensemble, InvalidValuesError, Normal, Uniform
from katparallel.designs import Saltelli
from katparallel.sampling import sampling_rng

PT = """
l L0 P=1
s s0 L0.p1 m1.p1 L=1
m m1 T=0.5 R=1-m1.T L=0
pd P m1.p2.o
"""
DISTS = {"L0.P": Uniform(0, 2), "m1.T": Uniform(0, 1)}


@pytest.mark.parametrize("method", ["lhs", "sobol", "halton"])
def test_quasi_random_points_follow_the_distributions(method):
    dists = {"L0.P": Normal(1, 0.1), "m1.T": Uniform(0.2, 0.4)}
    plan = Ensemble(PT).sample(64, dists, seed=3, method=method).plan()
    again = Ensemble(PT).sample(64, dists, seed=3, method=method).plan()
    other = Ensemble(PT).sample(64, dists, seed=4, method=method).plan()
    p, t = plan.axes[0].values["L0.P"], plan.axes[0].values["m1.T"]
    assert np.array_equal(p, again.axes[0].values["L0.P"])
    assert not np.array_equal(p, other.axes[0].values["L0.P"])
    assert 0.2 <= t.min() and t.max() < 0.4
    if method != "halton":  # Latin hypercube and Sobol' (a (t,m,s)-net) stratify each column:
        # each of 64 equal-probability bins of the uniform holds exactly one point
        assert sorted(np.floor((t - 0.2) / 0.2 * 64).astype(int).tolist()) == list(range(64))
    assert abs(np.mean(p) - 1) < 0.01 and abs(np.std(p) - 0.1) < 0.01


def test_lhs_fills_every_stratum():
    plan = Ensemble(PT).sample(50, DISTS, seed=1, method="lhs").plan()
    p = plan.axes[0].values["L0.P"]
    assert sorted(np.floor(p / 2 * 50).astype(int).tolist()) == list(range(50))


def test_monte_carlo_draws_are_unchanged():
    plan = Ensemble(PT).sample(5, {"L0.P": Normal(1, 0.1)}, seed=9).plan()
    expected = Normal(1, 0.1).draw(sampling_rng(9, 0), 5)
    assert np.array_equal(plan.axes[0].values["L0.P"], expected)


def test_sobol_needs_a_power_of_two():
    with pytest.raises(InvalidValuesError, match="use 512 or 1024"):
        Ensemble(PT).sample(1000, DISTS, method="sobol")
    with pytest.raises(InvalidValuesError, match="use 64 or 128"):
        Ensemble(PT).sobol(DISTS, n=100)


def test_a_callable_without_inverse_cdf_is_refused_for_qmc():
    draws = {"L0.P": lambda rng, n: rng.uniform(0, 1, n)}
    with pytest.raises(InvalidValuesError, match="no inverse CDF.*method='mc'"):
        Ensemble(PT).sample(8, draws, method="lhs")
    assert Ensemble(PT).sample(8, draws, seed=1).plan().n_jobs == 8


def test_unknown_method_is_refused():
    with pytest.raises(InvalidValuesError, match="'mc', 'lhs', 'sobol', 'halton'"):
        Ensemble(PT).sample(8, DISTS, method="grid")


def test_saltelli_blocks():
    design = Saltelli(8, DISTS, second_order=True)
    values, unit = design.draw(sampling_rng(1, 0))
    assert unit.shape == (8 * 6, 2) and design.size == 48
    a, b = unit[:8], unit[8:16]
    for i in range(2):
        ab, ba = unit[16 + 8 * i : 24 + 8 * i], unit[32 + 8 * i : 40 + 8 * i]
        assert np.array_equal(ab[:, i], b[:, i]) and np.array_equal(np.delete(ab, i, 1), np.delete(a, i, 1))
        assert np.array_equal(ba[:, i], a[:, i]) and np.array_equal(np.delete(ba, i, 1), np.delete(b, i, 1))
    assert np.array_equal(values["L0.P"], 2 * unit[:, 0])
    assert Saltelli(8, DISTS).size == 8 * 4


def test_design_is_recorded_and_identical_on_a_pool():
    ens = Ensemble(PT).sobol(DISTS, n=16, seed=2)
    serial = ens.run(backend="serial", progress=False).to_xarray()
    pool = ens.run(backend="multiprocessing", workers=2, progress=False).to_xarray()
    assert serial["design_block"].values.tolist() == np.repeat([0, 1, 2, 3], 16).tolist()
    assert serial["design_unit"].shape == (64, 2)
    assert np.array_equal(serial["P"].values, pool["P"].values)
    assert np.array_equal(serial["design_unit"].values, pool["design_unit"].values)
    np.testing.assert_allclose(serial["P"].values, serial["L0.P"] * serial["m1.T"], rtol=1e-12)
