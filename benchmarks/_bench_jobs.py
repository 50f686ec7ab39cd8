"""Job functions of the hand-written recipes in ``compare_backends.py``.

They live in an importable module so that process pools (forkserver, spawn),
pathos and ipyparallel engines can all call them by reference.
"""

from __future__ import annotations

import os
import time

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
    """Pool initializer: one OpenMP thread, the model parsed once per worker.

    The variable alone is not enough when the forkserver imported a script
    that imports finesse (libgomp read it then): threadpoolctl pins the
    runtime that is already loaded.
    """
    from threadpoolctl import threadpool_limits

    os.environ["OMP_NUM_THREADS"] = "1"
    load(text, legacy)
    threadpool_limits(1, user_api="openmp")


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


def pathos_recipe_scalars(model, values: dict, names: list, analysis) -> np.ndarray:
    """The pathos recipe for W4/W5: set the draw, run ``analysis``, read ``names``."""
    from _aligo import scalar_outputs, set_values as set_draw

    set_draw(model, list(values), list(values.values()))
    return scalar_outputs(model.run(analysis), names)


def pathos_recipe_job(model, values: dict) -> np.ndarray:
    """The Finesse docs' pathos recipe: the dill-pickled model travels with every task."""
    set_values(model, values)
    return np.asarray(model.run()["P"])


def omp_threads(_: object = None) -> dict:
    """What OpenMP runtime this process really uses, as a job sees it.

    Imports finesse first (a job always has), then reads
    ``omp_get_max_threads()`` of every loaded OpenMP library through
    threadpoolctl, along with the ``OMP_NUM_THREADS`` variable. It lasts a
    tenth of a second, so that the tasks of a probe spread over every worker.
    """
    import finesse  # noqa: F401 - loads Finesse's libgomp, as any job does
    from threadpoolctl import threadpool_info

    time.sleep(0.1)

    libs = [i for i in threadpool_info() if i["user_api"] == "openmp"]
    return {
        "pid": os.getpid(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "omp_max_threads": sorted({i["num_threads"] for i in libs}),
    }
