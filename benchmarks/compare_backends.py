"""Compare katparallel with the ways people parallelise Finesse by hand.

Workloads
---------
W1  the tutorial sweep: mirror T = 0.01..0.99 (R = 1 - T), ``maxtem 4``, a
    gauss beam and an xaxis of the laser power 1-100 W with ``--xsteps``
    steps, written in Finesse 2 syntax; one job per T.
W2  laser-power jitter Monte Carlo: ``--n`` draws of L0.P ~ N(1, 0.1) on a
    Finesse 3 model, one scalar photodiode.
W3  zipped Monte Carlo of three parameters: laser power, mirror T with
    R = 1 - T - loss, and a space length (``--n`` draws).
W4  aLIGO tolerance Monte Carlo and W5 aLIGO lock per draw: see
    ``_real_models.py`` (references, time budget, fresh-pool start-up).
W6  aLIGO sensitivity curves (100-point ``fsig.f`` axis) and W6L, the same
    with a lock before each curve: see ``_real_models.py``.

katparallel runs on each of its backends that is installed, Dask's
LocalCluster included (warm: started and run once before the timed run); the
targets print Dask's throughput as a ratio of the multiprocessing pool's.

This script imports finesse at its top, as a typical user script does: the
forkserver then imports it (and Finesse's libgomp) before any worker can pin
its threads. The OpenMP threads each kind of worker really runs with are
measured (``omp_get_max_threads()`` through threadpoolctl) and printed.

Every method runs after its pool has started and run once (start-up is not
counted; everything else is). Slow per-job methods run a prefix of the draws
and are compared by throughput. All methods must give the same numbers as the
reference of their workload.

Usage::

    python benchmarks/compare_backends.py --quick
    python benchmarks/compare_backends.py --only W4 W5 --quick
    python benchmarks/compare_backends.py --json out.json --png out.png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass

import finesse  # noqa: F401 - at the top, as a typical user script (issue 9)
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# Engines katparallel starts (ipyparallel) import the probe functions from here too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
import _bench_jobs as jobs_mod  # noqa: E402
import _real_models  # noqa: E402

LOGGER = logging.getLogger("compare_backends")
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W6L")

W1_KAT = """
l L0 1 0 n0
s s0 1 n0 n1
m m1 0.5 0.5 0 n1 n2
gauss g1 L0 n0 1m 0
maxtem 4
pd P n2
xaxis L0 P lin 1 100 {xsteps}
"""

W23_KAT = """
l L0 P=1
s s0 L0.p1 m1.p1 L=1
m m1 R=0.99 T=0.01
pd P m1.p2.o
"""
LOSS = 1e-4


@dataclass
class Row:
    workload: str
    method: str
    jobs: int
    seconds: float
    max_rel_diff: float | None = None
    note: str = ""

    @property
    def rate(self) -> float:
        """Jobs per second (NaN for a method that failed)."""
        return self.jobs / self.seconds if self.jobs else float("nan")


# ------------------------------------------------------------------- helpers
def _timed(fn, repeat: int = 1):
    """``fn()`` and the best of ``repeat`` wall times (the machines are shared and noisy)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def _rel_diff(got, ref) -> float:
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    scale = np.maximum(np.abs(ref), np.finfo(float).tiny)
    return float(np.nanmax(np.abs(got - ref) / scale))


def _jobs(paths, table, count) -> list[dict]:
    return [dict(zip(paths, row)) for row in table[:count].tolist()]


