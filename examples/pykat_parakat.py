"""The mirror-transmission tutorial in PyKat, through ParaKat and through Ensemble(kat).

A 1 W laser hits a mirror; the kat's own ``xaxis`` sweeps the laser power and a
photodiode measures what the mirror lets through. The same study runs twice:

* the parakat way: one kat per mirror transmission, ``pk.run(kat)`` each, then
  ``pk.getResults()`` -- a list of ``KatRun`` in submission order;
* the katparallel way: ``Ensemble(kat).vary({"m1.T": ts, "m1.R": 1 - ts})``.

Both must give P_trans = T * P_laser and agree with each other. No ``ipcluster``
is needed, and no Finesse 2 either: without one, PyKat runs katparallel's
Finesse-3-backed ``kat``. Each kat run starts that program, which costs
seconds, so the study is small.

Run::

    python examples/pykat_parakat.py --backend multiprocessing --workers 2
"""

import argparse
import logging
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from katparallel import Ensemble, ParaKat  # noqa: E402
from katparallel.finesse2 import ensure_kat, which_kat  # noqa: E402

LOGGER = logging.getLogger("pykat_parakat")

TUTORIAL = """
l l1 1 0 n1              # laser, 1 W
s s1 1 n1 n2             # 1 m of space
m m1 0.5 0.5 0 n2 n3     # the mirror whose T we vary
s s2 1 n3 n4
pd trans n4              # power in transmission
pd refl n1               # power reflected back to the laser
xaxis l1 P lin 1 10 9
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="multiprocessing")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    ensure_kat()  # before `import pykat`: a real Finesse 2 if installed, else katparallel's
    from pykat import finesse

    LOGGER.info("PyKat runs %s", which_kat().version_line)
    kat = finesse.kat()
    kat.verbose = False
    kat.parse(TUTORIAL)
    ts = np.array([0.1, 0.4, 0.7, 0.9])

    started = time.perf_counter()
    with ParaKat(backend=args.backend, workers=args.workers) as pk:
        for t in ts:
            job = kat.deepcopy()
            job.m1.T, job.m1.R = t, 1 - t
            pk.run(job)
        outs = pk.getResults()
    LOGGER.info("ParaKat: %d kats in %.1f s", len(outs), time.perf_counter() - started)
    failed = [out for out in outs if isinstance(out, BaseException)]
    if failed:
        raise RuntimeError(f"{len(failed)} ParaKat jobs failed; first: {failed[0]!r}")

    started = time.perf_counter()
    res = Ensemble(kat).vary({"m1.T": ts, "m1.R": 1 - ts}).run(
        backend=args.backend, workers=args.workers
    )
    LOGGER.info("Ensemble(kat): %d jobs in %.1f s", len(ts), time.perf_counter() - started)

    laser = res["trans"]["l1.P"].values
    parakat_trans = np.array([out["trans"] for out in outs])
    physics = np.max(np.abs(res["trans"].values - ts[:, None] * laser[None, :]))
    agreement = np.max(np.abs(res["trans"].values - parakat_trans))
    LOGGER.info("max |P_trans - T*P_laser| = %.3g W; max |Ensemble - ParaKat| = %.3g W",
                physics, agreement)
    assert physics < 1e-12 and agreement == 0, "the tutorial's physics is broken"

    args.out.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for t, out in zip(ts, outs):
        left.plot(out.x, out["trans"], marker=".", label=f"T = {t:g}")
    left.set_xlabel("laser power l1.P [W]")
    left.set_ylabel("transmitted power [W]")
    left.set_title("ParaKat: one KatRun per mirror")
    left.legend()
    at = laser[-1]
    right.plot(ts, res["trans"].sel({"l1.P": at}), "o-", label="transmitted")
    right.plot(ts, res["refl"].sel({"l1.P": at}), "s-", label="reflected")
    right.set_xlabel("mirror transmission m1.T")
    right.set_ylabel("power [W]")
    right.set_title(f"Ensemble(kat) at l1.P = {at:g} W")
    right.legend()
    fig.tight_layout()
    png = args.out / "pykat_parakat.png"
    fig.savefig(png, dpi=120)
    LOGGER.info("wrote %s", png)


if __name__ == "__main__":
    main()
