"""Plug a new engine into katparallel: a backend on a thread pool.

Run it with ``python examples/custom_backend.py``. It maps a plain function,
then runs a mirror-transmission sweep on four threads and checks it against the
serial backend. An engine that already offers a ``concurrent.futures.Executor``
(Dask's ``client.get_executor()``, mpi4py, Parsl) needs no code of its own:
``ExecutorBackend(executor)``; Dask itself is ``backend="dask"``.
"""

import concurrent.futures
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from katparallel import Ensemble
from katparallel._testing import CAVITY_KATSCRIPT, square
from katparallel.backends import Backend, get_backend_class, register_backend
from katparallel.errors import Failure

LOGGER = logging.getLogger(__name__)

class ThreadBackend(Backend):
    """Run tasks on threads of this process (good for GIL-releasing work)."""

    name = "threads"
    remote = False  # threads share memory: nothing needs to pickle

    def __init__(self, workers: int | None = None):
        super().__init__(workers or 4)
        self._executor = concurrent.futures.ThreadPoolExecutor(self.workers)

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        futures = {self._executor.submit(fn, task): i for i, task in enumerate(tasks)}
        try:
            for future in concurrent.futures.as_completed(futures):
                exc = future.exception()  # the contract: a task that raised is data
                yield futures[future], future.result() if exc is None else Failure.capture(exc)
        finally:  # Ctrl-C or an abandoned iterator: drop what has not started
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


register_backend("threads", ThreadBackend)

if __name__ == "__main__":
    logging.basicConfig(format="%(message)s")
    LOGGER.setLevel(logging.INFO)
    with get_backend_class("threads")(workers=2) as backend:
        results = dict(backend.map_unordered(square, range(10)))
    LOGGER.info("squares: %s", [results[i] for i in range(10)])

    ts = np.linspace(0.001, 0.02, 40)
    sweep = Ensemble(CAVITY_KATSCRIPT).vary({"m1.T": ts, "m1.R": 1 - ts})
    on_threads = sweep.run(backend="threads", workers=4, batch=False, progress=False)
    serial = sweep.run(backend="serial", batch=False, progress=False)
    assert np.array_equal(on_threads["P"].values, serial["P"].values)
    LOGGER.info("40 jobs on 4 threads: identical to serial, %d failed", len(on_threads.failures))
