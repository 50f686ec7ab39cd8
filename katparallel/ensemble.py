"""Ensemble: describe a study, then run it anywhere.

::

    Ensemble(model).vary("m1.T", ts).vary("L0.P", ps).run(backend="multiprocessing")

``vary``, ``sample`` and ``perturb`` return a new Ensemble (the original is
unchanged), check their arguments at once, and run nothing. ``run`` turns the
description into a :class:`~katparallel.plan.Plan`, cuts it into chunks, sends
them to a backend and gathers the results.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dill
import numpy as np

from . import __version__
from .adapters import adapter_for
from .backends import get_backend_class
from .backends.auto import AutoBackend
from .backends.base import Backend
from .backends.serial import SerialBackend
from .batch import batch_chunk_size, decide_batch
from .errors import InvalidValuesError, JobError
from .plan import SAMPLE_DIM, Axis, Plan, as_values
from .results import Collector, Results
from .runner import chunk_size_for, execute, make_chunks, progress_bar
from .sampling import as_distribution, new_seed, sampling_rng
from .store import Store, describe_analysis, installed_version, study_definition

LOGGER = logging.getLogger(__name__)

__all__ = ("Ensemble",)


@dataclass(frozen=True)
class _Sampled:
    n: int
    distributions: Mapping[str, Any]


class Ensemble:
    """A study: one model, the parameters to vary, and how to perturb it.

    Parameters
    ----------
    model : finesse.Model, str, path, pykat kat or callable
        A Finesse 3 model; KatScript text; Finesse 2 (kat) text or a ``.kat``
        file; a pykat ``kat`` object; or a factory ``factory(values, rng)``
        called in the worker for every job, returning a fresh model (nothing
        but the factory itself needs to pickle).
    seed : int, optional
        Seed of every random number in the study. Without one, a seed is
        drawn when the study runs and recorded in the results.
    syntax : {"katscript", "finesse2"}, optional
        Which language model text is written in (by default: try both).

    Examples
    --------
    >>> res = Ensemble(model).vary("m1.T", np.linspace(0.01, 0.99, 99)).run()
    >>> res["P"].plot()
    """

    def __init__(self, model: Any, *, seed: int | None = None, syntax: str | None = None):
        self._adapter = adapter_for(model, syntax=syntax)
        self._axes: tuple[dict[str, np.ndarray] | _Sampled, ...] = ()
        self._perturbs: tuple[Callable, ...] = ()
        self._seed = _check_seed(seed)

    def _copy(self, **changes) -> "Ensemble":
        new = object.__new__(Ensemble)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    @property
    def paths(self) -> tuple[str, ...]:
        """Every parameter path the study varies or samples."""
        out = []
        for axis in self._axes:
            out.extend(axis.distributions if isinstance(axis, _Sampled) else axis)
        return tuple(out)

    def _add_paths(self, new: Mapping[str, Any], first_values: Mapping[str, float]):
        repeated = sorted(set(new) & set(self.paths))
        if repeated:
            raise InvalidValuesError(
                f"{', '.join(map(repr, repeated))} is already varied in this ensemble; "
                "give each parameter one axis (use vary({...}) to step several together)."
            )
        self._adapter.check_paths(list(new), first_values)

    def vary(
        self, path: str | Mapping[str, Any], values: Any = None
    ) -> "Ensemble":
        """Add an axis: ``vary("m1.T", ts)``, or ``vary({"m1.T": ts, "m1.R": 1 - ts})``.

        Each call adds a dimension (a second call makes an outer-product grid,
        axes in call order). A dict steps several parameters together along
        one axis (they need equally many values); the axis is named after its
        first path, the others become coordinates along it.

        Raises
        ------
        UnknownParameterError
            If a path is not a parameter of the model (with close matches).
        InvalidValuesError
            If values are empty, non-numeric, NaN, or of different lengths.
        """
        if isinstance(path, Mapping):
            if values is not None:
                raise TypeError("vary({path: values, ...}) takes no second argument")
            spec = dict(path)
        elif isinstance(path, str):
            if values is None:
                raise TypeError(f"vary({path!r}, values): the values are missing")
            spec = {path: values}
        else:
            raise TypeError(f"vary() takes a parameter path or a dict of them, got {path!r}")
        if not spec:
            raise InvalidValuesError("vary({}) has no parameters; name at least one.")
        arrays = {p: as_values(p, v) for p, v in spec.items()}
        Axis(next(iter(arrays)), arrays)  # checks equal lengths
        self._add_paths(arrays, {p: float(v[0]) for p, v in arrays.items()})
        return self._copy(_axes=self._axes + (arrays,))

    def sample(
        self,
        n: int,
        distributions: Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> "Ensemble":
        """Add a Monte Carlo axis of ``n`` draws, named ``"sample"``.

        Parameters
        ----------
        n : int
            Number of draws (jobs along this axis).
        distributions : dict, optional
            Parameter path -> :class:`Normal`, :class:`Uniform`,
            :class:`LogNormal`, or a callable ``(rng, n) -> array``. Omit it to
            run ``n`` jobs that differ only in their random generator (for
            :meth:`perturb` or a factory).
        seed : int, optional
            The study's seed (same seed, same draws, on any backend).
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InvalidValuesError(f"sample(n, ...) needs a positive whole number n, got {n!r}")
        if any(isinstance(a, _Sampled) for a in self._axes):
            raise InvalidValuesError(
                "This ensemble already samples; give all distributions in one "
                "sample(n, {...}) call so they are drawn together."
            )
        dists = {str(p): as_distribution(d) for p, d in (distributions or {}).items()}
        probe_rng = np.random.default_rng(0)
        self._add_paths(dists, {p: float(d.draw(probe_rng, 1)[0]) for p, d in dists.items()})
        changes = {"_axes": self._axes + (_Sampled(int(n), dists),)}
        if seed is not None:
            changes["_seed"] = _check_seed(seed)
        return self._copy(**changes)

    def perturb(self, fn: Callable[[Any, np.random.Generator], Any]) -> "Ensemble":
        """Call ``fn(model, rng)`` on each job's own copy of the model before it runs.

        For anything values cannot express: adding maps or components,
        misaligning several optics at once. ``rng`` is the job's generator.
        """
        if not callable(fn):
            raise TypeError(f"perturb() takes a function fn(model, rng), got {fn!r}")
        return self._copy(_perturbs=self._perturbs + (fn,))

    def plan(self, seed: int | None = None) -> Plan:
        """The jobs this ensemble runs: draws the samples for ``seed``."""
        seed = _check_seed(seed) if seed is not None else self._seed
        if seed is None:
            seed = new_seed()
        axes = []
        for number, axis in enumerate(self._axes):
            if isinstance(axis, _Sampled):
                rng = sampling_rng(seed, number)
                values = {}
                for path, dist in axis.distributions.items():
                    values[path] = as_values(path, dist.draw(rng, axis.n))
                    if len(values[path]) != axis.n:
                        raise InvalidValuesError(
                            f"The distribution of {path!r} returned {len(values[path])} "
                            f"values, not the {axis.n} asked for."
                        )
                axes.append(Axis(SAMPLE_DIM, values, size=axis.n))
            else:
                axes.append(Axis(next(iter(axis)), axis))
        return Plan(tuple(axes), seed)

    def describe(self) -> str:
        """What :meth:`run` would do, without doing it."""
        if self._seed is None:
            return self.plan(seed=0).describe(seed=False) + "; seed drawn when run"
        return self.plan().describe()

    def run(
        self,
        analysis: Any = None,
        *,
        backend: str | Backend = "auto",
        workers: int | None = None,
        progress: bool = True,
        keep_solutions: bool = False,
        raise_on_error: bool = False,
        timeout: float | None = None,
        batch: bool | None = None,
        store: str | os.PathLike | None = None,
        resume: bool | None = None,
        retry_failed: bool = False,
    ) -> Results:
        """Run every job and gather the results.

        Parameters
        ----------
        analysis : finesse action or str, optional
            What each job runs; default the model's own analysis (e.g. its
            ``xaxis``), else ``Noxaxis``. Text is KatScript for Finesse 3
            models (``"xaxis(L0.P, lin, 1, 10, 100)"``) and Finesse 2 syntax
            for pykat kat objects (``"xaxis l1 P lin 1 10 100"``).
        backend : str or Backend
            ``"serial"``, ``"multiprocessing"``, ``"pathos"``, ``"ipyparallel"``,
            ``"mpi"``, ``"auto"`` (the default: the first job runs here and
            is timed; a study whose expected work is under half a second
            stays here, anything bigger goes to a process pool with one
            worker per core), or a :class:`Backend` instance.
        workers : int, optional
            Parallel workers (default: one per core).
        progress : bool
            Show a progress bar.
        keep_solutions : bool
            Keep each job's raw solution in :attr:`Results.solutions`.
        raise_on_error : bool
            Raise :class:`JobError` if any job failed (default: record it in
            :attr:`Results.failures` and keep the other results).
        timeout : float, optional
            Seconds one job may take before it is stopped and recorded as failed.
        batch : bool, optional
            Step the jobs' values inside one built simulation per chunk
            (:mod:`katparallel.batch`; Finesse 3 models whose jobs differ only
            in parameter values). ``None`` decides from the plan, ``True``
            insists (``ValueError`` if the jobs cannot be batched), ``False``
            runs job by job.
        store : str or path, optional
            Checkpoint file (SQLite, :mod:`katparallel.store`): every finished
            job is committed as it arrives, and running the same study with
            the same store again runs only the jobs it lacks (a study without
            a seed reuses the stored one). A store holding another study is
            refused (:class:`~katparallel.store.StudyMismatch`).
        resume : bool, optional
            With ``store``: ``None`` continues the stored study or starts one,
            ``True`` insists the store already holds it, ``False`` insists the
            store is new.
        retry_failed : bool
            With ``store``: run the jobs the store records as failed again
            (say, killed by the out-of-memory killer), as well as the missing
            ones. By default a recorded failure is final.
        """
        if retry_failed and store is None:
            raise ValueError("retry_failed=True needs store=: the failures to retry are in a store")
        action = self._adapter.parse_analysis(analysis)
        with _checkpoint(store) as checkpoint:
            seed = self._seed if self._seed is not None or checkpoint is None else checkpoint.seed
            plan = self.plan(seed)
            todo = np.arange(plan.n_jobs)
            if checkpoint is not None:
                checkpoint.begin(_definition(self, plan, analysis), plan, resume)
                if retry_failed:
                    LOGGER.info("retrying %d failed jobs", len(checkpoint.forget_failures()))
                todo = np.setdiff1d(todo, checkpoint.done_indices(), assume_unique=True)
            engine = _make_backend(backend, workers, timeout)
            batched = decide_batch(
                batch, self._adapter, plan, action, perturbs=bool(self._perturbs),
                keep_solutions=keep_solutions, timeout=timeout,
            )
            chunks_of = functools.partial(
                make_chunks,
                plan,
                adapter=self._adapter,
                analysis=action,
                perturbs=dill.dumps(self._perturbs, recurse=True) if self._perturbs else None,
                keep_solutions=keep_solutions,
                batch=batched,
            )
            collector = Collector(plan, keep_solutions)
            on_result = collector.add
            if checkpoint is not None:
                checkpoint.load_into(collector)
                on_result = _recording(checkpoint, plan, collector)
            LOGGER.info("running %s on %s", plan.describe(), engine.name)
            started = time.perf_counter()
            done = plan.n_jobs - len(todo)
            with progress_bar(plan.n_jobs, engine.name, progress, initial=done) as bar:
                if isinstance(engine, AutoBackend):
                    engine, todo = _probe_and_choose(engine, todo, batched, chunks_of, on_result)
                    bar.update(plan.n_jobs - done - len(todo))
                    bar.set_description(engine.name)
                if batched:
                    size = batch_chunk_size(len(todo), engine.n_workers)
                else:
                    size = 1 if timeout else chunk_size_for(len(todo), engine.n_workers, engine.remote)
                execute(chunks_of(todo, size), engine, on_result, bar.update)
            elapsed = time.perf_counter() - started
            failures = sorted(collector.failures, key=lambda f: f.index)
            if failures:
                LOGGER.warning(
                    "%d of %d jobs failed; see Results.failures. First: %s",
                    len(failures), plan.n_jobs, failures[0].summary,
                )
            if failures and raise_on_error:
                first = failures[0]
                raise JobError(
                    f"{len(failures)} of {plan.n_jobs} jobs failed; first: {first.summary}"
                ) from first
            attrs = _attributes(self, plan, engine, elapsed, failures)
            return Results(collector.dataset(attrs), failures, collector.solutions)


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidValuesError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


