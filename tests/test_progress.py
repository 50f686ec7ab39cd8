"""One progress bar per run, ending at 100%, never redrawn by a later run.

Two runs in a fresh Python process, stderr captured: the first forks its pool
while its bar is on screen; the jobs of the second write through tqdm in the
workers (as anything there that uses tqdm may), which makes tqdm redraw every
bar it knows in that process. A third run on ``auto`` keeps its label.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys

    import finesse
    import numpy as np

    from katparallel import Ensemble
    from katparallel._testing import CAVITY_KATSCRIPT


    def writes_through_tqdm(values, rng):
        from tqdm import tqdm

        tqdm.write(f"job x={values['x']:g}", file=sys.stderr)
        model = finesse.Model()
        model.parse(CAVITY_KATSCRIPT)
        return model


    if __name__ == "__main__":
        sweep = Ensemble(CAVITY_KATSCRIPT).vary("L0.P", np.linspace(1, 2, 120))
        sweep.run(backend="multiprocessing", workers=2, batch=False)
        print("=== second run", file=sys.stderr, flush=True)
        Ensemble(writes_through_tqdm).vary("x", np.arange(6.0)).run(backend="multiprocessing", workers=2)
        print("=== third run", file=sys.stderr, flush=True)
        sweep.run(backend="auto", workers=2, batch=False)
    """
)


def _bar_states(text: str) -> list[str]:
    """Every state a bar was drawn in, in order (tqdm redraws with carriage returns)."""
    return [part.strip() for part in re.split(r"[\r\n]", text) if "job/s" in part or "?job" in part]


def test_each_run_has_one_bar_that_ends_full_and_is_never_drawn_again(tmp_path):
    script = tmp_path / "two_runs.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    first, rest = done.stderr.split("=== second run")
    second, third = rest.split("=== third run")
    assert _bar_states(first)[-1].startswith("multiprocessing: 100%") and "120/120" in _bar_states(first)[-1]
    assert all("/120" not in state for state in _bar_states(second))  # the first bar stays put
    assert _bar_states(second) and all(s.startswith("multiprocessing:") for s in _bar_states(second))
    assert "6/6" in _bar_states(second)[-1] and "100%" in _bar_states(second)[-1]
    states = _bar_states(third)
    assert states and all(s.startswith("auto:") for s in states)  # one label all along
    assert "120/120" in states[-1] and "100%" in states[-1]
