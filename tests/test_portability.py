"""The core imports and runs where ``fcntl`` does not exist (Windows).

``sys.modules["fcntl"] = None`` makes ``import fcntl`` fail as it does there.
"""

import subprocess
import sys

import pytest

MODEL = """
l L0 P=1
s s0 L0.p1 m.p1 L=1
m m R=0.5 T=0.5
pd P m.p2.o
"""
WITHOUT_FCNTL = f"""
import sys
sys.modules["fcntl"] = None  # as on Windows
from katparallel import Ensemble
import katparallel.store, katparallel.cli, katparallel.finesse2.locate
import katparallel.finesse2.client, katparallel.finesse2.program
res = Ensemble({MODEL!r}).vary("L0.P", [1.0, 2.0]).run(
    backend="serial", progress=False)
print(res["P"].values.round(12).tolist())
"""


@pytest.mark.timeout(120)
def test_core_imports_and_runs_without_fcntl():
    proc = subprocess.run([sys.executable, "-c", WITHOUT_FCNTL], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0.5, 1.0]"
