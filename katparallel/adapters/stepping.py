"""Finesse 3 fast path: step many jobs' values inside one built simulation.

Building a Finesse simulation costs milliseconds (a third of a second for the
aLIGO design model); solving it again after a parameter changed costs
microseconds to milliseconds. When the jobs of a chunk differ only in numeric
parameter values of one model (``vary``, zipped ``vary``, ``sample``; no
factory, no ``perturb``), the worker builds the simulation once and steps the
values inside it::

    chunk ──► model.run(StepValues) ──► one build ──► per job: set values,
              solve (or run the analysis' own axis) ──► stacked outputs
          └─► jobs Finesse rejected (e.g. R + T > 1) or could not solve
              ──► the per-job path, which records them exactly as it always does
          └─► points whose locks were lost ──► LostLock failures (not run twice)

One parameter and no axis of the analysis: Finesse's own C loop
(``run_axes_scan``, as :class:`~finesse.analysis.actions.Sweep` uses).
Several parameters: a Python loop that sets each changed parameter (values
that decrease first, as the per-job path does) and solves the carrier. An
analysis with its own axis (an ``xaxis``, over ``fsig.f`` too, or a
``FrequencyResponse``) runs whole at every point, after the locks of
``Series(RunLocks(...), analysis)`` if any. Whether that pays is measured, not
assumed (:mod:`katparallel.nesting`): one build per chunk wins when the build
is a large part of a job (a sensitivity curve of the aLIGO model), and
gains nothing when a long axis dwarfs the build, where a parameter made
tunable may also slow every step.

A varied parameter that is symbolic (``ITMX.L = Xloss/2``) is given a number
before the build, so it can change during the simulation: it takes each job's
value in place of its expression, as on the per-job path. Parameters whose
expressions refer to a varied one follow it inside the simulation.

This module imports Finesse; :mod:`katparallel.adapters.finesse` imports it
only when a chunk is batched. Both use :mod:`katparallel.adapters.support`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from finesse.analysis.actions import FrequencyResponse, Noxaxis, RunLocks, Series, Sweep
from finesse.analysis.actions.base import Action, convert_str_to_parameter
from finesse.exceptions import LostLock
from finesse.analysis.runners import run_axes_scan
from finesse.parameter import Parameter, deref
from finesse.solutions import ArraySolution

from ..errors import Failure
from ..jobs import Chunk, ChunkResult, merge_results
from .support import detector_values, quiet

LOGGER = logging.getLogger(__name__)

__all__ = ("StepValues", "batch_reason", "expected_outputs", "nested_points", "step_chunk")


def _split_action(action: Any) -> tuple[Any, Any, str | None]:
    """``(locks, inner, reason)`` for a job's action.

    ``locks`` is the ``RunLocks`` of ``Series(RunLocks(...), analysis)`` (run
    at every stepped point), else None; ``inner`` the analysis to run whole at
    every point (a Sweep such as an ``Xaxis``, or a ``FrequencyResponse``;
    None for ``Noxaxis``); ``reason`` why the action cannot be stepped, or None.
    """
    locks = None
    if isinstance(action, Series) and len(action.actions) == 2 and isinstance(action.actions[0], RunLocks):
        locks, action = action.actions
        if locks.pre_step is not None:
            return None, None, "the RunLocks has a pre_step action"
    if type(action) is FrequencyResponse:
        return locks, action, None
    if not isinstance(action, Sweep):
        return None, None, f"the analysis {type(action).__name__} is not a sweep of parameters"
    if action.pre_step is not None or action.post_step is not None:
        return None, None, "the analysis has pre_step/post_step actions"
    if type(action) is Noxaxis:
        return locks, None, None
    return locks, action, None


def _inner_parameters(inner: Any) -> tuple[str, ...]:
    """Full names of the parameters the inner analysis changes."""
    if isinstance(inner, FrequencyResponse):
        return ("fsig.f",)
    return tuple(str(p) for p in inner.parameters)


def nested_points(model, action: Any) -> int:
    """Points of the analysis axis each job runs (0 for ``Noxaxis`` or an action
    the fast path cannot step)."""
    _, inner, reason = _split_action(action)
    if reason or inner is None:
        return 0
    if isinstance(inner, FrequencyResponse):
        return int(np.size(inner.f))
    return math.prod(inner.out_shape)


def _dependents(model, paths: tuple[str, ...]) -> list[Parameter]:
    """Parameters whose expressions refer, directly or not, to one of ``paths``.

    Parameters are told apart by name: ``==`` on Finesse parameters builds and
    simplifies a symbolic equation (on the aLIGO model, seconds for this loop).
    """
    changing = set(paths)
    symbolic = {p.full_name: p for p in model.all_parameters if p.is_symbolic and p.full_name not in changing}
    refs = {name: {ref.parameter.full_name for ref in p.value.parameters()} for name, p in symbolic.items()}
    found: list[Parameter] = []
    grew = True
    while grew:
        grew = False
        for name, param in symbolic.items():
            if name not in changing and refs[name] & changing:
                found.append(param)
                changing.add(name)
                grew = True
    return found


def batch_reason(model, paths: tuple[str, ...], action: Any) -> str | None:
    """Why jobs varying ``paths`` of ``model`` cannot be stepped inside one simulation.

    Parameters
    ----------
    model : finesse.Model
        The base model.
    paths : tuple of str
        Full names of the varied parameters.
    action : finesse action
        What each job runs.

    Returns
    -------
    str or None
        The reason, or None if they can be stepped. Whether stepping an
        analysis with its own axis pays is decided from measured costs
        (:mod:`katparallel.nesting`), not here.
    """
    if not paths:
        return "no parameter is varied"
    _, inner, reason = _split_action(action)
    if reason:
        return reason
    for path in paths:
        param = model.get(path)
        if not isinstance(param, Parameter) or not param.changeable_during_simulation:
            return f"{path} cannot change inside a built simulation"
        if param.datatype not in (float, np.float64):
            return f"{path} is not a float"
    for param in _dependents(model, paths):
        if not param.changeable_during_simulation:
            return f"{param.full_name} follows a varied parameter but cannot change inside a built simulation"
    if inner is not None and set(_inner_parameters(inner)) & set(paths):
        return "the analysis sweeps a parameter the ensemble varies"
    return None


def expected_outputs(model, action: Any) -> dict[str, tuple]:
    """Output names and axes of ``action`` on ``model``, without running it.

    Known for ``Noxaxis`` (after locks or not) and single sweeps (the model's
    own ``xaxis``); empty for other analyses.
    """
    _, inner, reason = _split_action(action)
    if reason or isinstance(inner, FrequencyResponse):
        return {}
    dims = () if inner is None else tuple(
        (str(p), np.asarray(x, dtype=float)) for p, x in zip(inner.parameters, inner.axes)
    )
    return {det.name: dims for det in model.detectors}


class StepValues(Action):
    """A Finesse action: solve one built simulation at many parameter points.

    After :meth:`finesse.Model.run`, :attr:`outputs` holds the stacked outputs
    of the points that ran (:attr:`ran`); :attr:`per_job` lists the positions
    to run job by job instead (values Finesse rejected, or a masked solve,
    which the per-job path may report as an error), and :attr:`stopped` the
    position where solving raised (later points did not run), or None.

    Parameters
    ----------
    paths : tuple of str
        Parameter full names.
    values : ndarray, shape (n, len(paths))
        One row of values per point.
    inner : finesse action or None
        An analysis to run at every point: a Sweep (e.g. an ``Xaxis``) or a
        ``FrequencyResponse``.
    reduce : callable
        Reduces a nested solution to :class:`~katparallel.adapters.finesse.Outputs`.
    locks : finesse.analysis.actions.RunLocks, optional
        Locks to run at every point (before ``inner``, if any), each time from
        ``feedback`` (the base model's tunings) or, for a feedback parameter the
        jobs vary, from the point's value, as a job of its own would.
    feedback : dict, optional
        Full name -> base value of the locks' feedback parameters.
    warnings : WarningScope-like, optional
        Where warnings are being counted (:func:`step_chunk`): its ``point``
        is set to each point's position while the point is set and solved.
    """

    def __init__(
        self, paths, values: np.ndarray, inner, reduce: Callable, locks=None, feedback=None,
        warnings: Any = None,
    ):
        super().__init__("katparallel_step")
        self.paths = tuple(paths)
        self.values = np.ascontiguousarray(values, dtype=np.float64)
        self.inner = inner
        self.reduce = reduce
        self.locks = locks
        self.feedback = dict(feedback or {})
        self.warnings = warnings if warnings is not None else _Uncounted()
        self.per_job: list[int] = []
        self.lost: dict[int, Failure] = {}  # position -> the point's LostLock
        self.stopped: int | None = None
        self.ran = np.zeros(len(self.values), dtype=bool)
        self.outputs: dict[str, np.ndarray] = {}
        self.axes: dict[str, tuple] = {}
        self.stepping_seconds = 0.0

    def _requests(self, model, memo, first=True):
        memo["changing_parameters"].extend(self.paths)
        for action in (self.inner, self.locks):
            if action is not None:
                action._requests(model, memo)

    def _do(self, state):
        started = time.perf_counter()
        try:
            self._step(state)
        finally:
            self.warnings.point = None
            self.stepping_seconds = time.perf_counter() - started

    def _step(self, state) -> None:
        params = [convert_str_to_parameter(state.model, p) for p in self.paths]
        if self.inner is not None:
            rows: list = []
            self._python_loop(params, self._nested_solver(state, rows))
            if rows:
                self.outputs = {name: np.stack([r.values[name] for r in rows]) for name in rows[0].values}
                self.axes = rows[0].axes
            return
        n = len(self.values)
        sol = ArraySolution(self.name, None, (n,), (np.arange(n, dtype=np.float64),), (params[0],))
        sol.enable_update(state.sim.detector_workspaces)
        if self.locks is not None or not (len(params) == 1 and self._c_loop(state, params[0], sol)):
            self._python_loop(params, self._carrier_solver(state, sol))
        self.outputs = {name: detector_values(sol, name)[self.ran] for name in sol.outputs}
        self.axes = {name: () for name in sol.outputs}

    def _c_loop(self, state, param, sol) -> bool:
        """Finesse's own stepping loop for one parameter.

        False if a value was rejected or a point masked: then the Python loop
        redoes the chunk and finds out which.
        """
        original = float(param.value)
        self.warnings.point = _C_LOOP
        try:
            run_axes_scan(
                state, (self.values[:, 0].copy(),), (param,), np.zeros(1),
                (len(self.values),), sol, None, None, False, "",
            )
        except Exception as exc:  # noqa: BLE001 - the Python loop finds the culprit
            LOGGER.debug("stepping %s point by point: %s", param.full_name, exc)
            return False
        finally:
            param.value = original
            self.warnings.point = None
        # A warning raised in the C loop cannot be told to its point: redo point by point.
        if sol.masked or self.warnings.at.pop(_C_LOOP, None):
            return False
        self.ran[:] = True
        return True

    def _relocker(self, state) -> Callable[[int], None]:
        """Run the locks (if any) at point ``k`` as a job of its own would: from the
        point's own value of each feedback parameter the jobs vary, and from the
        base value of the others."""
        if self.locks is None:
            return lambda k: None
        varied = {convert_str_to_parameter(state.model, p).full_name: j for j, p in enumerate(self.paths)}
        feedback = [(convert_str_to_parameter(state.model, p), v, varied.get(p))
                    for p, v in self.feedback.items()]

        def relock(k: int) -> None:
            for param, base, column in feedback:
                param.value = base if column is None else self.values[k, column]
            state.apply(self.locks)  # LostLock: the per-job path reports it

        return relock

    def _carrier_solver(self, state, sol) -> Callable[[int, bool], bool]:
        """Solve point ``k`` (locks first if any, then the carrier and signals) into ``sol``."""
        sim = state.sim
        relock = self._relocker(state)

        def solve(k: int, first: bool) -> bool:
            relock(k)
            if not sim.run_carrier(force=first):
                return False
            if sim.signal is not None:
                sim.run_signal()
            sol.update(k, False)
            return True

        return solve

    def _nested_solver(self, state, rows: list) -> Callable[[int, bool], bool]:
        """Run the inner analysis at point ``k`` (after the locks, if any) into ``rows``."""
        relock = self._relocker(state)
        if isinstance(self.inner, FrequencyResponse):
            run_inner = self._frequency_response(state)
        else:
            run_inner = self._sweep(state)

        def solve(k: int, first: bool) -> bool:
            relock(k)
            sol = run_inner()
            if sol is None:
                return False
            rows.append(self.reduce(sol))
            return True

        return solve

    def _sweep(self, state) -> Callable[[], Any]:
        """Run the inner Sweep's axis as the Sweep itself would; None if a point was masked."""
        inner = self.inner
        inner_params = tuple(convert_str_to_parameter(state.model, p) for p in inner.parameters)

        def run():
            initial = {p: float(p.value) for p in inner_params}
            start = np.array([initial[p] for p in inner_params])
            offsets = np.where(inner.fractional_offset != 0, start * inner.fractional_offset, 0.0)
            sol = ArraySolution(inner.name, None, inner.out_shape, inner.axes, inner_params)
            sol.enable_update(state.sim.detector_workspaces)
            try:
                run_axes_scan(
                    state, inner.axes, inner_params, offsets, inner.out_shape,
                    sol, None, None, False, "",
                )
            finally:
                state.set_parameter_values(initial)
            return None if sol.masked else sol

        return run

    def _frequency_response(self, state) -> Callable[[], Any]:
        """Run the inner FrequencyResponse, then put ``fsig.f`` back."""
        fsig = state.model.fsig.f

        def run():
            initial = float(fsig.value)
            try:
                return state.apply(self.inner)
            finally:
                state.set_parameter_values({fsig: initial})

        return run

    def _python_loop(self, params, solve: Callable[[int, bool], bool]) -> None:
        """Set each row (changed values only, decreasing ones first) and ``solve`` it."""
        current = [float(p.value) for p in params]
        first = True
        for k, row in enumerate(self.values.tolist()):
            self.warnings.point = k  # what warns from here on counts for this point
            if not self._set_row(params, row, current):
                self.per_job.append(k)
                continue
            try:
                valid = solve(k, first)
            except LostLock as exc:
                # RunLocks put its tunings back: the simulation goes on. Running the
                # point again per job would only lose the lock a second time.
                self.lost[k] = Failure.capture(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - the per-job path reports it
                LOGGER.debug("solving point %d raised %s; restarting after it", k, exc)
                self.stopped = k
                return
            first = False
            if valid:
                self.ran[k] = True
            else:
                self.per_job.append(k)
        self.warnings.point = None

    @staticmethod
    def _set_row(params, row: list[float], current: list[float]) -> bool:
        """Set the values of ``row`` that changed; False if Finesse rejected one."""
        for j in sorted(range(len(params)), key=lambda j: row[j] - current[j]):
            if row[j] == current[j]:
                continue
            try:
                params[j].value = row[j]
            except Exception:  # noqa: BLE001 - Finesse keeps a rejected value
                params[j].value = current[j]
                return False
            current[j] = row[j]
        return True


#: ``warnings.point`` while Finesse's C loop runs: no point can be told apart.
_C_LOOP = -1


class _Uncounted:
    """Where warnings go when nobody counts them (outside a worker's chunk)."""

    def __init__(self):
        self.times, self.point, self.points, self.at = 1, None, None, {}

    def __enter__(self) -> "_Uncounted":
        return self

    def __exit__(self, *exc_info) -> None:
        return None


def _feedback_values(model, locks) -> dict[str, Any]:
    """Base values of the parameters ``locks`` tune (empty without locks)."""
    if locks is None:
        return {}
    chosen = [model.elements[name] for name in locks.locks] or [k for k in model.locks if k.enabled]
    params = [deref(lock.feedback) for lock in chosen]
    return {p.full_name: p.value for p in params}


def _make_numeric(model, paths: tuple[str, ...]) -> None:
    """Give each symbolic varied parameter its current value as a number, so it
    can change during the simulation (the adapter puts the expression back)."""
    for path in paths:
        param = model.get(path)
        if param.is_symbolic:
            param.value = float(param.value.eval())


def step_chunk(
    model, chunk: Chunk, adapter: Any, warning_scope: Callable | None = None
) -> tuple[ChunkResult, list[int]]:
    """Step the jobs of ``chunk`` inside one simulation of ``model``.

    Returns the stepped jobs' results and the positions (in ``chunk``) of the
    jobs to run job by job: values Finesse rejected, points it could not
    solve, and all of them if the simulation cannot be built. The caller puts
    the model back in its base state afterwards. ``warning_scope()`` opens
    a context that counts warnings (:class:`katparallel.worker.WarningScope`):
    one raised while the simulation is built counts once for each job whose
    result came from it (as if each job had built its own), one raised at a
    point once for that job, and none for the jobs handed to the per-job path.
    """
    warning_scope = warning_scope or _Uncounted
    locks, inner, _ = _split_action(adapter.action(model, chunk.analysis))
    feedback = _feedback_values(model, locks)
    parts: list[ChunkResult] = []
    per_job: list[int] = []
    start, n = 0, len(chunk)
    while start < n:
        started = time.perf_counter()
        try:
            with warning_scope() as build:
                build.times, build.points = 0, ()
                step = StepValues(chunk.paths, chunk.values[start:], inner, adapter.outputs, locks,
                                  feedback, build)
                _make_numeric(model, chunk.paths)
                # A masked point runs again on the per-job path, which reports it as
                # that job's failure: Finesse's "Masking simulation outputs" lines are noise.
                with quiet("finesse.analysis.runners"):
                    model.run(step)
                build.points = {*np.flatnonzero(step.ran).tolist(), *step.lost}
                build.times = len(build.points)
        except Exception as exc:  # noqa: BLE001 - the per-job path runs them instead
            LOGGER.warning("batched path failed (%s); running the rest job by job", exc)
            per_job.extend(range(start, n))
            break
        ran = np.flatnonzero(step.ran)
        setup = time.perf_counter() - started - step.stepping_seconds  # the build
        lost = [f.for_job(int(chunk.indices[start + k]), chunk.job_values(start + k))
                for k, f in step.lost.items()]
        parts.append(ChunkResult(chunk.indices[start:][ran], step.outputs, step.axes, lost,
                                 setup_seconds=setup))
        per_job.extend(start + k for k in step.per_job)
        if step.stopped is None:
            break
        per_job.append(start + step.stopped)
        start += step.stopped + 1
    return merge_results(parts) if parts else ChunkResult(np.empty(0, np.int64), {}, {}), per_job
