"""The pool as an optimizer's map: evaluate a population as one study.

::

    optimizer ──population──► Ensemble.map(objective, points)
        ──► Ensemble(...).vary({path: column, ...}) × the ensemble's own axes
        ──► run (stepped inside one simulation where the points only change values)
        ──► score(outputs of each point) ──► one number per point

An :class:`Objective` is a plain callable ``objective(x) -> float`` (so an
optimizer can call it point by point, in this process), and a population
given to :meth:`Ensemble.map <katparallel.Ensemble.map>` runs as one study:
SciPy's ``differential_evolution(objective, bounds, workers=ens.map,
updating="deferred")``, Nevergrad's ``executor=ens.executor()``, or Optuna's
batch ask/tell through ``ens.map``. Both paths step the points inside one
built simulation (the same fast path), so they give the same numbers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor, Future
from typing import Any

import numpy as np

from .errors import Failure, InvalidValuesError

LOGGER = logging.getLogger(__name__)

__all__ = ("Objective", "map_points", "BatchExecutor", "as_run_options")


class Objective:
    """``objective(x)``: run the ensemble at parameter values ``x``, return a score.

    Made by :meth:`Ensemble.objective <katparallel.Ensemble.objective>`.

    Parameters
    ----------
    ensemble : Ensemble
        The study run at every point (its own axes, e.g. tolerance draws,
        run for every point; its seed is fixed, so every point sees the same
        draws).
    paths : sequence of str
        The parameters ``x`` sets, in order.
    score : callable
        ``score(outputs) -> float``, where ``outputs`` is the
        :class:`xarray.Dataset` of one point's jobs (over the ensemble's own
        dimensions; scalars for an ensemble without axes).
    analysis : optional
        What each job runs (as in :meth:`Ensemble.run`).
    on_failure : float
        Returned for a point whose jobs failed (a lost lock, R + T > 1).
    """

    def __init__(self, ensemble, paths: Sequence[str], score: Callable, analysis: Any = None,
                 on_failure: float = np.inf):
        if isinstance(paths, str) or not paths:
            raise InvalidValuesError(
                f"objective() takes a list of parameter paths, got {paths!r}, e.g. ['m1.Rc', 'm2.Rc']"
            )
        if not callable(score):
            raise TypeError(f"objective(score=...) must be a function of the outputs, got {score!r}")
        self.ensemble = ensemble
        self.paths = tuple(paths)
        self.score = score
        self.analysis = analysis
        self.on_failure = float(on_failure)

    def __call__(self, x: Sequence[float]) -> float:
        return float(self.evaluate([x], backend="serial")[0])

    def evaluate(self, points: Iterable[Sequence[float]], backend: Any = "auto",
                 workers: int | None = None, batch: bool | None = None) -> np.ndarray:
        """Scores of ``points`` (one row of values per point), run as one study."""
        points = np.asarray([np.asarray(p, dtype=float).reshape(-1) for p in points])
        if points.ndim != 2 or points.shape[1] != len(self.paths):
            raise InvalidValuesError(
                f"each point needs {len(self.paths)} values ({', '.join(self.paths)}), got "
                f"points of shape {points.shape}"
            )
        study = self.ensemble.vary({p: points[:, k] for k, p in enumerate(self.paths)})
        res = study.run(self.analysis, backend=backend, workers=workers, batch=batch,
                        progress=False)
        dataset = res.to_xarray()
        failed = _failed_points(res.failures, dataset, self.paths[0])
        scores = np.empty(len(points))
        for k in range(len(points)):
            if k in failed:
                scores[k] = self.on_failure
            else:
                scores[k] = float(self.score(dataset.isel({self.paths[0]: k})))
        return scores


def _failed_points(failures: Sequence[Failure], dataset, dim: str) -> set[int]:
    """Positions along the points axis (the plan's last) of the failed jobs."""
    n_points = dataset.sizes[dim]
    return {f.index % n_points for f in failures if f.index is not None}


def _unwrap(fn: Callable) -> Callable:
    """The function inside SciPy's ``_FunctionWrapper`` (what ``workers=`` receives)."""
    inner = getattr(fn, "f", None)
    if isinstance(inner, Objective) and not getattr(fn, "args", ()):
        return inner
    return fn


def map_points(fn: Callable, points: Iterable[Any], backend: Any = "auto",
               workers: int | None = None, batch: bool | None = None) -> list:
    """``[fn(p) for p in points]``, on katparallel's engines.

    An :class:`Objective` (also inside SciPy's wrapper) runs the points as
    one study; any other picklable function runs point by point on the
    backend (``"auto"`` runs it here: give ``backend="multiprocessing"`` for
    a pool), results in order. The first point whose call raised raises here,
    as the built-in ``map`` would.
    """
    target = _unwrap(fn)
    points = list(points)
    if isinstance(target, Objective):
        return target.evaluate(points, backend, workers, batch).tolist()
    from .backends import make_backend

    engine = make_backend("serial" if backend == "auto" else backend, workers)
    out: list[Any] = [None] * len(points)
    for position, value in engine.map_unordered(fn, points):
        out[position] = value
    for value in out:
        if isinstance(value, Failure):
            raise value
    return out


class _Deferred(Future):
    """A future whose work runs, with every other pending one, when first asked for."""

    def __init__(self, executor: "BatchExecutor"):
        super().__init__()
        self._executor = executor

    def done(self) -> bool:
        self._executor.flush()
        return super().done()

    def result(self, timeout: float | None = None) -> Any:
        self._executor.flush()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._executor.flush()
        return super().exception(timeout)


class BatchExecutor(Executor):
    """An executor that gathers submissions and runs them together.

    ``submit(objective, x)`` returns at once; the first time any pending
    future is asked whether it is done (or for its result), every pending
    submission runs as one :func:`map_points` call per function: the
    population of a batch optimizer (Nevergrad's ``minimize(...,
    executor=ens.executor(), batch_mode=True)``) becomes one study.
    """

    def __init__(self, **run: Any):
        self._run = run
        self._pending: list[tuple[_Deferred, Callable, tuple]] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        if kwargs:
            raise TypeError("BatchExecutor.submit takes positional arguments only: fn(*args)")
        future = _Deferred(self)
        with self._lock:
            self._pending.append((future, fn, args))
        return future

    def flush(self) -> None:
        """Run every pending submission now (one study per function)."""
        with self._lock:
            pending, self._pending = self._pending, []
        groups: dict[int, list] = {}
        for item in pending:
            groups.setdefault(id(item[1]), []).append(item)
        for items in groups.values():
            fn = items[0][1]
            single = isinstance(_unwrap(fn), Objective)
            points = [args[0] if single and len(args) == 1 else args for _, _, args in items]
            try:
                values = map_points(fn if single else _Star(fn), points, **self._run)
            except BaseException as exc:  # every future of the group gets the error
                for future, _, _ in items:
                    future.set_exception(exc)
                continue
            for (future, _, _), value in zip(items, values):
                future.set_result(value)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if not cancel_futures:
            self.flush()


class _Star:
    """``fn(*args)`` as a function of one argument (picklable if ``fn`` is)."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, args: tuple) -> Any:
        return self.fn(*args)


def as_run_options(run: Mapping[str, Any]) -> dict[str, Any]:
    """Check the run options ``map``/``executor`` accept."""
    allowed = {"backend", "workers", "batch"}
    unknown = sorted(set(run) - allowed)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown}; map() and executor() take {sorted(allowed)}")
    return dict(run)
