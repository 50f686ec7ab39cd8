"""Dispatch: turn a described study into results.

::

    Study ──plan──► Plan ──make_chunks──► [Chunk] ──backend.map_shared──►
        run_shared_chunk ──► ChunkResult ──► Collector (+ store) ──► Results

:class:`~katparallel.Ensemble` describes a study; :func:`run_study` runs it:
it opens the checkpoint store, decides whether jobs are stepped inside one
simulation, lets ``auto`` time the first jobs, cuts the rest into chunks and
collects what comes back. A chunk whose worker died is split into single jobs
and each is tried once more; a job that kills its worker twice is recorded as
a failure and the rest of the study goes on.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dill
import numpy as np

from . import __version__
from .backends import make_backend
from .backends.auto import AutoBackend
from .backends.base import Backend
from .backends.serial import SerialBackend
from .errors import Failure, JobError
from .jobs import Chunk, ChunkResult
from .plan import Plan
from .results import Collector, Results
from .store import Store, describe_analysis, installed_version, study_definition
from .worker import run_chunk, run_shared_chunk

LOGGER = logging.getLogger(__name__)

__all__ = ("Study", "RunOptions", "run_study", "make_chunks", "execute", "progress_bar")

# Chunks per worker: enough to balance uneven jobs, few enough that the
# per-chunk cost (pickling, a round trip) stays small.
CHUNKS_PER_WORKER = 8
#: Fewest jobs per batched chunk worth a simulation build (~2-10 ms against
#: ~2-150 µs a point on small models).
MIN_BATCH = 4000
#: Most batched chunks per worker (load balance and progress granularity).
MAX_CHUNKS_PER_WORKER = 16
#: Jobs in the in-process probe that sizes an ``auto`` run when batched (one
#: batched job costs microseconds, so one alone would say nothing).
PROBE_BATCHED_JOBS = 64


@dataclass(frozen=True)
class Study:
    """What :class:`~katparallel.Ensemble` hands the runner.

    Attributes
    ----------
    adapter : model adapter
        The model's recipe.
    plan_for : callable
        ``plan_for(seed)`` returns the plan (draws the samples for ``seed``).
    seed : int or None
        The study's own seed (None: use the store's, or draw one).
    perturbs : tuple of callables
        ``fn(model, rng)`` applied to each job's copy of the model.
    """

    adapter: Any
    plan_for: Callable[[int | None], Plan]
    seed: int | None
    perturbs: tuple[Callable, ...] = ()

    def definition(self, plan: Plan, analysis: Any) -> dict[str, str]:
        """What a store records: with the source of a factory and perturb
        functions, so editing one of them is not mistaken for the same study."""
        model = self.adapter.describe()
        if self.adapter.is_factory:
            model += "\n" + _source_of(dill.loads(self.adapter.data))
        perturbs = "\n".join(
            f"{getattr(fn, '__qualname__', repr(fn))}\n{_source_of(fn)}" for fn in self.perturbs
        )
        return study_definition(model, plan, describe_analysis(analysis), perturbs)


@dataclass(frozen=True)
class RunOptions:
    """The keyword arguments of :meth:`Ensemble.run <katparallel.Ensemble.run>`."""

    backend: str | Backend = "auto"
    workers: int | None = None
    progress: bool = True
    keep_solutions: bool = False
    raise_on_error: bool = False
    timeout: float | None = None
    batch: bool | None = None
    store: str | os.PathLike | None = None
    resume: bool | None = None
    retry_failed: bool = False


def run_study(study: Study, analysis: Any, options: RunOptions) -> Results:
    """Run every job of ``study`` not yet in its store and gather the results."""
    if options.retry_failed and options.store is None:
        raise ValueError("retry_failed=True needs store=: the failures to retry are in a store")
    action = study.adapter.parse_analysis(analysis)
    engine = make_backend(options.backend, options.workers, options.timeout)
    with _checkpoint(options.store) as store:
        plan, todo = _plan_and_todo(study, analysis, store, options)
        batched = decide_batch(options.batch, study, plan, action, options)
        collector = Collector(plan, options.keep_solutions)
        on_result = collector.add if store is None else _recording(store, plan, collector)
        if store is not None:
            store.load_into(collector)
        chunks_of = _chunker(study, plan, action, options, batched)
        LOGGER.info("running %s on %s", plan.describe(), engine.name)
        started = time.perf_counter()
        engine = _dispatch(engine, plan, todo, chunks_of, on_result, options, batched, study.adapter)
        results = _finish(study, plan, action, engine, time.perf_counter() - started, collector, options)
    study.adapter.after_run()
    return results


def _plan_and_todo(study: Study, analysis: Any, store: Store | None, options: RunOptions):
    """The plan and the indices of the jobs still to run (all of them without a store)."""
    seed = study.seed if study.seed is not None or store is None else store.seed
    plan = study.plan_for(seed)
    todo = np.arange(plan.n_jobs)
    if store is not None:
        store.begin(study.definition(plan, analysis), plan, options.resume)
        if options.retry_failed:
            LOGGER.info("retrying %d failed jobs", len(store.forget_failures()))
        todo = np.setdiff1d(todo, store.done_indices(), assume_unique=True)
    return plan, todo


def decide_batch(batch: bool | None, study: Study, plan: Plan, action: Any, options: RunOptions) -> bool:
    """Resolve ``run(batch=...)``: True, False, or None (decide from the plan).

    Raises
    ------
    ValueError
        If ``batch=True`` but the jobs cannot be batched (the message says why).
    """
    if batch is False:
        return False
    reason = _batch_reason(study, plan, action, options, forced=bool(batch))
    if reason is None:
        return True
    if batch:
        raise ValueError(
            f"run(batch=True) cannot step these jobs inside one simulation: {reason}. "
            "Use batch=None to let katparallel choose, or batch=False."
        )
    LOGGER.info("running job by job: %s", reason)
    return False


def _batch_reason(study: Study, plan: Plan, action: Any, options: RunOptions, forced: bool):
    if study.perturbs:
        return "perturb functions change each job's model"
    if options.keep_solutions:
        return "keep_solutions=True needs one Finesse solution per job"
    if options.timeout:
        return "timeout= limits single jobs, and a batched chunk runs many at once"
    return study.adapter.batch_reason(plan.paths, action, forced)


def _chunker(study: Study, plan: Plan, action: Any, options: RunOptions, batched: bool) -> Callable:
    """``chunks_of(indices, size)`` for this study."""
    perturbs = dill.dumps(study.perturbs, recurse=True) if study.perturbs else None

    def chunks_of(indices: np.ndarray, size: int) -> list[Chunk]:
        return make_chunks(
            plan, indices, size, adapter=study.adapter, analysis=action, perturbs=perturbs,
            keep_solutions=options.keep_solutions, batch=batched,
        )

    return chunks_of


def _dispatch(
    engine, plan, todo, chunks_of, on_result, options: RunOptions, batched: bool, adapter: Any
) -> Backend:
    """Run the jobs ``todo`` with a progress bar; return the engine that ran them."""
    done = plan.n_jobs - len(todo)
    with progress_bar(plan.n_jobs, engine.name, options.progress, initial=done) as bar:
        if isinstance(engine, AutoBackend):
            engine, todo = _probe_and_choose(
                engine, todo, batched, chunks_of, on_result, adapter.read_seconds()
            )
            bar.update(plan.n_jobs - done - len(todo))
            bar.set_description(engine.name)
        adapter.before_dispatch(engine.inherits_memory)
        if batched:
            size = batch_chunk_size(len(todo), engine.n_workers)
        elif options.timeout:
            size = 1
        else:
            size = chunk_size_for(len(todo), engine.n_workers, engine.remote)
        execute(chunks_of(todo, size), engine, on_result, bar.update)
    return engine


def _probe_and_choose(
    auto: AutoBackend, todo: np.ndarray, batched: bool, chunks_of: Callable, on_result: Callable,
    read_seconds: float,
) -> tuple[Backend, np.ndarray]:
    """Run the first job(s) here, time them, and let ``auto`` pick the engine for the rest.

    The probe's set-up (building a batched chunk's simulation) is told apart
    from the jobs' own cost: a worker pays it again, with reading the model.
    Returns the chosen backend and the jobs still to run. With a timeout nothing
    runs here: only a pool can stop a job that runs too long.
    """
    if auto.timeout is not None:
        return auto.choose(len(todo)), todo
    probe, rest = np.split(todo, [PROBE_BATCHED_JOBS if batched else 1])
    if len(rest) == 0:
        return SerialBackend(), todo
    setup = []

    def timed(result: ChunkResult) -> None:
        setup.append(result.setup_seconds)
        on_result(result)

    started = time.perf_counter()
    execute(chunks_of(probe, len(probe)), SerialBackend(), timed)
    seconds_per_job = max(time.perf_counter() - started - sum(setup), 0.0) / len(probe)
    return auto.choose(len(rest), seconds_per_job, sum(setup), read_seconds), rest


def _finish(study, plan, action, engine, elapsed, collector: Collector, options) -> Results:
    """Report failures and warnings once, then label the results."""
    failures = sorted(collector.failures, key=lambda f: f.index)
    for warning, count in collector.warnings.most_common():
        LOGGER.warning("raised %d times in this study: %s", count, warning)
    if failures:
        LOGGER.warning(
            "%d of %d jobs failed; see Results.failures. First: %s",
            len(failures), plan.n_jobs, failures[0].summary,
        )
        if options.raise_on_error:
            raise JobError(
                f"{len(failures)} of {plan.n_jobs} jobs failed; first: {failures[0].summary}"
            ) from failures[0]
    if not collector.arrays:  # every job failed: NaN outputs of the right shape
        collector.expect(study.adapter.expected_outputs(action))
    attrs = {
        "seed": plan.seed, "plan": plan.describe(), "model": study.adapter.describe(),
        "backend": engine.name, "workers": engine.n_workers, "elapsed_seconds": elapsed,
        "n_jobs": plan.n_jobs, "n_failed": len(failures), "katparallel_version": __version__,
        "finesse_version": installed_version("finesse"),
    }
    return Results(collector.dataset(attrs), failures, collector.solutions)


def chunk_size_for(n_jobs: int, n_workers: int, remote: bool) -> int:
    """Jobs per chunk for ``n_jobs`` spread over ``n_workers``."""
    if not remote:
        return max(1, math.ceil(n_jobs / 100))  # progress-bar granularity only
    return max(1, math.ceil(n_jobs / (n_workers * CHUNKS_PER_WORKER)))


def batch_chunk_size(n_jobs: int, n_workers: int) -> int:
    """Jobs per batched chunk: a whole number of chunks per worker, each worth a build."""
    per_worker = min(MAX_CHUNKS_PER_WORKER, max(1, n_jobs // (n_workers * MIN_BATCH)))
    return max(1, math.ceil(n_jobs / (n_workers * per_worker)))


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0) -> Any:
    """A notebook-aware tqdm bar counting jobs (a silent one when not ``enabled``).

    The finished bar stays on screen with its count, rate and time, in a
    terminal and in Jupyter (tqdm's ``leave=True``).
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="job", desc=desc, disable=not enabled,
                leave=True)


