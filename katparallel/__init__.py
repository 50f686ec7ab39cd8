"""katparallel: ensembles of Finesse 3 and PyKat simulations on any parallel engine.

>>> from katparallel import Ensemble, Normal
>>> res = Ensemble(model).vary("m1.T", ts).run(backend="multiprocessing", workers=2)
>>> res["P"]          # labelled xarray.DataArray

Names are imported on first use (as ``concurrent.futures`` does), so
``import katparallel`` stays cheap for worker processes and the ``kat``
program, which need neither xarray nor matplotlib.
"""

from katparallel._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Ensemble": ".ensemble",
    "ParaKat": ".collect",
    "Results": ".results",
    "load": ".results",
    "Normal": ".sampling",
    "Uniform": ".sampling",
    "LogNormal": ".sampling",
    "Backend": ".backends",
    "register_backend": ".backends",
    "available": ".backends",
    "DaskBackend": ".backends.dask",
    "ExecutorBackend": ".backends.executor",
    "KatParallelError": ".errors",
    "UnknownParameterError": ".errors",
    "InvalidValuesError": ".errors",
    "BackendUnavailable": ".errors",
    "ModelSourceError": ".errors",
    "JobError": ".errors",
}

__all__ = tuple(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
del lazy_exports
