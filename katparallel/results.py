"""Results: job outputs gathered into labelled arrays.

:class:`Collector` receives :class:`~katparallel.jobs.ChunkResult` objects in
any order and writes them into arrays preallocated to the plan's shape (so a
million-draw study holds one float per draw, not a million objects).
:class:`Results` wraps the finished :class:`xarray.Dataset`: plan axes first
(parameter paths, or ``sample``), then each output's own axes (e.g. the
xaxis), with the varied values as coordinates. Jobs that failed hold NaN and
are listed in :attr:`Results.failures`.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from .plan import Plan
from .errors import Failure
from .jobs import ChunkResult, outputs_differ

LOGGER = logging.getLogger(__name__)

__all__ = ("Collector", "Results", "load")

_COMPLEX_TAG = "katparallel_complex"
_PLAN_DIMS = "plan_dims"  # JSON list: the dimensions jobs span


class Collector:
    """Accumulate chunk results into arrays shaped like the plan.

    The study's outputs are those of job 0, by index, not by arrival: if job 0
    failed, of the lowest-index job that succeeded. Every job whose outputs
    differ from those (a factory that builds different detectors for
    different jobs) is a failure naming the extra, missing or reshaped
    outputs; no other job fails for it. The rule depends only on which jobs
    are collected, so every backend, worker count, chunking and arrival order
    gives the same failures, and a study resumed from a store the same ones
    as an uninterrupted run. Until the lowest-index success arrives, jobs
    with other outputs are held (their values, in their own chunk results).
    """

    def __init__(self, plan: Plan, keep_solutions: bool = False):
        self.plan = plan
        self.arrays: dict[str, np.ndarray] = {}
        self.axes: dict[str, tuple] = {}
        self.warnings: Counter = Counter()
        self.done = np.zeros(plan.n_jobs, dtype=bool)
        self.solutions: list | None = [None] * plan.n_jobs if keep_solutions else None
        self._failed: list[Failure] = []
        self._lead = _Lead()  # the jobs in ``arrays``: their outputs and lowest index
        self._held: dict[tuple, list[ChunkResult]] = {}  # other outputs -> their jobs

    def add(self, result: ChunkResult) -> None:
        """Store one chunk's outputs, failures and warnings."""
        self.warnings.update(result.warnings)
        self._failed.extend(result.failures)
        self.done[[f.index for f in result.failures]] = True
        for part in result.parts():
            if len(part.indices):
                self._add_part(part)

    def _add_part(self, part: ChunkResult) -> None:
        self.done[part.indices] = True
        if self.solutions is not None and part.solutions is not None:
            for i, solution in zip(part.indices.tolist(), part.solutions):
                self.solutions[i] = solution
        key = tuple(part.shapes().items())
        if not self.arrays or key == self._lead.key:
            self._write(part, key)
            return
        self._held.setdefault(key, []).append(part)
        if int(part.indices.min()) < self._lead.first:  # a lower job leads: swap
            leaving = self._lead.key, self._lead_result()
            self.arrays, self.axes, self._lead = {}, {}, _Lead()
            for held in self._held.pop(key):
                self._write(held, key)
            self._held.setdefault(leaving[0], []).append(leaving[1])

    def _write(self, part: ChunkResult, key: tuple) -> None:
        for name, values in part.outputs.items():
            self._target(name, values, part.axes.get(name, ()))[part.indices] = values
        self._lead.key = key
        self._lead.first = min(self._lead.first, int(part.indices.min()))
        self._lead.indices.append(part.indices)

    def _lead_result(self) -> ChunkResult:
        """The jobs written into ``arrays``, as one chunk result."""
        indices = np.concatenate(self._lead.indices)
        outputs = {name: array[indices] for name, array in self.arrays.items()}
        return ChunkResult(indices, outputs, dict(self.axes))

    @property
    def failures(self) -> list[Failure]:
        """The failed jobs: those that raised, then those whose outputs differ."""
        found = list(self._failed)
        lead = f"job {self._lead.first}" if self.arrays else ""
        for key, parts in self._held.items():
            problem = outputs_differ(dict(key), dict(self._lead.key))
            message = (
                f"its outputs differ from {lead}'s, which are the study's (job 0's, or the "
                f"lowest-index job's that succeeded): {problem}. Every job of a study must "
                "give the same outputs: a factory must build models with the same "
                "detectors and axes."
            )
            found += [Failure(i, self.plan.point(i), "ValueError", message)
                      for part in parts for i in part.indices.tolist()]
        return found

    def _target(self, name: str, values: np.ndarray, axes: tuple) -> np.ndarray:
        """The array collecting output ``name``, made (all NaN) on first use."""
        target = self.arrays.get(name)
        if target is None:
            dtype = np.result_type(values.dtype, np.float64)
            target = np.full((self.plan.n_jobs,) + values.shape[1:], np.nan, dtype=dtype)
            self.arrays[name] = target
            self.axes[name] = axes
        elif np.iscomplexobj(values) and not np.iscomplexobj(target):
            target = self.arrays[name] = target.astype(np.complex128)
        return target

    def expect(self, outputs: dict[str, tuple]) -> None:
        """All-NaN arrays for ``outputs`` (name -> axes) not yet collected.

        Used when every job failed, so the results still have each output,
        with the right shape.
        """
        for name, axes in outputs.items():
            shape = tuple(len(values) for _, values in axes)
            self._target(name, np.empty((0,) + shape), axes)

    def dataset(self, attrs: dict[str, Any]) -> xr.Dataset:
        """The labelled dataset of everything collected so far."""
        plan = self.plan
        coords: dict[str, Any] = {}
        for axis in plan.axes:
            if axis.dim in axis.values:
                coords[axis.dim] = (axis.dim, axis.values[axis.dim])
            else:
                coords[axis.dim] = (axis.dim, np.arange(len(axis)))
            for path, values in axis.values.items():
                if path != axis.dim:
                    coords[path] = (axis.dim, values)
        data_vars = {}
        for name, flat in self.arrays.items():
            own_dims = []
            for dim, values in self.axes[name]:
                if dim in plan.dims or dim in plan.paths:
                    dim = f"{dim} (axis)"  # the analysis sweeps a parameter the plan varies
                own_dims.append(dim)
                coords.setdefault(dim, (dim, values))
            data = flat.reshape(plan.shape + flat.shape[1:])
            extra = [f"{name}_dim{k}" for k in range(len(own_dims), data.ndim - len(plan.shape))]
            data_vars[name] = (plan.dims + tuple(own_dims) + tuple(extra), data)
        attrs = {**attrs, _PLAN_DIMS: json.dumps(list(plan.dims))}
        if self.warnings:
            attrs["warnings"] = json.dumps(dict(self.warnings))
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)


