"""Sensitivity indices of a finished study.

::

    results dataset ──► rows of the design (design_block, design_unit, coordinates)
                    ──► sobol (SciPy) | morris, delta, pawn (SALib) ──► xarray.Dataset

Every function takes the labelled dataset of :class:`~katparallel.Results`
(``Results.to_xarray()``, or one read back by :func:`katparallel.load`) and an
output, and reduces over the ``sample`` dimension: the indices keep every
other dimension of the output (an index per frequency of a transfer
function). Bootstrap intervals are drawn from a generator seeded by the
study's seed, so a saved study gives the same indices to the bit.

A design with failed rows cannot give Sobol' or Morris indices (its
estimators need every row): :class:`IncompleteDesignError` names the rows
and the given-data methods that can use what did run.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .designs import BLOCK_COORD, PARAM_DIM, UNIT_COORD, block_name, design_of
from .errors import Failure, IncompleteDesignError
from .plan import SAMPLE_DIM

LOGGER = logging.getLogger(__name__)

__all__ = ("sensitivity", "parameters", "output_rows", "METHODS", "bootstrap_rng")

METHODS = ("sobol", "morris", "delta", "pawn")
#: Spawn key of the bootstrap streams (apart from the sampling and job streams).
BOOTSTRAP_KEY = 2**32 - 2


def bootstrap_rng(seed: int, purpose: int = 0) -> np.random.Generator:
    """The generator of a study's bootstrap resamples (``purpose`` tells uses apart)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(BOOTSTRAP_KEY, purpose)))


def parameters(dataset: xr.Dataset) -> list[str]:
    """The sampled parameters: the design's, else every float coordinate along ``sample``."""
    design = design_of(dataset)
    if design is not None:
        return list(design["params"])
    return [
        name for name, coord in dataset.coords.items()
        if coord.dims == (SAMPLE_DIM,) and name not in (SAMPLE_DIM, BLOCK_COORD)
        and np.issubdtype(coord.dtype, np.floating)
    ]


def output_rows(dataset: xr.Dataset, output: str | xr.DataArray) -> xr.DataArray:
    """The output as a real array with ``sample`` first (refusing what cannot be analysed)."""
    if isinstance(output, str):
        if output not in dataset.data_vars:
            raise KeyError(f"No output named {output!r}; the outputs are {list(dataset.data_vars)}.")
        output = dataset[output]
    if SAMPLE_DIM not in output.dims:
        raise ValueError(
            f"{output.name!r} has no {SAMPLE_DIM!r} dimension {output.dims}: sensitivity "
            "needs a sampled study (sample(), sobol() or morris())."
        )
    if np.iscomplexobj(output):
        raise TypeError(
            f"{output.name!r} is complex; pass a real quantity, e.g. "
            f"res.sensitivity(abs(res[{output.name!r}])) or its .real"
        )
    return output.transpose(SAMPLE_DIM, ...).astype(float)


