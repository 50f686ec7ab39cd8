"""Job functions of the hand-written recipes in ``compare_backends.py``.

They live in an importable module so that process pools (forkserver, spawn),
pathos and ipyparallel engines can all call them by reference.
"""

from __future__ import annotations

import os

import numpy as np

_MODEL = None


def load(text: str, legacy: bool):
    """Parse ``text`` (Finesse 2 syntax if ``legacy``) into this process's model."""
    global _MODEL
    import finesse

    finesse.config.show_progress_bars = False
    _MODEL = finesse.Model()
    (_MODEL.parse_legacy if legacy else _MODEL.parse)(text)
    return _MODEL


def init_worker(text: str, legacy: bool) -> None:
    """Pool initializer: one OpenMP thread, the model parsed once per worker."""
    os.environ["OMP_NUM_THREADS"] = "1"
    load(text, legacy)


def set_values(model, values: dict) -> None:
    """Set ``values`` on ``model``, decreasing ones first (R + T never exceeds 1)."""
    for path in sorted(values, key=lambda p: values[p] - float(model.get(p).value)):
        model.get(path).value = values[path]


def job_on_cached(values: dict) -> np.ndarray:
    """Run one job on the worker's parsed model, restoring it afterwards."""
    original = {p: float(_MODEL.get(p).value) for p in values}
    set_values(_MODEL, values)
    try:
        return np.asarray(_MODEL.run()["P"])
    finally:
        set_values(_MODEL, original)


def pathos_recipe_job(model, values: dict) -> np.ndarray:
    """The Finesse docs' pathos recipe: the dill-pickled model travels with every task."""
    set_values(model, values)
    return np.asarray(model.run()["P"])
