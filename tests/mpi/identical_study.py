"""One seeded Monte Carlo study and one sweep, run on a backend named on the command line.

``tests/test_identical_backends.py`` runs it in-process for every backend and under
``mpiexec -n 3 python -m mpi4py.futures`` for MPI, and compares the saved results
bit for bit. Usage::

    python identical_study.py BACKEND OUT_DIR
"""

import random
import sys
from pathlib import Path

import numpy as np

from katparallel import Ensemble, Normal, Uniform
from katparallel._testing import MIRROR_KATSCRIPT as KATSCRIPT
from katparallel.backends import get_backend_class


def jitter(model, rng):
    """Draws from the job's generator and from both legacy global generators."""
    model.s0.L = 1 + 0.1 * rng.standard_normal() + 0.01 * np.random.standard_normal()
    model.m.phi = 90 * random.random()


def studies() -> dict[str, Ensemble]:
    monte_carlo = (
        Ensemble(KATSCRIPT, seed=2026)
        .sample(24, {"L0.P": Normal(1, 0.1), "m.T": Uniform(0.1, 0.5)})
        .perturb(jitter)
    )
    sweep = Ensemble(KATSCRIPT, seed=1).vary("m.T", np.linspace(0.05, 0.6, 7)).vary("L0.P", [1.0, 3.0])
    return {"mc": monte_carlo, "sweep": sweep}


#: Study name -> how its jobs run: one by one, or stepped inside one simulation.
RUNS = {"mc": ("mc", False), "sweep": ("sweep", False), "sweep-batched": ("sweep", True)}


def run_all(backend_name: str, out_dir: Path) -> None:
    """Run every study in :data:`RUNS` on ``backend_name`` (2 workers), save in ``out_dir``."""
    ensembles = studies()
    with get_backend_class(backend_name)(workers=2) as backend:
        for name, (study, batch) in RUNS.items():
            res = ensembles[study].run(backend=backend, batch=batch, progress=False)
            assert not res.failures, res.failures
            res.save(out_dir / f"{name}-{backend_name}.nc")


if __name__ == "__main__":
    run_all(sys.argv[1], Path(sys.argv[2]))
