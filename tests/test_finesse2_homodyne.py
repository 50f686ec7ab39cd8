"""Finesse 2's ``qhd`` on Finesse 3: the two-node noise detector against Finesse 3's own.

The agreement with Finesse 2.3.1 is checked by ``tests/data/finesse2/qhd_*``
(``test_finesse2_reference.py``); these check the detector's quadratic form against
Finesse 3's single-node ``qnoised`` where the answer is known without Finesse 2.
"""

from __future__ import annotations

import finesse
import numpy as np
import pytest

from katparallel.finesse2.homodyne import QuantumHomodyne

# Squeezed light and a laser on an unbalanced beam splitter.
MODEL = """
l l1 P=1
s s0 l1.p1 bs1.p1 L=1
sq sq1 db=10 angle=25
s s4 sq1.p1 bs1.p4 L=1
bs bs1 R=0.3 T=0.7
fsig(1)
qnoised qn2 bs1.p2.o
qnoised qn3 bs1.p3.o
"""


def _run(*detectors: tuple) -> finesse.solutions.ArraySolution:
    model = finesse.Model()
    model.parse(MODEL)
    for name, first, second, phase in detectors:
        model.add(QuantumHomodyne(name, model.get(first), model.get(second), phase))
    return model.run("xaxis(fsig.f, log, 1, 1k, 3)")


def test_a_dark_second_node_leaves_the_first_nodes_noise() -> None:
    # bs1.p2.i carries no light towards the beam splitter: no carrier, no current.
    out = _run(("h", "bs1.p2.o", "bs1.p2.i", 45.0))
    np.testing.assert_allclose(out["h"], out["qn2"], rtol=1e-12)


@pytest.mark.parametrize(("phase", "factor"), [(0.0, 2.0), (180.0, 0.0), (360.0, 2.0)])
def test_one_node_twice(phase: float, factor: float) -> None:
    # The photocurrent twice (2 I) or minus itself (0).
    out = _run(("h", "bs1.p2.o", "bs1.p2.o", phase))
    np.testing.assert_allclose(out["h"], factor * out["qn2"], rtol=1e-12,
                               atol=1e-7 * float(np.max(out["qn2"])))


def test_a_difference_does_not_depend_on_the_order() -> None:
    # I1 - I2 and I2 - I1 have the same noise; whether the order matters at other
    # phases is pinned against Finesse 2 by tests/data/finesse2/qhd_cavity.kat.
    out = _run(("c", "bs1.p2.o", "bs1.p3.o", 180.0), ("d", "bs1.p3.o", "bs1.p2.o", 180.0))
    np.testing.assert_allclose(out["c"], out["d"], rtol=1e-12)
    assert np.all(out["c"] > 0)
