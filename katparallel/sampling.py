"""Distributions for Monte Carlo draws, and the per-job random streams.

Every random number in a study comes from one integer seed:

* the sampled parameter values of axis ``a`` from
  ``SeedSequence(seed, spawn_key=(SAMPLING_KEY, a))``;
* job ``i``'s generator from ``SeedSequence(seed, spawn_key=(i,))`` (which is
  exactly ``SeedSequence(seed).spawn(n)[i]``), and the global ``numpy.random``
  and ``random`` states from its children ``(i, 0)`` and ``(i, 1)``.

So job ``i`` sees the same numbers whatever backend, worker count or
completion order ran it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = (
    "Distribution",
    "Normal",
    "Uniform",
    "LogNormal",
    "as_distribution",
    "job_rng",
    "new_seed",
)

SAMPLING_KEY = 2**32 - 1


class Distribution:
    """A distribution to draw parameter values from.

    Subclasses implement :meth:`draw`, and :meth:`ppf` (the inverse CDF) to
    be usable in quasi-random and sensitivity designs; any callable
    ``(rng, n) -> array`` can be used in its place (see :func:`as_distribution`).
    """

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Return ``n`` draws as a float array."""
        raise NotImplementedError

    def ppf(self, q: np.ndarray) -> np.ndarray:
        """The inverse CDF: the values below which a fraction ``q`` of draws lie."""
        raise NotImplementedError(
            f"{self!r} has no inverse CDF (ppf), which quasi-random and sensitivity "
            "designs map their points through; use Normal, Uniform or LogNormal, give "
            "the distribution a ppf(q) method, or sample it with method='mc'."
        )


@dataclass(frozen=True)
class Normal(Distribution):
    """Normal distribution with mean ``mu`` and standard deviation ``sigma``."""

    mu: float
    sigma: float

    def __post_init__(self):
        if not self.sigma >= 0:
            raise ValueError(f"Normal: sigma must be >= 0, got {self.sigma!r}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.normal(self.mu, self.sigma, n)

    def ppf(self, q: np.ndarray) -> np.ndarray:
        from scipy.special import ndtri

        return self.mu + self.sigma * ndtri(np.asarray(q, dtype=float))


@dataclass(frozen=True)
class Uniform(Distribution):
    """Uniform distribution on ``[low, high)``."""

    low: float
    high: float

    def __post_init__(self):
        if not self.high >= self.low:
            raise ValueError(
                f"Uniform: high ({self.high!r}) must not be below low ({self.low!r})"
            )

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, n)

    def ppf(self, q: np.ndarray) -> np.ndarray:
        return self.low + (self.high - self.low) * np.asarray(q, dtype=float)


@dataclass(frozen=True)
class LogNormal(Distribution):
    """Log-normal distribution: ``exp(Normal(mu, sigma))``.

    ``mu`` and ``sigma`` are those of the underlying normal distribution,
    as in :meth:`numpy.random.Generator.lognormal`.
    """

    mu: float
    sigma: float

    def __post_init__(self):
        if not self.sigma >= 0:
            raise ValueError(f"LogNormal: sigma must be >= 0, got {self.sigma!r}")

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.lognormal(self.mu, self.sigma, n)

    def ppf(self, q: np.ndarray) -> np.ndarray:
        from scipy.special import ndtri

        return np.exp(self.mu + self.sigma * ndtri(np.asarray(q, dtype=float)))


@dataclass(frozen=True)
class _CallableDistribution(Distribution):
    fn: Callable[[np.random.Generator, int], np.ndarray]

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.asarray(self.fn(rng, n), dtype=float)

    def ppf(self, q: np.ndarray) -> np.ndarray:
        raise NotImplementedError(
            f"the callable {getattr(self.fn, '__qualname__', self.fn)!r} draws values but "
            "has no inverse CDF, which quasi-random and sensitivity designs map their "
            "points through; use Normal, Uniform, LogNormal (or a Distribution with a "
            "ppf(q) method) for it, or sample with method='mc'."
        )


def as_distribution(obj: Distribution | Callable) -> Distribution:
    """Return ``obj`` as a :class:`Distribution`.

    Raises
    ------
    TypeError
        If ``obj`` is neither a Distribution nor a callable ``(rng, n)``.
    """
    if isinstance(obj, Distribution):
        return obj
    if callable(obj):
        return _CallableDistribution(obj)
    raise TypeError(
        f"{obj!r} is not a distribution: use Normal(mu, sigma), Uniform(low, high), "
        "LogNormal(mu, sigma) or a callable (rng, n) -> array of n values"
    )


def new_seed() -> int:
    """Draw a fresh seed from the operating system's entropy (recorded in results)."""
    return int(np.random.SeedSequence().entropy % 2**63)


def sampling_rng(seed: int, axis: int) -> np.random.Generator:
    """The generator that draws the sampled values of plan axis ``axis``."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(SAMPLING_KEY, axis)))
    )


def job_rng(seed: int, index: int, reseed_globals: bool = True) -> np.random.Generator:
    """Return job ``index``'s generator; optionally reseed the global RNGs too.

    Parameters
    ----------
    seed : int
        The ensemble seed.
    index : int
        The job's index in the plan.
    reseed_globals : bool
        Also seed ``numpy.random`` and ``random`` from the job, for user code
        that calls the legacy global functions.
    """
    if reseed_globals:
        np.random.seed(np.random.SeedSequence(seed, spawn_key=(index, 0)).generate_state(4))
        random.seed(
            int.from_bytes(
                np.random.SeedSequence(seed, spawn_key=(index, 1)).generate_state(4).tobytes(),
                "little",
            )
        )
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))