class Bench:
    def __init__(self, args):
        self.args = args
        self.rows: list[Row] = []
        self.budget = args.budget
        self.repeat = max(1, args.repeat)
        self.script = os.path.abspath(__file__)
        self.checks: dict[str, float] = {}
        self.threads: dict[str, dict] = {}
        self.workers = args.workers
        self.kp_backends = self._kp_backends()
        self.ctx = multiprocessing.get_context("forkserver")
        self.cluster = None
        self.rc = None
        # pathos forks its workers: fork them now, before this process simulates
        # anything with higher-order modes (a later fork deadlocks in libgomp).
        from pathos.pools import ProcessPool

        os.environ["OMP_NUM_THREADS"] = "1"
        self.pathos_pool = ProcessPool(nodes=self.workers)
        self.pathos_pool.map(len, ["warm"] * self.workers)
        del os.environ["OMP_NUM_THREADS"]

    @staticmethod
    def _kp_backends() -> list[str]:
        from katparallel.backends import available

        names = available()
        return [b for b in ("serial", "multiprocessing", "pathos", "ipyparallel", "dask") if b in names]

    rel_diff = staticmethod(_rel_diff)

    def failed(self, workload, method, note):
        """A method that could not run at all: a row with its failure as the note."""
        LOGGER.info("%s %-38s %s", workload, method, note)
        self.rows.append(Row(workload, method, 0, float("nan"), None, note))

    def add(self, workload, method, jobs, seconds, got=None, ref=None, note=""):
        diff = None if got is None else _rel_diff(got, ref)
        row = Row(workload, method, jobs, seconds, diff, note)
        self.rows.append(row)
        LOGGER.info("%s %-38s %7d jobs %8.3f s  diff %s", workload, method, jobs, seconds, diff)
        return row

    # -------------------------------------------------------------- engines
    def ipp(self):
        """A local ipyparallel cluster of ``workers`` engines (started once)."""
        if self.rc is None:
            import ipyparallel

            self.cluster = ipyparallel.Cluster(n=self.workers, log_level=logging.WARNING)
            self.rc = self.cluster.start_and_connect_sync()
            self.rc.wait_for_engines(self.workers, timeout=120)
            self.rc[:].execute(f"import sys; sys.path.insert(0, {HERE!r})", block=True)
        return self.rc

    def close(self):
        self.pathos_pool.close()
        self.pathos_pool.join()
        self.pathos_pool.clear()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.rc.close()
            self.cluster.stop_cluster_sync()

    def kp(self, workload, ens, ref, **run_kw):
        """katparallel on every available backend (warm run first, then timed).

        ``ref`` may be shorter than the study: it is compared with the first jobs.
        """
        for backend in self.kp_backends:
            try:
                ens.run(backend=backend, workers=self.workers, progress=False, **run_kw)
                res, secs = _timed(
                    lambda: ens.run(backend=backend, workers=self.workers, progress=False, **run_kw),
                    self.repeat,
                )
            except Exception as exc:  # a backend another engineer is still building
                LOGGER.warning("katparallel %s failed on %s: %s", backend, workload, exc)
                continue
            got = res["P"].values[: len(ref)]
            self.add(workload, f"katparallel {backend}", res["P"].shape[0], secs, got, ref)

    # ------------------------------------------------------------- recipes
    def serial_loop(self, workload, text, legacy, jobs, ref=None):
        """The jobs in turn in this process (default threads); the reference of W1."""
        jobs_mod.load(text, legacy)
        out, secs = _timed(lambda: [jobs_mod.job_on_cached(j) for j in jobs], self.repeat)
        note = "reference" if ref is None else ""
        self.add(workload, "serial loop (one process)", len(jobs), secs,
                 None if ref is None else out, ref, note=note)
        return np.array(out)

    def mp_pool(self, workload, text, legacy, jobs, ref):
        with self.ctx.Pool(self.workers, initializer=jobs_mod.init_worker, initargs=(text, legacy)) as pool:
            pool.map(jobs_mod.job_on_cached, jobs[: self.workers])
            chunk = max(1, len(jobs) // (self.workers * 8))
            out, secs = _timed(lambda: pool.map(jobs_mod.job_on_cached, jobs, chunksize=chunk), self.repeat)
        self.add(workload, "multiprocessing.Pool (parse once/worker)", len(jobs), secs, out, ref)

    def pathos_recipe(self, workload, text, legacy, jobs, ref):
        import finesse

        model = finesse.Model()
        (model.parse_legacy if legacy else model.parse)(text)
        pool = self.pathos_pool
        pool.map(jobs_mod.pathos_recipe_job, [model] * self.workers, jobs[: self.workers])
        out, secs = _timed(lambda: pool.map(jobs_mod.pathos_recipe_job, [model] * len(jobs), jobs), self.repeat)
        self.add(workload, "pathos+dill recipe (Finesse docs)", len(jobs), secs, out, ref)

    def ipp_lbv(self, workload, text, legacy, jobs, ref):
        rc = self.ipp()
        rc[:].execute("import _bench_jobs", block=True)
        rc[:].apply_sync(lambda t, lg: __import__("_bench_jobs").init_worker(t, lg), text, legacy)
        view = rc.load_balanced_view()
        view.map_sync(jobs_mod.job_on_cached, jobs[: self.workers])
        out, secs = _timed(lambda: view.map_sync(jobs_mod.job_on_cached, jobs), self.repeat)
        self.add(workload, "ipyparallel load_balanced_view", len(jobs), secs, out, ref)

    def parakat(self, workload, text, jobs, ref):
        try:
            from katparallel.finesse2 import ensure_kat

            kat_path = ensure_kat()
        except Exception as exc:
            print(f"[{workload}] pykat parakat skipped: no kat program ({exc})")
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pykat
            from pykat.parallel import parakat

        rc = self.ipp()
        rc[:].execute(f"import os; os.environ['FINESSE_DIR'] = {os.environ.get('FINESSE_DIR', '')!r}", block=True)
        pk = parakat.__new__(parakat)  # pykat's own class, on the cluster started here
        pk._rc, pk._lview, pk._results, pk._run_count = rc, rc.load_balanced_view(), [], 0
        pk._lview.block = False

        def run_all():
            for values in jobs:
                kat = pykat.finesse.kat()
                kat.verbose = False
                kat.parse(text)
                kat.m1.T, kat.m1.R = values["m1.T"], values["m1.R"]
                pk.run(kat)
            outs = pk.getResults()
            pk._results, pk._run_count = [], 0
            return [np.asarray(o["P"]) for o in outs]

        try:
            out, secs = _timed(run_all, self.repeat)
        except Exception as exc:
            print(f"[{workload}] pykat parakat failed with kat={kat_path}: {exc}")
            return
        self.add(workload, "pykat parakat (ipcluster)", len(jobs), secs, out, ref,
                 note=f"kat={kat_path.name}; .out file precision")

    # ----------------------------------------------------------- workloads
    def w1(self):
        from katparallel import Ensemble
        from katparallel.backends.multiprocess import MultiprocessingBackend

        self.thread_report()
        n_t = 20 if self.args.quick else 99
        text = W1_KAT.format(xsteps=self.args.xsteps)
        ts = np.linspace(0.01, 0.99, n_t)
        table = np.column_stack([ts, 1 - ts])
        jobs = _jobs(("m1.T", "m1.R"), table, n_t)
        ref = self.serial_loop("W1", text, True, jobs)
        ens = Ensemble(text, syntax="finesse2").vary({"m1.T": ts, "m1.R": 1 - ts})
        self.kp("W1", ens, ref)
        default = MultiprocessingBackend(workers=self.workers, threads=None)
        ens.run(backend=default, progress=False)
        res, secs = _timed(lambda: ens.run(backend=default, progress=False), self.repeat)
        self.add("W1", "katparallel multiprocessing, default threads", n_t, secs, res["P"].values, ref)
        default.close()
        self.mp_pool("W1", text, True, jobs, ref)
        self.pathos_recipe("W1", text, True, jobs, ref)
        self.ipp_lbv("W1", text, True, jobs, ref)
        self.parakat("W1", text, jobs[: min(n_t, 20)], ref[: min(n_t, 20)])

    def w2(self):
        import finesse
        from finesse.analysis.actions import Sweep

        from katparallel import Ensemble, Normal

        n = self.args.n
        ens = Ensemble(W23_KAT).sample(n, {"L0.P": Normal(1, 0.1)}, seed=7)
        values = ens.plan().values_for(np.arange(n))
        model = finesse.Model()
        model.parse(W23_KAT)
        sweep = Sweep("L0.P", values[:, 0].copy(), False)
        model.run(sweep)
        sol, secs = _timed(lambda: model.run(sweep), self.repeat)
        ref = np.asarray(sol["P"])
        self.add("W2", "one in-process Sweep", n, secs, note="reference")
        self.kp("W2", ens, ref)
        few = min(n, 300 if self.args.quick else 1000)
        jobs = _jobs(("L0.P",), values, few)
        self.serial_loop("W2", W23_KAT, False, jobs, ref[:few])
        self.mp_pool("W2", W23_KAT, False, jobs, ref[:few])
        self.pathos_recipe("W2", W23_KAT, False, jobs, ref[:few])
        self.ipp_lbv("W2", W23_KAT, False, jobs, ref[:few])
        sub = Ensemble(W23_KAT).vary("L0.P", values[:few, 0])
        sub.run(backend="multiprocessing", workers=self.workers, progress=False, batch=False)
        res, secs = _timed(lambda: sub.run(
            backend="multiprocessing", workers=self.workers, progress=False, batch=False), self.repeat)
        self.add("W2", "katparallel multiprocessing, per-job", few, secs, res["P"].values, ref[:few])

    def w3(self):
        from katparallel import Ensemble

        n = self.args.n
        rng = np.random.default_rng(3)
        t = rng.uniform(0.005, 0.015, n)
        spec = {"L0.P": rng.normal(1, 0.1, n), "m1.T": t, "m1.R": 1 - t - LOSS,
                "s0.L": rng.normal(1, 1e-3, n)}
        few = min(n, 300 if self.args.quick else 1000)
        sub = Ensemble(W23_KAT).vary({k: v[:few] for k, v in spec.items()})
        ref = None
        for backend in ("serial", "multiprocessing"):
            sub.run(backend=backend, workers=self.workers, progress=False, batch=False)
            out, secs = _timed(lambda: sub.run(
                backend=backend, workers=self.workers, progress=False, batch=False), self.repeat)
            ref = out["P"].values if ref is None else ref
            self.add("W3", f"katparallel {backend}, per-job", few, secs, out["P"].values, ref,
                     note="reference" if backend == "multiprocessing" else "")
        self.kp("W3", Ensemble(W23_KAT).vary(spec), ref)

    def w4(self):
        _real_models.w4(self, self.args.w4_draws)

    def w5(self):
        _real_models.w5(self, self.args.w5_draws)

    def w6(self):
        _real_models.w6(self, self.args.w6_draws)

    def w6l(self):
        _real_models.w6l(self, self.args.w6_draws)

    def thread_report(self) -> None:
        """``omp_get_max_threads()`` as jobs see it, in every kind of worker."""
        from katparallel.backends import get_backend_class

        probe, tasks = jobs_mod.omp_threads, list(range(4 * self.workers))
        self.threads["this process (the script)"] = _thread_counts([probe()])
        for name in self.kp_backends[1:]:
            with get_backend_class(name)(workers=self.workers) as backend:
                found = [r for _, r in backend.map_unordered(probe, tasks)]
            self.threads[f"katparallel {name} workers"] = _thread_counts(found)
        with self.ctx.Pool(self.workers, initializer=jobs_mod.init_worker, initargs=(W23_KAT, False)) as pool:
            self.threads["multiprocessing.Pool recipe (threadpoolctl)"] = _thread_counts(pool.map(probe, tasks))
        self.threads["pathos recipe pool"] = _thread_counts(self.pathos_pool.map(probe, tasks))
        for name, seen in self.threads.items():
            LOGGER.info("OpenMP threads, %s: %s", name, seen)

    def second_run(self) -> float:
        from katparallel import Ensemble

        two = Ensemble(W23_KAT).vary("L0.P", [1.0, 2.0])
        two.run(backend="multiprocessing", workers=self.workers, progress=False)
        times = []
        for _ in range(5):
            _, secs = _timed(lambda: two.run(backend="multiprocessing", workers=self.workers, progress=False), self.repeat)
            times.append(secs)
        return float(np.median(times))


def _thread_counts(found: list) -> dict:
    """Distinct ``omp_get_max_threads()`` and ``OMP_NUM_THREADS`` over workers."""
    errors = [f for f in found if not isinstance(f, dict)]
    if errors:
        return {"error": f"{type(errors[0]).__name__}: {str(errors[0])[:120]}"}
    return {
        "workers": len({f["pid"] for f in found}),
        "omp_get_max_threads": sorted({n for f in found for n in f["omp_max_threads"]}),
        "OMP_NUM_THREADS": sorted({str(f["OMP_NUM_THREADS"]) for f in found}),
    }


# ---------------------------------------------------------------- reporting
def _rate(rows, workload, method):
    for row in rows:
        if row.workload == workload and row.method == method:
            return row.rate
    return None


def targets(rows, second_run: float) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for every target the issue sets."""
    out = []
    kp_mp = "katparallel multiprocessing"

    def ratio(w, a, b):
        ra, rb = _rate(rows, w, a), _rate(rows, w, b)
        return None if ra is None or rb is None else ra / rb

    r = ratio("W2", kp_mp, "pathos+dill recipe (Finesse docs)")
    out.append(("W2 katparallel >= 300x pathos recipe", f"{r:.0f}x" if r else "n/a", r and r >= 300))
    r = ratio("W2", kp_mp, "one in-process Sweep")
    out.append(("W2 katparallel within 2x of one Sweep", f"{1 / r:.2f}x the Sweep's time" if r else "n/a",
                r and 1 / r <= 2))
    r = ratio("W3", kp_mp, "katparallel multiprocessing, per-job")
    out.append(("W3 batched >= 10x per-job (multiprocessing)", f"{r:.0f}x" if r else "n/a", r and r >= 10))
    r = ratio("W1", kp_mp, "serial loop (one process)")
    out.append(("W1 >= 1.7x one process in turn", f"{r:.2f}x" if r else "n/a", r and r >= 1.7))
    others = [row for row in rows if row.workload == "W1" and not row.method.startswith("katparallel")
              and row.method != "serial loop (one process)"]
    best = max(others, key=lambda row: row.rate, default=None)
    r = ratio("W1", kp_mp, best.method) if best else None
    out.append((f"W1 no slower than fastest other recipe ({best.method if best else '-'})",
                f"{r:.2f}x" if r else "n/a", r and r >= 0.95))
    r = ratio("W1", kp_mp, "katparallel multiprocessing, default threads")
    out.append(("W1 pinned (1 thread) vs default threads", f"{r:.2f}x faster" if r else "n/a", None))
    r = ratio("W1", "katparallel dask", kp_mp)
    out.append(("W1 dask (warm LocalCluster) >= 0.9x multiprocessing", f"{r:.2f}x" if r else "n/a",
                r and r >= 0.9))
    out.append(("second run() of a 2-job ensemble < 50 ms", f"{second_run * 1e3:.1f} ms", second_run < 0.05))
    return out + real_model_targets(rows)


#: Largest relative difference from the reference that counts as the same numbers.
SAME = 1e-9


def real_model_targets(rows) -> list[tuple[str, str, bool | None]]:
    """The W4/W5 targets; a row whose numbers differ from the reference cannot meet one."""
    warm = "katparallel multiprocessing, warm pool"
    goals = [
        ("W4 warm pool within 1.5x of in-process stepping", "W4", warm,
         "in-process stepping bound (steps only)", lambda r: 1 / r <= 1.5, lambda r: f"{1 / r:.2f}x its time"),
        ("W4 fresh pool (start-up incl.) >= 1.4x parse + steps", "W4", "katparallel fresh pool, start-up included",
         "in-process stepping bound (parse + steps)", lambda r: r >= 1.4, lambda r: f"{r:.2f}x faster"),
        ("W4 fresh pool, later session (model cache warm), vs parse + steps", "W4",
         "katparallel fresh pool, start-up included, model cache warm",
         "in-process stepping bound (parse + steps)", lambda r: None, lambda r: f"{r:.2f}x faster"),
        ("W4 ceiling (independent processes) vs parse + steps: what any pool can reach", "W4",
         _real_models.CEILING, "in-process stepping bound (parse + steps)", lambda r: None,
         lambda r: f"{r:.2f}x faster"),
        ("W4 fresh pool vs that ceiling", "W4", "katparallel fresh pool, start-up included",
         _real_models.CEILING, lambda r: None, lambda r: f"{r:.0%} of its speed"),
        ("W4 dask (warm LocalCluster) >= 0.9x multiprocessing warm pool", "W4",
         _real_models.DASK_WARM, warm, lambda r: r >= 0.9, lambda r: f"{r:.2f}x"),
        ("W5 warm pool >= 1.7x serial loop", "W5", warm,
         "serial loop over one parsed model", lambda r: r >= 1.7, lambda r: f"{r:.2f}x faster"),
        ("W6 warm pool >= 4x serial loop", "W6", warm,
         "serial loop over one parsed model", lambda r: r >= 4, lambda r: f"{r:.2f}x faster"),
        ("W6 warm pool within 1.25x of half the one-build time", "W6", warm,
         "in-process one-build bound", lambda r: 2 / r <= 1.25, lambda r: f"{2 / r:.2f}x half its time"),
        ("W6 ceiling (independent processes, model parsed) vs half the one-build time", "W6",
         _real_models.CEILING, "in-process one-build bound", lambda r: None,
         lambda r: f"{2 / r:.2f}x half its time"),
        ("W6 warm pool vs that ceiling", "W6", warm, _real_models.CEILING, lambda r: None,
         lambda r: f"{r:.0%} of its speed"),
        ("W6 warm pool vs katparallel serial", "W6", warm,
         "katparallel serial", lambda r: None, lambda r: f"{r:.2f}x faster"),
        ("W6L warm pool >= 3x serial loop with locks", "W6L", warm,
         "serial loop over one parsed model", lambda r: r >= 3, lambda r: f"{r:.2f}x faster"),
    ]
    out = []
    for name, w, mine, theirs, meets, show in goals:
        a, b = _row(rows, w, mine), _row(rows, w, theirs)
        if a is None or b is None or not a.jobs or not b.jobs:
            out.append((name, "n/a", None))
            continue
        r = a.rate / b.rate
        same = a.max_rel_diff is not None and a.max_rel_diff <= SAME and "failed" not in a.note
        shown = show(r) + ("" if same else f", numbers differ ({a.max_rel_diff:.0e})")
        out.append((name, shown, meets(r) and same))
    return out


def _row(rows, workload, method):
    return next((r for r in rows if r.workload == workload and r.method == method), None)


def print_table(rows, goals) -> None:
    refs = {}
    for row in rows:
        if row.note.startswith("reference"):
            refs[row.workload] = row.rate
    print(f"\n{'wl':3} {'method':45} {'jobs':>7} {'s':>8} {'jobs/s':>10} {'x ref':>7} {'max rel diff':>12}  note")
    for row in rows:
        ratio = row.rate / refs[row.workload] if row.workload in refs else float("nan")
        diff = "-" if row.max_rel_diff is None else f"{row.max_rel_diff:.1e}"
        print(f"{row.workload:3} {row.method:45} {row.jobs:7d} {row.seconds:8.3f} {row.rate:10.1f} "
              f"{ratio:7.2f} {diff:>12}  {row.note}")
    print("\n(x ref: throughput relative to the reference row of the same workload:"
          " W1 serial loop, W2 one Sweep, W3 katparallel multiprocessing per-job,"
          " W4 in-process stepping, W5 and W6L serial loop over one parsed model,"
          " W6 in-process one-build bound)")
    print("\nTargets:")
    for name, measured, met in goals:
        mark = "info" if met is None else ("MET" if met else "NOT MET")
        print(f"  {name:55} {measured:>24}  {mark}")


def print_checks(bench) -> None:
    """The OpenMP threads workers really ran with, the references' own checks, the load."""
    if bench.threads:
        print("\nOpenMP threads seen by jobs (omp_get_max_threads via threadpoolctl; this script imports finesse at its top):")
        for name, seen in bench.threads.items():
            print(f"  {name:50} {seen}")
    if bench.checks:
        print("\nReference checks (max relative difference):")
        for name, diff in bench.checks.items():
            print(f"  {name:60} {diff:.1e}")
    print(f"\nLoad average (1, 5, 15 min) at the end, {os.cpu_count()} cores: {os.getloadavg()}")


def plot(rows, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = sorted({r.workload for r in rows})
    fig, axes = plt.subplots(len(workloads), 1, figsize=(9, 3.2 * len(workloads)))
    for ax, w in zip(np.atleast_1d(axes), workloads):
        sel = [r for r in rows if r.workload == w and r.jobs]  # failed methods have no rate
        ax.barh([r.method for r in sel], [r.rate for r in sel],
                color=["C0" if r.method.startswith("katparallel") else "C7" for r in sel])
        ax.set_xscale("log")
        ax.set_xlabel("jobs per second (log)")
        ax.set_title(w)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small workloads, about a minute")
    parser.add_argument("--xsteps", type=int, default=10000, help="W1 xaxis steps")
    parser.add_argument("--n", type=int, default=10000, help="W2/W3 Monte Carlo draws")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--png", help="write a bar chart here")
    parser.add_argument("--w4-draws", type=int, default=2000, help="W4 aLIGO tolerance draws")
    parser.add_argument("--w5-draws", type=int, default=64, help="W5 aLIGO lock-per-draw draws")
    parser.add_argument("--w6-draws", type=int, default=64, help="W6/W6L aLIGO sensitivity curves")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds a slow W4/W5 method may take; it then runs a prefix of the draws")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time each method this many times and keep the best (a noisy machine)")
    parser.add_argument("--only", nargs="*", choices=WORKLOADS, help="run only these")
    parser.add_argument("--fresh-pool-child", metavar="STUDY", help=argparse.SUPPRESS)
    parser.add_argument("--stepping-child", metavar="STUDY", help=argparse.SUPPRESS)
    parser.add_argument("--curves-child", metavar="STUDY", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fresh_pool_child:  # W4's first run on a fresh pool, in a process of its own
        print(json.dumps(_real_models.fresh_pool_child(args.fresh_pool_child, args.workers)))
        return 0
    if args.stepping_child:  # W4's fastest single-process run, in a process of its own
        print(json.dumps(_real_models.stepping_child(args.stepping_child)))
        return 0
    if args.curves_child:  # a share of W6's curves, for the two-core ceiling
        print(json.dumps(_real_models.curves_child(args.curves_child)))
        return 0
    if args.quick:
        args.xsteps, args.n = min(args.xsteps, 1000), min(args.n, 2000)
        args.w4_draws, args.w5_draws = min(args.w4_draws, 40), min(args.w5_draws, 8)
        args.w6_draws = min(args.w6_draws, 8)
        args.budget = min(args.budget, 15.0)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    LOGGER.setLevel(logging.INFO)
    logging.getLogger("finesse").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    bench = Bench(args)
    try:
        for name in args.only or WORKLOADS:
            getattr(bench, name.lower())()
        second = bench.second_run()
    finally:
        bench.close()
    goals = targets(bench.rows, second)
    print_table(bench.rows, goals)
    print_checks(bench)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": [asdict(r) | {"rate": r.rate} for r in bench.rows],
                       "second_run_seconds": second, "omp_threads": bench.threads,
                       "checks": bench.checks,
                       "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in goals],
                       "cpu_count": os.cpu_count(), "python": sys.version,
                       "load_average_at_end": os.getloadavg()},
                      fh, indent=1)
    if args.png:
        plot(bench.rows, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
