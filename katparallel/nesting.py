"""Whether stepping a whole analysis axis inside one simulation pays, from measured costs.

Jobs whose analysis has an axis of its own (an ``xaxis``, over ``fsig.f`` for
a sensitivity curve, or a ``FrequencyResponse``) can run the axis whole at
every stepped point of one built simulation (one build per chunk), or one job
at a time, each job building its own simulation. Which is faster depends on
the model, not on the axis length:

- the aLIGO design model with a 100-point ``fsig.f`` axis: a job on its own
  0.6 s, of which 0.5 s is the build; stepped, 0.27 s a curve;
- a toy cavity with ``maxtem 4`` and a 10,000-point axis: the build costs
  milliseconds, and a varied parameter made tunable slows every step of the
  axis (66–124 µs a point against 27 µs): jobs on their own are faster.

So the runner measures, on the first two jobs of the study, run here (their
results are kept like any other)::

    job 1 stepped, in a chunk of its own ──► the build, then its steps
    job 2 on its own                     ──► build and steps together

and steps the rest when ``steps + build / jobs_per_chunk < own job``. The
costs are remembered for the model, the varied parameters and the analysis,
so later runs of the same study measure nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

LOGGER = logging.getLogger(__name__)

__all__ = ("NestingCosts", "known", "remember", "study_key")

#: Most sets of costs remembered (one per model, varied parameters and analysis).
_REMEMBERED = 32
_COSTS: dict[tuple, "NestingCosts"] = {}


@dataclass(frozen=True)
class NestingCosts:
    """What one job costs each way, measured here.

    Attributes
    ----------
    build_seconds : float
        Building the simulation in which jobs are stepped (once per chunk).
    stepped_seconds : float
        One job inside that simulation: its locks, if any, and its whole axis.
    job_seconds : float
        One job on its own: its own build and its axis.
    """

    build_seconds: float
    stepped_seconds: float
    job_seconds: float

    def pays(self, jobs_per_chunk: int) -> bool:
        """True if chunks of ``jobs_per_chunk`` stepped jobs beat jobs on their own."""
        return self.stepped_per_job(jobs_per_chunk) < self.job_seconds

    def stepped_per_job(self, jobs_per_chunk: int) -> float:
        """Seconds a stepped job costs, its share of the chunk's build included."""
        return self.stepped_seconds + self.build_seconds / max(1, jobs_per_chunk)

    def describe(self) -> str:
        return (
            f"a job on its own {self.job_seconds:.3g} s; stepped {self.stepped_seconds:.3g} s "
            f"after a build of {self.build_seconds:.3g} s"
        )


def study_key(adapter: Any, paths: tuple[str, ...], analysis: str) -> tuple:
    """What the costs depend on: the model, the varied parameters, the analysis."""
    return (adapter.key, tuple(paths), analysis)


def known(key: tuple) -> NestingCosts | None:
    """The costs measured before for ``key``, or None."""
    return _COSTS.get(key)


def remember(key: tuple, costs: NestingCosts) -> None:
    """Keep ``costs`` for ``key`` (dropping the oldest beyond a few dozen)."""
    if len(_COSTS) >= _REMEMBERED:
        _COSTS.pop(next(iter(_COSTS)))
    _COSTS[key] = costs
    LOGGER.info("measured: %s", costs.describe())
