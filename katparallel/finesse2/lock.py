"""Finesse 2's ``lock`` command, iterated around the Finesse 3 model as Finesse 2 does.

``lock[*] NAME $INPUT GAIN ACCURACY [OFFSET]`` makes a variable ``NAME`` (0 at first)
that Finesse 2 steps by ``GAIN * (INPUT + OFFSET)`` until ``|INPUT + OFFSET|`` is
below ``ACCURACY``; ``put``/``func`` use ``$NAME`` and its value is an output column.
``INPUT`` names a ``set`` (a detector output) or a ``func`` declared before the lock.

What Finesse 2.3.1 does (read from its ``tune_parameters``, ``autogain`` and
``compute_locks``, and checked step by step against it), with the settings of its
standard ``kat.ini``, which are also its built-in defaults (``sequential 5``,
``autogain 2``, ``locksteps 10000``, ``locktest1 5``, ``locktest2 40``,
``lockthresholdlow .01``, ``lockthresholdhigh 1.5``, ``gainfactor 3``,
``autostop 1``):

* Locking runs once before the first point and once at every point (so twice at
  the first point), each run starting from the variables, gains and detector outputs
  the previous run left; detector outputs are all 0 before the first solution.
* A run repeats passes until, after a pass, every lock's ``|input + offset|`` (from
  the last solution) is below its accuracy: ``|(input + offset) / accuracy| + 1e-9 >
  1`` counts as not locked.
* A visit to a lock sets ``prev = err``, ``err = input + offset`` and, if not within
  accuracy, ``value += gain * err``; ``func`` values are computed in file order with
  the current detector outputs and lock values.
* ``sequential`` (the first two runs, i.e. the first point, with ``sequential 5``): a
  pass visits each lock in turn and solves the model after each visit.
  ``simultaneous`` (every later run): a pass visits every lock, then solves once.
* ``autogain``: once more than ``locktest1`` solutions have been made in the run
  (sequential: for the lock just visited, every time after that; simultaneous: for
  every lock, every ``locktest1 + 1`` passes), the ratio ``|prev - err| / |err|``
  (Finesse 2's second difference with the current error equal to ``err``) moves a
  per-lock counter, reset at each run, down when below ``lockthresholdlow`` and up
  when above ``lockthresholdhigh``; past ``+-locktest2`` the gain is divided or
  multiplied by ``gainfactor`` and the counter reset. Gains carry over to later
  points.
* ``lock*`` locks only in the first run.
* After ``locksteps`` passes without locking, Finesse 2 gives up (and, with
  ``autostop``, locks no more) and writes what its last step left: refused here
  (:class:`~katparallel.finesse2.frontend.Refusal`), as that depends on every
  rounding along a 10000-step path.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from finesse.analysis.actions.base import Action

from katparallel.finesse2.constructs import STANDARD_INI, Lock, Refusal

__all__ = ("Locking", "constants")

# Finesse 2.3.1's built-in lock settings, the same as its standard kat.ini.
LOCKSTEPS = STANDARD_INI["locksteps"]
LOCKTEST1 = STANDARD_INI["locktest1"]
LOCKTEST2 = STANDARD_INI["locktest2"]
THRESHOLD_LOW = STANDARD_INI["lockthresholdlow"]
THRESHOLD_HIGH = STANDARD_INI["lockthresholdhigh"]
GAINFACTOR = STANDARD_INI["gainfactor"]
SEQUENTIAL = STANDARD_INI["sequential"]  # bit 4: sequential for the first two runs only
_ROUNDING = 1e-9  # Finesse 2 adds this to |error / accuracy| before comparing to 1


@dataclasses.dataclass
class _Loop:
    """A lock's state, which Finesse 2 keeps from run to run (but the counter)."""

    lock: Lock
    value: float = 0.0
    gain: float = 0.0
    err: float = 0.0
    prev: float = 0.0
    counter: int = 0
    stopped: bool = False

    def locked(self, error: float) -> bool:
        return not abs(error / self.lock.accuracy) + _ROUNDING > 1.0


