"""Start-up and per-task dispatch overhead of katparallel's engines, side by side.

Each engine runs a no-op (``katparallel._testing.noop``) on ``--workers``
workers: start-up is the time from making the backend to the first result of
one task (workers spawned, nothing imported beyond katparallel); per task is
the best of ``--repeat`` warm runs of ``--tasks`` no-ops, divided by their
number. This is what the engine costs a task, before any simulation; the
runner sends chunks (8 per worker), so a study pays it per chunk, not per job.

Usage::

    python benchmarks/backend_overhead.py                  # all engines
    python benchmarks/backend_overhead.py --tasks 500 --only multiprocessing dask
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from katparallel import _testing


def _engines(workers: int) -> dict:
    """name -> (make the backend, clean up after it)."""
    from katparallel.backends import ExecutorBackend
    from katparallel.backends.dask import DaskBackend
    from katparallel.backends.multiprocess import MultiprocessingBackend

    held = {}

    def pool_executor():
        held["pool"] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        return ExecutorBackend(held["pool"], workers=workers)

    def dask_executor():
        held["dask"] = DaskBackend(workers=workers)
        return ExecutorBackend(held["dask"].client.get_executor(), workers=workers)

    return {
        "multiprocessing": (lambda: MultiprocessingBackend(workers=workers), lambda b: b.close()),
        "dask": (lambda: DaskBackend(workers=workers), lambda b: b.close()),
        "executor (ProcessPoolExecutor)": (pool_executor, lambda b: held.pop("pool").shutdown()),
        "executor (dask client.get_executor())": (dask_executor, lambda b: held.pop("dask").close()),
    }


def measure(make, tasks: int, repeat: int) -> tuple[object, float, float]:
    """(the backend ``make()`` returns, its start-up seconds, seconds per task)."""
    started = time.perf_counter()
    backend = make()
    dict(backend.map_unordered(_testing.noop, [0]))
    startup = time.perf_counter() - started
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        out = dict(backend.map_unordered(_testing.noop, range(tasks)))
        best = min(best, time.perf_counter() - started)
        assert out == {i: i for i in range(tasks)}
    return backend, startup, best / tasks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=1000, help="no-op tasks per timed run")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is kept")
    parser.add_argument("--only", nargs="*", help="engines to measure (names as printed)")
    args = parser.parse_args(argv)
    engines = _engines(args.workers)
    rows = []
    for name, (make, cleanup) in engines.items():
        if args.only and name.split(" ")[0] not in args.only and name not in args.only:
            continue
        backend, startup, per_task = measure(make, args.tasks, args.repeat)
        cleanup(backend)
        rows.append((name, startup, per_task))
    base = dict((n, t) for n, _, t in rows).get("multiprocessing")
    print(f"\n{args.workers} workers, {args.tasks} no-op tasks, best of {args.repeat}; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'engine':40} {'start-up':>9} {'per task':>10} {'x multiprocessing':>18}")
    for name, startup, per_task in rows:
        ratio = f"{per_task / base:.1f}x" if base else "-"
        print(f"{name:40} {startup:8.2f}s {per_task * 1e6:8.0f}µs {ratio:>18}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