def sensitivity(
    dataset: xr.Dataset,
    output: str | xr.DataArray,
    method: str = "sobol",
    confidence: float = 0.95,
    n_resamples: int | None = None,
    failures: Sequence[Failure] = (),
) -> xr.Dataset:
    """Sensitivity indices of ``output`` to the sampled parameters.

    Parameters
    ----------
    dataset : xarray.Dataset
        A study's results.
    output : str or xarray.DataArray
        An output name, or an array over ``sample`` derived from the outputs.
    method : {"sobol", "morris", "delta", "pawn"}
        ``"sobol"``: first-order ``S1`` and total ``ST`` (and ``S2`` for a
        second-order design; NaN on its diagonal, where it has no meaning) of
        a :meth:`Ensemble.sobol` study, with percentile bootstrap bounds. ``"morris"``: ``mu``, ``mu_star``, ``sigma`` of a
        :meth:`Ensemble.morris` study. ``"delta"`` (Borgonovo's delta and a
        given-data ``S1``) and ``"pawn"`` work on any sampled study; on a
        Sobol' design they use its A and B rows, and they skip failed jobs.
    confidence : float
        Level of the bootstrap intervals.
    n_resamples : int, optional
        Bootstrap resamples: default 999 for Sobol', 100 for Morris and 10
        for delta (each delta resample fits ~50 kernel densities per
        parameter and mode: 100 take minutes on 4,000 rows).
    failures : sequence of Failure
        The study's failures, to name the failed rows of a design.

    Returns
    -------
    xarray.Dataset
        Indices over ``param`` and the output's own dimensions, with
        ``*_low``/``*_high`` bounds; ``attrs`` say the method and the rows used.
    """
    if method not in METHODS:
        raise ValueError(f"unknown sensitivity method {method!r}; use one of {METHODS}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    y = output_rows(dataset, output)
    if method == "sobol":
        out = _sobol(dataset, y, confidence, n_resamples or 999, failures)
    elif method == "morris":
        out = _morris(dataset, y, confidence, n_resamples or 100, failures)
    else:
        out = _given_data(dataset, y, method, confidence, n_resamples or 10)
    out.attrs.update(method=method, output=str(y.name), confidence=confidence)
    return out


def require_design(dataset: xr.Dataset, kind: str, method: str) -> dict[str, Any]:
    """The dataset's design, refusing anything but ``kind``."""
    design = design_of(dataset)
    if design is None or design["kind"] != kind:
        have = "a plain sample" if design is None else f"a {design['kind']!r} design"
        maker = {"saltelli": "Ensemble.sobol(...)", "morris": "Ensemble.morris(...)"}[kind]
        raise ValueError(
            f"method={method!r} needs the rows of {maker}; this study is {have}. Run the "
            "design, or use a given-data method on this study: method='delta' or 'pawn'."
        )
    return design


def refuse_failed_rows(dataset: xr.Dataset, y: xr.DataArray, method: str, failures) -> None:
    """Raise :class:`IncompleteDesignError` naming the rows whose output is not finite."""
    values = y.values.reshape(y.shape[0], -1)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad) == 0:
        return
    design = design_of(dataset)
    blocks = dataset[BLOCK_COORD].values if BLOCK_COORD in dataset.coords else None
    why = {f.index: f.summary for f in failures if f.index is not None}
    lines = []
    for row in bad[:10].tolist():
        role = ""
        if blocks is not None and design["kind"] == "saltelli":
            role = f" ({block_name(int(blocks[row]), design['params'])})"
        elif blocks is not None:
            role = f" (trajectory {int(blocks[row])})"
        lines.append(f"  row {row}{role}: {why.get(row, 'output not finite')}")
    more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
    raise IncompleteDesignError(
        f"{len(bad)} of {y.shape[0]} rows of the design have no finite {y.name!r}, and "
        f"{method!r} indices need every row:\n" + "\n".join(lines) + more +
        "\nUse a given-data method on the rows that ran: res.sensitivity(output, "
        "method='delta') or method='pawn'; or keep every draw valid (narrower "
        "distributions, or R = 1 - T written symbolically).",
        rows=bad.tolist(),
    )


def flat_columns(y: xr.DataArray) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """``y`` as (rows, columns), and the dims and coords of one column."""
    dims = [d for d in y.dims if d != SAMPLE_DIM]
    coords = {name: c for name, c in y.coords.items() if SAMPLE_DIM not in c.dims}
    return y.values.reshape(y.shape[0], -1), dims, coords


def indices_dataset(
    arrays: dict[str, np.ndarray], params: list[str], y: xr.DataArray
) -> xr.Dataset:
    """Arrays shaped (columns, params) as a Dataset over ``param`` and ``y``'s own dims."""
    _, dims, coords = flat_columns(y)
    shape = [y.sizes[d] for d in dims]
    data = {
        name: ((PARAM_DIM, *dims), np.moveaxis(a.reshape(*shape, len(params)), -1, 0))
        for name, a in arrays.items()
    }
    coords = {k: v for k, v in coords.items() if set(v.dims) <= set(dims)}
    return xr.Dataset(data, coords={**coords, PARAM_DIM: params})


