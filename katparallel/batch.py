"""Batched fast path: step many jobs' values inside one built simulation.

Building a Finesse simulation costs milliseconds; solving it again after a
parameter changed costs microseconds. When the jobs of a chunk differ only in
numeric parameter values of one Finesse 3 model (``vary``, zipped ``vary``,
``sample``; no factory, no ``perturb``), the worker builds the simulation once
and steps the values inside it::

    chunk ──► model.run(StepValues) ──► one build ──► per job: set values,
              solve (or run the analysis' own axis) ──► stacked outputs
          └─► jobs Finesse rejected (e.g. R + T > 1) or could not solve
              ──► the per-job path, which records them exactly as it always does

One parameter and no axis of the analysis: Finesse's own C loop
(``run_axes_scan``, as :class:`~finesse.analysis.actions.Sweep` uses).
Several parameters: a Python loop that sets each changed parameter (values
that decrease first, as the per-job path does) and solves the carrier. An
analysis with its own axis (``xaxis``) is nested per job only when the axis is
short; for long axes the simulation build is negligible, and a parameter
made tunable slows every step (with ``maxtem 4`` stepping ``m.T`` cost 66–124 µs
a point against 27 µs), so plain job parallelism is faster.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from typing import Any

import numpy as np

from .plan import Plan
from .worker import Chunk, ChunkResult, merge_results, run_jobs

LOGGER = logging.getLogger(__name__)

__all__ = ("batch_chunk_size", "batch_reason", "decide_batch", "run_batched")

#: Longest analysis axis (points per job) that is nested inside the batched
#: simulation; longer axes run job by job (see the module docstring).
NEST_MAX_POINTS = 64
#: Fewest jobs per batched chunk worth a simulation build (~2-10 ms against
#: ~2-150 µs a point).
MIN_BATCH = 4000
#: Most batched chunks per worker (load balance and progress granularity).
MAX_CHUNKS_PER_WORKER = 16

# Analyses parsed from text in this process: (recipe key, text) -> action.
_ACTIONS: dict[tuple[str, str], Any] = {}


def _effective_action(adapter: Any, model: Any, analysis: Any):
    """The action a job runs: ``analysis``, else the model's own, else ``Noxaxis``."""
    from finesse.analysis.actions import Noxaxis

    if isinstance(analysis, str):
        key = (adapter.key, analysis)
        if key not in _ACTIONS:
            scratch = copy.deepcopy(model)
            scratch.analysis = None
            scratch.parse(analysis)
            _ACTIONS[key] = scratch.analysis
        analysis = _ACTIONS[key]
    return analysis or model.analysis or Noxaxis()


def _inner_sweep(action: Any):
    """``(inner, reason)``: the Sweep to nest per job (None for Noxaxis), or why not."""
    from finesse.analysis.actions import Noxaxis, Sweep

    if not isinstance(action, Sweep):
        return None, f"the analysis {type(action).__name__} is not a sweep of parameters"
    if action.pre_step is not None or action.post_step is not None:
        return None, "the analysis has pre_step/post_step actions"
    if type(action) is Noxaxis:
        return None, None
    return action, None


def batch_reason(
    adapter: Any,
    plan: Plan,
    analysis: Any,
    *,
    perturbs: bool,
    keep_solutions: bool,
    timeout: float | None,
    forced: bool = False,
) -> str | None:
    """Why the jobs of ``plan`` cannot take the batched fast path (None if they can).

    Parameters
    ----------
    adapter : model adapter
        The ensemble's adapter (only Finesse 3 models are batched).
    plan : Plan
        The jobs.
    analysis : Finesse action, str or None
        What each job runs (as returned by ``adapter.parse_analysis``).
    perturbs, keep_solutions : bool
        Whether the ensemble has perturb functions / keeps raw solutions.
    timeout : float or None
        Per-job time limit (a batched chunk holds many jobs).
    forced : bool
        ``run(batch=True)``: nest an analysis axis of any length.
    """
    if getattr(adapter, "name", None) != "finesse":
        return "only Finesse 3 models can be stepped inside one simulation"
    if adapter.is_factory:
        return "a factory builds a new model for every job"
    if perturbs:
        return "perturb functions change each job's model"
    if keep_solutions:
        return "keep_solutions=True needs one Finesse solution per job"
    if timeout:
        return "timeout= limits single jobs, and a batched chunk runs many at once"
    if not plan.paths:
        return "no parameter is varied"
    from finesse.parameter import Parameter

    model = adapter.probe()
    action = _effective_action(adapter, model, analysis)
    inner, reason = _inner_sweep(action)
    if reason:
        return reason
    for path in plan.paths:
        param = model.get(path)
        if not isinstance(param, Parameter) or not param.changeable_during_simulation:
            return f"{path} cannot change inside a built simulation"
        if param.is_symbolic or param.datatype not in (float, np.float64):
            return f"{path} is symbolic or not a float"
    if inner is not None:
        if set(inner.parameters) & set(plan.paths):
            return "the analysis sweeps a parameter the ensemble varies"
        points = math.prod(inner.out_shape)
        if points > NEST_MAX_POINTS and not forced:
            return (
                f"the analysis has its own axis of {points} points; with more than "
                f"{NEST_MAX_POINTS} the simulation build is negligible and jobs run faster one by one"
            )
    return None


