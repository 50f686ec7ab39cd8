"""Ensemble: describe a study, then run it anywhere.

::

    Ensemble(model).vary("m1.T", ts).vary("L0.P", ps).run(backend="multiprocessing")

``vary``, ``sample`` and ``perturb`` return a new Ensemble (the original is
unchanged), check their arguments at once, and run nothing. ``run`` turns the
description into a :class:`~katparallel.plan.Plan`, cuts it into chunks, sends
them to a backend and gathers the results.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .adapters import adapter_for
from .backends.base import Backend
from .designs import Design, Morris, Saltelli, Sampled, annotate
from .errors import InvalidValuesError
from .plan import SAMPLE_DIM, Axis, Plan, as_values
from .results import Results
from .runner import RunOptions, Study, run_study
from .sampling import as_distribution, new_seed, sampling_rng

if TYPE_CHECKING:
    from .optimize import BatchExecutor, Objective

LOGGER = logging.getLogger(__name__)

__all__ = ("Ensemble",)


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
        self._axes: tuple[dict[str, np.ndarray] | Design, ...] = ()
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
            out.extend(axis.distributions if isinstance(axis, Design) else axis)
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
        method: str = "mc",
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
        method : {"mc", "lhs", "sobol", "halton"}
            ``"mc"``: each distribution draws its own values. The others place
            the points by a scrambled quasi-random design of
            :mod:`scipy.stats.qmc` (Latin hypercube, Sobol', Halton), mapped
            through each distribution's inverse CDF (a callable without one is
            refused). ``"sobol"`` needs ``n`` a power of 2.
        """
        _check_count(n, "sample(n, ...)")
        dists = {str(p): as_distribution(d) for p, d in (distributions or {}).items()}
        return self._designed(Sampled(int(n), dists, method), seed)

    def sobol(
        self,
        distributions: Mapping[str, Any],
        n: int = 1024,
        seed: int | None = None,
        second_order: bool = False,
    ) -> "Ensemble":
        """Add the design of Sobol' sensitivity indices: ``n (d + 2)`` jobs.

        Saltelli's design: base points A and B (``n`` each, one scrambled
        Sobol' sequence) and, for each of the ``d`` parameters, A with that
        column taken from B; with ``second_order``, also B with the column
        from A (``n (2 d + 2)`` jobs). The jobs differ only in parameter
        values, so Finesse models step them inside one simulation. Analyse
        with ``res.sensitivity(output, method="sobol")``.

        Parameters
        ----------
        distributions : dict
            Parameter path -> a distribution with an inverse CDF
            (:class:`Normal`, :class:`Uniform`, :class:`LogNormal`).
        n : int
            Base points, a power of 2.
        seed : int, optional
            The study's seed.
        second_order : bool
            Also run the rows second-order indices need.
        """
        _check_count(n, "sobol(n=...)")
        dists = {str(p): as_distribution(d) for p, d in distributions.items()}
        return self._designed(Saltelli(int(n), dists, bool(second_order)), seed)

    def morris(
        self,
        distributions: Mapping[str, Any],
        trajectories: int = 20,
        levels: int = 4,
        seed: int | None = None,
    ) -> "Ensemble":
        """Add a Morris screening design: ``trajectories (d + 1)`` jobs.

        Each trajectory changes one parameter at a time across a grid of
        ``levels`` quantiles of its distribution (SALib's design). Analyse
        with ``res.sensitivity(output, method="morris")``.
        """
        _check_count(trajectories, "morris(trajectories=...)")
        dists = {str(p): as_distribution(d) for p, d in distributions.items()}
        return self._designed(Morris(int(trajectories), dists, int(levels)), seed)

    def _designed(self, design: Design, seed: int | None) -> "Ensemble":
        """This ensemble with the sampled axis ``design`` added."""
        if any(isinstance(a, Design) for a in self._axes):
            raise InvalidValuesError(
                "This ensemble already samples; give all distributions in one "
                "sample(), sobol() or morris() call so they are drawn together."
            )
        probe_rng = np.random.default_rng(0)
        dists = design.distributions
        self._add_paths(dists, {p: float(d.draw(probe_rng, 1)[0]) for p, d in dists.items()})
        changes = {"_axes": self._axes + (design,)}
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

    def objective(
        self, paths: list[str], score: Callable, analysis: Any = None,
        on_failure: float = np.inf,
    ) -> "Objective":
        """A function ``objective(x) -> float`` for optimizers: this study run at ``x``.

        ``x`` sets ``paths`` (in order); every job of this ensemble (its
        tolerance draws, say) runs at that point and ``score(outputs)``
        reduces their :class:`xarray.Dataset` to one number (``on_failure``
        if a job failed). The study's seed is fixed here, so every point
        sees the same draws. Give it to :meth:`map` to run a population as
        one study (see :mod:`katparallel.optimize`).
        """
        from .optimize import Objective

        self._adapter.check_paths(list(paths))
        fixed = self if self._seed is not None else self._copy(_seed=new_seed())
        return Objective(fixed, paths, score, analysis, on_failure)

    def map(self, fn: Callable, points: Any, **run: Any) -> list:
        """``[fn(p) for p in points]`` on katparallel's engines, for optimizers.

        With an :meth:`objective`, the points run as one study, stepped in
        one simulation where they only change parameter values:
        ``differential_evolution(obj, bounds, workers=ens.map,
        updating="deferred")``. Any other picklable function runs point by
        point on the pool. ``run`` takes ``backend``, ``workers``, ``batch``
        (use ``functools.partial(ens.map, backend=...)`` where an optimizer
        calls ``map(fn, points)``).
        """
        from .optimize import as_run_options, map_points

        return map_points(fn, points, **as_run_options(run))

    def executor(self, **run: Any) -> "BatchExecutor":
        """A :class:`concurrent.futures.Executor` that runs what is submitted in batches.

        Submissions wait until a result is first asked for, then run
        together through :meth:`map` (Nevergrad: ``optimizer.minimize(obj,
        executor=ens.executor(), batch_mode=True)``).
        """
        from .optimize import BatchExecutor, as_run_options

        return BatchExecutor(**as_run_options(run))

    def plan(self, seed: int | None = None) -> Plan:
        """The jobs this ensemble runs: draws the samples for ``seed``."""
        seed = _check_seed(seed) if seed is not None else self._seed
        if seed is None:
            seed = new_seed()
        axes = []
        for number, axis in enumerate(self._axes):
            if isinstance(axis, Design):
                drawn, _ = axis.draw(sampling_rng(seed, number))
                values = {}
                for path, column in drawn.items():
                    values[path] = as_values(path, column)
                    if len(values[path]) != axis.size:
                        raise InvalidValuesError(
                            f"The distribution of {path!r} returned {len(values[path])} "
                            f"values, not the {axis.size} asked for."
                        )
                axes.append(Axis(SAMPLE_DIM, values, size=axis.size))
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
            is timed; the rest go to a process pool with one worker per
            core whenever it would finish sooner, its start-up included,
            else run here), or a :class:`Backend` instance.
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
            (:mod:`katparallel.adapters.stepping`; Finesse 3 models whose jobs
            differ only in parameter values, symbolic ones included, under
            ``Noxaxis``, a short axis, or ``Series(RunLocks(...), Noxaxis())``,
            which locks at every point). ``None`` decides from the plan, ``True``
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
        options = RunOptions(
            backend=backend, workers=workers, progress=progress, keep_solutions=keep_solutions,
            raise_on_error=raise_on_error, timeout=timeout, batch=batch, store=store,
            resume=resume, retry_failed=retry_failed,
        )
        study = Study(self._adapter, self.plan, self._seed, self._perturbs)
        results = run_study(study, analysis, options)
        for number, axis in enumerate(self._axes):
            if isinstance(axis, Design):  # record the design beside the results
                annotate(results.to_xarray(), axis, axis.draw(sampling_rng(results.seed, number))[1])
        return results


def _check_count(n: Any, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InvalidValuesError(f"{what} needs a positive whole number, got {n!r}")


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidValuesError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)
