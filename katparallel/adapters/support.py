"""Small pieces both the Finesse adapter and its fast path use.

:mod:`katparallel.adapters.finesse` (the per-job path) and
:mod:`katparallel.adapters.stepping` (the fast path) both reduce Finesse
solutions to arrays and silence Finesse's noisier loggers; these helpers live
here so that neither module imports the other.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ("as_array", "detector_values", "quiet")


def as_array(value: Any) -> np.ndarray:
    """``value`` as a numeric array: Finesse returns math detectors as objects."""
    array = np.asarray(value)
    if array.dtype == object:
        array = np.asarray(array.tolist())
    return array


def detector_values(sol, name: str) -> np.ndarray:
    """Output ``name`` of a Finesse ``ArraySolution`` as an array of its natural dtype.

    Power and noise detectors are real, amplitude detectors and demodulations
    at ``fsig`` (transfer functions) complex, math detectors as computed.
    Finesse 3.0.2 stores quantum-noise detectors with ``nsr=True`` (``qnoised``,
    ``qshot``) as complex numbers whose imaginary parts are all zero: those are
    given as their real part (a noise-to-signal ratio is real).
    """
    from finesse.detectors import quantum_noise_detector as quantum
    from finesse.detectors.general import NoiseDetector

    array = as_array(sol[name])
    kind = sol.trace_info.get(name, {}).get("detector_type")
    noise = isinstance(kind, type) and (
        issubclass(kind, NoiseDetector) or kind.__module__ == quantum.__name__  # qshot is no NoiseDetector
    )
    if noise and np.iscomplexobj(array) and not array.imag.any():
        array = np.ascontiguousarray(array.real)
    return array


class _QuietThread(logging.Filter):
    """Drops a logger's records in the threads that asked for quiet."""

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "depth", 0)


_QUIET = _QuietThread()


@contextlib.contextmanager
def quiet(logger: str) -> Iterator[None]:
    """Drop the records of ``logger`` that this thread logs inside the block.

    A filter, not a level change, so threads running jobs side by side never
    leave a logger silenced for good.
    """
    logging.getLogger(logger).addFilter(_QUIET)  # once: a filter is added only once
    _QUIET.local.depth = getattr(_QUIET.local, "depth", 0) + 1
    try:
        yield
    finally:
        _QUIET.local.depth -= 1
