"""Warnings: counted per job on every path, names intact, the user's filters obeyed.

A warning raised while a simulation is built (an unstable cavity left out of
the beam trace) is raised once per job when jobs run one by one, and once per
build on the fast path: either way the study reports it for every job. Jobs
that raise the same warning about different components are reported apart.
A user's ``error`` or ``ignore`` filter acts as it would in a plain loop.
"""

from __future__ import annotations

import logging
import warnings

import finesse
import numpy as np
import pytest

from katparallel import Ensemble
from katparallel._testing import CAVITY_KATSCRIPT

#: A cavity too long for its mirrors (unstable), traced from a gauss instead:
#: every simulation build warns that the cavity is left out.
BUILD_WARNS = CAVITY_KATSCRIPT.replace("m1 R=0.99 T=0.01", "m1 R=0.99 T=0.01 Rc=-10").replace(
    "m2 R=0.99 T=0.01", "m2 R=0.99 T=0.01 Rc=10"
).replace("m2.p1 L=1", "m2.p1 L=21") + "cav FP m1.p2.o\ngauss g1 L0.p1.o w0=1e-3 z=0\nmodes(maxtem=1)\n"

N_JOBS = 40


def _reports(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "jobs: " in r.getMessage() and "raised in" in r.getMessage()]


@pytest.fixture(scope="module")
def build_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the parse warns once that the cavity is unstable
        return Ensemble(BUILD_WARNS).vary("L0.P", np.linspace(1, 2, N_JOBS))


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
@pytest.mark.parametrize("batch", [True, False])
def test_a_build_time_warning_counts_once_per_job_on_every_path(build_warns, backend, batch, caplog):
    with caplog.at_level(logging.WARNING, logger="katparallel"):
        res = build_warns.run(backend=backend, batch=batch, workers=2, progress=False)
    assert not res.failures
    assert _reports(caplog) == [
        f"raised in {N_JOBS} of {N_JOBS} jobs: CavityUnstableWarning: The cavities ['FP'] "
        "are unstable and will not be used for beam tracing."
    ]


@pytest.mark.parametrize("batch", [True, False])
def test_workers_that_read_the_model_do_not_count_what_reading_it_warns(batch, caplog):
    # A pool started before the model below exists: its workers read the model,
    # which warns (as the parent's own reading did, once) that the cavity is unstable.
    Ensemble(CAVITY_KATSCRIPT).vary("L0.P", [1.0, 2.0]).run(
        backend="multiprocessing", workers=2, progress=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ens = Ensemble(BUILD_WARNS + f"# read by the workers ({batch})\n")
    ens = ens.vary("L0.P", np.linspace(1, 2, N_JOBS))
    with caplog.at_level(logging.WARNING, logger="katparallel"):
        ens.run(backend="multiprocessing", workers=2, batch=batch, progress=False)
    assert [r for r in _reports(caplog) if "added to the model" in r] == []
    assert len(_reports(caplog)) == 1 and f"raised in {N_JOBS} of {N_JOBS} jobs" in _reports(caplog)[0]


def _names_factory(values, rng):
    import warnings

    name = "m1" if values["x"] < 2 else "ITM2"
    warnings.warn(f"{name} is misaligned by {values['x'] / 10} rad")
    model = finesse.Model()
    model.parse(CAVITY_KATSCRIPT)
    return model


def test_warnings_about_different_components_are_not_merged(caplog):
    ens = Ensemble(_names_factory).vary("x", [0.0, 1.0, 2.0, 3.0, 4.0])
    with caplog.at_level(logging.WARNING, logger="katparallel"):
        ens.run(backend="serial", progress=False)
    assert sorted(_reports(caplog)) == [
        "raised in 2 of 5 jobs: UserWarning: m1 is misaligned by # rad",
        "raised in 3 of 5 jobs: UserWarning: ITM2 is misaligned by # rad",
    ]


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_a_users_error_filter_fails_the_jobs_that_warn(backend):
    ens = Ensemble(_names_factory).vary("x", [0.0, 1.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = ens.run(backend=backend, workers=2, progress=False)
    assert [f.index for f in res.failures] == [0, 1, 2]
    assert all(f.type == "UserWarning" and "misaligned" in f.message for f in res.failures)


@pytest.mark.parametrize("backend", ["serial", "multiprocessing"])
def test_a_users_ignore_filter_silences_the_count(backend, caplog):
    ens = Ensemble(_names_factory).vary("x", [0.0, 1.0, 2.0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="m1 is misaligned")
        with caplog.at_level(logging.WARNING, logger="katparallel"):
            res = ens.run(backend=backend, workers=2, progress=False)
    assert not res.failures
    assert _reports(caplog) == ["raised in 1 of 3 jobs: UserWarning: ITM2 is misaligned by # rad"]
