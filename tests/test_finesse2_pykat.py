"""PyKat with its own aLIGO design file, through the project's ``kat`` (no Finesse 2).

``tests/data/finesse2/aligo_design_probe.extra`` adds detectors, a ``put*`` and an
xaxis to PyKat's ``ifo/aligo/files/design.kat``; its ``.out`` was written by a real
Finesse 2.3.1 on that input. PyKat runs whichever ``kat`` it finds (katparallel's
Finesse-3-backed one on machines without Finesse 2); each job parses the full
213-element design, so the tests keep to two jobs each.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from katparallel import Ensemble, ParaKat
from katparallel.finesse2 import ensure_kat

ensure_kat()  # before pykat's import, which looks for the kat program
import pykat  # noqa: E402

DATA = Path(__file__).parent / "data" / "finesse2"
DESIGN = (Path(importlib.util.find_spec("pykat").origin).parent
          / "ifo" / "aligo" / "files" / "design.kat")
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from finesse2_corpus import read_out  # noqa: E402

REFERENCE = read_out(DATA / "aligo_design_probe.out")  # x, then abs:deg pairs
POWERS = {"P_AS": 1, "P_X": 3, "P_PRC": 5}             # column of each power
P_LASER = 125.0                                       # 'l L0 125 ...' in design.kat


@pytest.fixture(scope="module")
def design_kat():
    kat = pykat.finesse.kat()
    kat.verbose = False
    kat.load(str(DESIGN))
    kat.parse((DATA / "aligo_design_probe.extra").read_text())
    return kat


def test_ensemble_of_the_aligo_design_matches_finesse2(design_kat) -> None:
    powers = np.array([P_LASER, P_LASER / 2])
    res = Ensemble(design_kat).vary("L0.P", powers).run(
        backend="multiprocessing", workers=2, progress=False)
    assert res.failures == []
    for name, column in POWERS.items():
        expected = np.outer(powers / P_LASER, REFERENCE[:, column])  # P scales with L0.P
        np.testing.assert_allclose(res[name].values, expected, rtol=1e-9)
    phase = np.angle(res["a_REFL"].values[0], deg=True)
    np.testing.assert_allclose(phase, REFERENCE[:, 8], rtol=1e-9)


def test_parakat_runs_the_aligo_design(design_kat) -> None:
    with ParaKat(backend="multiprocessing", workers=2, progress=False) as pk:
        pk.run(design_kat)
        pk.run(design_kat)
        outs = pk.getResults()
    for out in outs:
        np.testing.assert_allclose(out.x, REFERENCE[:, 0], rtol=1e-12)
        np.testing.assert_allclose(out["P_X"], REFERENCE[:, 3], rtol=1e-9)
        np.testing.assert_allclose(out["REFL_I"], REFERENCE[:, 11],
                                   rtol=1e-9, atol=1e-9 * abs(REFERENCE[:, 11]).max())  # zero crossing
