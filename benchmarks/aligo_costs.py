"""Where the time goes on the aLIGO design model (``maxtem 2``).

Measures, in one process unless said otherwise: parse; ``Ensemble(text)``;
first and second serial run of a small W4 study (symbolic draws, and radii of
curvature only); the first run on a fresh 2-worker pool, start-up included (in
a fresh subprocess); one ``Noxaxis``; one ``RunLocks`` + ``Noxaxis``; the cost
of a point when ``ETMX.Rcx`` is stepped inside one built simulation (Sweep);
``copy.deepcopy(model)``; ``model.unparse()`` and whether unparse -> parse
gives back every parameter value; snapshot and restore of every parameter.

Usage::

    python benchmarks/aligo_costs.py [--draws 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import subprocess
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _aligo  # noqa: E402

LOGGER = logging.getLogger("aligo_costs")


def _timed(fn, repeat: int = 1) -> tuple[object, float]:
    """``fn()``'s result and its median wall time over ``repeat`` calls."""
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, float(np.median(times))


def study_runs(text: str, draws: int) -> dict[str, float]:
    """``Ensemble(text)``, ``Ensemble(model)`` and first/second serial runs.

    The first run of the symbolic W4 draws is this process's first run of the
    model (katparallel's worker cache is cold); every later run finds it parsed.
    """
    from katparallel import Ensemble

    ens, secs = _timed(lambda: Ensemble(text))
    found = {"Ensemble(text)": secs}
    model = _aligo.parse(text)
    found["Ensemble(model) (unparse + parse check)"] = _timed(lambda: Ensemble(model))[1]
    rocs = {p: d for p, d in _aligo.w4_distributions().items() if ".Rc" in p}
    for label, spec in (("W4 draws (symbolic)", _aligo.w4_distributions()),
                        ("RoC draws only (model already cached)", rocs)):
        study = ens.sample(draws, spec, seed=1)
        for turn in ("first", "second"):
            _, secs = _timed(lambda: study.run(backend="serial", progress=False))
            found[f"{label}: {turn} serial run, {draws} draws"] = secs
    return found


def fresh_pool(draws: int) -> dict[str, float]:
    """In a fresh subprocess: ``Ensemble(text)`` to results on a new 2-worker pool."""
    cmd = [sys.executable, os.path.abspath(__file__), "--fresh-pool-child", "--draws", str(draws)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def fresh_pool_child(draws: int) -> dict[str, float]:
    """The subprocess side of :func:`fresh_pool` (finesse imported before timing)."""
    import finesse  # noqa: F401 - imported before the clock starts, as a user script would

    from katparallel import Ensemble

    text = _aligo.aligo_text()
    start = time.perf_counter()
    study = Ensemble(text).sample(draws, _aligo.w4_distributions(), seed=1)
    built = time.perf_counter() - start
    study.run(backend="multiprocessing", workers=2, progress=False)
    first = time.perf_counter() - start
    _, second = _timed(lambda: study.run(backend="multiprocessing", workers=2, progress=False))
    return {
        "fresh 2-worker pool: Ensemble(text).sample(...)": built,
        f"fresh 2-worker pool: Ensemble(text) to first results, W4 {draws} draws": first,
        f"same pool, second run, W4 {draws} draws": second,
    }


def simulation_costs(model) -> dict[str, object]:
    """One Noxaxis, one lock + Noxaxis, and stepping ETMX.Rcx inside one simulation."""
    from finesse.analysis.actions import Noxaxis, RunLocks, Series, Sweep

    found = {"one Noxaxis": _timed(lambda: model.run(Noxaxis()), 3)[1]}
    base = _aligo.snapshot(model)
    _, secs = _timed(lambda: model.run(Series(RunLocks(method="newton"), Noxaxis())))
    found["one Series(RunLocks(newton), Noxaxis)"] = secs
    found["parameters RunLocks left changed"] = sum(str(p.value) != str(v) for p, v in base)
    _aligo.restore(base)
    few, many = 1, 201  # enough points that the steps, not the build's noise, dominate
    rc = float(model.ETMX.Rcx.value)
    t_few = _timed(lambda: model.run(Sweep("ETMX.Rcx", np.full(few, rc), False)), 3)[1]
    t_many = _timed(lambda: model.run(Sweep("ETMX.Rcx", rc + np.linspace(-5, 5, many), False)), 3)[1]
    found["Sweep of ETMX.Rcx, 1 point (build + 1 solve)"] = t_few
    found["Sweep of ETMX.Rcx, per extra point"] = (t_many - t_few) / (many - few)
    return found


def model_costs(model, text: str) -> dict[str, object]:
    """deepcopy, unparse (and its round trip), snapshot and restore."""
    found: dict[str, object] = {"parse": _timed(lambda: _aligo.parse(text))[1]}
    found["copy.deepcopy(model)"] = _timed(lambda: copy.deepcopy(model), 3)[1]
    script, found["model.unparse()"] = _timed(model.unparse)
    found["unparse round trip"] = _round_trip(model, script)
    state, found["snapshot every parameter"] = _timed(lambda: _aligo.snapshot(model), 3)
    found["number of parameters"] = len(state)
    found["restore every parameter (none changed)"] = _timed(lambda: _aligo.restore(state), 3)[1]
    for param, value in state:  # the worst case: every value differs
        if not param.is_symbolic and isinstance(value, float) and param.full_name != "fsig.f":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    param.value = value * (1 + 1e-9)
                except Exception:  # noqa: BLE001 - a value Finesse refuses stays as it is
                    pass
    found["restore every parameter (all numeric ones changed)"] = _timed(
        lambda: _aligo.restore(state))[1]
    return found


def _round_trip(model, script: str) -> str:
    """Compare every parameter of ``model`` with the model parsed from ``script``."""
    other = _aligo.parse(script)
    theirs = {p.full_name: p.value for p in _aligo.all_parameters(other)}
    differ = []
    for param in _aligo.all_parameters(model):
        mine, back = param.value, theirs.get(param.full_name, "<missing>")
        if str(mine) != str(back):
            differ.append(f"{param.full_name}: {mine!r} -> {back!r}")
    extra = set(theirs) - {p.full_name for p in _aligo.all_parameters(model)}
    if not differ and not extra:
        return f"identical ({len(theirs)} parameters, values and expressions)"
    return f"{len(differ)} differ, {len(extra)} extra: " + "; ".join(differ[:8] + sorted(extra)[:4])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=8, help="draws of the small W4 studies")
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--fresh-pool-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("finesse").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    if args.fresh_pool_child:
        print(json.dumps(fresh_pool_child(args.draws)))
        return 0
    found: dict[str, object] = {"load average (1 min) at the start": os.getloadavg()[0]}
    found.update(fresh_pool(args.draws))
    text = _aligo.aligo_text()
    found.update(study_runs(text, args.draws))
    model = _aligo.parse(text)
    found.update(simulation_costs(model))
    found.update(model_costs(model, text))
    found["load average (1 min) at the end"] = os.getloadavg()[0]
    for name, value in found.items():
        shown = f"{value:10.4f} s" if isinstance(value, float) and "load" not in name else str(value)
        print(f"{name:75} {shown}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(found, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
