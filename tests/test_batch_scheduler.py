"""Pool workers under a batch scheduler: a cancelled job signals every process,
and a parent killed outright (SIGKILL, out of memory) must leave no worker behind.

Each test runs a real parent script in a subprocess with real pools.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

#: Only a hang reaches this.
TIMEOUT = 60

#: A parent with two pools alive at once. The first pool loses a worker while
#: the second is alive, so its replacement is forked beside the second pool.
TWO_POOLS = """
import sys, time
from katparallel import _testing
from katparallel.backends import get_backend_class

if __name__ == "__main__":
    first = get_backend_class({first!r})(workers=2, **{first_kw!r})
    second = get_backend_class({second!r})(workers=1, **{second_kw!r})
    dict(first.map_unordered(_testing.square, [1, 2, 3]))
    dict(second.map_unordered(_testing.square, [1, 2]))
    dict(first.map_unordered(_testing.crash_on, [1, _testing.CRASH_VALUE, 2]))
    dict(second.map_unordered(_testing.square, [3]))
    print("ready", flush=True)
    time.sleep(600)
"""


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has exited; only its parent has not reaped it)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "first, first_kw, second, second_kw",
    [
        ("multiprocessing", {}, "multiprocessing", {}),  # both forked
        ("multiprocessing", {}, "multiprocessing", {"start_method": "forkserver"}),
        ("multiprocessing", {}, "pathos", {}),
    ],
    ids=["forked+forked", "forked+forkserver", "forked+pathos"],
)
def test_no_worker_outlives_a_killed_parent_with_two_pools(first, first_kw, second, second_kw,
                                                          tmp_path):
    script = tmp_path / "two_pools.py"
    script.write_text(TWO_POOLS.format(first=first, first_kw=first_kw,
                                       second=second, second_kw=second_kw))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    workers: list[psutil.Process] = []
    try:
        assert parent.stdout.readline().strip() == "ready", parent.stderr.read()[-2000:]
        workers = psutil.Process(parent.pid).children(recursive=True)
        assert len(workers) >= 3, workers
        parent.kill()
        parent.wait(TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        while _alive(workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [(p.pid, " ".join(p.cmdline())[:80]) for p in _alive(workers)]
        assert left == [], f"processes left behind by the killed parent: {left}"
    finally:
        if parent.poll() is None:
            parent.kill()
        for process in _alive(workers):
            process.kill()