def make_chunks(plan: Plan, indices: np.ndarray, size: int, **fields) -> list[Chunk]:
    """Cut the jobs ``indices`` of ``plan`` into chunks of at most ``size``."""
    return [
        Chunk(
            paths=plan.paths, indices=indices[start : start + size],
            values=plan.values_for(indices[start : start + size]), seed=plan.seed, **fields,
        )
        for start in range(0, len(indices), size)
    ]


def execute(
    chunks: Sequence[Chunk],
    backend: Backend,
    on_result: Callable[[ChunkResult], None],
    progress: Callable[[int], None] | None = None,
) -> None:
    """Run ``chunks`` on ``backend``, passing each :class:`ChunkResult` to ``on_result``.

    What the chunks share (the model's recipe, the analysis) goes to the
    backend once, beside them (:meth:`Backend.map_shared`). Chunks whose
    worker crashed are retried once, job by job; a chunk that comes back as
    anything but a result fails each of its jobs.
    """
    queue: Sequence[Chunk] = chunks
    retry = True
    while queue:
        crashed: list[Chunk] = []
        for position, outcome in _map_chunks(backend, queue):
            chunk = queue[position]
            if isinstance(outcome, ChunkResult):
                on_result(outcome)
            elif isinstance(outcome, Failure) and outcome.crashed and retry:
                LOGGER.warning("worker died running jobs %s; retrying them once", chunk.indices.tolist())
                crashed.extend(chunk.split())
                continue
            else:
                on_result(chunk.failed(_as_failure(outcome)))
            if progress is not None:
                progress(len(chunk))
        queue, retry = crashed, False


def _map_chunks(backend: Backend, chunks: Sequence[Chunk]):
    """``backend``'s outcomes of ``chunks``, what they share sent once if they all share it."""
    shared = chunks[0].shared()
    if any(any(a is not b for a, b in zip(c.shared(), shared)) for c in chunks):
        return backend.map_unordered(run_chunk, chunks)
    return backend.map_shared(run_shared_chunk, shared, [c.without_shared() for c in chunks])


def _as_failure(outcome: Any) -> Failure:
    if isinstance(outcome, Failure):
        return outcome
    return Failure(None, None, type(outcome).__name__, f"the backend returned {outcome!r}, not a result")


def _checkpoint(path: str | os.PathLike | None) -> contextlib.AbstractContextManager:
    """The run's :class:`~katparallel.store.Store` (locked for writing), or None."""
    return contextlib.nullcontext() if path is None else Store(path, write=True)


def _recording(store: Store, plan: Plan, collector: Collector) -> Callable:
    """Commit each chunk result to ``store``, then collect it."""

    def on_result(result: ChunkResult) -> None:
        store.add(result, plan)
        collector.add(result)

    return on_result


def _source_of(fn: Callable) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):  # built in, or defined where no source is kept
        return ""
