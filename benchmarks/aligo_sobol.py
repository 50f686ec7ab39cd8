"""A Sobol' study on aLIGO: katparallel's fast path against a plain in-process loop.

Six test-mass radii of curvature (the W4 tolerances), ``maxtem 2``, Saltelli's
design of ``n (d + 2)`` points (n = 512: 4,096 points). katparallel runs the
design on ``--workers`` (every point stepped inside one built simulation per
chunk); the reference is the hand-written loop over one parsed model (set the
values, ``Noxaxis``, put everything back), run for ``--loop-budget`` seconds on
the first points of the same design and extrapolated to all of them (at about
0.35 s a point it would take 25 minutes). The loop's points must agree with
katparallel's (the largest relative difference is printed).

Run::

    python benchmarks/aligo_sobol.py                     # n = 512, 4,096 points
    python benchmarks/aligo_sobol.py --n 32 --loop-budget 15   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _aligo import aligo_text, parse, per_draw_loop, w4_distributions  # noqa: E402

OUTPUTS = ["PRG", "AGX"]


def distributions() -> dict:
    """The six radii of curvature of the W4 tolerances."""
    return {p: d for p, d in w4_distributions().items() if ".Rc" in p}


def loop(text: str, paths: list[str], table: np.ndarray, budget: float) -> tuple[np.ndarray, float]:
    """The plain loop over the first rows of ``table`` until ``budget`` seconds pass."""
    from finesse.analysis.actions import Noxaxis

    model = parse(text)
    start = time.perf_counter()
    rows = []
    for row in table:
        rows.append(per_draw_loop(model, paths, row[None], OUTPUTS, Noxaxis)[0])
        if time.perf_counter() - start > budget:
            break
    return np.array(rows), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="base points (power of 2)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loop-budget", type=float, default=60.0, help="seconds for the plain loop")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from katparallel import Ensemble

    text = aligo_text()
    dists = distributions()
    ens = Ensemble(text).sobol(dists, n=args.n, seed=1)
    run = dict(backend="multiprocessing", workers=args.workers, progress=False)
    first = time.perf_counter()
    res = ens.run(**run)
    first = time.perf_counter() - first
    warm = time.perf_counter()
    again = ens.run(**run)
    warm = time.perf_counter() - warm
    assert np.array_equal(res["PRG"].values, again["PRG"].values, equal_nan=True)
    points = res.to_xarray().sizes["sample"]

    paths = list(dists)
    table = np.column_stack([res[p].values for p in paths])
    looped, loop_seconds = loop(text, paths, table, args.loop_budget)
    mine = np.column_stack([res[o].values[: len(looped)] for o in OUTPUTS])
    difference = float(np.max(np.abs(mine - looped) / np.abs(looped)))
    per_point = loop_seconds / len(looped)

    total = res.sensitivity("PRG")["ST"]
    ranking = total.isel(param=np.argsort(-total.values))
    report = {
        "points": points, "workers": args.workers, "katparallel_first_run_s": first,
        "katparallel_warm_run_s": warm, "loop_points": len(looped), "loop_s": loop_seconds,
        "loop_s_per_point": per_point, "loop_estimated_s": per_point * points,
        "speedup_first": per_point * points / first, "speedup_warm": per_point * points / warm,
        "max_relative_difference": difference, "failed": len(res.failures),
        "ST_PRG": {str(p): float(v) for p, v in zip(ranking["param"].values, ranking.values)},
    }
    print(f"Sobol' study on aLIGO (maxtem 2): {points} points, {len(dists)} parameters, "
          f"{args.workers} workers")
    print(f"  katparallel, first run (pool start, parse): {first:8.2f} s")
    print(f"  katparallel, warm pool:                     {warm:8.2f} s")
    print(f"  plain loop: {len(looped)} points in {loop_seconds:.1f} s -> {per_point * points:8.1f} s "
          f"for all (extrapolated)")
    print(f"  ratio: {report['speedup_first']:.0f}x (first run), {report['speedup_warm']:.0f}x (warm); "
          f"largest relative difference {difference:.1e}")
    print("  total Sobol' index of PRG: " + ", ".join(f"{p} {v:.3f}" for p, v in report["ST_PRG"].items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
