"""``auto`` picks the pool whenever it would finish sooner than this process.

The decision is a pure function of measured costs: the first job's time, the
number of jobs left, the workers, and what a worker pays before its first job
(a forked pool's start-up). It is tested with
the figures of the aLIGO locked study (1.9 s a draw) and a start-up measured
here, and in one real run of a few slow batched jobs.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np

from katparallel import Ensemble
from katparallel._testing import HOM_KATSCRIPT
from katparallel.backends.auto import FORK_START, AutoBackend, pool_is_faster


def test_whole_tasks_and_start_up_decide():
    # 3 tasks of 1 s on 2 workers: the pool needs two rounds (2 s) after its start-up.
    assert pool_is_faster(3, 1.0, 2, 0.6)  # 2.6 s against 3 s
    assert not pool_is_faster(3, 1.0, 2, 1.1)  # 3.1 s against 3 s
    assert pool_is_faster(3, 0.15, 2, 0.05)  # 0.35 s against 0.45 s: small, but faster
    assert not pool_is_faster(1, 10.0, 2, 0.0)  # one task: nothing to share
    assert not pool_is_faster(100, 1.0, 1, 0.0)  # one worker: nothing to share
    assert pool_is_faster(100, None, 2, 5.0)  # unknown cost counts as expensive


# Measured in a fresh interpreter: this one may hold threads of engines other
# tests used (Dask's offload thread stays for good), and then no pool forks here.
_FORK_START_UP = """
import time
from katparallel._testing import noop
from katparallel.backends.procpool import ProcessPool, can_fork
assert can_fork(1), "a fresh interpreter's main thread must be able to fork"
started = time.perf_counter()
pool = ProcessPool(2, threads=1)
assert sorted(result for _, result in pool.map_unordered(noop, [0, 1])) == [0, 1]
print(time.perf_counter() - started)
pool.shutdown()
"""


def _forked_pool_start_up() -> float:
    """Seconds from starting a fresh two-worker pool, forked from a process that
    imported katparallel, to both answers of two trivial tasks (as a run's first pool pays)."""
    out = subprocess.run([sys.executable, "-c", _FORK_START_UP], capture_output=True, text=True,
                         timeout=120, check=True)
    return float(out.stdout.split()[-1])


def test_the_aligo_locked_draws_go_to_a_forked_pool():
    measured = _forked_pool_start_up()
    # examples/aligo_tolerance.py: 8 locked draws, 1.9 s each; one ran as the probe.
    assert pool_is_faster(7, 1.9, 2, measured)
    assert pool_is_faster(7, 1.9, 2, FORK_START)
    assert AutoBackend(workers=2).choose(7, 1.9).name == "multiprocessing"


def test_a_few_slow_batched_jobs_run_on_a_pool(caplog):
    """Eight batched jobs of about half a second each (a 20,000-point axis at
    ``maxtem 4``, stepped): the probe times one, a pool runs the rest (the probe
    used to take 64 batched jobs, so all eight ran here)."""
    ens = Ensemble(HOM_KATSCRIPT).vary("L0.P", np.arange(1.0, 9.0))
    analysis = "xaxis(m2.phi, lin, 0, 1, 20000)"
    with caplog.at_level(logging.INFO, logger="katparallel"):
        res = ens.run(analysis, backend="auto", workers=2, batch=True, progress=False)
    assert not res.failures and res.to_xarray().attrs["backend"] == "multiprocessing"
    assert any("auto backend: multiprocessing for 7 tasks" in r.getMessage() for r in caplog.records)
    assert np.isfinite(res["P"].values).all()
