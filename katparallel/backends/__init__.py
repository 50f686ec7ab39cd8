"""Backend registry: pick where jobs run by name.

Backends are imported only when asked for, so an engine that is not installed
costs nothing until it is used. Add your own with :func:`register_backend`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable

from ..errors import BackendUnavailable
from .base import Backend

__all__ = (
    "Backend", "BACKENDS", "register_backend", "get_backend_class", "available", "make_backend",
)

#: name -> "module:Class" (imported lazily) or a Backend subclass / factory.
BACKENDS: dict[str, str | Callable[..., Backend]] = {
    "serial": "katparallel.backends.serial:SerialBackend",
    "multiprocessing": "katparallel.backends.multiprocess:MultiprocessingBackend",
    "pathos": "katparallel.backends.pathos:PathosBackend",
    "ipyparallel": "katparallel.backends.ipyparallel:IPyParallelBackend",
    "mpi": "katparallel.backends.mpi:MPIBackend",
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
        and returning a :class:`Backend`.
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


def make_backend(backend: str | Backend, workers: int | None = None, timeout: float | None = None) -> Backend:
    """The backend ``run(backend=..., workers=..., timeout=...)`` asks for."""
    if isinstance(backend, Backend):
        return backend
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a name or a Backend instance, got {backend!r}")
    cls = get_backend_class(backend)
    if timeout is not None:
        try:
            return cls(workers=workers, timeout=timeout)
        except TypeError:
            raise ValueError(f"the {backend!r} backend does not support timeout=") from None
    return cls(workers=workers)
