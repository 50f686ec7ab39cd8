"""Designs: where the sampled points of a study lie.

A design turns distributions and a generator into parameter values along the
``sample`` axis of a plan:

* :class:`Sampled` -- ``n`` points, by plain Monte Carlo (``"mc"``, each
  distribution's own ``draw``) or by a quasi-random design of
  :mod:`scipy.stats.qmc` (``"lhs"``, ``"sobol"``, ``"halton"``, scrambled with
  the study's generator) mapped through each distribution's inverse CDF;
* :class:`Saltelli` -- the Sobol'-index design: blocks A, B and AB_i (A with
  column i from B), and BA_i for second-order indices;
* :class:`Morris` -- SALib's elementary-effects trajectories.

Every design is drawn in the parent from ``sampling_rng(seed, axis)``, so the
same seed gives the same points on every backend. The results of a designed
study carry the points in the unit cube (coordinate ``design_unit``), each
row's block (``design_block``) and the design itself (attribute ``design``),
so the indices can be computed again from a saved file.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidValuesError
from .sampling import Distribution

LOGGER = logging.getLogger(__name__)

__all__ = (
    "METHODS", "Sampled", "Saltelli", "Morris", "check_power_of_two", "unit_points",
    "annotate", "design_of", "block_name", "DESIGN_ATTR", "BLOCK_COORD", "UNIT_COORD", "PARAM_DIM",
)

#: The methods of :meth:`Ensemble.sample <katparallel.Ensemble.sample>`.
METHODS = ("mc", "lhs", "sobol", "halton")
DESIGN_ATTR = "design"
BLOCK_COORD = "design_block"
UNIT_COORD = "design_unit"
PARAM_DIM = "param"


def check_power_of_two(n: int, what: str) -> None:
    """Refuse an ``n`` that is not a power of 2, naming the nearest ones.

    Raises
    ------
    InvalidValuesError
        If ``n`` is not a power of 2.
    """
    if n >= 1 and n & (n - 1) == 0:
        return
    low = 2 ** max(0, math.floor(math.log2(max(n, 1))))
    raise InvalidValuesError(
        f"{what} needs a power of 2 (the balance of Sobol' points depends on it), got "
        f"{n}; use {low} or {low * 2}."
    )


def unit_points(method: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points of a quasi-random design in the unit cube ``[0, 1)^d``.

    Scrambled with ``rng`` (an unscrambled Sobol' sequence starts at 0, whose
    inverse CDF is infinite for a normal distribution).
    """
    from scipy.stats import qmc

    if method == "sobol":
        check_power_of_two(n, f"sample({n}, ..., method='sobol')")
        return qmc.Sobol(d, scramble=True, rng=rng).random_base2(int(math.log2(n)))
    if method == "lhs":
        return qmc.LatinHypercube(d, rng=rng).random(n)
    if method == "halton":
        return qmc.Halton(d, scramble=True, rng=rng).random(n)
    raise InvalidValuesError(f"unknown design method {method!r}; use one of {METHODS}")


def _through_ppf(unit: np.ndarray, distributions: Mapping[str, Distribution]) -> dict[str, np.ndarray]:
    """Map unit-cube columns through each distribution's inverse CDF."""
    return {
        path: np.asarray(dist.ppf(unit[:, k]), dtype=float)
        for k, (path, dist) in enumerate(distributions.items())
    }


def _check_ppf(distributions: Mapping[str, Distribution], what: str) -> None:
    """Refuse distributions without an inverse CDF before anything is drawn."""
    for path, dist in distributions.items():
        try:
            dist.ppf(np.array([0.5]))
        except NotImplementedError as exc:
            raise InvalidValuesError(f"{what}: the distribution of {path!r}: {exc}") from None