#: Jobs in the in-process probe that sizes an ``auto`` run when batched (one
#: batched job costs microseconds, so one alone would say nothing).
PROBE_BATCHED_JOBS = 64


def _probe_and_choose(
    auto: AutoBackend, todo: np.ndarray, batched: bool, chunks_of: Callable, on_result: Callable
) -> tuple[Backend, np.ndarray]:
    """Run the first job(s) here, time them, and let ``auto`` pick the engine for the rest.

    Returns the chosen backend and the jobs still to run. With a timeout nothing
    runs here: only a pool can stop a job that runs too long.
    """
    if auto.timeout is not None:
        return auto.choose(len(todo)), todo
    probe, rest = np.split(todo, [PROBE_BATCHED_JOBS if batched else 1])
    if len(rest) == 0:
        return SerialBackend(), todo
    started = time.perf_counter()
    execute(chunks_of(probe, len(probe)), SerialBackend(), on_result)
    seconds_per_job = (time.perf_counter() - started) / len(probe)
    return auto.choose(len(rest), seconds_per_job), rest


def _make_backend(backend: str | Backend, workers: int | None, timeout: float | None) -> Backend:
    from .backends import make_backend

    return make_backend(backend, workers, timeout)


def _attributes(ensemble: Ensemble, plan: Plan, engine: Backend, elapsed: float, failures) -> dict:
    attrs = {
        "seed": plan.seed,
        "plan": plan.describe(),
        "model": ensemble._adapter.describe(),
        "backend": engine.name,
        "workers": engine.n_workers,
        "elapsed_seconds": elapsed,
        "n_jobs": plan.n_jobs,
        "n_failed": len(failures),
        "katparallel_version": __version__,
    }
    attrs["finesse_version"] = installed_version("finesse")
    return attrs


def _checkpoint(path: str | os.PathLike | None) -> contextlib.AbstractContextManager:
    """The run's :class:`~katparallel.store.Store` (locked for writing), or None."""
    return contextlib.nullcontext() if path is None else Store(path, write=True)


def _recording(store: Store, plan: Plan, collector: Collector) -> Callable:
    """Commit each chunk result to ``store``, then collect it."""

    def on_result(result) -> None:
        store.add(result, plan)
        collector.add(result)

    return on_result


def _definition(ensemble: Ensemble, plan: Plan, analysis: Any) -> dict[str, str]:
    """What the store records: with the source of a factory and perturb functions,
    so editing one of them is not mistaken for the same study."""
    adapter = ensemble._adapter
    model = adapter.describe()
    if adapter.is_factory:
        model += "\n" + _source_of(dill.loads(adapter.data))
    perturbs = "\n".join(
        f"{getattr(fn, '__qualname__', repr(fn))}\n{_source_of(fn)}" for fn in ensemble._perturbs
    )
    return study_definition(model, plan, describe_analysis(analysis), perturbs)


def _source_of(fn: Callable) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):  # built in, or defined where no source is kept
        return ""
