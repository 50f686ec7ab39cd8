"""Pin a worker's OpenMP and BLAS threads, whatever it has loaded already.

Two workers on two cores, each running OpenMP with one thread per core, run
slower than with one thread each. The thread count has to be set twice:

* in the environment (``OMP_NUM_THREADS`` and friends), for the runtimes a
  worker loads later: libgomp and OpenBLAS read it once, when loaded;
* through threadpoolctl, for the runtimes already loaded when the worker
  starts. A ``forkserver`` imports the user's ``__main__`` before it forks
  workers, so a script that imports an OpenMP library at its top has loaded
  it, with default threads, in every worker before the worker runs a line.

This module knows nothing of what the tasks run: it pins "OpenMP and BLAS".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

LOGGER = logging.getLogger(__name__)

__all__ = ("pinned_thread_env", "pin_threads", "call_pinned")

# In a worker: the thread count already applied by call_pinned.
_PINNED: int | None = None


def pinned_thread_env(threads: int | None) -> dict[str, str]:
    """Environment variables that limit a worker's OpenMP/BLAS threads.

    ``threads=None`` returns an empty mapping (leave the defaults alone).
    """
    if threads is None:
        return {}
    n = str(int(threads))
    return {
        "OMP_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
    }


def pin_threads(threads: int | None, env: Mapping[str, str] | None = None) -> None:
    """Limit this process's OpenMP/BLAS threads, loaded runtimes included.

    Parameters
    ----------
    threads : int or None
        Threads per runtime; None leaves them alone.
    env : mapping, optional
        Further environment variables to set first.
    """
    os.environ.update(env or {})
    if threads is None:
        return
    os.environ.update(pinned_thread_env(threads))
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=int(threads))  # kept: not used as a context manager


def call_pinned(fn: Callable[[Any], Any], threads: int | None, task: Any) -> Any:
    """Return ``fn(task)``, pinning this process's threads first if not done yet.

    For engines that offer no start-up hook (ipyparallel): the first task a
    process runs pins it, later ones cost a comparison.
    """
    global _PINNED
    if threads is not None and _PINNED != threads:
        pin_threads(threads)
        _PINNED = threads
    return fn(task)
