"""Peak memory and time of a 1,000,000-draw Monte Carlo of a scalar detector.

Runs ``Ensemble(model).sample(n, {"L0.P": Normal(1, 0.1)})`` on the
multiprocessing backend (batched fast path) and one in-process Sweep over the
same draws, then reports the peak resident memory of this process and of its
worker processes (``getrusage`` of self and of reaped children, so the pool is
shut down before reading it), and the time ratio to the Sweep.

Targets: peak RSS < 1 GiB; within 5x of the in-process Sweep's time.

Usage::

    python benchmarks/memory_million.py [--n 1000000] [--workers 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

KAT = """
l L0 P=1
s s0 L0.p1 m1.p1 L=1
m m1 R=0.99 T=0.01
pd P m1.p2.o
"""


def _peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: kilobytes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    import finesse
    from finesse.analysis.actions import Sweep

    from katparallel import Ensemble, Normal
    from katparallel.backends.multiprocess import shutdown_pools

    ens = Ensemble(KAT).sample(args.n, {"L0.P": Normal(1, 0.1)}, seed=11)
    Ensemble(KAT).vary("L0.P", [1.0, 2.0]).run(
        backend="multiprocessing", workers=args.workers, progress=False
    )  # start the pool (start-up is not counted)
    start = time.perf_counter()
    res = ens.run(backend="multiprocessing", workers=args.workers, progress=False)
    kp_seconds = time.perf_counter() - start
    parent_after_kp = _peak_mib(resource.RUSAGE_SELF)

    values = ens.plan().values_for(np.arange(args.n))[:, 0].copy()
    model = finesse.Model()
    model.parse(KAT)
    start = time.perf_counter()
    sol = model.run(Sweep("L0.P", values, False))
    sweep_seconds = time.perf_counter() - start
    same = np.allclose(res["P"].values, np.asarray(sol["P"]), rtol=1e-12, atol=0)

    shutdown_pools()  # reap the workers so RUSAGE_CHILDREN counts them
    parent = _peak_mib(resource.RUSAGE_SELF)
    children = _peak_mib(resource.RUSAGE_CHILDREN)
    print(f"draws                         {args.n}")
    print(f"katparallel multiprocessing   {kp_seconds:.3f} s  ({len(res.failures)} failed)")
    print(f"one in-process Sweep          {sweep_seconds:.3f} s")
    print(f"time ratio (target <= 5)      {kp_seconds / sweep_seconds:.2f}")
    print(f"same numbers (1e-12)          {same}")
    print(f"peak RSS parent after run     {parent_after_kp:.0f} MiB (after Sweep too: {parent:.0f} MiB)")
    print(f"peak RSS largest worker       {children:.0f} MiB")
    print(f"parent + workers (bound)      {parent_after_kp + args.workers * children:.0f} MiB (target < 1024)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
