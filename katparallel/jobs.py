"""Jobs as they travel: chunks out to workers, chunk results back.

A :class:`Chunk` carries job indices, parameter full names and values, never
live objects; a :class:`ChunkResult` carries stacked outputs, the failures and
a count of the warnings raised. Both pickle with any engine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import Failure

__all__ = ("Chunk", "ChunkResult", "merge_results", "outputs_differ", "stack_outputs")


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
    batch: bool = False  # step the values inside one simulation (the adapter's fast path)

    def __len__(self) -> int:
        return len(self.indices)

    def job_values(self, position: int) -> dict[str, float]:
        """Parameter values of the job at ``position`` in this chunk."""
        return dict(zip(self.paths, self.values[position].tolist()))

    def subset(self, positions) -> "Chunk":
        """The jobs at ``positions`` of this chunk, to run job by job."""
        positions = np.asarray(positions, dtype=np.int64)
        return replace(
            self, indices=self.indices[positions], values=self.values[positions], batch=False
        )

    def shared(self) -> tuple[Any, Any, bytes | None]:
        """What every chunk of a run has in common: the model's recipe, the
        analysis and the perturb functions (the bulk of a chunk's bytes)."""
        return (self.adapter, self.analysis, self.perturbs)

    def without_shared(self) -> "Chunk":
        """This chunk without :meth:`shared`, to travel beside it (see :meth:`with_shared`)."""
        return replace(self, adapter=None, analysis=None, perturbs=None)

    def with_shared(self, shared: tuple[Any, Any, bytes | None]) -> "Chunk":
        """This chunk with what :meth:`shared` returned put back."""
        adapter, analysis, perturbs = shared
        return replace(self, adapter=adapter, analysis=analysis, perturbs=perturbs)

    def split(self) -> list["Chunk"]:
        """One chunk per job, run job by job (used to retry a chunk whose worker died)."""
        return [self.subset([i]) for i in range(len(self))]

    def failed(self, failure: Failure) -> "ChunkResult":
        """Every job of this chunk recorded as ``failure``."""
        failures = [failure.for_job(int(i), self.job_values(k)) for k, i in enumerate(self.indices)]
        return ChunkResult(np.empty(0, dtype=np.int64), {}, {}, failures)


@dataclass
class ChunkResult:
    """Results of a chunk: outputs of the jobs that succeeded, stacked.

    ``outputs[name][k]`` belongs to job ``indices[k]``; ``warnings`` counts
    each distinct ``"Category: message"`` raised while the chunk ran;
    ``setup_seconds`` is the time spent readying shared work (building the one
    simulation of a batched chunk) rather than on the jobs themselves.
    """

    indices: np.ndarray
    outputs: dict[str, np.ndarray]
    axes: dict[str, tuple]
    failures: list[Failure] = field(default_factory=list)
    solutions: list | None = None
    warnings: Counter = field(default_factory=Counter)
    setup_seconds: float = 0.0


def outputs_differ(got: dict[str, tuple], have: dict[str, tuple]) -> str | None:
    """Why outputs shaped ``got`` cannot join outputs shaped ``have`` (None if they can).

    Both map output names to the shape of one job's value.
    """
    if got == have:
        return None
    return (
        f"these outputs {got} differ from the other jobs' {have} (names and shapes); "
        "every job of a study must give the same outputs: a factory must build "
        "models with the same detectors and axes."
    )


def stack_outputs(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-job outputs (all with the same names and shapes) into arrays."""
    if not rows:
        return {}
    return {name: np.stack([row[name] for row in rows]) for name in rows[0]}


def merge_results(parts: list[ChunkResult]) -> ChunkResult:
    """One :class:`ChunkResult` holding the jobs of ``parts`` (no solutions kept).

    Parts must have the same outputs (names and shapes), as the jobs of one
    chunk do.
    """
    parts = [p for p in parts if len(p.indices) or p.failures or p.warnings]
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
        warnings=sum((p.warnings for p in parts), Counter()),
        setup_seconds=sum(p.setup_seconds for p in parts),
    )
