"""Workloads W4 and W5 of ``compare_backends.py``: the aLIGO design model.

W4  tolerance Monte Carlo (``--w4-draws``, 2,000 by default) of test-mass
    radii of curvature and losses, symbolic ones and a model variable included
    (:func:`_aligo.w4_distributions`), ``maxtem 2``, ``Noxaxis`` with the
    model's real-valued detectors (power and math detectors).
W5  lock per draw (``--w5-draws``, 64): ``Series(RunLocks(method="newton"),
    Noxaxis())`` on small loss and RoC jitter (:func:`_aligo.w5_distributions`).
W6  sensitivity curves (``--w6-draws``, 64): ``modes(off)``, a DARM signal, the
    quantum-noise-to-signal ratio ``NSR`` (real) and the DARM transfer function
    ``DARMTF`` (complex) over ``xaxis(fsig.f, log, 5, 5000, 99)``, on draws of
    ``Xloss``, ``Yloss`` and ``SRM.T`` (:func:`_aligo.w6_distributions`).
W6L the same curves, each after ``RunLocks(method="newton")``.

Every timed figure is the best of ``--repeat`` runs (default 1). Methods
slower than the time budget (``--budget`` seconds) run a prefix of the draws: prefixes grow until the next would overrun the budget, and the last
one is the row (compared by throughput; its note says so). A prefix of a
katparallel study is a zipped ``vary`` of the same values as the first draws
of ``sample``.

References. W4 and W6: every draw stepped inside ONE built simulation (the
in-process bound), itself checked against the hand-written per-draw loop on
the draws the loop ran. W5: the per-draw loop, which restores every parameter
of the model after each draw (RunLocks leaves its converged tunings in the
model), checked against draws run on untouched deep copies of the model.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import _aligo
import _bench_jobs as jobs_mod

LOGGER = logging.getLogger("compare_backends")

#: The row of :func:`two_core_ceiling`.
CEILING = "independent processes at once, a share each (ceiling)"

#: First prefix a slow method runs (draws).
FIRST_PREFIX = 4


@dataclass
class Study:
    """One aLIGO workload: the draws, the outputs compared, the analysis."""

    name: str
    text: str
    spec: dict
    seed: int
    paths: tuple[str, ...]
    table: np.ndarray  # (n, len(paths)): the draws of Ensemble.sample
    names: list[str]  # real-valued detectors compared (W6: curves, complex ones too)
    analysis: Callable  # () -> a fresh Finesse action
    dtypes: dict | None = None  # name -> the dtype katparallel must give (default float64)

    @property
    def n(self) -> int:
        return len(self.table)

    def ensemble(self, k: int, ens=None):
        """The katparallel study of the first ``k`` draws (``sample`` when ``k == n``).

        ``ens`` is an ``Ensemble(self.text)`` to reuse (made here if None: a parse).
        """
        from katparallel import Ensemble

        ens = Ensemble(self.text) if ens is None else ens
        if k == self.n:
            return ens.sample(self.n, self.spec, seed=self.seed)
        return ens.vary({p: self.table[:k, j] for j, p in enumerate(self.paths)})

    def matrix(self, res, k: int) -> tuple[np.ndarray, str]:
        """Outputs of a katparallel result of ``k`` draws as a float matrix, and
        a note on what is wrong with them (missing outputs, dtype, failures)."""
        notes, columns, odd, missing = [], [], [], []
        for name in self.names:
            try:
                values = res[name].values
            except KeyError:  # no job produced it (every job failed)
                missing.append(name)
                values = np.full(k, np.nan)
            if values.dtype != (self.dtypes or {}).get(name, np.float64):
                odd.append(f"{name}:{values.dtype}")
            if self.dtypes is None:
                columns.append(np.asarray(values, dtype=float))
            else:  # curves: one row of real and imaginary parts per draw
                columns.append(_aligo.complex_columns(values.reshape(len(values), -1)))
        if missing:
            notes.append(f"no output {','.join(missing[:3])}")
        if odd:
            notes.append(f"dtype {','.join(odd[:3])}{'...' if len(odd) > 3 else ''}")
        if res.failures:
            notes.append(f"{len(res.failures)} failed: {res.failures[0].message[:60]}")
        return np.column_stack(columns), "; ".join(notes)


def make_study(name: str, n: int, spec: dict, seed: int, analysis: Callable) -> Study:
    """Draw the study's values as ``Ensemble.sample`` does and list its detectors."""
    from katparallel import Ensemble

    text = _aligo.aligo_text()
    plan = Ensemble(text).sample(n, spec, seed=seed).plan()
    names = _aligo.real_detectors(_aligo.parse(text))
    return Study(name, text, spec, seed, plan.paths, plan.values_for(np.arange(n)), names, analysis)


