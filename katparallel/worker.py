"""Worker side: run a chunk of jobs and reduce them to arrays.

``run_chunk`` is the one function every backend ships. It never raises: a
job that fails is returned as a :class:`Failure` carrying the exception's type,
message and formatted traceback, and the other jobs of the chunk go on.

Per job it (1) derives the job's generator from the seed and its index and
reseeds the global RNGs (only when user code -- a factory or perturb
functions -- runs in the job), (2) takes the cached model, or a fresh one when
a factory or perturb functions change its structure, (3) sets the job's
parameter values, (4) runs the analysis, (5) restores the values. Chunks
marked ``batch`` take the fast path of :mod:`katparallel.batch` instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import dill
import numpy as np

from .errors import Failure
from .sampling import job_rng

LOGGER = logging.getLogger(__name__)

__all__ = ("Chunk", "ChunkResult", "Failure", "merge_results", "run_chunk", "run_jobs")


@dataclass
class Chunk:
    """Jobs shipped to a worker together: indices, values, and how to run them."""

    adapter: Any
    analysis: Any
    paths: tuple[str, ...]
    indices: np.ndarray
    values: np.ndarray  # shape (len(indices), len(paths))
    seed: int
    perturbs: bytes | None = None  # dill bytes of a tuple of fn(model, rng)
    keep_solutions: bool = False
    batch: bool = False  # step the values inside one simulation (katparallel.batch)

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, positions) -> "Chunk":
        """The jobs at ``positions`` of this chunk, to run job by job."""
        positions = np.asarray(positions, dtype=np.int64)
        return replace(
            self, indices=self.indices[positions], values=self.values[positions], batch=False
        )

    def split(self) -> list["Chunk"]:
        """One chunk per job, run job by job (used to retry a chunk whose worker died)."""
        return [self.subset([i]) for i in range(len(self))]


@dataclass
class ChunkResult:
    """Results of a chunk: outputs of the jobs that succeeded, stacked.

    ``outputs[name][k]`` belongs to job ``indices[k]``.
    """

    indices: np.ndarray
    outputs: dict[str, np.ndarray]
    axes: dict[str, tuple]
    failures: list[Failure] = field(default_factory=list)
    solutions: list | None = None


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not rows:
        return {}
    return {name: np.stack([row[name] for row in rows]) for name in rows[0]}


def merge_results(parts: list[ChunkResult]) -> ChunkResult:
    """One :class:`ChunkResult` holding the jobs of ``parts`` (no solutions kept)."""
    parts = [p for p in parts if len(p.indices) or p.failures]
    if len(parts) == 1:
        return parts[0]
    outputs, axes = {}, {}
    for part in parts:
        if len(part.indices):
            for name, values in part.outputs.items():
                outputs.setdefault(name, []).append(values)
            axes = axes or part.axes
    return ChunkResult(
        np.concatenate([p.indices for p in parts]) if parts else np.empty(0, dtype=np.int64),
        {name: np.concatenate(arrays) for name, arrays in outputs.items()},
        axes,
        [f for p in parts for f in p.failures],
    )


def run_chunk(chunk: Chunk) -> ChunkResult:
    """Run every job of ``chunk`` (batched or job by job); never raises."""
    if chunk.batch:
        from .batch import run_batched

        return run_batched(chunk)
    return run_jobs(chunk)


def run_jobs(chunk: Chunk) -> ChunkResult:
    """Run the jobs of ``chunk`` one by one; never raises."""
    adapter = chunk.adapter
    perturbs = dill.loads(chunk.perturbs) if chunk.perturbs else ()
    needs_fresh = adapter.is_factory or bool(perturbs)
    done, rows, failures, solutions, axes = [], [], [], [], {}
    for index, row in zip(chunk.indices.tolist(), chunk.values):
        values = dict(zip(chunk.paths, row.tolist()))
        undo = None
        try:
            if needs_fresh:
                rng = job_rng(chunk.seed, index)
                model = adapter.fresh_model(values, rng)
                for fn in perturbs:
                    fn(model, rng)
            else:
                model = adapter.base_model()
            undo = adapter.apply(model, values)
            solution = adapter.run(model, chunk.analysis)
            out = adapter.outputs(solution)
        except Exception as exc:
            failures.append(Failure.capture(exc, index, values))
            continue
        finally:
            if undo is not None and not needs_fresh and not adapter.restore(undo):
                LOGGER.warning("could not restore the model after job %d; reparsing", index)
                adapter.discard()
        done.append(index)
        rows.append(out.values)
        axes = axes or out.axes
        if chunk.keep_solutions:
            solutions.append(solution)
    return ChunkResult(
        np.asarray(done, dtype=np.int64),
        _stack(rows),
        axes,
        failures,
        solutions if chunk.keep_solutions else None,
    )