class Locking(Action):
    """Runs Finesse 2's lock iterations before each point of a sweep (a ``pre_step``).

    Parameters
    ----------
    locks : list of Lock
        In file order; lock ``NAME`` holds its value in the model parameter
        ``NAME__lock``.
    program : list of (str, str, object)
        ``("func", name, code)`` and ``("lock", name, None)`` in file order: how
        Finesse 2 evaluates functions and locks.
    sets : dict
        ``set`` name -> detector name.
    constants : dict
        Names with fixed numeric values (``const``, ``pi``, functions).

    The model's symbolic names (``x1``, ``mx1``, ...) are read when evaluated.
    """

    def __init__(self, locks: list[Lock], program: list, sets: dict[str, str],
                 constants: dict):
        super().__init__("finesse2 locks")
        self.locks = locks
        self.program = program
        self.sets = sets
        self.constants = constants
        self._sim = None

    def _requests(self, model, memo, first=True):
        memo["changing_parameters"].extend(f"{lock.name}__lock" for lock in self.locks)

    def _start(self, state) -> None:
        """A new simulation: Finesse 2's state at the start of a run of the file."""
        from finesse.symbols import Symbol

        sim = self._sim = state.sim
        self.parameters = {lock.name: state.model.get(f"{lock.name}__lock")
                           for lock in self.locks}
        self.symbols = {name: value
                        for name, value in state.model.alternate_name_map.items()
                        if isinstance(value, Symbol)}
        self.loops = [_Loop(lock, gain=lock.gain) for lock in self.locks]
        self.outputs = {name: 0.0 for name in self.sets.values()}
        self.sequential = SEQUENTIAL
        self.runs = 0
        self.workspaces = {ws.oinfo.name: ws for ws in sim.detector_workspaces}
        for loop in self.loops:
            self.parameters[loop.lock.name].value = 0.0

    def _do(self, state):
        if state.sim is not self._sim:
            self._start(state)
        self.dirty = True  # the sweep has moved on to a new point
        for _ in range(2 if self.runs == 0 else 1):
            self._run(state)

    # -- Finesse 2's tune_parameters ----------------------------------------------

    def _run(self, state) -> None:
        loops = self.loops
        for loop in loops:
            loop.counter = 0
        tests = step = 0
        while step < LOCKSTEPS:
            if self.sequential == 0:
                self._pass(None)
                if tests > LOCKTEST1:
                    for loop in loops:
                        self._autogain(loop)
                    tests = 1
                else:
                    tests += 1
                self._solve(state)
            else:
                for loop in loops:
                    self._pass(loop)
                    if tests > LOCKTEST1:
                        self._autogain(loop)
                    tests += 1
                    self._solve(state)
            step += 1
            values = self._evaluate()
            unlocked = [loop.lock for loop in loops if not loop.stopped and not
                        loop.locked(values[loop.lock.input] + loop.lock.offset)]
            if not unlocked:
                break
        if step >= LOCKSTEPS:  # even if the last pass locked, as Finesse 2 counts
            unlocked = unlocked or [loop.lock for loop in loops]
            raise Refusal(unlocked[0].lineno, "lock", (
                f"Finesse 2 gives up locking after {LOCKSTEPS} steps here (kat.ini's "
                "locksteps) and writes what its last step left, which depends on every "
                "rounding along that path; katparallel does not reproduce a failed "
                "lock"))
        self.runs += 1
        if self.runs > 1 and self.sequential & 4:
            self.sequential = 0
        for loop in loops:
            if loop.lock.once:
                loop.stopped = True

    def _pass(self, only: _Loop | None) -> None:
        """Visit one lock (``only``) or all, functions evaluated in file order."""
        names = self._names()
        loops = {loop.lock.name: loop for loop in self.loops}
        for kind, name, code in self.program:
            if kind == "func":
                names[name] = self._eval(code, names)
                continue
            loop = loops[name]
            if (only is None or loop is only) and not loop.stopped:
                loop.prev = loop.err
                loop.err = names[loop.lock.input] + loop.lock.offset
                if not loop.locked(loop.err):
                    loop.value = loop.gain * loop.err + loop.value
                    self.dirty = True
            names[name] = loop.value

    def _autogain(self, loop: _Loop) -> None:
        """Finesse 2's gain check; its current error is the one just visited."""
        if loop.stopped:
            return
        acc = loop.lock.accuracy
        current = loop.err / acc
        ratio = abs((loop.prev - (loop.err + loop.err)) / acc + current) \
            / (abs(current) + _ROUNDING)
        if THRESHOLD_LOW > ratio:
            loop.counter -= 1
        elif ratio > THRESHOLD_HIGH:
            loop.counter += 1
        if loop.counter > LOCKTEST2:
            loop.counter = 0
            loop.gain /= GAINFACTOR
        elif -loop.counter > LOCKTEST2:
            loop.counter = 0
            loop.gain *= GAINFACTOR

    def _solve(self, state) -> None:
        """Put the lock values into the model, solve it, read the detectors."""
        if not self.dirty:
            return  # the same model solves to the same outputs
        for loop in self.loops:
            self.parameters[loop.lock.name].value = loop.value
        sim = state.sim
        sim.run_carrier(force=True)
        if sim.signal is not None:
            sim.run_signal()
        for name in self.outputs:
            ws = self.workspaces.get(name)
            self.outputs[name] = 0.0 if ws is None else float(np.real(ws.get_output()))
        self.dirty = False

    # -- functions ------------------------------------------------------------------

    def _names(self) -> dict:
        names = dict(self.constants)
        for name, symbol in self.symbols.items():
            names[name] = np.float64(np.real(symbol.eval()))
        for name, detector in self.sets.items():
            names[name] = np.float64(self.outputs[detector])
        return names

    def _evaluate(self) -> dict:
        """Every function and lock value, as after Finesse 2 fills its detectors."""
        names = self._names()
        loops = {loop.lock.name: loop for loop in self.loops}
        for kind, name, code in self.program:
            names[name] = self._eval(code, names) if kind == "func" \
                else loops[name].value
        return names

    @staticmethod
    def _eval(code, names: dict) -> np.float64:
        with np.errstate(all="ignore"):
            return np.float64(np.real(eval(code, {"__builtins__": {}}, names)))  # noqa: S307


NUMERIC_FUNCTIONS = ("abs", "exp", "log", "log10", "sin", "cos", "tan", "sqrt", "arcsin",
                     "arccos", "arctan")


def constants(consts: dict[str, float]) -> dict:
    """The fixed names of a numeric function evaluation."""
    from finesse.symbols import PYFUNCTION_MAP

    names: dict = {n: PYFUNCTION_MAP[n] for n in NUMERIC_FUNCTIONS}
    names["pi"] = np.float64(math.pi)
    names.update({name: np.float64(value) for name, value in consts.items()})
    return names
