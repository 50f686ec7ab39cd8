"""Plans: which jobs an ensemble runs.

A :class:`Plan` is an outer product of :class:`Axis` objects. Each axis holds
one or more parameter paths whose values step together (zipped); a plain
``vary("m.T", ts)`` is a one-parameter axis, ``sample(n, ...)`` an axis named
``"sample"``. Job ``i`` is the ``i``-th point of the grid in C order, the last
axis varying fastest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidValuesError

__all__ = ("Axis", "Plan", "as_values")

SAMPLE_DIM = "sample"


def as_values(path: str, values: object) -> np.ndarray:
    """Check ``values`` for ``path`` and return them as a 1-D float array.

    Raises
    ------
    InvalidValuesError
        If the values are empty, not numeric, not one-dimensional, or contain
        NaN or infinity.
    """
    if isinstance(values, (str, bytes)):
        raise InvalidValuesError(
            f"Values for {path!r} must be numbers, got the string {values!r}; "
            "pass a list or array such as numpy.linspace(0.01, 0.99, 99)."
        )
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise InvalidValuesError(
            f"Values for {path!r} must be numbers, got {values!r}; pass a list or "
            "array of floats such as numpy.linspace(0.01, 0.99, 99)."
        ) from None
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise InvalidValuesError(
            f"Values for {path!r} must be one-dimensional, got shape {array.shape}; "
            "for a grid call vary() once per parameter."
        )
    if array.size == 0:
        raise InvalidValuesError(f"No values given for {path!r}; pass at least one value.")
    bad = ~np.isfinite(array)
    if bad.any():
        where = np.flatnonzero(bad)[:5].tolist()
        raise InvalidValuesError(
            f"Values for {path!r} contain NaN or infinity at positions {where}; "
            "remove them or replace them with finite numbers."
        )
    return array


@dataclass(frozen=True)
class Axis:
    """One dimension of a plan: parameters whose values step together.

    Parameters
    ----------
    dim : str
        Dimension name in the results (the first path, or ``"sample"``).
    values : mapping of str to ndarray
        Parameter path -> values, all of the same length.
    size : int
        Length of an axis with no parameters (``sample(n)`` feeding only
        perturb functions or a factory).
    """

    dim: str
    values: Mapping[str, np.ndarray] = field(repr=False)
    size: int = 0

    def __post_init__(self):
        lengths = {path: len(v) for path, v in self.values.items()}
        if len(set(lengths.values())) > 1:
            raise InvalidValuesError(
                "Parameters varied together on one axis need the same number of "
                f"values, got {lengths}; give every parameter equally many values, "
                "or call vary() separately for a grid."
            )

    def __len__(self) -> int:
        if not self.values:
            return self.size
        return len(next(iter(self.values.values())))

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(self.values)


@dataclass(frozen=True)
class Plan:
    """The full set of jobs: the outer product of ``axes``, plus the seed."""

    axes: tuple[Axis, ...]
    seed: int

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes)

    @property
    def dims(self) -> tuple[str, ...]:
        return tuple(a.dim for a in self.axes)

    @property
    def paths(self) -> tuple[str, ...]:
        """Every varied parameter path, in axis order."""
        return tuple(p for a in self.axes for p in a.paths)

    @property
    def n_jobs(self) -> int:
        return math.prod(self.shape)

    def values_for(self, indices: np.ndarray) -> np.ndarray:
        """Parameter values of the given jobs, shape ``(len(indices), len(paths))``."""
        indices = np.asarray(indices, dtype=np.int64)
        columns = []
        if self.axes:
            positions = np.unravel_index(indices, self.shape)
            for axis, pos in zip(self.axes, positions):
                for path in axis.paths:
                    columns.append(axis.values[path][pos])
        if not columns:
            return np.empty((len(indices), 0))
        return np.column_stack(columns)

    def point(self, index: int) -> dict[str, float]:
        """Parameter values of job ``index`` as ``{path: value}``."""
        row = self.values_for(np.array([index]))[0]
        return dict(zip(self.paths, row.tolist()))

    def describe(self, seed: bool = True) -> str:
        """A short human description of the plan (a dry run), with its seed."""
        if not self.axes:
            return "1 job (no parameters varied)" + (f"; seed {self.seed}" if seed else "")
        parts = []
        for axis in self.axes:
            names = ", ".join(axis.paths) or "perturbations only"
            parts.append(f"{axis.dim}[{len(axis)}] ({names})")
        text = f"{self.n_jobs} jobs: " + " x ".join(parts)
        return text + f"; seed {self.seed}" if seed else text
