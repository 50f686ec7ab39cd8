"""Locks on the fast path start from each job's own feedback value.

A cavity locked to half its peak power with a proportional lock: from a
tuning one free spectral range (180 degrees) away the lock settles one range
away, so the locked tuning (``mathd ph m2.phi``) shows where each job's lock
started. The batched path must start where a job of its own starts: from the
job's value when the study varies the feedback parameter, whether it is named
directly (``m2.phi``) or is a model variable the lock tunes (``tune``).
"""

from __future__ import annotations

import numpy as np
import pytest
from finesse.analysis.actions import Noxaxis, RunLocks, Series

from katparallel import Ensemble

LOCKED = """
var tune 5
l L0 P=1
s s0 L0.p1 m1.p1 L=1
m m1 R=0.9 T=0.1
s cav m1.p2 m2.p1 L=1
m m2 R=0.9 T=0.1 phi=5
pd Pc m1.p2.o
mathd ph m2.phi
lock lk Pc m2.phi -0.01 1e-8 offset=5
"""

#: The lock tunes the variable ``tune``, which the mirror's tuning follows.
LOCKED_VARIABLE = LOCKED.replace("phi=5", "phi=tune").replace("lk Pc m2.phi", "lk Pc tune")

STARTS = [5.0, 185.0, 4.0, 364.0, 6.0, -175.0]


@pytest.mark.parametrize("text, path", [(LOCKED, "m2.phi"), (LOCKED_VARIABLE, "tune")])
def test_batched_locks_start_from_the_jobs_value_like_job_by_job(text, path):
    ens = Ensemble(text).vary(path, STARTS)
    action = Series(RunLocks(), Noxaxis())
    one_by_one = ens.run(action, backend="serial", batch=False, progress=False)
    batched = ens.run(action, backend="serial", batch=True, progress=False)
    assert not one_by_one.failures and not batched.failures
    locked = one_by_one["ph"].values
    assert np.ptp(np.round(locked / 180)) >= 2  # the starts reach different fringes
    assert np.allclose(batched["ph"].values, locked, rtol=0, atol=1e-6)
    assert np.allclose(batched["Pc"].values, 5, rtol=1e-6)