@contextlib.contextmanager
def salib_quietly() -> Iterator[None]:
    """Run SALib without its global side effects: it seeds ``numpy.random`` and
    changes the warning filters."""
    state = np.random.get_state()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        np.random.set_state(state)


def _salib(module: str):
    try:
        import importlib

        return importlib.import_module(f"SALib.analyze.{module}")
    except ImportError as exc:
        raise ImportError(
            f"method={module!r} uses SALib: pip install 'katparallel[uq]' (or pip install SALib)"
        ) from exc


def _sobol(dataset, y, confidence, n_resamples, failures) -> xr.Dataset:
    """First-order and total indices (SciPy's estimators), percentile bootstrap bounds.

    Percentile, not SciPy's BCa: BCa's jackknife costs ``n`` evaluations of
    every index (minutes for a second-order design of 4096 base points).
    """
    from scipy.stats import bootstrap, sobol_indices

    design = require_design(dataset, "saltelli", "sobol")
    refuse_failed_rows(dataset, y, "sobol", failures)
    params, n = design["params"], design["n"]
    d = len(params)
    values, _, _ = flat_columns(y)
    blocks = values.T.reshape(values.shape[1], -1, n).swapaxes(0, 1)  # (block, s, n)
    f_a, f_b, f_ab = blocks[0], blocks[1], blocks[2 : 2 + d]
    point = sobol_indices(func={"f_A": f_a, "f_B": f_b, "f_AB": f_ab}, n=n)
    s = values.shape[1]
    first = np.reshape(point.first_order, (s, d))
    total = np.reshape(point.total_order, (s, d))
    centred = blocks - np.mean([f_a, f_b], axis=(0, -1))[:, None]  # as SciPy centres them
    statistic = _saltelli_statistic(centred, d, design["second_order"])
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = bootstrap(
            (np.arange(n),), statistic, vectorized=True, method="percentile",
            n_resamples=n_resamples, confidence_level=confidence,
            batch=max(1, int(4e6 // (centred.size + 1))),
            rng=bootstrap_rng(int(dataset.attrs["seed"])),
        )
        estimate = statistic(np.arange(n), axis=-1)
    low, high = boot.confidence_interval.low, boot.confidence_interval.high
    arrays = {"S1": first, "ST": total}
    for k, name in enumerate(("S1", "ST")):
        arrays[f"{name}_low"], arrays[f"{name}_high"] = low[k].T, high[k].T
    out = indices_dataset(arrays, params, y)
    if design["second_order"]:
        out = out.merge(_second_order(estimate, low, high, params, y))
    out.attrs.update(rows=int(values.shape[0]), n=n, n_resamples=n_resamples,
                     estimator="Saltelli 2010 (first order), Jansen (total), scipy.stats.sobol_indices")
    return out


def _saltelli_statistic(centred: np.ndarray, d: int, second_order: bool):
    """Indices of resampled rows: ``statistic(idx, axis=-1)`` -> (index, d, s, *batch).

    Index 0 is S1, 1 is ST (SciPy's ``saltelli_2010`` formulas), then with
    ``second_order`` d more for S2 (Saltelli 2002, as SALib computes it).
    """

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        rows = centred[..., idx]  # (block, s, *batch, n)
        f_a, f_b, f_ab = rows[0], rows[1], rows[2 : 2 + d]
        var = np.var([f_a, f_b], axis=(0, -1))
        first = np.mean(f_b * (f_ab - f_a), axis=-1) / var
        total = 0.5 * np.mean((f_a - f_ab) ** 2, axis=-1) / var
        parts = [first[None], total[None]]
        if second_order:
            f_ba = rows[2 + d : 2 + 2 * d]
            cross = np.mean(f_ba[:, None] * f_ab[None] - f_a * f_b, axis=-1) / var
            parts.append(cross - first[:, None] - first[None])
        return np.concatenate(parts)

    return statistic


def _second_order(estimate, low, high, params, y) -> xr.Dataset:
    """S2 over ``param`` x ``param_2`` (and the output's own dims) from the statistic's rows."""
    _, dims, coords = flat_columns(y)
    shape = [y.sizes[dim] for dim in dims]
    d = len(params)

    def as_array(a: np.ndarray):
        s2 = a[2 : 2 + d].reshape(d, d, *shape).copy()
        s2[np.arange(d), np.arange(d)] = np.nan  # S2 of a parameter with itself: no meaning
        return (PARAM_DIM, f"{PARAM_DIM}_2", *dims), s2

    coords = {k: v for k, v in coords.items() if set(v.dims) <= set(dims)}
    return xr.Dataset(
        {"S2": as_array(estimate), "S2_low": as_array(low), "S2_high": as_array(high)},
        coords={**coords, PARAM_DIM: params, f"{PARAM_DIM}_2": params},
    )


def _morris(dataset, y, confidence, n_resamples, failures) -> xr.Dataset:
    design = require_design(dataset, "morris", "morris")
    refuse_failed_rows(dataset, y, "morris", failures)
    analyze = _salib("morris").analyze
    params = design["params"]
    unit = dataset[UNIT_COORD].transpose(SAMPLE_DIM, PARAM_DIM).values
    problem = {"num_vars": len(params), "names": params, "bounds": [[0.0, 1.0]] * len(params)}
    values, _, _ = flat_columns(y)
    keys = ("mu", "mu_star", "sigma", "mu_star_conf")
    found = {k: [] for k in keys}
    for column in range(values.shape[1]):
        with salib_quietly():
            si = analyze(
                problem, unit, values[:, column], num_resamples=n_resamples,
                conf_level=confidence, num_levels=design["levels"],
                seed=bootstrap_rng(int(dataset.attrs["seed"]), 1),
            )
        for k in keys:
            found[k].append(np.asarray(si[k], dtype=float))
    arrays = {k: np.array(v) for k, v in found.items()}
    conf = arrays.pop("mu_star_conf")
    arrays["mu_star_low"] = arrays["mu_star"] - conf
    arrays["mu_star_high"] = arrays["mu_star"] + conf
    out = indices_dataset(arrays, params, y)
    out.attrs["rows"] = int(values.shape[0])
    out.attrs["note"] = "elementary effects per unit of quantile (the design's unit cube)"
    return out


def _given_data(dataset, y, method, confidence, n_resamples) -> xr.Dataset:
    """Delta or PAWN through SALib, on the rows that ran (A and B of a Sobol' design)."""
    params = parameters(dataset)
    if not params:
        raise ValueError(
            f"method={method!r} needs sampled parameters, and this study samples none "
            "(its jobs differ only in their random generator)."
        )
    x = np.column_stack([dataset[p].values for p in params])
    values, _, _ = flat_columns(y)
    rows = independent_rows(dataset, method)
    failed = int((rows & ~np.isfinite(values).all(axis=1)).sum())
    rows &= np.isfinite(values).all(axis=1)
    if rows.sum() < 20:
        raise ValueError(
            f"method={method!r} needs at least 20 rows with a finite {y.name!r}, "
            f"this study has {int(rows.sum())}."
        )
    x, values = x[rows], values[rows]
    problem = {
        "num_vars": len(params), "names": params,
        "bounds": [[float(c.min()), float(c.max())] for c in x.T],
    }
    seed = int(dataset.attrs["seed"])
    arrays = _delta(problem, x, values, confidence, n_resamples, seed) if method == "delta" \
        else _pawn(problem, x, values, seed)
    out = indices_dataset(arrays, params, y)
    out.attrs.update(rows=int(rows.sum()), failed_rows_skipped=failed)
    if failed:
        LOGGER.warning("%s: %d failed rows left out of %d", method, failed, failed + int(rows.sum()))
    return out


def independent_rows(dataset: xr.Dataset, method: str) -> np.ndarray:
    """Rows that are independent draws: all of a sample, A and B of a Sobol' design.

    Raises
    ------
    ValueError
        For a Morris design, whose rows move one parameter at a time.
    """
    design = design_of(dataset)
    if design is not None and design["kind"] == "morris":
        raise ValueError(
            f"{method} needs independent draws; a Morris design's rows move one parameter "
            "at a time. Use method='morris', or run a sample() study."
        )
    if design is not None and design["kind"] == "saltelli":
        return dataset[BLOCK_COORD].values < 2
    return np.ones(dataset.sizes[SAMPLE_DIM], dtype=bool)


def _delta(problem, x, values, confidence, n_resamples, seed) -> dict[str, np.ndarray]:
    analyze = _salib("delta").analyze
    keys = {"delta": "delta_raw", "S1": "S1"}
    found = {k: [] for k in ("delta", "delta_low", "delta_high", "S1", "S1_low", "S1_high")}
    for column in range(values.shape[1]):
        with salib_quietly():
            si = analyze(
                problem, x, values[:, column], num_resamples=n_resamples,
                conf_level=confidence, seed=_salib_seed(seed),
            )
        for name, key in keys.items():
            value, conf = np.asarray(si[key], float), np.asarray(si[f"{key}_conf"], float)
            found[name].append(value)
            found[f"{name}_low"].append(value - conf)
            found[f"{name}_high"].append(value + conf)
    return {k: np.array(v) for k, v in found.items()}


def _pawn(problem, x, values, seed) -> dict[str, np.ndarray]:
    analyze = _salib("pawn").analyze
    found = {k: [] for k in ("median", "minimum", "maximum", "mean", "CV")}
    for column in range(values.shape[1]):
        with salib_quietly():
            si = analyze(problem, x, values[:, column], seed=_salib_seed(seed))
        for k in found:
            found[k].append(np.asarray(si[k], float))
    return {f"pawn_{k}": np.array(v) for k, v in found.items()}


def _salib_seed(seed: int) -> int:
    """An int seed for SALib's functions that take nothing else (never 0: SALib skips it)."""
    return int(bootstrap_rng(seed, 2).integers(1, 2**31 - 1))


#: The indices a bar chart shows for each method: (name, low, high).
_BARS = {
    "sobol": (("S1", "S1_low", "S1_high"), ("ST", "ST_low", "ST_high")),
    "morris": (("mu_star", "mu_star_low", "mu_star_high"),),
    "delta": (("delta", "delta_low", "delta_high"), ("S1", "S1_low", "S1_high")),
    "pawn": (("pawn_median", "pawn_minimum", "pawn_maximum"),),
}


def plot_indices(indices: xr.Dataset, ax=None, sort: bool = True):
    """Bars of the indices :func:`sensitivity` returned, with their bounds as error bars.

    For PAWN the bars are the median KS statistic, the error bars its
    minimum and maximum over the conditioning slices. ``sort`` orders the
    parameters by the last index shown (total index for Sobol'), largest
    first. Returns the matplotlib Axes.
    """
    import matplotlib.pyplot as plt

    extra = [d for d in indices["S1" if "S1" in indices else next(iter(indices.data_vars))].dims
             if d != PARAM_DIM]
    if extra:
        raise ValueError(
            f"these indices also run over {extra}; select one point first, e.g. "
            f"plot_sensitivity(res[...].sel({extra[0]}=...)) or indices.isel({extra[0]}=0)"
        )
    bars = _BARS[indices.attrs["method"]]
    order = np.arange(indices.sizes[PARAM_DIM])
    if sort:
        order = np.argsort(-indices[bars[-1][0]].values, kind="stable")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4, 1.1 * len(order) + 2), 3.5))
    width = 0.8 / len(bars)
    x = np.arange(len(order))
    for k, (name, low, high) in enumerate(bars):
        value = indices[name].values[order]
        errors = np.vstack([value - indices[low].values[order], indices[high].values[order] - value])
        ax.bar(x + (k - (len(bars) - 1) / 2) * width, value, width, yerr=errors, capsize=3,
               label=name)
    ax.set_xticks(x, [str(p) for p in indices[PARAM_DIM].values[order]], rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel(f"{indices.attrs['method']} index")
    ax.set_title(f"{indices.attrs['output']}: {indices.attrs['method']} indices "
                 f"({indices.attrs['confidence']:.0%} intervals)")
    ax.legend()
    return ax
