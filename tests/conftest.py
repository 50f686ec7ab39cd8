"""Small real models shared by the tests."""

import numpy as np
import pytest

# The classic tutorial in Finesse 2 syntax: a laser through a mirror, power
# detected in transmission while an xaxis sweeps the laser power.
TUTORIAL_KAT2 = """
l l1 1 0 n1
gauss g1 l1 n1 1e-3 0
maxtem 2
s s1 1 n1 n2
m m1 0.5 0.5 0 n2 n3
pd P n3
xaxis l1 P lin 1 100 10
"""

# A Finesse 3 model with a scalar and a complex (amplitude) detector.
LASER_MIRROR_KATSCRIPT = """
l L0 P=1
s s0 L0.p1 m.p1 L=1
m m R=0.5 T=0.5
pd P m.p2.o
ad a m.p2.o f=0
"""


@pytest.fixture
def tutorial_kat2() -> str:
    return TUTORIAL_KAT2


@pytest.fixture
def katscript() -> str:
    return LASER_MIRROR_KATSCRIPT


@pytest.fixture
def finesse_model():
    import finesse

    model = finesse.Model()
    model.parse(LASER_MIRROR_KATSCRIPT)
    return model


@pytest.fixture
def transmissions() -> np.ndarray:
    return np.linspace(0.01, 0.99, 7)
