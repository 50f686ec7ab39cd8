"""The classic Finesse tutorial as an ensemble: transmitted power vs mirror T.

A Gaussian beam (``gauss``, ``maxtem 4``) hits a mirror whose transmission
runs over 0.01 ... 0.99 (with R = 1 - T) while the model's own ``xaxis``
sweeps the laser power from 1 to 100 W. Every (T, P) point must give
P_trans = T * P_laser. Written in Finesse 2 kat syntax, read by Finesse 3's
legacy parser.

Run::

    python examples/mirror_transmission_sweep.py --backend multiprocessing --workers 2
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from katparallel import Ensemble  # noqa: E402

TUTORIAL = """
l l1 1 0 n1              # laser, 1 W
gauss g1 l1 n1 1e-3 0    # beam waist 1 mm at the laser
maxtem 4                 # higher-order modes up to 4
s s1 1 n1 n2             # 1 m of space
m m1 0.5 0.5 0 n2 n3     # the mirror whose T we vary
pd P n3                  # power in transmission
xaxis l1 P lin 1 100 {xsteps}
yaxis abs
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="multiprocessing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--xsteps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()

    ts = np.linspace(0.01, 0.99, 99)
    ensemble = Ensemble(TUTORIAL.format(xsteps=args.xsteps)).vary({"m1.T": ts, "m1.R": 1 - ts})
    print(ensemble.describe())
    res = ensemble.run(backend=args.backend, workers=args.workers)

    power = res["P"]
    laser = power["l1.P"].values
    error = np.max(np.abs(power.values - ts[:, None] * laser[None, :]))
    print(f"max |P - T*P_laser| = {error:.3g} W over {power.size} points")
    assert error < 1e-9, "the tutorial's physics is broken"

    args.out.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    res.plot("P", ax=left, cmap="viridis")
    left.set_title("Transmitted power P [W]")
    for t in (0.1, 0.5, 0.9):
        power.sel({"m1.T": t}, method="nearest").plot.line(ax=right, label=f"T = {t}")
    right.set_title("Transmitted power vs laser power")
    right.legend()
    fig.tight_layout()
    png = args.out / "mirror_transmission_sweep.png"
    fig.savefig(png, dpi=120)
    res.save(args.out / "mirror_transmission_sweep.nc")
    print(f"wrote {png} and {png.with_suffix('.nc')}")


if __name__ == "__main__":
    main()
