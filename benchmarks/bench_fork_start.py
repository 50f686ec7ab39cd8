"""Start-up of a forked worker pool: the figure ``auto`` weighs (``FORK_START``).

Times a two-worker ``multiprocessing`` pool forked from this process, from the
first request to both answers of two trivial tasks, with Finesse imported and
then with the aLIGO design model read and run here (a bigger parent to fork),
and a warm pool's round trip (``ROUND_TRIP``). Prints the figures beside the
constants in ``katparallel/backends/auto.py``.

Run::

    python benchmarks/bench_fork_start.py
"""

import time

import finesse  # noqa: F401 - the parent a real study forks from has Finesse loaded

from katparallel import Ensemble
from katparallel._testing import aligo_katscript, noop
from katparallel.backends.auto import FORK_START, ROUND_TRIP
from katparallel.backends.multiprocess import MultiprocessingBackend


def _start_and_round_trip() -> tuple[float, float]:
    pool = MultiprocessingBackend(workers=2)
    if not pool.inherits_memory:
        raise SystemExit("a pool started here would not fork (not Linux, or threads running)")
    try:
        started = time.perf_counter()
        list(pool.map_unordered(noop, [0, 1]))
        start = time.perf_counter() - started
        started = time.perf_counter()
        list(pool.map_unordered(noop, [0, 1, 2, 3]))
        return start, time.perf_counter() - started
    finally:
        pool.close()


def main() -> None:
    small = _start_and_round_trip()
    Ensemble(aligo_katscript() + "\nmodes(maxtem=2)\n").vary("ITMX.Rcx", [-1934.0]).run(
        backend="serial", progress=False
    )
    big = _start_and_round_trip()
    print(f"{'parent':<22}{'fork start (s)':>16}{'warm round trip (s)':>22}")
    print(f"{'finesse imported':<22}{small[0]:>16.3f}{small[1]:>22.4f}")
    print(f"{'aLIGO read and run':<22}{big[0]:>16.3f}{big[1]:>22.4f}")
    print(f"{'auto assumes':<22}{FORK_START:>16.3f}{ROUND_TRIP:>22.4f}")


if __name__ == "__main__":
    main()
