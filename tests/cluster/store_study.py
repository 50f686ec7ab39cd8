"""The Slurm tests' study with a store, run serially by one batch job.

Usage::

    python store_study.py CALLS GATE STORE OUT

The first four jobs run freely, later ones wait until the file GATE exists
(:class:`katparallel._testing.Gate`), so a test can cancel the batch job with
exactly four jobs in the store, then resubmit it.
"""

import sys
from pathlib import Path

from slurmtools import study

from katparallel._testing import Gate

if __name__ == "__main__":
    calls, gate, store, out = map(Path, sys.argv[1:5])
    res = study(Gate(calls, gate, free=4)).run(backend="serial", store=store, progress=False)
    res.save(out)
