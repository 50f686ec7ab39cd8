"""The same seeded studies give bit-identical results on every backend.

Real engines: katparallel's pool, pathos, a local ipyparallel cluster that
katparallel starts and stops, a Dask LocalCluster, and MPI under ``mpiexec -n 3``.
"""

import importlib.util
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import katparallel
from katparallel._testing import MPI_ENV, mpiexec_python

SCRIPT = Path(__file__).parent / "mpi" / "identical_study.py"
_spec = importlib.util.spec_from_file_location("identical_study", SCRIPT)
identical_study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(identical_study)

IN_PROCESS = ["multiprocessing", "pathos", "ipyparallel", "dask"]  # mpi below, under mpiexec


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The studies run serially, the results every backend must reproduce."""
    out = tmp_path_factory.mktemp("serial")
    identical_study.run_all("serial", out)
    return {name: katparallel.load(out / f"{name}-serial.nc") for name in identical_study.RUNS}


def assert_identical(out_dir: Path, backend: str, reference) -> None:
    for name, expected in reference.items():
        got = katparallel.load(out_dir / f"{name}-{backend}.nc")
        assert got.seed == expected.seed
        assert got.outputs == expected.outputs
        for output in expected.outputs:
            assert got[output].dims == expected[output].dims
            np.testing.assert_array_equal(got[output].values, expected[output].values)
            for dim in expected[output].dims:
                np.testing.assert_array_equal(
                    got[output][dim].values, expected[output][dim].values
                )


def test_reference_is_not_trivial(reference):
    mc = reference["mc"]["P"].values
    assert len(np.unique(mc)) == mc.size  # every job drew its own numbers
    assert reference["sweep"]["P"].shape == (7, 2)
    np.testing.assert_array_equal(reference["sweep-batched"]["P"], reference["sweep"]["P"])


@pytest.mark.parametrize("backend", IN_PROCESS)
@pytest.mark.timeout(240)
def test_backend_matches_serial_bit_for_bit(backend, reference, tmp_path):
    identical_study.run_all(backend, tmp_path)
    assert_identical(tmp_path, backend, reference)


@pytest.mark.timeout(240)
def test_mpi_under_mpiexec_matches_serial_bit_for_bit(reference, tmp_path):
    proc = subprocess.run(
        mpiexec_python(3, str(SCRIPT), "mpi", str(tmp_path)),
        capture_output=True, text=True, timeout=200, env={**os.environ, **MPI_ENV},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_identical(tmp_path, "mpi", reference)
