"""Yield, quantiles and rank correlations of a finished study.

* :func:`yield_fraction` -- the fraction of jobs meeting a specification,
  with a Clopper-Pearson interval; failed jobs count as failing, and are
  reported;
* :func:`quantiles` -- quantiles over the ``sample`` dimension with
  percentile-bootstrap intervals;
* :func:`rank` -- Spearman correlation of each sampled parameter with an
  output.

Each works on the labelled dataset of :class:`~katparallel.Results`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .designs import PARAM_DIM
from .errors import Failure
from .plan import SAMPLE_DIM
from .sensitivity import bootstrap_rng, flat_columns, independent_rows, output_rows, parameters

LOGGER = logging.getLogger(__name__)

__all__ = ("YieldResult", "yield_fraction", "quantiles", "rank")


@dataclass(frozen=True)
class YieldResult:
    """The pass fraction of a study against a specification.

    Attributes
    ----------
    fraction : float
        Jobs that pass over all jobs (failed jobs included, as failing).
    low, high : float
        Clopper-Pearson (exact binomial) interval at ``confidence``.
    passed, total, failed : int
        Jobs that pass, all jobs, and jobs that failed to run (counted as failing).
    confidence : float
        Level of the interval.
    """

    fraction: float
    low: float
    high: float
    passed: int
    total: int
    failed: int
    confidence: float

    def __str__(self) -> str:
        return (
            f"yield {self.fraction:.2%} ({self.confidence:.0%} interval {self.low:.2%} to "
            f"{self.high:.2%}): {self.passed} of {self.total} jobs pass; {self.failed} failed "
            "jobs counted as failing"
        )


def _plan_dims(dataset: xr.Dataset) -> tuple[str, ...]:
    return tuple(json.loads(dataset.attrs.get("plan_dims", json.dumps([SAMPLE_DIM]))))


def _passes(dataset: xr.Dataset, spec: Callable | Mapping[str, Any]) -> np.ndarray:
    """One bool per job (flattened plan dims) saying whether it meets ``spec``."""
    dims = _plan_dims(dataset)
    if callable(spec):
        verdict = spec(dataset)
        verdict = verdict if isinstance(verdict, xr.DataArray) else xr.DataArray(
            np.asarray(verdict), dims=dims[: np.ndim(verdict)]
        )
    elif isinstance(spec, Mapping) and spec:
        verdict = True
        for name, bounds in spec.items():
            if name not in dataset.data_vars:
                raise KeyError(f"yield_ spec names {name!r}, not an output; the outputs are "
                               f"{list(dataset.data_vars)}")
            low, high = _bounds(name, bounds)
            values = dataset[name]
            verdict = verdict & (values >= low) & (values <= high)  # NaN fails both
    else:
        raise TypeError(
            "yield_(spec) takes a function of the results dataset returning one bool per "
            "job, or {output: (low, high)} bounds (None for an open side), e.g. "
            "{'PRG': (50, None)}"
        )
    extra = [d for d in verdict.dims if d not in dims]
    if extra:  # an output with its own axes passes where every element passes
        verdict = verdict.all(extra)
    if set(verdict.dims) != set(dims):
        raise ValueError(
            f"yield_ spec gave a verdict over {verdict.dims}, not one per job over {dims}"
        )
    return verdict.transpose(*dims).values.astype(bool).reshape(-1)


def _bounds(name: str, bounds: Any) -> tuple[float, float]:
    try:
        low, high = bounds
    except (TypeError, ValueError):
        raise TypeError(f"bounds of {name!r} must be (low, high), got {bounds!r}") from None
    return (-np.inf if low is None else float(low), np.inf if high is None else float(high))


def yield_fraction(
    dataset: xr.Dataset,
    failures: Sequence[Failure],
    spec: Callable | Mapping[str, Any],
    confidence: float = 0.95,
) -> YieldResult:
    """The fraction of jobs meeting ``spec``, with a Clopper-Pearson interval.

    Parameters
    ----------
    dataset : xarray.Dataset
        A study's results.
    failures : sequence of Failure
        Its failed jobs: they count as failing whatever ``spec`` says.
    spec : callable or mapping
        ``spec(dataset)`` returning one bool per job, or ``{output: (low,
        high)}`` bounds (``None`` for an open side); an output with axes of
        its own passes where all its elements are within bounds.
    confidence : float
        Level of the interval.
    """
    from scipy.stats import binomtest

    passes = _passes(dataset, spec)
    failed = sorted({f.index for f in failures if f.index is not None})
    passes[failed] = False
    total, passed = passes.size, int(passes.sum())
    interval = binomtest(passed, total).proportion_ci(confidence, method="exact")
    if failed:
        LOGGER.warning("yield: %d failed jobs counted as failing", len(failed))
    return YieldResult(passed / total, float(interval.low), float(interval.high), passed,
                       total, len(failed), confidence)


def quantiles(
    dataset: xr.Dataset,
    q: float | Sequence[float],
    outputs: str | Sequence[str] | None = None,
    confidence: float = 0.95,
    n_resamples: int = 999,
) -> xr.Dataset:
    """Quantiles ``q`` of outputs over ``sample``, with percentile-bootstrap bounds.

    Rows where an output is not finite (failed jobs) are left out, and
    counted in the attribute ``failed_rows_skipped``; a Sobol' design
    contributes its independent rows (A and B). Returns, for each
    output ``name``, variables ``name``, ``name_low`` and ``name_high`` over
    ``quantile`` and the output's own dimensions.
    """
    qs = np.atleast_1d(np.asarray(q, dtype=float))
    if qs.ndim != 1 or ((qs < 0) | (qs > 1)).any():
        raise ValueError(f"quantiles q must be numbers in [0, 1], got {q!r}")
    names = [outputs] if isinstance(outputs, str) else list(outputs or dataset.data_vars)
    rng = bootstrap_rng(int(dataset.attrs["seed"]), 3)
    data, skipped = {}, {}
    for name in names:
        y = output_rows(dataset, name)
        values, dims, coords = flat_columns(y)
        independent = independent_rows(dataset, "quantiles")
        ok = np.isfinite(values).all(axis=1)
        values, skipped[name] = values[ok & independent], int((~ok & independent).sum())
        estimate, low, high = _bootstrap_quantiles(values, qs, confidence, n_resamples, rng)
        shape = (len(qs), *[y.sizes[d] for d in dims])
        for suffix, array in (("", estimate), ("_low", low), ("_high", high)):
            data[f"{name}{suffix}"] = (("quantile", *dims), array.reshape(shape))
    out = xr.Dataset(data, coords={"quantile": qs})
    out.attrs.update(confidence=confidence, n_resamples=n_resamples,
                     failed_rows_skipped=json.dumps(skipped))
    return out


def _bootstrap_quantiles(values, qs, confidence, n_resamples, rng):
    """Quantiles of the columns of ``values`` and percentile-bootstrap bounds."""
    n = len(values)
    if n < 2:
        raise ValueError(f"quantiles need at least 2 finite rows, got {n}")
    estimate = np.quantile(values, qs, axis=0)
    per_batch = max(1, int(2e6 // max(values.size, 1)))
    draws = []
    for start in range(0, n_resamples, per_batch):
        idx = rng.integers(0, n, (min(per_batch, n_resamples - start), n))
        draws.append(np.quantile(values[idx], qs, axis=1))  # (q, batch, columns)
    draws = np.concatenate(draws, axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail], axis=1)
    return estimate, low, high


def rank(dataset: xr.Dataset, output: str | xr.DataArray) -> xr.Dataset:
    """Spearman rank correlation of each sampled parameter with ``output``.

    Returns ``spearman`` and its two-sided ``pvalue`` over ``param`` and the
    output's own dimensions; rows where the output is not finite are left out,
    and a Sobol' design contributes its independent rows (A and B).
    """
    from scipy.stats import rankdata, t

    params = parameters(dataset)
    if not params:
        raise ValueError("rank() needs sampled parameters; this study samples none")
    y = output_rows(dataset, output)
    values, dims, coords = flat_columns(y)
    finite = np.isfinite(values).all(axis=1)
    independent = independent_rows(dataset, "rank")
    ok = finite & independent
    n = int(ok.sum())
    if n < 3:
        raise ValueError(f"rank() needs at least 3 finite rows, got {n}")
    x = rankdata(np.column_stack([dataset[p].values[ok] for p in params]), axis=0)
    r = rankdata(values[ok], axis=0)
    x, r = x - x.mean(axis=0), r - r.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (r.T @ x) / np.outer(np.sqrt((r**2).sum(axis=0)), np.sqrt((x**2).sum(axis=0)))
        stat = rho * np.sqrt((n - 2) / (1 - rho**2))
    pvalue = 2 * t.sf(np.abs(stat), n - 2)
    shape = [y.sizes[d] for d in dims]
    coords = {k: v for k, v in coords.items() if set(v.dims) <= set(dims)}
    out = xr.Dataset(
        {
            name: ((PARAM_DIM, *dims), np.moveaxis(a.reshape(*shape, len(params)), -1, 0))
            for name, a in (("spearman", rho), ("pvalue", pvalue))
        },
        coords={**coords, PARAM_DIM: params},
    )
    out.attrs.update(output=str(y.name), rows=n, failed_rows_skipped=int((~finite & independent).sum()))
    return out
