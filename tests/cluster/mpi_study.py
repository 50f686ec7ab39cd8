"""The Slurm tests' study on the MPI backend, as a batch job runs it.

Usage (inside an allocation)::

    mpiexec -n 3 python -m mpi4py.futures mpi_study.py OUT

Rank 0 runs this script, the other ranks are the workers; the results go to OUT.
"""

import sys

from slurmtools import study

from katparallel.backends.mpi import MPIBackend

if __name__ == "__main__":
    with MPIBackend() as backend:
        res = study().run(backend=backend, progress=False)
        assert backend.n_workers == 2, backend.n_workers
    res.save(sys.argv[1])