class _Lead:
    """Which jobs fill the collector's arrays: their outputs (names and shapes)
    and the lowest index among them."""

    def __init__(self):
        self.key: tuple = ()
        self.first = np.iinfo(np.int64).max
        self.indices: list[np.ndarray] = []


class Results:
    """The outcome of :meth:`Ensemble.run`.

    Attributes
    ----------
    failures : list of Failure
        Jobs that raised, with their index, values, exception type, message and
        traceback. Their entries in the arrays are NaN.
    seed : int
        The seed the study ran with; pass it again to reproduce it exactly.
    """

    def __init__(
        self,
        dataset: xr.Dataset,
        failures: Sequence[Failure],
        solutions: list | None = None,
    ):
        self._dataset = dataset
        self.failures = list(failures)
        self._solutions = solutions

    @property
    def seed(self) -> int:
        return int(self._dataset.attrs["seed"])

    @property
    def outputs(self) -> list[str]:
        """Names of the outputs (detectors) in these results."""
        return list(self._dataset.data_vars)

    def __getitem__(self, name: str) -> xr.DataArray:
        try:
            return self._dataset[name]
        except KeyError:
            raise KeyError(
                f"No output named {name!r}; the outputs are {self.outputs}."
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._dataset.data_vars

    def __repr__(self) -> str:
        failed = f", {len(self.failures)} failed" if self.failures else ""
        return f"<katparallel.Results{failed}>\n{self._dataset!r}"

    @property
    def solutions(self) -> list:
        """The raw per-job solutions (Finesse solutions or pykat KatRuns), in job order."""
        if self._solutions is None:
            raise AttributeError(
                "Solutions were not kept: run with keep_solutions=True to get the raw "
                "per-job solution objects (they cost memory and transfer time)."
            )
        return self._solutions

    def to_xarray(self) -> xr.Dataset:
        """The results as an :class:`xarray.Dataset`."""
        return self._dataset

    def save(self, path: str | os.PathLike) -> None:
        """Write the results (and failures) to a netCDF file; see :func:`load`."""
        dataset = self._dataset.copy()
        for name in list(dataset.data_vars):
            if np.iscomplexobj(dataset[name]):
                array = dataset[name]
                dataset[name] = array.real.assign_attrs({_COMPLEX_TAG: "real"})
                dataset[f"{name}__imag"] = array.imag.assign_attrs({_COMPLEX_TAG: "imag"})
        dataset.attrs["failures"] = json.dumps([f.as_dict() for f in self.failures])
        dataset.to_netcdf(path, engine="netcdf4")

    def to_csv(self, path: str | os.PathLike) -> list[str]:
        """Write the scalar outputs to a CSV file, one row per job.

        Columns: the varied parameters, then each output holding one value
        per job (complex ones as ``name.real`` and ``name.imag``). Failed jobs
        have empty cells. Outputs with axes of their own (e.g. an xaxis) do
        not fit one row and are left out; :meth:`save` keeps everything.

        Returns
        -------
        list of str
            The outputs written.

        Raises
        ------
        ValueError
            If no output is a scalar per job.
        """
        plan_dims = tuple(json.loads(self._dataset.attrs[_PLAN_DIMS]))
        scalars = [n for n in self.outputs if self._dataset[n].dims == plan_dims]
        if not scalars:
            raise ValueError(
                f"No output holds one value per job (outputs: {self.outputs}; their axes "
                "go beyond the varied parameters), so there is nothing to put in a CSV; "
                "save to netCDF (.nc) instead."
            )
        skipped = sorted(set(self.outputs) - set(scalars))
        if skipped:
            LOGGER.warning("CSV holds scalar outputs only; left out %s (save to .nc for them)", skipped)
        columns = {}
        for name in scalars:
            data = self._dataset[name]
            if np.iscomplexobj(data):
                columns[f"{name}.real"], columns[f"{name}.imag"] = data.real, data.imag
            else:
                columns[name] = data
        table = xr.Dataset(columns)
        if not plan_dims:  # a single job: one row
            table = table.expand_dims("job")
        table.to_dataframe().to_csv(path)
        return scalars

    def plot(self, name: str, ax=None, draw: int | None = None, **kwargs):
        """Plot output ``name``: a line for 1-D, an image for 2-D, a histogram for samples.

        Sampled curves (a ``sample`` dimension and one axis of the output's
        own, e.g. ``fsig.f``) are drawn as a band: the median over the draws
        and the 5-95% quantiles, on log-log axes for a frequency axis (log y
        only if every value is positive). ``draw=k`` plots draw ``k`` alone.
        Complex outputs are plotted as magnitudes. Extra keyword arguments go
        to the matplotlib call. Returns the matplotlib Axes.
        """
        import matplotlib.pyplot as plt

        data = self[name]
        if np.iscomplexobj(data):
            data = abs(data).rename(f"|{name}|")
        if draw is not None:
            if "sample" not in data.dims:
                raise ValueError(
                    f"draw= picks one draw of a sampled study, but {name!r} has dimensions "
                    f"{data.dims}; select with res[{name!r}].sel(...).plot() instead."
                )
            data = data.isel(sample=draw)
        data = data.squeeze(drop=True)
        if ax is None:
            _, ax = plt.subplots()
        if data.ndim == 1 and data.dims[0] == "sample":
            values = data.values[np.isfinite(data.values)]
            ax.hist(values, bins=kwargs.pop("bins", "auto"), **kwargs)
            ax.set_xlabel(data.name)
            ax.set_ylabel("count")
            ax.set_title(f"{name}: {values.size} samples, mean {values.mean():.6g}, std {values.std():.3g}")
        elif data.ndim == 2 and data.dims[0] == "sample":
            _plot_band(data, ax, **kwargs)
        elif data.ndim == 1:
            data.plot.line(ax=ax, marker="." if data.size < 50 else None, **kwargs)
            _log_scales(ax, data)
        elif data.ndim == 2:
            data.plot(ax=ax, **kwargs)
        else:
            raise ValueError(
                f"{name!r} has {data.ndim} dimensions {data.dims}; select down to one "
                f"or two first, e.g. res[{name!r}].sel({data.dims[0]}=...).plot()"
            )
        return ax

    # Uncertainty analysis: the statistics live in katparallel.sensitivity and
    # katparallel.stats; these methods hand them the labelled results.

    def sensitivity(
        self, output: str | xr.DataArray, method: str = "sobol", confidence: float = 0.95,
        n_resamples: int | None = None,
    ) -> xr.Dataset:
        """Sensitivity indices of ``output`` to the sampled parameters.

        ``method="sobol"`` (first-order ``S1``, total ``ST``, and ``S2`` of a
        second-order design) needs :meth:`Ensemble.sobol`; ``"morris"`` needs
        :meth:`Ensemble.morris`; ``"delta"`` and ``"pawn"`` (SALib's given-data
        methods) take any sampled study. ``output`` is an output name or an
        array over ``sample`` made from outputs (``abs(res["a"])``). Returns
        an :class:`xarray.Dataset` over ``param`` and the output's own
        dimensions, with ``*_low``/``*_high`` bootstrap bounds at
        ``confidence``; see :func:`katparallel.sensitivity.sensitivity`.

        Raises
        ------
        IncompleteDesignError
            If jobs of a Sobol' or Morris design failed (it names the rows).
        """
        from .sensitivity import sensitivity

        return sensitivity(self._dataset, output, method, confidence, n_resamples, self.failures)

    def plot_sensitivity(
        self, output: str | xr.DataArray, method: str = "sobol", ax=None, **kwargs
    ):
        """Bar chart of :meth:`sensitivity` with its bounds as error bars; returns the Axes."""
        from .sensitivity import plot_indices

        return plot_indices(self.sensitivity(output, method, **kwargs), ax=ax)

    def yield_(self, spec, confidence: float = 0.95):
        """The fraction of jobs meeting ``spec``, with a Clopper-Pearson interval.

        ``spec`` is ``{output: (low, high)}`` (``None`` for an open side) or a
        function of the results dataset returning one bool per job. Failed
        jobs count as failing and are reported (:class:`~katparallel.stats.YieldResult`).
        """
        from .stats import yield_fraction

        return yield_fraction(self._dataset, self.failures, spec, confidence)

    def quantiles(
        self, q, outputs: str | Sequence[str] | None = None, confidence: float = 0.95,
        n_resamples: int = 999,
    ) -> xr.Dataset:
        """Quantiles ``q`` of the outputs over ``sample``, with bootstrap bounds."""
        from .stats import quantiles

        return quantiles(self._dataset, q, outputs, confidence, n_resamples)

    def rank(self, output: str | xr.DataArray) -> xr.Dataset:
        """Spearman correlation of each sampled parameter with ``output``."""
        from .stats import rank

        return rank(self._dataset, output)


def _is_frequency(dim: str) -> bool:
    """A frequency axis: ``fsig.f`` (an xaxis over it, a FrequencyResponse) or any ``*.f``."""
    return dim == "f" or dim.endswith(".f")


def _log_scales(ax, data: xr.DataArray) -> None:
    """Log-log axes for a curve over a positive frequency axis (log y only if y > 0)."""
    x = np.asarray(data[data.dims[-1]].values)
    if _is_frequency(data.dims[-1]) and x.dtype.kind == "f" and (x > 0).all():
        ax.set_xscale("log")
        if (np.asarray(data.values)[np.isfinite(data.values)] > 0).all():
            ax.set_yscale("log")


def _plot_band(data: xr.DataArray, ax, **kwargs) -> None:
    """The median of sampled curves and their 5-95% quantiles over the draws."""
    dim = data.dims[1]
    x = data[dim].values
    finite = np.isfinite(data.values).all(axis=1)
    low, mid, high = np.quantile(data.values[finite], [0.05, 0.5, 0.95], axis=0)
    color = kwargs.pop("color", "C0")
    ax.fill_between(x, low, high, color=color, alpha=0.3, linewidth=0, label="5-95% of draws")
    ax.plot(x, mid, color=color, label="median", **kwargs)
    ax.set_xlabel(dim)
    ax.set_ylabel(data.name)
    ax.set_title(f"{data.name}: {int(finite.sum())} draws")
    ax.legend()
    _log_scales(ax, data)


def load(path: str | os.PathLike) -> Results:
    """Read results written by :meth:`Results.save`."""
    dataset = xr.load_dataset(path, engine="netcdf4")
    for name in [n for n in dataset.data_vars if dataset[n].attrs.get(_COMPLEX_TAG) == "real"]:
        imag = dataset[f"{name}__imag"]
        attrs = {k: v for k, v in dataset[name].attrs.items() if k != _COMPLEX_TAG}
        dataset[name] = (dataset[name] + 1j * imag).assign_attrs(attrs)
        dataset = dataset.drop_vars(f"{name}__imag")
    failures = [Failure(**f) for f in json.loads(dataset.attrs.pop("failures", "[]"))]
    return Results(dataset, failures)
