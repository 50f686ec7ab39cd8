"""Whether stepping a whole analysis axis inside one simulation pays, from measured costs.

Jobs whose analysis has an axis of its own (an ``xaxis``, over ``fsig.f`` for
a sensitivity curve, or a ``FrequencyResponse``) can run the axis whole at
every stepped point of one built simulation (one build per chunk), or one job
at a time, each job building its own simulation. Which is faster depends on
the model, not on the axis length:

- the aLIGO design model with a 100-point ``fsig.f`` axis: a job on its own
  0.6 s, of which 0.5 s is the build; stepped, 0.27 s a curve;
- the tutorial sweep (``maxtem 4``, ``m1.T`` and ``m1.R`` varied, an xaxis of
  the laser power): 20 jobs of 1,000 points took 0.75-1.9 s stepped against
  2.6-3.2 s on their own, but with 10,000 points 3.9-6.4 s against 4.2-4.8 s
  (serial, on a loaded machine): the build no longer matters, and a varied
  parameter made tunable can slow every step of the axis.

So the runner measures, on the first two jobs of the study, run here (their
results are kept like any other)::

    job 1 stepped, in a chunk of its own ──► the build, then its steps
    job 2 on its own                     ──► build and steps together

and steps the rest when ``steps + build / jobs_per_chunk`` is at most
:data:`MARGIN` of ``own job``: a gain within the noise of two single timings
is no reason to give up the finer load balance of jobs on their own (the
tutorial sweep with ``maxtem 4`` and 10,000 points measured about even). The
costs are remembered for the model, the varied parameters and the analysis,
so later runs of the same study measure nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

LOGGER = logging.getLogger(__name__)

__all__ = ("MARGIN", "NestingCosts", "known", "remember", "study_key")

#: A stepped job (its share of the build included) must cost at most this
#: fraction of a job on its own for the jobs to be stepped.
MARGIN = 0.8
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
        """True if chunks of ``jobs_per_chunk`` stepped jobs clearly beat jobs on their own."""
        return self.stepped_per_job(jobs_per_chunk) <= MARGIN * self.job_seconds

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