def decide_batch(batch: bool | None, adapter: Any, plan: Plan, analysis: Any, **flags) -> bool:
    """Resolve ``run(batch=...)``: True, False, or None (decide from the plan).

    Raises
    ------
    ValueError
        If ``batch=True`` but the jobs cannot be batched (the message says why).
    """
    if batch is False:
        return False
    reason = batch_reason(adapter, plan, analysis, forced=bool(batch), **flags)
    if reason is None:
        return True
    if batch:
        raise ValueError(
            f"run(batch=True) cannot step these jobs inside one simulation: {reason}. "
            "Use batch=None to let katparallel choose, or batch=False."
        )
    LOGGER.info("running job by job: %s", reason)
    return False


def batch_chunk_size(n_jobs: int, n_workers: int) -> int:
    """Jobs per batched chunk: a whole number of chunks per worker, each worth a build."""
    per_worker = min(MAX_CHUNKS_PER_WORKER, max(1, n_jobs // (n_workers * MIN_BATCH)))
    return max(1, math.ceil(n_jobs / (n_workers * per_worker)))


@functools.cache
def _step_values_class() -> type:
    """:class:`StepValues`, defined on first use so importing this module costs no Finesse import."""
    from finesse.analysis.actions.base import Action, convert_str_to_parameter
    from finesse.analysis.runners import run_axes_scan
    from finesse.solutions import ArraySolution

    class StepValues(Action):
        """A Finesse action: solve one built simulation at many parameter points.

        After :meth:`finesse.Model.run`, :attr:`outputs` holds the stacked
        outputs of the points that ran (:attr:`ran`); :attr:`per_job` lists
        the positions to run job by job instead (values Finesse rejected, or
        a masked solve, which the per-job path may report as an error), and
        :attr:`stopped` the position where solving raised (later points did
        not run), or None.

        Parameters
        ----------
        paths : tuple of str
            Parameter full names.
        values : ndarray, shape (n, len(paths))
            One row of values per point.
        inner : finesse.analysis.actions.Sweep or None
            An analysis axis to run at every point (e.g. an ``Xaxis``).
        adapter : FinesseAdapter
            Reduces the nested solutions to arrays.
        """

        def __init__(self, paths, values: np.ndarray, inner, adapter):
            super().__init__("katparallel_step")
            self.paths = tuple(paths)
            self.values = np.ascontiguousarray(values, dtype=np.float64)
            self.inner = inner
            self.adapter = adapter
            self.per_job: list[int] = []
            self.stopped: int | None = None
            self.ran = np.zeros(len(self.values), dtype=bool)
            self.outputs: dict[str, np.ndarray] = {}
            self.axes: dict[str, tuple] = {}

        def _requests(self, model, memo, first=True):
            memo["changing_parameters"].extend(self.paths)
            if self.inner is not None:
                self.inner._requests(model, memo)

        def _do(self, state):
            params = [convert_str_to_parameter(state.model, p) for p in self.paths]
            if self.inner is not None:
                self._nested(state, params)
                return None
            n = len(self.values)
            sol = ArraySolution(self.name, None, (n,), (np.arange(n, dtype=np.float64),), (params[0],))
            sol.enable_update(state.sim.detector_workspaces)
            if not (len(params) == 1 and self._c_loop(state, params[0], sol)):
                sim = state.sim

                def solve(k: int, first: bool) -> bool:
                    if not sim.run_carrier(force=first):
                        return False
                    if sim.signal is not None:
                        sim.run_signal()
                    sol.update(k, False)
                    return True

                self._python_loop(params, solve)
            self.outputs = {name: np.asarray(sol.data[name])[self.ran] for name in sol.outputs}
            self.axes = {name: () for name in sol.outputs}
            return None

        def _c_loop(self, state, param, sol) -> bool:
            """Finesse's own stepping loop for one parameter.

            False if a value was rejected or a point masked: then the Python
            loop redoes the chunk and finds out which.
            """
            original = float(param.value)
            try:
                run_axes_scan(
                    state, (self.values[:, 0].copy(),), (param,), np.zeros(1),
                    (len(self.values),), sol, None, None, False, "",
                )
            except Exception as exc:
                LOGGER.debug("stepping %s point by point: %s", param.full_name, exc)
                return False
            finally:
                param.value = original
            if sol.masked:
                return False
            self.ran[:] = True
            return True

        def _python_loop(self, params, solve) -> None:
            """Set each row (changed values only, decreasing ones first) and ``solve`` it."""
            current = [float(p.value) for p in params]
            first = True
            for k, row in enumerate(self.values.tolist()):
                try:
                    for j in sorted(range(len(params)), key=lambda j: row[j] - current[j]):
                        if row[j] != current[j]:
                            try:
                                params[j].value = row[j]
                            except Exception:
                                params[j].value = current[j]  # Finesse keeps a rejected value
                                raise
                            current[j] = row[j]
                except Exception:
                    self.per_job.append(k)
                    continue
                try:
                    valid = solve(k, first)
                except Exception as exc:
                    LOGGER.debug("solving point %d raised %s; restarting after it", k, exc)
                    self.stopped = k
                    return
                first = False
                if valid:
                    self.ran[k] = True
                else:
                    self.per_job.append(k)

        def _nested(self, state, params) -> None:
            """Run the inner analysis axis at every point, as a Sweep would."""
            inner = self.inner
            inner_params = tuple(convert_str_to_parameter(state.model, p) for p in inner.parameters)
            rows = []

            def solve(k: int, first: bool) -> bool:
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
                if sol.masked:
                    return False
                rows.append(self.adapter.outputs(sol))
                return True

            self._python_loop(params, solve)
            if rows:
                self.outputs = {
                    name: np.stack([r.values[name] for r in rows]) for name in rows[0].values
                }
                self.axes = rows[0].axes

    return StepValues


def _snapshot(params: dict) -> dict:
    return {"params": params, "originals": {path: p.value for path, p in params.items()}}


def run_batched(chunk: Chunk) -> ChunkResult:
    """Run ``chunk`` on the fast path; never raises.

    Jobs Finesse rejects, or whose solve raises, go through the per-job path
    (:func:`katparallel.worker.run_jobs`), so they fail or succeed exactly as
    they would there. If the fast path cannot start at all, the whole chunk
    runs job by job.
    """
    from .adapters.finesse import _lookup

    adapter = chunk.adapter
    parts: list[ChunkResult] = []
    per_job: list[int] = []
    start, n = 0, len(chunk)
    try:
        model = adapter.base_model()
        action = _effective_action(adapter, model, chunk.analysis)
        inner, _ = _inner_sweep(action)
        params = {path: _lookup(model, path) for path in chunk.paths}
    except Exception as exc:
        LOGGER.warning("batched path unavailable (%s); running job by job", exc)
        return run_jobs(chunk)
    while start < n:
        step = _step_values_class()(chunk.paths, chunk.values[start:], inner, adapter)
        undo = _snapshot(params)
        try:
            model.run(step)
        except Exception as exc:
            LOGGER.warning("batched path failed (%s); running the rest job by job", exc)
            per_job.extend(range(start, n))
            break
        finally:
            if not adapter.restore(undo):
                LOGGER.warning("could not restore the model after a batch; reparsing")
                adapter.discard()
                model = adapter.base_model()
                params = {path: _lookup(model, path) for path in chunk.paths}
        ran = np.flatnonzero(step.ran)
        parts.append(ChunkResult(chunk.indices[start:][ran], step.outputs, step.axes))
        per_job.extend(start + k for k in step.per_job)
        if step.stopped is None:
            break
        per_job.append(start + step.stopped)
        start += step.stopped + 1
    if per_job:
        parts.append(run_jobs(chunk.subset(sorted(per_job))))
    return merge_results(parts)
