"""Backend registry: pick where jobs run by name.

Backends are imported only when asked for, so an engine that is not installed
costs nothing until it is used. Add your own with :func:`register_backend`.
"""

from __future__ import annotations

import difflib
import importlib
import math
import numbers
from collections.abc import Callable

from .._lazy import lazy_exports
from ..errors import BackendUnavailable
from .base import Backend, check_workers

#: Backends made with arguments of their own, imported on first use.
_EXPORTS = {"DaskBackend": ".dask", "ExecutorBackend": ".executor"}

__all__ = (
    "Backend", "BACKENDS", "register_backend", "get_backend_class", "make_backend", "available",
    *_EXPORTS,
)

#: name -> "module:Class" (imported lazily) or a Backend subclass / factory.
BACKENDS: dict[str, str | Callable[..., Backend]] = {
    "serial": "katparallel.backends.serial:SerialBackend",
    "multiprocessing": "katparallel.backends.multiprocess:MultiprocessingBackend",
    "pathos": "katparallel.backends.pathos:PathosBackend",
    "ipyparallel": "katparallel.backends.ipyparallel:IPyParallelBackend",
    "mpi": "katparallel.backends.mpi:MPIBackend",
    "dask": "katparallel.backends.dask:DaskBackend",
    "auto": "katparallel.backends.auto:AutoBackend",
}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Make ``run(backend=name)`` use ``factory(workers=...)``.

    Parameters
    ----------
    name : str
        The name users pass as ``backend=``.
    factory : callable
        A :class:`Backend` subclass, or any callable accepting ``workers=``
        and returning a :class:`Backend`. Give it a true ``supports_timeout``
        attribute if it also accepts ``timeout=`` and enforces it.
    """
    BACKENDS[name] = factory


def get_backend_class(name: str) -> Callable[..., Backend]:
    """Return the class (or factory) registered under ``name``.

    Raises
    ------
    BackendUnavailable
        If the name is unknown (the message lists the known names) or its
        engine is not installed (the message says what to install).
    """
    try:
        entry = BACKENDS[name]
    except KeyError:
        close = difflib.get_close_matches(name, BACKENDS, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise BackendUnavailable(
            f"Unknown backend {name!r}; expected one of {sorted(BACKENDS)}.{hint}"
        ) from None
    if isinstance(entry, str):
        module_name, _, class_name = entry.partition(":")
        module = importlib.import_module(module_name)
        entry = getattr(module, class_name)
    return entry


def make_backend(
    backend: str | Backend, workers: int | None = None, timeout: float | None = None
) -> Backend:
    """The backend a run asked for, its arguments checked before anything starts.

    Parameters
    ----------
    backend : str or Backend
        A registered name (see :data:`BACKENDS`), or a backend already made,
        which is returned as it is.
    workers : int, optional
        Parallel workers for a backend given by name: a whole number of at
        least 1; None lets the backend choose (one per core).
    timeout : float, optional
        Seconds one task may run. Only a backend whose ``supports_timeout`` is
        true takes it; asking another one for it is an error, not ignored.

    Returns
    -------
    Backend
        A backend ready to run (its engine starts on first use).

    Raises
    ------
    TypeError, ValueError
        If ``backend``, ``workers`` or ``timeout`` is not usable, or the
        backend cannot enforce ``timeout``.
    BackendUnavailable
        If the name is unknown or its engine is not installed.
    """
    workers = check_workers(workers)
    _check_timeout(timeout)
    if isinstance(backend, Backend):
        return _as_given(backend, workers, timeout)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a name or a Backend instance, got {backend!r}")
    factory = get_backend_class(backend)
    if timeout is None:
        return factory(workers=workers)
    if not getattr(factory, "supports_timeout", False):
        raise ValueError(
            f"the {backend!r} backend cannot stop a job that runs too long, so it "
            f"cannot honour timeout={timeout:g}. Use backend='multiprocessing' (or "
            "'auto'), whose workers are stopped and replaced when a job overruns, or "
            "drop timeout=."
        )
    return factory(workers=workers, timeout=timeout)


def _check_timeout(timeout: object) -> None:
    if timeout is None:
        return
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, numbers.Real)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ValueError(
            f"timeout must be a positive number of seconds, got {timeout!r}; "
            "give None for no limit"
        )


def _as_given(backend: Backend, workers: int | None, timeout: float | None) -> Backend:
    """A backend instance, used as configured: refuse run arguments it would not follow."""
    kind = type(backend).__name__
    if workers is not None:
        raise ValueError(
            f"workers={workers} applies to a backend given by name; this {kind} was "
            f"already made: give it its workers when you create it, e.g. {kind}(workers={workers})"
        )
    if timeout is not None and getattr(backend, "timeout", None) != timeout:
        if not backend.supports_timeout:
            raise ValueError(
                f"{kind} cannot stop a job that runs too long, so it cannot honour "
                f"timeout={timeout:g}; use backend='multiprocessing' or drop timeout=."
            )
        raise ValueError(
            f"timeout={timeout:g} applies to a backend given by name; this {kind} was "
            f"already made: give it its timeout when you create it, e.g. "
            f"{kind}(timeout={timeout:g})"
        )
    return backend


def available() -> list[str]:
    """Names of the backends whose engines can start on this machine."""
    names = []
    for name in BACKENDS:
        try:
            cls = get_backend_class(name)
        except ImportError:
            continue
        enabled = getattr(cls, "enabled", None)
        if enabled is None or enabled():
            names.append(name)
    return names



__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
