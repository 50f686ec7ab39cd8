"""Serial backend: run every task in this process, in order."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .base import Backend, check_workers

__all__ = ("SerialBackend",)


class SerialBackend(Backend):
    """Run tasks one after another in the calling process.

    Nothing is pickled, so this is the backend to debug with: breakpoints and
    print statements in factories and perturb functions work as usual.
    """

    name = "serial"
    remote = False

    def __init__(self, workers: int | None = None):
        check_workers(workers)  # a bad count is an error here too, though unused
        super().__init__(1)

    def map_unordered(
        self, fn: Callable[[Any], Any], tasks: Sequence[Any]
    ) -> Iterator[tuple[int, Any]]:
        for i, task in enumerate(tasks):
            yield i, fn(task)
