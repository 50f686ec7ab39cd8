"""The aLIGO design model for benchmarks W4 and W5, and the baselines run on it.

The model is ``finesse_ligo/katscript/aligo.kat`` from the finesse-ligo 1.0.15
wheel (:func:`katparallel.models.aligo`). It sets no higher-order
modes of its own (``maxtem 0``); the benchmarks append ``modes(maxtem=2)``.

Baselines, all in one process:

* :func:`per_draw_loop`: parse once, per draw set the values, run the action,
  put every parameter back (the hand-written serial loop; the reference);
* :class:`StepDraws`: the in-process stepping bound -- every draw solved in
  ONE built simulation.

Functions used by worker processes (pathos) live here so that they unpickle by
reference.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

# Appended to the model text for sensitivity curves (W6, W6L).
from katparallel.models import ALIGO_DARM_SIGNALS as SIGNALS

LOGGER = logging.getLogger(__name__)

#: Appended to the model text: the tolerance studies run with HOMs up to order 2.
MODES = "\nmodes(maxtem=2)\n"


def w4_distributions() -> dict:
    """W4 tolerance draws: test-mass radii of curvature and losses.

    ``ITMX.L`` and ``ETMX.L`` are symbolic in the model (``Xloss/2``): a draw
    replaces the expression. ``Yloss`` is a model variable: ``ITMY.L`` and
    ``ETMY.L`` (``Yloss/2``) follow it, and so do the mirrors' R = 1 - T - L.
    """
    from katparallel import Normal

    return {
        "ITMX.Rcx": Normal(-1934, 5), "ITMX.Rcy": Normal(-1934, 5),
        "ETMX.Rcx": Normal(2245, 5), "ETMX.Rcy": Normal(2245, 5),
        "ITMY.Rcx": Normal(-1934, 5), "ETMY.Rcx": Normal(2245, 5),
        "ITMX.L": Normal(30e-6, 5e-6), "ETMX.L": Normal(30e-6, 5e-6),
        "Yloss": Normal(60e-6, 10e-6),
    }


def w5_distributions() -> dict:
    """W5 lock-per-draw jitter: small loss and radius-of-curvature changes for
    which ``RunLocks(method="newton")`` converges."""
    from katparallel import Normal

    return {
        "ITMX.L": Normal(30e-6, 3e-6), "ETMY.L": Normal(30e-6, 3e-6),
        "ETMX.Rcx": Normal(2245, 2), "ITMY.Rcy": Normal(-1934, 2),
    }


def lock_then_noxaxis():
    """W5's analysis: ``Series(RunLocks(method="newton"), Noxaxis())``."""
    from finesse.analysis.actions import Noxaxis, RunLocks, Series

    return Series(RunLocks(method="newton"), Noxaxis())


def aligo_text() -> str:
    """The aLIGO KatScript with ``modes(maxtem=2)`` appended."""
    from katparallel.models import aligo

    return aligo() + MODES


def parse(text: str):
    """A Finesse model parsed from KatScript ``text`` (no progress bars)."""
    import finesse

    finesse.config.show_progress_bars = False
    model = finesse.Model()
    model.parse(text)
    return model


def all_parameters(model) -> list:
    """Every parameter of ``model``: element parameters and model variables."""
    params = [p for element in model.elements.values() for p in element.parameters]
    seen = {id(p) for p in params}
    for name in getattr(model, "_Model__variables", {}) or {}:
        param = model.get(name)
        if id(param) not in seen:
            params.append(param)
    return params


def snapshot(model) -> list[tuple[Any, Any]]:
    """(parameter, value) for every parameter; values are kept as they are
    (a symbolic expression stays the same object)."""
    return [(p, p.value) for p in all_parameters(model)]


def restore(state: list[tuple[Any, Any]]) -> None:
    """Put back the values :func:`snapshot` took.

    Changed values are restored in two passes: a value Finesse rejects on the
    first pass (e.g. R + T > 1 until the partner is back) is set on the second.
    """
    todo = [(p, v) for p, v in state if p.value is not v]
    for _ in range(2):
        failed = []
        for param, value in todo:
            try:
                param.value = value
            except Exception:  # noqa: BLE001 - retried after the others
                failed.append((param, value))
        todo = failed
    if todo:
        raise RuntimeError(f"could not restore {[p.full_name for p, _ in todo]}")


def scalar_outputs(solution, names) -> np.ndarray:
    """The outputs ``names`` of a Noxaxis solution as one float row.

    For a ``Series``, the outputs of its last child (the ``Noxaxis``).
    """
    while getattr(solution, "children", None):
        solution = solution.children[-1]
    return np.array([float(np.real(solution[name])) for name in names])


def real_detectors(model) -> list[str]:
    """Detectors whose Noxaxis output is real: power detectors and math detectors."""
    from finesse.analysis.actions import Noxaxis

    sol = model.run(Noxaxis())
    return [d.name for d in model.detectors if not np.iscomplexobj(np.asarray(sol[d.name]))]


def set_values(model, paths, row) -> None:
    """Set one draw: decreasing values first (R + T + L never exceeds 1 on the way)."""
    set_params([model.get(p) for p in paths], row)


def set_params(params, row) -> None:
    """:func:`set_values` on parameters already looked up."""
    current = [_as_float(p.value) for p in params]
    for j in sorted(range(len(params)), key=lambda j: row[j] - current[j]):
        params[j].value = float(row[j])


def _as_float(value) -> float:
    return float(value.eval()) if hasattr(value, "eval") else float(value)


