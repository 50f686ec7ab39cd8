"""ExecutorBackend over real executors: a stdlib ProcessPoolExecutor and Dask's
``client.get_executor()`` (on the LocalCluster katparallel starts)."""

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from katparallel import Ensemble, ExecutorBackend, Normal, _testing
from katparallel.backends.dask import DaskBackend
from katparallel.errors import Failure

#: Only a deadlock reaches this.
TIMEOUT = 120


@pytest.fixture(scope="module", params=["process-pool", "dask-executor"])
def executor(request):
    if request.param == "process-pool":
        pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))
        yield pool
        pool.shutdown(cancel_futures=True)
    else:
        dask = DaskBackend(workers=2)
        yield dask.client.get_executor()
        dask.close()


@pytest.mark.timeout(TIMEOUT)
def test_results_with_their_indices_and_the_executor_left_running(executor):
    backend = ExecutorBackend(executor, workers=2)
    assert dict(backend.map_unordered(_testing.square, range(20))) == {i: i * i for i in range(20)}
    backend.close()
    assert executor.submit(_testing.square, 3).result(timeout=TIMEOUT) == 9


@pytest.mark.timeout(TIMEOUT)
def test_a_raising_task_is_a_failure_with_its_traceback(executor):
    results = dict(ExecutorBackend(executor).map_unordered(_testing.square, [2, "x"]))
    assert results[0] == 4
    failure = results[1]
    assert isinstance(failure, Failure) and not failure.crashed
    assert failure.type == "TypeError" and "can't multiply sequence" in failure.message
    assert "_testing.py" in failure.traceback


@pytest.mark.timeout(TIMEOUT)
def test_tasks_are_pinned_to_one_thread(executor):
    threads = dict(ExecutorBackend(executor).map_unordered(_testing.omp_threads, range(4)))
    assert set(threads.values()) == {1}


@pytest.mark.timeout(TIMEOUT)
def test_stopping_early_cancels_what_has_not_started(executor):
    it = ExecutorBackend(executor, workers=2).map_unordered(
        _testing.sleep_then, [(0.0, 0)] + [(0.3, i) for i in range(1, 40)])
    next(it)
    it.close()
    started = time.monotonic()
    assert executor.submit(_testing.square, 5).result(timeout=TIMEOUT) == 25
    # Not 39 x 0.3 s / 2 workers behind the cancelled tasks (a deadlock guard, not a timing test).
    assert time.monotonic() - started < TIMEOUT / 2


@pytest.mark.timeout(TIMEOUT)
def test_a_study_matches_serial_bit_for_bit(executor, katscript):
    ensemble = Ensemble(katscript, seed=4).sample(30, {"L0.P": Normal(1, 0.1)})
    got = ensemble.run(backend=ExecutorBackend(executor), batch=False, progress=False)
    want = ensemble.run(backend="serial", batch=False, progress=False)
    assert got.failures == []
    np.testing.assert_array_equal(got["P"].values, want["P"].values)


@pytest.mark.timeout(TIMEOUT)
def test_a_dead_worker_is_a_crashed_failure():
    """A stdlib pool breaks for good: every pending task fails as crashed, none hangs."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        results = dict(ExecutorBackend(pool).map_unordered(
            _testing.crash_on, [1, _testing.CRASH_VALUE, 3, 4]))
        assert sorted(results) == [0, 1, 2, 3]
        assert isinstance(results[1], Failure) and results[1].crashed
        for i, x in enumerate([1, _testing.CRASH_VALUE, 3, 4]):
            assert results[i] == x * x or (isinstance(results[i], Failure) and results[i].crashed)
        again = dict(ExecutorBackend(pool).map_unordered(_testing.square, [2]))
        assert again[0].crashed and "BrokenProcessPool" in again[0].message


@pytest.mark.timeout(TIMEOUT)
def test_a_killed_dask_worker_fails_its_tasks_and_the_executor_goes_on():
    # Tasks submitted one at a time are placed as they arrive (not queued as a group),
    # so a task Dask had already put on the dying worker fails with it (seen in a full
    # run: task 3): each other task is its value or a crashed Failure, never an error.
    with DaskBackend(workers=2, threads=None) as dask:  # a cluster of its own, closed here
        backend = ExecutorBackend(dask.client.get_executor(), workers=2)
        tasks = [1, 2, _testing.CRASH_VALUE, 3, 4, 5]
        results = dict(backend.map_unordered(_testing.crash_on, tasks))
        assert sorted(results) == list(range(len(tasks)))
        assert results[2].crashed and "KilledWorker" in results[2].message
        for i, x in enumerate(tasks):
            assert i == 2 or results[i] == x * x or (
                results[i].crashed and "KilledWorker" in results[i].message), results[i]
        again = dict(backend.map_unordered(_testing.square, [2, 3]))
        assert again == {0: 4, 1: 9}  # unlike a ProcessPoolExecutor, it is not broken


def test_not_an_executor_is_refused():
    with pytest.raises(TypeError, match="ExecutorBackend needs a concurrent.futures.Executor"):
        ExecutorBackend(object())
