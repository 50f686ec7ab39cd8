"""Small real models shared by the tests, and a private cache for the ``kat`` program."""

import os
import shutil
import tempfile

import numpy as np
import pytest

# PyKat's kat launcher and its warm server live in the cache directory: give the
# suite its own, so it neither uses nor leaves behind a server in the user's.
_CACHE = tempfile.mkdtemp(prefix="kp-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE


@pytest.fixture(scope="session", autouse=True)
def _stop_kat_server():
    yield
    from katparallel.finesse2 import stop_server

    stop_server()
    shutil.rmtree(_CACHE, ignore_errors=True)

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
