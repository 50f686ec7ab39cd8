"""aLIGO sensitivity band: how the quantum-noise-limited sensitivity moves with losses and SRM.T.

The aLIGO design model (213 elements, from the finesse-ligo wheel, fetched once
with pip into ~/.cache/katparallel-data), without higher-order modes, with a
DARM strain signal (``fsig``, ``sgen darm STRAIN.AC.i``) and, at the output
mode cleaner, the quantum-noise-to-signal ratio ``NSR`` (``qnoised`` with
``nsr=True``: a real strain ASD, 1/sqrt(Hz)) and the DARM transfer function
``DARMTF`` (``pd1`` at ``fsig``: complex, W per unit strain).

``--draws`` Monte Carlo draws of the arm losses ``Xloss`` and ``Yloss`` (model
variables: the test masses' losses follow them) and the signal-recycling
mirror's transmission ``SRM.T``. Each draw runs
``Series(RunLocks(method="newton"), Xaxis(fsig.f, log, 5, 5000, 99))``: it locks
from the design tunings, then computes its 100-point curve. katparallel steps
the draws inside one built simulation per worker when that pays (it measures).

Prints the time and the spread of the sensitivity at 100 Hz and writes
``out/aligo_sensitivity.png``: the band of the draws (median and 5-95%) and one
draw's curve.

Run::

    python examples/aligo_sensitivity.py --draws 64 --backend multiprocessing
"""

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from finesse.analysis.actions import RunLocks, Series, Xaxis  # noqa: E402

from katparallel import Ensemble, Normal  # noqa: E402
from katparallel.models import ALIGO_DARM_SIGNALS as SIGNALS, aligo  # noqa: E402

DRAWS = {
    "Xloss": Normal(60e-6, 10e-6),  # model variables: ITMX.L and ETMX.L are Xloss/2
    "Yloss": Normal(60e-6, 10e-6),
    "SRM.T": Normal(0.32, 0.01),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()

    started = time.perf_counter()
    design = Ensemble(aligo() + SIGNALS)
    curve = Series(RunLocks(method="newton"), Xaxis("fsig.f", "log", 5, 5000, 99))
    res = design.sample(args.draws, DRAWS, seed=args.seed).run(
        curve, backend=args.backend, workers=args.workers)
    seconds = time.perf_counter() - started
    nsr = res["NSR"]
    at_100 = nsr.sel({"fsig.f": 100}, method="nearest")
    print(f"{args.draws - len(res.failures)}/{args.draws} locked curves in {seconds:.1f} s "
          f"(model read included) on {res.to_xarray().attrs['backend']}")
    print(f"NSR at {float(at_100['fsig.f']):.0f} Hz: median {float(at_100.median()):.3g} /sqrt(Hz), "
          f"5-95% {float(at_100.quantile(0.05)):.3g} .. {float(at_100.quantile(0.95)):.3g}")
    for failure in res.failures:
        print(f"  {failure.summary}")

    args.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    res.plot("NSR", ax=axes[0])
    res.plot("DARMTF", ax=axes[1], draw=0)
    axes[1].set_title("|DARMTF| of draw 0")
    png = args.out / "aligo_sensitivity.png"
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
