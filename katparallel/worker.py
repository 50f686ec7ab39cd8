"""Worker side: run a chunk of jobs and reduce them to arrays.

``run_chunk`` is the one function every backend ships. It never raises: a
job that fails is returned as a :class:`~katparallel.errors.Failure` carrying
the exception's type, message and formatted traceback, and the other jobs of
the chunk go on; anything that goes wrong around the jobs (a perturb function
that cannot be loaded) fails each job of the chunk with its traceback.

Per job it (1) derives the job's generator from the seed and its index and
reseeds the global RNGs (only when user code -- a factory or perturb
functions -- runs in the job), (2) takes a model in the base state from the
adapter (a factory's, a copy for perturb functions, or the cached one, which
the adapter puts back afterwards), (3) sets the job's values, (4) runs the
analysis, (5) reduces the solution. Chunks marked ``batch`` go to the
adapter's fast path first; the jobs it hands back run here one by one.

Warnings raised while a chunk runs are counted, not shown, and travel back
with its result, so a study reports each distinct warning once.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import dill
import numpy as np

from .errors import Failure
from .jobs import Chunk, ChunkResult, merge_results, outputs_differ, stack_outputs
from .sampling import job_rng

LOGGER = logging.getLogger(__name__)

__all__ = ("run_chunk", "run_shared_chunk", "run_jobs")


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class _WarningCounter:
    """Counts the warnings of each thread that runs a chunk; shows the others.

    ``warnings.catch_warnings`` is not thread-safe: chunks running on threads
    side by side could leave it installed for good. Instead one dispatcher is
    installed while any chunk runs, and each thread counts into its own Counter.
    """

    def __init__(self):
        self.local = threading.local()
        self.lock = threading.Lock()
        self.active = 0
        self.saved: tuple = ()

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:
        counts = getattr(self.local, "counts", None)
        if counts is None:  # a thread that runs no chunk
            self.saved[0](message, category, filename, lineno, file, line)
            return
        # Numbers become "#": "unstable with g = 1.21" and "g = 1.44" count as one.
        counts[f"{category.__name__}: {_NUMBER.sub('#', str(message).strip())}"] += 1

    @contextlib.contextmanager
    def counting(self) -> Iterator[Counter]:
        with self.lock:
            if not self.active:
                self.saved = (warnings.showwarning, warnings.filters[:])
                warnings.showwarning = self.show
                warnings.simplefilter("always")
                # tqdm.auto in an ipyparallel engine without ipywidgets, about
                # Finesse's progress bars, which are off in workers.
                warnings.filterwarnings("ignore", message="IProgress not found")
            self.active += 1
        self.local.counts = counts = Counter()
        try:
            yield counts
        finally:
            self.local.counts = None
            with self.lock:
                self.active -= 1
                if not self.active:
                    warnings.showwarning, warnings.filters[:] = self.saved


_WARNINGS = _WarningCounter()


def run_chunk(chunk: Chunk) -> ChunkResult:
    """Run every job of ``chunk`` (batched or job by job); never raises."""
    with _WARNINGS.counting() as counts:
        try:
            result = _run(chunk)
        except Exception as exc:  # noqa: BLE001 - the contract: failures are data
            result = chunk.failed(Failure.capture(exc))
    result.warnings.update(counts)
    return result


def run_shared_chunk(shared: tuple, chunk: Chunk) -> ChunkResult:
    """:func:`run_chunk` of a chunk sent without what every chunk shares
    (:meth:`Chunk.without_shared`), given ``shared`` beside it."""
    return run_chunk(chunk.with_shared(shared))


def _run(chunk: Chunk) -> ChunkResult:
    if not chunk.batch:
        return run_jobs(chunk)
    stepped, per_job = chunk.adapter.step(chunk)
    if not per_job:
        return stepped
    return merge_results([stepped, run_jobs(chunk.subset(sorted(per_job)))])


class _Rows:
    """Outputs of a chunk's jobs, checked to have the same names and shapes."""

    def __init__(self, keep_solutions: bool):
        self.indices: list[int] = []
        self.rows: list[dict[str, np.ndarray]] = []
        self.axes: dict[str, tuple] = {}
        self.failures: list[Failure] = []
        self.solutions: list | None = [] if keep_solutions else None

    def add(self, index: int, outputs: Any, solution: Any) -> None:
        """Keep a job's outputs; raise ValueError if they differ from the first job's."""
        if self.rows:
            problem = outputs_differ(_shapes(outputs.values), _shapes(self.rows[0]))
            if problem:
                raise ValueError(problem)
        self.indices.append(index)
        self.rows.append(outputs.values)
        self.axes = self.axes or outputs.axes
        if self.solutions is not None:
            self.solutions.append(solution)

    def result(self) -> ChunkResult:
        return ChunkResult(
            np.asarray(self.indices, dtype=np.int64), stack_outputs(self.rows), self.axes,
            self.failures, self.solutions,
        )


def _shapes(values: Mapping[str, np.ndarray]) -> dict[str, tuple]:
    return {name: np.shape(v) for name, v in values.items()}


def run_jobs(chunk: Chunk) -> ChunkResult:
    """Run the jobs of ``chunk`` one by one; never raises for a job."""
    adapter = chunk.adapter
    perturbs = dill.loads(chunk.perturbs) if chunk.perturbs else ()
    user_code = adapter.is_factory or bool(perturbs)
    rows = _Rows(chunk.keep_solutions)
    for position, index in enumerate(chunk.indices.tolist()):
        values = chunk.job_values(position)
        try:
            rng = job_rng(chunk.seed, index) if user_code else None
            with adapter.job_model(values, rng, fresh=bool(perturbs)) as model:
                for fn in perturbs:
                    fn(model, rng)
                adapter.apply(model, values)
                solution = adapter.run(model, chunk.analysis)
                outputs = adapter.outputs(solution)
            rows.add(index, outputs, solution)
        except Exception as exc:  # noqa: BLE001 - recorded, the other jobs go on
            rows.failures.append(Failure.capture(exc, index, values))
    return rows.result()
