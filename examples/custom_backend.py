"""Plug a new engine into katparallel: a backend on a thread pool.

Run it with ``python examples/custom_backend.py``. The same ~20 lines work for
any engine with futures (dask, a batch-queue client, ...).
"""

import concurrent.futures
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from katparallel._testing import square
from katparallel.backends import Backend, get_backend_class, register_backend

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
                yield futures[future], future.result()
        finally:  # Ctrl-C or an abandoned iterator: drop what has not started
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


register_backend("threads", ThreadBackend)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with get_backend_class("threads")(workers=2) as backend:
        results = dict(backend.map_unordered(square, range(10)))
    LOGGER.info("squares: %s", [results[i] for i in range(10)])
