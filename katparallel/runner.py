"""Dispatch: cut a plan into chunks, send them to a backend, collect results.

::

    Plan ──make_chunks──► [Chunk] ──backend.map_unordered(run_chunk)──►
        ChunkResult ──► Collector (+ store) ──► Results

A chunk whose worker died is split into single jobs and each is tried once
more; a job that kills its worker twice is recorded as a failure and the rest
of the study goes on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .backends.base import Backend
from .errors import Failure
from .plan import Plan
from .worker import Chunk, ChunkResult, run_chunk

LOGGER = logging.getLogger(__name__)

__all__ = ("make_chunks", "execute", "chunk_size_for", "progress_bar")

# Chunks per worker: enough to balance uneven jobs, few enough that the
# per-chunk cost (pickling, a round trip) stays small.
CHUNKS_PER_WORKER = 8


def chunk_size_for(n_jobs: int, n_workers: int, remote: bool) -> int:
    """Jobs per chunk for ``n_jobs`` spread over ``n_workers``."""
    if not remote:
        return max(1, math.ceil(n_jobs / 100))  # progress-bar granularity only
    return max(1, math.ceil(n_jobs / (n_workers * CHUNKS_PER_WORKER)))


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0) -> Any:
    """A notebook-aware tqdm bar counting jobs (a silent one when not ``enabled``).

    The finished bar stays on screen with its count, rate and time, in a
    terminal and in Jupyter (tqdm's ``leave=True``).
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="job", desc=desc, disable=not enabled,
                leave=True)


def make_chunks(
    plan: Plan,
    indices: np.ndarray,
    size: int,
    **fields,
) -> list[Chunk]:
    """Cut the jobs ``indices`` of ``plan`` into chunks of at most ``size``."""
    chunks = []
    for start in range(0, len(indices), size):
        part = indices[start : start + size]
        chunks.append(
            Chunk(
                paths=plan.paths,
                indices=part,
                values=plan.values_for(part),
                seed=plan.seed,
                **fields,
            )
        )
    return chunks


def _crash_failures(chunk: Chunk, error: Any, paths) -> ChunkResult:
    if not isinstance(error, Failure):  # a backend that broke the contract
        error = Failure(None, None, type(error).__name__, str(error))
    failures = [
        error.for_job(int(i), dict(zip(paths, row.tolist())))
        for i, row in zip(chunk.indices, chunk.values)
    ]
    return ChunkResult(np.empty(0, dtype=np.int64), {}, {}, failures)


def execute(
    chunks: list[Chunk],
    backend: Backend,
    on_result: Callable[[ChunkResult], None],
    progress: Callable[[int], None] | None = None,
) -> None:
    """Run ``chunks`` on ``backend``, passing each :class:`ChunkResult` to ``on_result``.

    Chunks whose worker crashed are retried once, job by job.
    """
    paths = chunks[0].paths if chunks else ()
    queue: Iterable[Chunk] = chunks
    retry = True
    while queue:
        crashed: list[Chunk] = []
        start = time.perf_counter()
        for position, outcome in backend.map_unordered(run_chunk, queue):
            chunk = queue[position]
            if isinstance(outcome, ChunkResult):
                on_result(outcome)
            elif isinstance(outcome, Failure) and outcome.crashed and retry:
                LOGGER.warning("worker died running jobs %s; retrying them once", chunk.indices.tolist())
                crashed.extend(chunk.split())
                continue
            else:
                on_result(_crash_failures(chunk, outcome, paths))
            if progress is not None:
                progress(len(chunk))
        LOGGER.debug("%d chunks in %.3f s", len(queue), time.perf_counter() - start)
        queue, retry = crashed, False
