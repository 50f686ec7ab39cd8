"""What the model cache costs and saves on the aLIGO design model (``maxtem 1``).

Measures, in one process with a fresh cache folder: the parse; pickling the
entry (done once, right after the parse, while the parsing thread waits); the
background check and write; a load; and the smallest recursion limit with
which ``dill.dumps`` and ``dill.loads`` of the model succeed (pickling runs
on a thread of its own with a raised limit because of the first).

Usage::

    python benchmarks/modelcache_costs.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="kp-cache-bench-")


def needed_limit(fn) -> int:
    """The smallest recursion limit with which ``fn()`` raises no RecursionError."""
    low, high = 50, 100_000
    previous = sys.getrecursionlimit()
    try:
        while low < high:
            middle = (low + high) // 2
            sys.setrecursionlimit(middle)
            try:
                fn()
                high = middle
            except RecursionError:
                low = middle + 1
            finally:
                sys.setrecursionlimit(previous)
    finally:
        sys.setrecursionlimit(previous)
    return low


def main() -> None:
    import dill

    from katparallel.models import aligo
    from katparallel.adapters import finesse as finesse_adapter
    from katparallel.adapters import modelcache

    text = aligo() + "\nmodes(maxtem=1)\n"
    key = modelcache.entry_key(text, "katscript")
    started = time.perf_counter()
    model = finesse_adapter._parse(text, "katscript")
    parse = time.perf_counter() - started
    started = time.perf_counter()
    entry = modelcache.unsaved(key, model, [], finesse_adapter._parameter_state)
    pickle = time.perf_counter() - started
    started = time.perf_counter()
    modelcache.save_in_background(entry).join()
    write = time.perf_counter() - started
    started = time.perf_counter()
    assert modelcache.load(key) is not None
    load = time.perf_counter() - started
    sys.setrecursionlimit(100_000)  # room for the search (this main thread's stack is enough here)
    dumps_needs = needed_limit(lambda: dill.dumps(model))
    loads_needs = needed_limit(lambda: dill.loads(entry.data))
    print(f"parse {parse:.2f} s | pickle {pickle:.2f} s | check+write {write:.2f} s | "
          f"load {load:.2f} s | entry {len(entry.data) / 1e6:.1f} MB | "
          f"recursion limit needed: dumps {dumps_needs}, loads {loads_needs}")


if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)
