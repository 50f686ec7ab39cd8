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

Warnings raised while a chunk runs are counted, once per job that raised
them, not shown, and travel back with its result, so a study reports each
distinct warning once, with the number of jobs that raised it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import warnings
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import dill
import numpy as np

from .errors import Failure
from .jobs import Chunk, ChunkResult, merge_results, stack_outputs
from .sampling import job_rng

LOGGER = logging.getLogger(__name__)

__all__ = ("run_chunk", "run_shared_chunk", "run_jobs")


# A number, not digits inside a name: "g = 1.21" folds, "m1" and "ITM2" stay.
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

#: Ours, ahead of the user's filters: tqdm.auto in an ipyparallel engine without
#: ipywidgets, about Finesse's progress bars, which are off in workers.
_OWN_FILTERS = (("ignore", re.compile("IProgress not found", re.I), Warning, None, 0),)


class WarningScope:
    """The distinct warnings raised inside one ``with`` block (see :meth:`_WarningCounter.scope`).

    When the block ends, each warning raised while :attr:`point` was None is
    counted :attr:`times` times: once for a job (the default), once per job
    for a simulation build that ``times`` jobs shared, not at all (0) for work
    done again elsewhere. The fast path sets :attr:`point` to the position of
    the point it solves (one attribute store a point, no context of its own):
    a warning raised there counts once for that point, if it is in
    :attr:`points` (the points whose results came from here; None: all).
    """

    __slots__ = ("seen", "times", "point", "at", "points", "_local")

    def __init__(self, local: threading.local | None = None):
        self.seen: set[str] = set()
        self.times = 1
        self.point: int | None = None
        self.at: dict[int, set[str]] = {}
        self.points: Collection[int] | None = None
        self._local = local

    def add(self, key: str) -> None:
        """Record warning ``key`` as raised now."""
        if self.point is None:
            self.seen.add(key)
        else:
            self.at.setdefault(self.point, set()).add(key)

    def __enter__(self) -> "WarningScope":
        if self._local is not None:
            self._local.scopes.append(self)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._local is None:
            return
        self._local.scopes.pop()
        counts = self._local.counts
        for key in self.seen if self.times else ():
            counts[key] += self.times
        for point, keys in self.at.items():
            if self.points is None or point in self.points:
                counts.update(keys)


class _WarningCounter:
    """Counts the warnings of each thread that runs a chunk; shows the others.

    ``warnings.catch_warnings`` is not thread-safe: chunks running on threads
    side by side could leave it installed for good. Instead one dispatcher is
    installed while any chunk runs, and each thread counts into its own Counter.
    A warning counts once per job that raised it (see :meth:`scope`), however
    often the job raised it and whether or not jobs were batched. The filters
    in force are the user's (those where the study was run, shipped with the
    chunk), so ``error`` and ``ignore`` act as in a plain loop; a warning no
    filter decides is counted every time rather than once per code location.
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
        key = f"{category.__name__}: {_NUMBER.sub('#', str(message).strip())}"
        if self.local.scopes:
            self.local.scopes[-1].add(key)
        else:
            counts[key] += 1

    def scope(self) -> WarningScope:
        """A context collecting the warnings raised inside as one job's (nested scopes take theirs)."""
        counting = getattr(self.local, "scopes", None) is not None
        return WarningScope(self.local if counting else None)

    @contextlib.contextmanager
    def counting(self, filters: tuple | None = None) -> Iterator[Counter]:
        """Count the warnings of the chunk run inside, under ``filters`` (default: this process's)."""
        with self.lock:
            if not self.active:
                self.saved = (warnings.showwarning, warnings.filters[:])
                user = list(self.saved[1] if filters is None else filters)
                warnings.filters[:] = [*_OWN_FILTERS, *user, ("always", None, Warning, None, 0)]
                warnings._filters_mutated()
                warnings.showwarning = self.show
            self.active += 1
        self.local.counts = counts = Counter()
        self.local.scopes = []
        try:
            yield counts
        finally:
            self.local.counts = self.local.scopes = None
            with self.lock:
                self.active -= 1
                if not self.active:
                    warnings.showwarning, warnings.filters[:] = self.saved
                    warnings._filters_mutated()


_WARNINGS = _WarningCounter()


def run_chunk(chunk: Chunk) -> ChunkResult:
    """Run every job of ``chunk`` (batched or job by job); never raises."""
    with _WARNINGS.counting(chunk.warning_filters) as counts:
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
    if not getattr(chunk.adapter, "is_factory", False):
        with _WARNINGS.scope() as reading:
            # Read (or find) the model first: what reading it warns, the parent showed
            # when it read the model; workers that read it too must not count it again.
            reading.times = 0
            chunk.adapter.base_model()
    if not chunk.batch:
        return run_jobs(chunk)
    stepped, per_job = chunk.adapter.step(chunk, _WARNINGS.scope)
    if not per_job:
        return stepped
    return merge_results([stepped, run_jobs(chunk.subset(sorted(per_job)))])


class _Rows:
    """Outputs of a chunk's jobs, grouped by their names and shapes.

    Jobs whose outputs differ from the chunk's first success's are not failed
    here: which jobs fail depends on the whole study (job 0's outputs are the
    study's), so they travel back in :attr:`ChunkResult.others`.
    """

    def __init__(self, keep_solutions: bool):
        self.keep_solutions = keep_solutions
        self.groups: dict[tuple, _Group] = {}
        self.failures: list[Failure] = []

    def add(self, index: int, outputs: Any, solution: Any) -> None:
        """Keep a job's outputs with the jobs whose outputs have the same names and shapes."""
        key = tuple(_shapes(outputs.values).items())
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(outputs.axes, self.keep_solutions)
        group.indices.append(index)
        group.rows.append(outputs.values)
        if group.solutions is not None:
            group.solutions.append(solution)

    def result(self) -> ChunkResult:
        parts = [group.result() for group in self.groups.values()]
        if not parts:
            return ChunkResult(np.empty(0, dtype=np.int64), {}, {}, self.failures)
        first = parts[0]
        first.failures, first.others = self.failures, parts[1:]
        return first


class _Group:
    """The jobs of a chunk with the same outputs."""

    def __init__(self, axes: dict[str, tuple], keep_solutions: bool):
        self.axes = axes
        self.indices: list[int] = []
        self.rows: list[dict[str, np.ndarray]] = []
        self.solutions: list | None = [] if keep_solutions else None

    def result(self) -> ChunkResult:
        return ChunkResult(
            np.asarray(self.indices, dtype=np.int64), stack_outputs(self.rows), self.axes,
            solutions=self.solutions,
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
            with _WARNINGS.scope():
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
