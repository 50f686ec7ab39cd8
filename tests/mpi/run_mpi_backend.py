"""Drive the MPI backend under ``mpiexec -n 3 python -m mpi4py.futures``.

Prints one JSON object per line for ``tests/test_backends.py`` to check.
With ``--crash`` one task SIGKILLs its worker rank: MPI then aborts the job,
which the test expects to end promptly with a non-zero exit code.
"""

import json
import os
import sys
import time

from katparallel import _testing
from katparallel.backends.mpi import MPIBackend


def report(**fields):
    print(json.dumps(fields), flush=True)


def main():
    with MPIBackend() as backend:
        report(n_workers=backend.n_workers, parent=os.getpid())
        if "--crash" in sys.argv:
            for index, result in backend.map_unordered(_testing.crash_on, [1, 2, -1, 3]):
                report(index=index, result=repr(result))
            return
        results = dict(backend.map_unordered(_testing.square, list(range(20))))
        report(squares=[results[i] for i in range(20)])

        start = time.monotonic()
        order = []
        for index, _ in backend.map_unordered(_testing.sleep_then, [(1.5, 0), (0.0, 1)]):
            order.append((index, time.monotonic() - start))
        report(order=order)

        pids = {pid for _, pid in backend.map_unordered(_testing.pid_of, [0.05] * 10)}
        threads = {t for _, t in backend.map_unordered(_testing.omp_threads, range(4))}
        report(worker_pids=sorted(pids), threads=sorted(threads))


if __name__ == "__main__":
    main()
