"""aLIGO tolerance study: test-mass curvature and losses, then the same draws with locks.

The aLIGO design model (213 elements, from the finesse-ligo wheel, fetched once
with pip into ~/.cache/katparallel-data) at ``maxtem 2``:

1. ``--draws`` Monte Carlo draws of the arm test masses' radii of curvature and
   losses. ``ITMX.L`` and ``ETMX.L`` are written ``Xloss/2`` in the model: a
   draw replaces the expression for that job. ``Yloss`` is a model variable:
   ``ITMY.L`` and ``ETMY.L`` follow it. Every draw is stepped inside one built
   simulation per worker.
2. ``--locked`` of the same kind of draws, each running
   ``RunLocks(method="newton")`` before it is solved; every draw starts from the
   design tunings, so the numbers do not depend on the order the draws ran in.

Prints the spread of the power-recycling and arm gains and writes
``out/aligo_tolerance.png`` (histograms).

Run::

    python examples/aligo_tolerance.py --draws 500 --locked 8 --backend multiprocessing
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from finesse.analysis.actions import Noxaxis, RunLocks, Series  # noqa: E402

from katparallel import Ensemble, Normal  # noqa: E402
from katparallel.models import aligo  # noqa: E402

TOLERANCES = {
    "ITMX.Rcx": Normal(-1934, 5), "ITMX.Rcy": Normal(-1934, 5),
    "ETMX.Rcx": Normal(2245, 5), "ETMX.Rcy": Normal(2245, 5),
    "ITMX.L": Normal(30e-6, 5e-6), "ETMX.L": Normal(30e-6, 5e-6),  # symbolic in the model
    "Yloss": Normal(60e-6, 10e-6),  # a model variable: ITMY.L and ETMY.L follow it
}


def summary(res, label: str) -> str:
    prg, agx = res["PRG"], res["AGX"]
    return (
        f"{label}: {prg.size - len(res.failures)}/{prg.size} draws in "
        f"{res.to_xarray().attrs['elapsed_seconds']:.1f} s on {res.to_xarray().attrs['backend']}; "
        f"PRG {prg.mean().item():.2f} ± {prg.std().item():.2f}, "
        f"AGX {agx.mean().item():.1f} ± {agx.std().item():.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--locked", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()

    design = Ensemble(aligo() + "\nmodes(maxtem=2)\n")
    run = dict(backend=args.backend, workers=args.workers)
    tolerance = design.sample(args.draws, TOLERANCES, seed=args.seed).run(**run)
    print(summary(tolerance, "tolerance"))
    locked = design.sample(args.locked, TOLERANCES, seed=args.seed + 1).run(
        Series(RunLocks(method="newton"), Noxaxis()), **run
    )
    print(summary(locked, "locked   "))
    for failure in locked.failures:
        print(f"  {failure.summary}")

    args.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    tolerance.plot("PRG", ax=axes[0], bins=40)
    tolerance.plot("AGX", ax=axes[1], bins=40)
    png = args.out / "aligo_tolerance.png"
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
