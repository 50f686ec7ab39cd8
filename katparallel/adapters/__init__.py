"""Model adapters: everything katparallel knows about a simulation package.

An adapter turns what the user gave to :class:`~katparallel.Ensemble` (a
model, script text, a file, a factory) into a small picklable recipe, and in
the worker rebuilds the model from it, sets parameters by their full names,
runs the analysis and reduces the solution to plain arrays. Adapters know
nothing of processes or backends.
"""

from __future__ import annotations

from typing import Any

__all__ = ("adapter_for",)


def adapter_for(source: Any, syntax: str | None = None):
    """Return the adapter for a model source.

    Parameters
    ----------
    source : finesse.Model, str, os.PathLike, pykat.finesse.kat or callable
        The model, KatScript or Finesse 2 text, a ``.kat`` file, a pykat
        ``kat`` object, or a factory ``(values, rng) -> model``.
    syntax : {"katscript", "finesse2"}, optional
        Force how text is read; by default KatScript is tried, then Finesse 2.
    """
    module = type(source).__module__ or ""
    if module.startswith("pykat"):
        from .pykat import PykatAdapter

        return PykatAdapter.from_source(source)
    from .finesse import FinesseAdapter

    return FinesseAdapter.from_source(source, syntax=syntax)