@dataclass(frozen=True)
class Sampled:
    """``n`` draws of ``distributions`` by ``method`` (see :data:`METHODS`)."""

    n: int
    distributions: Mapping[str, Distribution]
    method: str = "mc"

    def __post_init__(self):
        if self.method not in METHODS:
            raise InvalidValuesError(
                f"sample(method={self.method!r}) is not a design; use one of {METHODS}"
            )
        if self.method == "sobol":
            check_power_of_two(self.n, f"sample({self.n}, ..., method='sobol')")
        if self.method != "mc":
            if not self.distributions:
                raise InvalidValuesError(
                    f"sample(method={self.method!r}) needs distributions to place its points; "
                    "without parameters use method='mc'."
                )
            _check_ppf(self.distributions, f"sample(method={self.method!r})")

    @property
    def size(self) -> int:
        return self.n

    def draw(self, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Parameter values, and the points in the unit cube (None for ``"mc"``)."""
        if self.method == "mc":
            return {path: dist.draw(rng, self.n) for path, dist in self.distributions.items()}, None
        unit = unit_points(self.method, self.n, len(self.distributions), rng)
        return _through_ppf(unit, self.distributions), unit

    def info(self) -> dict[str, Any] | None:
        """What the results record about the design (None for plain Monte Carlo)."""
        if self.method == "mc":
            return None
        return {"kind": self.method, "n": self.n, "params": list(self.distributions)}

    def blocks(self) -> np.ndarray | None:
        return None


@dataclass(frozen=True)
class Saltelli:
    """The design of Sobol' indices: ``n`` base points, ``n (d + 2)`` rows.

    Rows are blocks of ``n``: A, B, then AB_i (A with column i taken from B)
    for each parameter, then (``second_order``) BA_i (B with column i from A).
    A and B are the two halves of one scrambled Sobol' sequence of ``2 d``
    dimensions, as :func:`scipy.stats.sobol_indices` draws them.
    """

    n: int
    distributions: Mapping[str, Distribution]
    second_order: bool = False

    def __post_init__(self):
        check_power_of_two(self.n, f"sobol(n={self.n})")
        if len(self.distributions) < 1:
            raise InvalidValuesError("sobol() needs at least one parameter distribution")
        _check_ppf(self.distributions, "sobol()")

    @property
    def d(self) -> int:
        return len(self.distributions)

    @property
    def size(self) -> int:
        return self.n * (2 * self.d + 2 if self.second_order else self.d + 2)

    def draw(self, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
        from scipy.stats import qmc

        d = self.d
        both = qmc.Sobol(2 * d, scramble=True, rng=rng).random_base2(int(math.log2(self.n)))
        a, b = both[:, :d], both[:, d:]
        blocks = [a, b]
        for i in range(d):
            ab = a.copy()
            ab[:, i] = b[:, i]
            blocks.append(ab)
        if self.second_order:
            for i in range(d):
                ba = b.copy()
                ba[:, i] = a[:, i]
                blocks.append(ba)
        unit = np.concatenate(blocks)
        return _through_ppf(unit, self.distributions), unit

    def info(self) -> dict[str, Any]:
        return {
            "kind": "saltelli", "n": self.n, "params": list(self.distributions),
            "second_order": self.second_order,
        }

    def blocks(self) -> np.ndarray:
        return np.repeat(np.arange(self.size // self.n), self.n)


def block_name(block: int, params: list[str]) -> str:
    """``"A"``, ``"B"``, ``"AB[path]"`` or ``"BA[path]"`` for a Saltelli block number."""
    d = len(params)
    if block < 2:
        return "AB"[block]
    if block < 2 + d:
        return f"AB[{params[block - 2]}]"
    return f"BA[{params[block - 2 - d]}]"


@dataclass(frozen=True)
class Morris:
    """Morris screening: ``trajectories`` one-at-a-time paths over a ``levels`` grid.

    SALib draws the trajectories in the unit cube (levels ``k / (levels - 1)``);
    level ``k`` of a parameter is then the quantile ``(k + 1/2) / levels`` of
    its distribution, the middle of one of ``levels`` equally likely bins, so
    a normal distribution never meets its infinite tails.
    """

    trajectories: int
    distributions: Mapping[str, Distribution]
    levels: int = 4

    def __post_init__(self):
        if self.trajectories < 2:
            raise InvalidValuesError(
                f"morris() needs at least 2 trajectories, got {self.trajectories}"
            )
        if self.levels < 2 or self.levels % 2:
            raise InvalidValuesError(
                f"morris(levels={self.levels}): the grid needs an even number of levels "
                "(at least 2), e.g. 4"
            )
        if len(self.distributions) < 1:
            raise InvalidValuesError("morris() needs at least one parameter distribution")
        _check_ppf(self.distributions, "morris()")

    @property
    def size(self) -> int:
        return self.trajectories * (len(self.distributions) + 1)

    def draw(self, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
        try:
            from SALib.sample import morris
        except ImportError as exc:
            raise ImportError(
                "Morris designs use SALib: pip install 'katparallel[uq]' (or pip install SALib)"
            ) from exc
        d = len(self.distributions)
        problem = {"num_vars": d, "names": list(self.distributions), "bounds": [[0.0, 1.0]] * d}
        unit = morris.sample(problem, self.trajectories, num_levels=self.levels, seed=rng)
        quantiles = (unit * (self.levels - 1) + 0.5) / self.levels
        return _through_ppf(quantiles, self.distributions), unit

    def info(self) -> dict[str, Any]:
        return {
            "kind": "morris", "n": self.trajectories, "params": list(self.distributions),
            "levels": self.levels,
        }

    def blocks(self) -> np.ndarray:
        return np.repeat(np.arange(self.trajectories), len(self.distributions) + 1)


Design = Sampled | Saltelli | Morris


def annotate(dataset, design: Design, unit: np.ndarray | None, dim: str = "sample") -> None:
    """Record ``design`` in a results dataset, in place: attribute and coordinates."""
    info = design.info()
    if info is None:
        return
    dataset.attrs[DESIGN_ATTR] = json.dumps(info)
    dataset.coords[PARAM_DIM] = (PARAM_DIM, list(info["params"]))
    dataset.coords[UNIT_COORD] = ((dim, PARAM_DIM), unit)
    blocks = design.blocks()
    if blocks is not None:
        dataset.coords[BLOCK_COORD] = (dim, blocks)


def design_of(dataset) -> dict[str, Any] | None:
    """The design a results dataset records (see :func:`annotate`), or None."""
    text = dataset.attrs.get(DESIGN_ATTR)
    return None if text is None else json.loads(text)