def grow(run: Callable[[int], object], n: int, budget: float, repeat: int = 1) -> tuple[int, object, float]:
    """Run prefixes of ``k`` draws until all ``n`` ran or the next would exceed ``budget`` s.

    Returns the last prefix: (k, its result, its best seconds over ``repeat`` runs).
    """
    k = min(n, FIRST_PREFIX)
    while True:
        out, secs = _timed(run, k)
        if k == n:
            break
        nxt = min(n, max(2 * k, int(0.8 * budget * k / secs)))
        if secs * nxt / k > budget:
            break
        k = nxt
    for _ in range(repeat - 1):
        secs = min(secs, _timed(run, k)[1])
    return k, out, secs


def _timed(fn: Callable, *args) -> tuple[object, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def _prefix_note(k: int, n: int) -> str:
    return "" if k == n else f"first {k} of {n} draws (budget)"


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


# ------------------------------------------------------------------ methods
def stepping_bound(bench, study: Study) -> np.ndarray:
    """(f) Parse once, step every draw in ONE built simulation: two rows.

    Steps only: the draws stepped on a model parsed in this process (best of
    ``bench.repeat``); its outputs are the reference. From the text: a fresh
    process parses the model and steps every draw, as a fresh script would
    (best of ``bench.repeat``, each in a new process, timed as
    :func:`fresh_pool` times katparallel's first run); it must agree.
    """
    model = _aligo.parse(study.text)
    out, stepping = _aligo.step_draws(model, study.paths, study.table, study.names)
    for _ in range(bench.repeat - 1):
        stepping = min(stepping, _aligo.step_draws(model, study.paths, study.table, study.names)[1])
    bench.add(study.name, "in-process stepping bound (steps only)", study.n, stepping,
              note="reference; model parsed, one build, every draw stepped")
    label = "in-process stepping bound (parse + steps)"
    runs = []
    for _ in range(bench.repeat):
        with tempfile.TemporaryDirectory() as cache_home:
            runs.append(_fresh_subprocess(bench, study, study.n, cache_home, "--stepping-child"))
    failed = [r for r in runs if isinstance(r, str)]
    if failed:
        bench.failed(study.name, label, failed[0])
    else:
        info, got = min(runs, key=lambda r: r[0]["seconds"])
        bench.add(study.name, label, study.n, info["seconds"], got, out,
                  note="fastest single-process run: a fresh process, text to outputs")
    return out


def stepping_child(job: str) -> dict:
    """The subprocess of :func:`stepping_bound`: time text to stepped outputs."""
    with open(job, "rb") as fh:
        study, k = pickle.load(fh)
    start = time.perf_counter()
    model = _aligo.parse(study.text)
    got, _ = _aligo.step_draws(model, study.paths, study.table[:k], study.names)
    seconds = time.perf_counter() - start
    np.save(job + ".npy", got)
    return {"seconds": seconds, "note": ""}


def per_draw_loop(bench, study: Study, ref: np.ndarray | None, loop=None) -> np.ndarray:
    """(d) The hand-written serial loop over one parsed model (restores every parameter);
    ``loop`` is the per-draw runner (default :func:`_aligo.per_draw_loop`)."""
    model = _aligo.parse(study.text)
    loop = loop or _aligo.per_draw_loop

    def run(k):
        return loop(model, study.paths, study.table[:k], study.names, study.analysis)

    k, out, secs = grow(run, study.n, bench.budget, bench.repeat)
    note = _join("reference" if ref is None else "", _prefix_note(k, study.n),
                 "every parameter restored after each draw")
    bench.add(study.name, "serial loop over one parsed model", k, secs,
              None if ref is None else out, None if ref is None else ref[:k], note=note)
    return out


#: The row of katparallel on a warm Dask LocalCluster.
DASK_WARM = "katparallel dask, warm LocalCluster"


def katparallel_rows(bench, study: Study, ref: np.ndarray, analysis=None) -> int:
    """(a) and (c): katparallel serial, on a warm 2-worker pool and on a warm Dask
    LocalCluster (if installed); the last prefix size of the pool."""
    from katparallel import Ensemble
    from katparallel.backends import available

    k, base = study.n, Ensemble(study.text)  # parsed once, outside every timed run
    labels = {"serial": "katparallel serial", "multiprocessing": "katparallel multiprocessing, warm pool",
              "dask": DASK_WARM}
    pool_k = k
    for backend in [b for b in labels if b in available()]:
        def run(count, backend=backend):
            return study.ensemble(count, base).run(analysis, backend=backend, workers=bench.workers,
                                                  progress=False)

        run(min(study.n, 2 * bench.workers))  # warm: pool started, model parsed in every worker
        k, res, secs = grow(run, study.n, bench.budget, bench.repeat)
        got, note = study.matrix(res, k)
        m = min(k, len(ref))
        bench.add(study.name, labels[backend], k, secs, got[:m], ref[:m],
                  note=_join(_prefix_note(k, study.n), note,
                             f"compared on first {m}" if m < k else ""))
        pool_k = k if backend == "multiprocessing" else pool_k
    return pool_k


def fresh_pool(bench, study: Study, ref: np.ndarray, k: int) -> None:
    """(b) First run on a fresh pool, start-up included, each time in a fresh
    subprocess (best of ``bench.repeat``).

    Two rows: a first session, whose parent parses the model (katparallel's
    on-disk model cache starts empty), and a later session, which finds the
    model in that cache.
    """
    label = "katparallel fresh pool, start-up included"
    cold, warm = [], []
    for _ in range(bench.repeat):
        with tempfile.TemporaryDirectory() as cache_home:
            cold.append(_fresh_subprocess(bench, study, k, cache_home))
            warm.append(_fresh_subprocess(bench, study, k, cache_home))
    for runs, label, note in (
        (cold, label, "first session: the model is parsed"),
        (warm, label + ", model cache warm", "a later session: the model read from disk"),
    ):
        failed = [r for r in runs if isinstance(r, str)]
        if failed:
            bench.failed(study.name, label, failed[0])
            continue
        info, got = min(runs, key=lambda r: r[0]["seconds"])
        m = min(k, len(ref))
        bench.add(study.name, label, k, info["seconds"], got[:m], ref[:m],
                  note=_join("Ensemble(text) to results, new forkserver + workers", note,
                             _prefix_note(k, study.n), info["note"]))


def _fresh_subprocess(
    bench, study: Study, k: int, cache_home: str, child: str = "--fresh-pool-child"
) -> tuple[dict, np.ndarray] | str:
    """Run :func:`fresh_pool_child` (or, with ``child="--stepping-child"``,
    :func:`stepping_child`) in a new process: (timing, outputs), or why it failed.

    The study travels pickled (draws, names), so the child parses nothing
    before its clock starts; ``cache_home`` is its ``XDG_CACHE_HOME``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        return _finish(_start(bench, study, k, cache_home, child, tmp))


def _start(bench, study: Study, k: int, cache_home: str, child: str, tmp: str):
    """Start the child of :func:`_fresh_subprocess`; ``(process, job file)``."""
    job = os.path.join(tmp, f"study-{id(study)}.pkl")
    with open(job, "wb") as fh:
        pickle.dump((study, k), fh)
    cmd = [sys.executable, bench.script, child, job, "--workers", str(bench.workers)]
    env = {**os.environ, "XDG_CACHE_HOME": cache_home}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    return proc, job


def _finish(started) -> tuple[dict, np.ndarray] | str:
    """Wait for a child of :func:`_start`: (timing, outputs), or why it failed."""
    proc, job = started
    out, err = proc.communicate()
    if proc.returncode:
        return f"child exited {proc.returncode}: {err.strip()[-200:]}"
    return json.loads(out.strip().splitlines()[-1]), np.load(job + ".npy")


def two_core_ceiling(bench, study: Study, ref: np.ndarray) -> None:
    """(g) What ``bench.workers`` cores allow: as many independent fresh processes at
    once, each parsing the model and stepping its share of the draws with no
    coordination at all; the row's time is the slowest one's (best of ``bench.repeat``).

    No pool can beat it: the parse cannot be shared, and every step runs with
    the other cores busy, as a pool's workers do.
    """
    _ceiling(bench, study, ref, "--stepping-child",
             f"{bench.workers} fresh processes at once, each parses and steps its "
             "share; the slowest one's time")


def _ceiling(bench, study: Study, ref: np.ndarray, child: str, note: str, together: bool = False) -> None:
    """Run ``child`` on each worker's share of the draws at once; the slowest one's
    time is the row's (best of ``bench.repeat``). With ``together``, each child
    says "ready" after its parse and waits, so every clock starts at once."""
    shares = [dataclasses.replace(study, table=part)
              for part in np.array_split(study.table, bench.workers)]
    best = None
    for _ in range(bench.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            started = [_start(bench, s, len(s.table), tmp, child, tmp) for s in shares]
            if together:
                for proc, _ in started:
                    assert proc.stdout.readline().strip() == "ready"
                for proc, _ in started:
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
            runs = [_finish(s) for s in started]
        failed = [r for r in runs if isinstance(r, str)]
        if failed:
            bench.failed(study.name, CEILING, failed[0])
            return
        seconds = max(info["seconds"] for info, _ in runs)
        if best is None or seconds < best[0]:
            best = seconds, np.concatenate([got for _, got in runs])
    bench.add(study.name, CEILING, study.n, best[0], best[1], ref, note=note)


def fresh_pool_child(job: str, workers: int) -> dict:
    """The subprocess of :func:`fresh_pool`: time ``Ensemble(text)`` to results."""
    with open(job, "rb") as fh:
        study, k = pickle.load(fh)
    start = time.perf_counter()
    res = study.ensemble(k).run(backend="multiprocessing", workers=workers, progress=False)
    seconds = time.perf_counter() - start
    got, note = study.matrix(res, k)
    np.save(job + ".npy", got)
    return {"seconds": seconds, "note": note}


def pathos_recipe(bench, study: Study, ref: np.ndarray) -> None:
    """(e) The Finesse docs' pathos + dill recipe: the model travels with every task."""
    model = _aligo.parse(study.text)
    pool = bench.pathos_pool

    def run(k):
        draws = [dict(zip(study.paths, row)) for row in study.table[:k].tolist()]
        return np.array(pool.map(jobs_mod.pathos_recipe_scalars, [model] * k, draws,
                                 [study.names] * k, [study.analysis()] * k))

    try:
        k, out, secs = grow(run, study.n, bench.budget, bench.repeat)
    except Exception as exc:  # noqa: BLE001 - the recipe's failure is the result
        bench.failed(study.name, "pathos+dill recipe (Finesse docs)",
                     f"failed: {type(exc).__name__}: {str(exc)[:80]}")
        return
    bench.add(study.name, "pathos+dill recipe (Finesse docs)", k, secs, out, ref[:k],
              note=_prefix_note(k, study.n))


# ----------------------------------------------------------------- workloads
def w4_study(n: int) -> Study:
    """W4's draws (seed 4)."""
    from finesse.analysis.actions import Noxaxis

    return make_study("W4", n, _aligo.w4_distributions(), 4, Noxaxis)


def w5_study(n: int) -> Study:
    """W5's draws (seed 5)."""
    return make_study("W5", n, _aligo.w5_distributions(), 5, _aligo.lock_then_noxaxis)


def w4(bench, n: int) -> None:
    """W4: all methods, the stepping bound as reference."""
    study = w4_study(n)
    ref = stepping_bound(bench, study)
    per_draw_loop(bench, study, ref)
    k = katparallel_rows(bench, study, ref)
    fresh_pool(bench, study, ref, k)
    two_core_ceiling(bench, study, ref)
    pathos_recipe(bench, study, ref)


def w5(bench, n: int) -> None:
    """W5: the per-draw loop as reference, checked against untouched copies."""
    study = w5_study(n)
    ref = per_draw_loop(bench, study, None)
    check_loop_against_copies(bench, study, ref)
    katparallel_rows(bench, study, ref, analysis=study.analysis())
    pathos_recipe(bench, study, ref)


def check_loop_against_copies(bench, study: Study, ref: np.ndarray, count: int = 2) -> None:
    """Run the first draws on deep copies of the untouched model: the loop must agree."""
    pristine = _aligo.parse(study.text)
    rows = []
    for row in study.table[:count]:
        model = copy.deepcopy(pristine)
        _aligo.set_values(model, study.paths, row)
        rows.append(_aligo.scalar_outputs(model.run(study.analysis()), study.names))
    diff = bench.rel_diff(np.array(rows), ref[:count])
    LOGGER.info("%s per-draw loop vs untouched deep copies (first %d draws): max rel diff %.1e",
                study.name, count, diff)
    bench.checks[f"{study.name} loop vs untouched copies, {count} draws"] = diff


# ------------------------------------------------------------ W6 and W6L
def w6_study(n: int, locked: bool) -> Study:
    """W6's (seed 6) or W6L's (seed 16) draws of sensitivity curves."""
    from katparallel import Ensemble

    text = _aligo.aligo_text().replace(_aligo.MODES, "") + _aligo.SIGNALS
    spec, seed = _aligo.w6_distributions(), 16 if locked else 6
    plan = Ensemble(text).sample(n, spec, seed=seed).plan()
    analysis = _aligo.lock_then_curve if locked else _aligo.curve_axis
    return Study("W6L" if locked else "W6", text, spec, seed, plan.paths, plan.values_for(np.arange(n)),
                 ["NSR", "DARMTF"], analysis, {"NSR": np.float64, "DARMTF": np.complex128})


def one_build_bound(bench, study: Study) -> np.ndarray:
    """Every draw's curve in ONE built simulation in this process (best of ``bench.repeat``)."""
    model = _aligo.parse(study.text)
    out, secs = _aligo.step_curves(model, study.paths, study.table, study.names)
    for _ in range(bench.repeat - 1):
        secs = min(secs, _aligo.step_curves(model, study.paths, study.table, study.names)[1])
    bench.add(study.name, "in-process one-build bound", study.n, secs,
              note="reference; model parsed, one build, every draw's curve in it")
    return out


def per_draw_curve_loop(bench, study: Study, ref: np.ndarray | None) -> np.ndarray:
    """The hand-written serial loop over one parsed model, one curve per draw."""
    return per_draw_loop(bench, study, ref, _aligo.per_draw_curves)


def curves_ceiling(bench, study: Study, ref: np.ndarray) -> None:
    """What ``bench.workers`` cores allow a warm pool on W6: as many independent
    processes, each with the model parsed before its clock starts, stepping its
    share of the curves in one build, all started together (best of ``bench.repeat``).

    Against half the one-build time it shows what two busy cores give: no pool
    can beat it, as every curve runs with the other cores busy.
    """
    _ceiling(bench, study, ref, "--curves-child",
             f"{bench.workers} processes at once, model parsed, each steps its share "
             "of the curves in one build; the slowest one's time", together=True)


def curves_child(job: str) -> dict:
    """The subprocess of :func:`curves_ceiling`: parse, say ready, wait, time the curves."""
    with open(job, "rb") as fh:
        study, k = pickle.load(fh)
    model = _aligo.parse(study.text)
    print("ready", flush=True)
    sys.stdin.readline()
    got, seconds = _aligo.step_curves(model, study.paths, study.table[:k], study.names)
    np.save(job + ".npy", got)
    return {"seconds": seconds, "note": ""}


def w6(bench, n: int) -> None:
    """W6: 64 unlocked curves; the one-build bound as reference."""
    study = w6_study(n, locked=False)
    ref = one_build_bound(bench, study)
    curves_ceiling(bench, study, ref)
    per_draw_curve_loop(bench, study, ref)
    katparallel_rows(bench, study, ref, analysis=study.analysis())


def w6l(bench, n: int) -> None:
    """W6L: a lock before every curve; the per-draw loop as reference."""
    study = w6_study(n, locked=True)
    ref = per_draw_curve_loop(bench, study, None)
    katparallel_rows(bench, study, ref, analysis=study.analysis())
