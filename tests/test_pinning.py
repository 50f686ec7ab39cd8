"""Worker threads stay pinned when the user's script imports Finesse at its top.

A ``forkserver`` imports the script's ``__main__`` before it forks workers, so
libgomp is already loaded, with its thread count read from the environment of
the parent, when a worker starts. Each script here sets ``OMP_NUM_THREADS=3``
for itself, so without pinning inside the workers they report 3 on any
machine; ``omp_get_max_threads()`` is measured in the worker, not read from an
environment variable.
"""

import json
import os
import subprocess
import sys

import pytest

from katparallel import _testing

#: Only a deadlock reaches this.
TIMEOUT = 180

SCRIPT = """
import finesse  # noqa: F401 - at the top, as a typical script: libgomp loads here
import json
import sys

from katparallel import _testing
from katparallel.backends import get_backend_class

if __name__ == "__main__":
    with get_backend_class(sys.argv[1])(workers=2) as backend:
        threads = {t for _, t in backend.map_unordered(_testing.omp_threads, range(6))}
    print(json.dumps({"parent": _testing.omp_threads(), "workers": sorted(threads)}))
"""


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    env.update(_testing.MPI_ENV if os.geteuid() == 0 else {})
    env["OMP_NUM_THREADS"] = "3"  # the parent's own choice; workers must still get 1
    return env


@pytest.mark.timeout(TIMEOUT)
@pytest.mark.parametrize(
    "backend", ["multiprocessing", "pathos", "ipyparallel", "mpi", "dask", "auto"])
def test_workers_are_pinned_when_the_script_imports_finesse(backend, tmp_path):
    script = tmp_path / "study.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), backend], capture_output=True, text=True,
        timeout=TIMEOUT, env=_environment(), cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(proc.stdout.splitlines()[-1])
    assert measured["parent"] == 3  # libgomp loaded in the parent with the parent's count
    assert measured["workers"] == [1]
