"""Do katparallel's workers really run Finesse with one OpenMP thread?

A forkserver imports the user's ``__main__`` before it forks workers. When
that script does ``import finesse`` at its top, Finesse's libgomp is loaded
(and reads ``OMP_NUM_THREADS``) before a worker can set the variable. This
script runs itself twice in a fresh subprocess, once importing finesse at its
top and once not, and prints ``omp_get_max_threads()`` as a job sees it in
the workers of each local backend.

Usage::

    python benchmarks/omp_probe.py [--workers 2]      # about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

if os.environ.get("OMP_PROBE_TOP_IMPORT") == "1":
    import finesse  # noqa: F401 - the typical user script; the forkserver imports it too

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _bench_jobs  # noqa: E402
from katparallel._testing import MPI_ENV  # noqa: E402 - Open MPI as root, oversubscribed

#: Every local engine katparallel starts itself.
BACKENDS = ("multiprocessing", "pathos", "ipyparallel", "mpi")


def probe(workers: int) -> dict[str, list[int] | str]:
    """``omp_get_max_threads()`` values seen by jobs on each backend's workers."""
    from katparallel.backends import available, get_backend_class

    seen = {"this process": _bench_jobs.omp_threads()["omp_max_threads"]}
    for name in (b for b in BACKENDS if b in available()):
        try:
            with get_backend_class(name)(workers=workers) as backend:
                found = [r for _, r in backend.map_unordered(_bench_jobs.omp_threads, range(4 * workers))]
        except Exception as exc:  # noqa: BLE001 - an engine that cannot start is reported
            seen[name] = f"could not run: {type(exc).__name__}: {str(exc)[:100]}"
            continue
        bad = [f for f in found if not isinstance(f, dict)]
        seen[name] = repr(bad[0])[:120] if bad else sorted({n for f in found for n in f["omp_max_threads"]})
    return seen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(probe(args.workers)))
        return 0
    for top in ("1", "0"):
        env = dict(os.environ, **MPI_ENV, OMP_PROBE_TOP_IMPORT=top, PYTHONPATH=os.pathsep.join(
            filter(None, [HERE, os.environ.get("PYTHONPATH")])))  # engines import _bench_jobs
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--workers", str(args.workers)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        label = "imports finesse at its top" if top == "1" else "does not import finesse at its top"
        print(f"script {label}: omp_get_max_threads() {seen}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