def per_draw_loop(model, paths, table, names, action_factory) -> np.ndarray:
    """The hand-written serial loop: per draw set values, run, restore everything.

    Every parameter of the model is restored after each draw (not only the
    drawn ones): an analysis such as ``RunLocks`` leaves converged tunings in
    the model, and the next draw must start from the base model's state.
    """
    base = snapshot(model)
    out = np.empty((len(table), len(names)))
    for k, row in enumerate(table):
        try:
            set_values(model, paths, row)
            out[k] = scalar_outputs(model.run(action_factory()), names)
        finally:
            restore(base)
    return out


def make_numeric(model, paths) -> None:
    """Give each symbolic parameter in ``paths`` its current numeric value, so
    that it can change inside a built simulation."""
    for path in paths:
        param = model.get(path)
        if param.is_symbolic:
            param.value = float(param.value.eval())


def step_draws(model, paths, table, names) -> tuple[np.ndarray, float]:
    """Solve every draw inside ONE built simulation (the in-process bound).

    Returns the outputs and the seconds spent stepping (build included,
    parse excluded). The model's values are restored afterwards.
    """
    base = snapshot(model)
    make_numeric(model, paths)
    action = _step_draws_class()(paths, table, names)
    start = time.perf_counter()
    try:
        model.run(action)
    finally:
        restore(base)
    return action.out, time.perf_counter() - start


def _step_draws_class() -> type:
    from finesse.analysis.actions.base import Action
    from finesse.solutions import ArraySolution

    class StepDraws(Action):
        """Set each draw's values in the built simulation and solve it, as
        Finesse's own axis runner does (``run_carrier``, then the signal)."""

        def __init__(self, paths, table, names):
            super().__init__("step_draws")
            self.paths, self.table, self.names = tuple(paths), np.asarray(table), list(names)
            self.out = np.full((len(self.table), len(self.names)), np.nan)

        def _requests(self, model, memo, first=True):
            memo["changing_parameters"].extend(self.paths)

        def _do(self, state):
            sim, n = state.sim, len(self.table)
            params = tuple(state.model.get(p) for p in self.paths)
            sol = ArraySolution(self.name, None, (n,), (np.arange(n, dtype=float),), params[:1])
            sol.enable_update(sim.detector_workspaces)
            for k, row in enumerate(self.table.tolist()):
                set_params(params, row)
                valid = sim.run_carrier(force=k == 0)
                if valid and sim.signal is not None:
                    sim.run_signal()
                sol.update(k, not valid)
            for j, name in enumerate(self.names):
                self.out[:, j] = np.real(np.asarray(sol[name], dtype=complex))

    return StepDraws


def w6_distributions() -> dict:
    """W6 draws: arm losses (model variables) and the signal-recycling mirror's T."""
    from katparallel import Normal

    return {"Xloss": Normal(60e-6, 10e-6), "Yloss": Normal(60e-6, 10e-6), "SRM.T": Normal(0.32, 0.01)}


def curve_axis():
    """W6's analysis: 100 signal frequencies from 5 Hz to 5 kHz."""
    from finesse.analysis.actions import Xaxis

    return Xaxis("fsig.f", "log", 5, 5000, 99)


def lock_then_curve():
    """W6L's analysis: ``Series(RunLocks(method="newton"), Xaxis(fsig.f, ...))``."""
    from finesse.analysis.actions import RunLocks, Series

    return Series(RunLocks(method="newton"), curve_axis())


def curve_row(solution, names) -> np.ndarray:
    """The curves ``names`` of a solution (for a ``Series``, its last child) as
    one float row: real and imaginary parts of each, side by side."""
    while getattr(solution, "children", None):
        solution = solution.children[-1]
    return np.concatenate([complex_columns(np.asarray(solution[name])) for name in names])


def complex_columns(values: np.ndarray) -> np.ndarray:
    """``values`` (any numeric dtype) as float: real parts, then imaginary parts."""
    values = np.asarray(values, dtype=complex)
    return np.concatenate([values.real, values.imag], axis=-1)


def per_draw_curves(model, paths, table, names, action_factory) -> np.ndarray:
    """The hand-written loop for curves: per draw set values, run, restore everything."""
    base = snapshot(model)
    rows = []
    for row in table:
        try:
            set_values(model, paths, row)
            rows.append(curve_row(model.run(action_factory()), names))
        finally:
            restore(base)
    return np.array(rows)


def step_curves(model, paths, table, names) -> tuple[np.ndarray, float]:
    """Every draw's curve inside ONE built simulation (the in-process one-build bound).

    Returns the outputs (rows as :func:`curve_row`) and the seconds spent
    (build included, parse excluded). The model's values are restored afterwards.
    """
    from finesse.analysis.actions.base import Action

    class StepCurves(Action):
        """Set each draw's values in the built simulation and run the curve's xaxis there."""

        def __init__(self):
            super().__init__("step_curves")
            self.axis = curve_axis()
            self.rows = []

        def _requests(self, model, memo, first=True):
            memo["changing_parameters"].extend(paths)
            self.axis._requests(model, memo)

        def _do(self, state):
            params = tuple(state.model.get(p) for p in paths)
            for row in np.asarray(table).tolist():
                set_params(params, row)
                self.rows.append(curve_row(state.apply(self.axis), names))

    base = snapshot(model)
    make_numeric(model, paths)
    action = StepCurves()
    start = time.perf_counter()
    try:
        model.run(action)
    finally:
        restore(base)
    return np.array(action.rows), time.perf_counter() - start
