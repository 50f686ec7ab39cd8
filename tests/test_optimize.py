"""The pool as an optimizer's map: the same optimum, the same numbers, in one study."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy.optimize import differential_evolution

from katparallel import Ensemble, InvalidValuesError, Normal
from katparallel._testing import CAVITY_KATSCRIPT, square


def mismatch(outputs) -> float:
    """Mean squared distance of the transmitted power from 0.3 W over the draws."""
    return float(((outputs["P"] - 0.3) ** 2).mean())


@pytest.fixture(scope="module")
def objective():
    ens = Ensemble(CAVITY_KATSCRIPT).sample(16, {"cav.L": Normal(1, 1e-9)}, seed=4)
    return ens.objective(["L0.P", "m2.phi"], mismatch)


def test_differential_evolution_on_the_pool_matches_serial(objective):
    bounds = [(0.1, 2.0), (-10.0, 10.0)]
    options = dict(seed=1, maxiter=4, popsize=5, polish=False, updating="deferred")
    pooled = differential_evolution(
        objective, bounds,
        workers=functools.partial(Ensemble(CAVITY_KATSCRIPT).map, backend="multiprocessing", workers=2),
        **options,
    )
    serial = differential_evolution(objective, bounds, workers=1, **options)
    assert np.array_equal(pooled.x, serial.x) and pooled.fun == serial.fun
    assert pooled.nfev == serial.nfev


def test_map_evaluates_a_population_as_one_study(objective):
    points = [[0.5, 0.0], [1.0, 3.0], [1.5, -2.0]]
    got = Ensemble(CAVITY_KATSCRIPT).map(objective, points, backend="multiprocessing", workers=2)
    assert got == [objective(p) for p in points]


def test_executor_batches_submissions(objective):
    pool = Ensemble(CAVITY_KATSCRIPT).executor(backend="serial")
    futures = [pool.submit(objective, np.array([p, 0.0])) for p in (0.5, 1.0, 1.5)]
    assert len(pool._pending) == 3  # nothing ran yet
    assert futures[1].done() and not pool._pending  # asking one runs them all
    assert [f.result() for f in futures] == [objective([p, 0.0]) for p in (0.5, 1.0, 1.5)]
    plain = pool.submit(square, 3.0)
    assert plain.result() == 9.0


def test_failed_points_score_on_failure():
    ens = Ensemble(CAVITY_KATSCRIPT)
    obj = ens.objective(["m1.T"], lambda o: float(o["P"]), on_failure=1e9)
    scores = ens.map(obj, [[0.005], [0.5]], backend="serial")  # R=0.99: T=0.5 is invalid
    assert scores[1] == 1e9 and scores[0] < 1e9


def test_plain_functions_map_on_the_pool():
    assert Ensemble(CAVITY_KATSCRIPT).map(square, [1.0, 2.0, 3.0], backend="multiprocessing",
                                          workers=2) == [1.0, 4.0, 9.0]


def test_bad_points_are_refused(objective):
    with pytest.raises(InvalidValuesError, match="each point needs 2 values"):
        objective([1.0])
