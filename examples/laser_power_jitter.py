"""Monte Carlo: 10,000 draws of laser power ~ N(1 W, 0.1 W) on a Finesse 3 model.

The transmitted power through a 50 % mirror is histogrammed. The study is
reproducible by its seed: run it twice with the same ``--seed`` and the
draws and results are identical, on any backend and worker count; the
``digest`` line (SHA-256 of the results) shows it.

Run::

    python examples/laser_power_jitter.py --seed 42 --backend multiprocessing
    python examples/laser_power_jitter.py --backend ipyparallel   # same digest
    mpiexec -n 3 python -m mpi4py.futures examples/laser_power_jitter.py --backend mpi
"""

import argparse
import hashlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from katparallel import Ensemble, Normal  # noqa: E402

MODEL = """
l L0 P=1
s s0 L0.p1 m.p1 L=1
m m R=0.5 T=0.5
pd P m.p2.o
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--backend", default="multiprocessing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()

    ensemble = Ensemble(MODEL).sample(args.n, {"L0.P": Normal(1.0, 0.1)}, seed=args.seed)
    res = ensemble.run(backend=args.backend, workers=args.workers)
    power = res["P"]
    drawn = power["L0.P"].values
    np.testing.assert_allclose(power.values, 0.5 * drawn, rtol=1e-12)
    print(
        f"{power.size} draws, seed {res.seed}: mean P = {power.mean().item():.6f} W, "
        f"std = {power.std().item():.6f} W (expected 0.5 and 0.05)"
    )
    print(f"digest {hashlib.sha256(power.values.tobytes()).hexdigest()[:16]} on {args.backend}")

    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    res.plot("P", ax=ax, bins=60)
    ax.set_xlabel("transmitted power P [W]")
    png = args.out / "laser_power_jitter.png"
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
