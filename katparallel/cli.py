"""The ``katparallel`` command: run, inspect and plot studies from a shell.

::

    katparallel run MODEL --vary ... --sample ... --store study.db --out study.nc
    katparallel show study.db          # what the study is, how far it got, failures
    katparallel plot study.nc P -o p.png
    katparallel info                   # versions, backends, cores, the kat program
    katparallel convert old.kat        # Finesse 3 KatScript of a Finesse 2 kat file

Exit status: 0 success, 1 some jobs failed (their results are still written),
2 bad arguments or input (one ``error:`` line names the problem). Anything else
is a bug, shown with its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import runpy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


__all__ = ("main", "build_parser", "parse_values", "parse_distribution")

_DISTRIBUTIONS = {"normal": ("Normal", 2), "uniform": ("Uniform", 2), "lognormal": ("LogNormal", 2)}

_MAIN_EXAMPLES = """\
examples:
  katparallel run cavity.kat --vary L0.P=1:10:10 --out sweep.nc
  katparallel run cavity.kat --vary m1.T=0.01:0.99:99 --zip m1.R=0.99:0.01:99 \\
      --backend multiprocessing --workers 2 --store study.db --out study.nc
  katparallel run model.py -n 10000 --sample "L0.P=normal(1,0.1)" --seed 1 --out mc.csv
  katparallel show study.db
  katparallel plot study.nc P -o p.png
  katparallel info
  mpiexec -n 3 python -m mpi4py.futures -m katparallel run cavity.kat \\
      --vary L0.P=1:10:100 --backend mpi --out sweep.nc
  katparallel run cavity.kat --vary L0.P=1:10:100 --backend dask \\
      --scheduler-file scheduler.json --store sweep.db --out sweep.nc

run "katparallel COMMAND --help" for each command's options.
"""

_RUN_DESCRIPTION = """\
Run a study: every combination of the --vary axes (each --zip steps with the
--vary before it), times -n draws of the --sample distributions.

MODEL is one of
  *.kat / *.txt   Finesse 3 KatScript or Finesse 2 syntax (tried in that order;
                  --syntax forces one)
  *.py            a Python file defining
                    model    a finesse.Model, KatScript/Finesse 2 text or a pykat kat,
                    or factory(values, rng) -> finesse.Model, called for every job,
                  and optionally
                    perturb(model, rng), applied to each job's own copy.

VALUES are START:STOP:NUM (NUM evenly spaced values, both ends included) or a
comma list 1,2,3.  DIST is normal(mu,sigma), uniform(lo,hi) or lognormal(mu,sigma)
(the mu and sigma of the underlying normal).
"""

_RUN_EXAMPLES = """\
examples:
  katparallel run cavity.kat --vary L0.P=1,2,3 --vary m1.phi=0:90:31 --out grid.nc
  katparallel run cavity.kat --vary m1.T=0.01:0.99:99 --zip m1.R=0.99:0.01:99 \\
      --analysis "xaxis(L0.P, lin, 1, 10, 100)" --store t.db --out t.nc
  katparallel run cavity.kat -n 10000 --sample "L0.P=normal(1,0.1)" \\
      --sample "m1.phi=uniform(-1,1)" --seed 1 --backend multiprocessing --workers 2 \\
      --store mc.db --out mc.nc --out mc.csv

With --store, every finished job is committed as it arrives; run the same command
again (after a crash, Ctrl-C or kill) and only the missing jobs run.
"""


# ----------------------------------------------------------------- parsing
def parse_values(spec: str) -> np.ndarray:
    """Turn ``START:STOP:NUM`` or ``a,b,c`` into an array of values.

    Raises
    ------
    ValueError
        If ``spec`` is neither form.
    """
    try:
        if ":" in spec:
            start, stop, num = spec.split(":")
            count = int(num)
            if count < 1:
                raise ValueError
            return np.linspace(float(start), float(stop), count)
        return np.array([float(v) for v in spec.split(",")])
    except ValueError:
        raise ValueError(
            f"cannot read values {spec!r}: use START:STOP:NUM (e.g. 0.01:0.99:99) "
            "or a comma list (e.g. 1,2,3)"
        ) from None


def parse_distribution(spec: str) -> Any:
    """Turn ``normal(mu,sigma)``, ``uniform(lo,hi)`` or ``lognormal(mu,sigma)`` into a distribution.

    Raises
    ------
    ValueError
        If the name is unknown, the numbers are wrong, or the distribution
        rejects them (e.g. a negative sigma).
    """
    from . import sampling

    match = re.fullmatch(r"\s*([A-Za-z]+)\s*\((.*)\)\s*", spec)
    known = "normal(mu,sigma), uniform(lo,hi) or lognormal(mu,sigma)"
    if not match:
        raise ValueError(f"cannot read distribution {spec!r}: use {known}")
    name, args = match.group(1).lower(), match.group(2)
    if name not in _DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {match.group(1)!r}: use {known}")
    class_name, arity = _DISTRIBUTIONS[name]
    try:
        numbers = [float(a) for a in args.split(",")]
    except ValueError:
        raise ValueError(f"{spec!r}: {name} takes {arity} numbers, e.g. {name}(1,0.1)") from None
    if len(numbers) != arity:
        raise ValueError(f"{spec!r}: {name} takes {arity} numbers, got {len(numbers)}")
    try:
        return getattr(sampling, class_name)(*numbers)
    except ValueError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None


def _split_assignment(option: str, text: str) -> tuple[str, str]:
    path, sep, spec = text.partition("=")
    if not sep or not path.strip() or not spec.strip():
        raise ValueError(f"{option} {text!r}: write PATH=VALUES, e.g. {option} L0.P=1:10:10")
    return path.strip(), spec.strip()


def _worker_count(text: str) -> int:
    """argparse type of ``--workers``: a whole number of at least 1."""
    from .backends.base import check_workers

    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    try:
        return check_workers(count)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    """argparse type of ``--timeout``: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"give a positive number of seconds, not {text!r}")
    return value


class _AxisAction(argparse.Action):
    """Keep --vary and --zip in command-line order, in one list."""

    def __call__(self, parser, namespace, value, option_string=None):
        axes = list(getattr(namespace, self.dest) or [])
        axes.append((option_string, value))
        setattr(namespace, self.dest, axes)


def build_parser() -> argparse.ArgumentParser:
    """The ``katparallel`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="katparallel",
        description="Run ensembles of Finesse 3 / PyKat simulations in parallel.",
        epilog=_MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run", help="run a study", description=_RUN_DESCRIPTION, epilog=_RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("model", metavar="MODEL", help="a .kat/.txt model or a .py file (see above)")
    run.add_argument("--syntax", choices=("katscript", "finesse2"), help="language of MODEL's text")
    run.add_argument("--vary", dest="axes", action=_AxisAction, default=[], metavar="PATH=VALUES",
                     help="add a grid axis, e.g. L0.P=1:10:10 or L0.P=1,2,3")
    run.add_argument("--zip", dest="axes", action=_AxisAction, metavar="PATH=VALUES",
                     help="step PATH together with the previous --vary (same number of values)")
    run.add_argument("--sample", action="append", default=[], metavar="PATH=DIST",
                     help='draw PATH from DIST, e.g. "L0.P=normal(1,0.1)"')
    run.add_argument("-n", "--samples", type=int, metavar="N", help="number of Monte Carlo draws")
    run.add_argument("--seed", type=int,
                     help="seed of every random number (default: drawn and recorded)")
    run.add_argument("--analysis", metavar="KATSCRIPT",
                     help='what each job runs, e.g. "xaxis(L0.P, lin, 1, 10, 100)" '
                     "(default: the model's own analysis, else noxaxis)")
    run.add_argument("-b", "--backend", default="auto",
                     help="serial, multiprocessing, pathos, ipyparallel, mpi, dask "
                     "or auto (default)")
    run.add_argument("-w", "--workers", type=_worker_count,
                     help="parallel workers, at least 1 (default: one per core)")
    run.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                     help="stop a job after this long (multiprocessing and auto)")
    scheduler = run.add_mutually_exclusive_group()
    scheduler.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="with --backend dask: a running Dask scheduler, e.g. tcp://node1:8786")
    scheduler.add_argument(
        "--scheduler-file", metavar="FILE",
        help="with --backend dask: the file `dask scheduler --scheduler-file` wrote")
    run.add_argument("--connect-timeout", type=_seconds, default=60.0, metavar="SECONDS",
                     help="wait this long for the scheduler and a first worker (default 60)")
    run.add_argument("--store", metavar="FILE.db",
                     help="checkpoint every finished job here; rerun to resume")
    run.add_argument("--resume", action="store_true",
                     help="insist that --store already holds this study")
    run.add_argument("--retry-failed", action="store_true",
                     help="run the jobs --store records as failed again")
    run.add_argument("-o", "--out", action="append", default=[], metavar="FILE",
                     help="write results: .nc (everything) or .csv (scalar outputs); repeatable")
    run.add_argument("-q", "--no-progress", dest="progress", action="store_false",
                     help="no progress bar")

    commands.add_parser("info", help="versions, backends, cores and the kat program",
                        description="Show versions, backends, cores and which kat PyKat runs.")

    show = commands.add_parser("show", help="what a study is, how far it got, its failures",
                               description="Describe a store (.db) or results file (.nc).")
    show.add_argument("path", metavar="STUDY", help="a store (.db) or a results file (.nc)")
    show.add_argument("--failures", type=int, default=10, metavar="N",
                      help="list at most N failures (default 10)")

    plot = commands.add_parser(
        "plot", help="plot one output to an image",
        description="Plot one output of a store (.db) or results file (.nc).",
    )
    plot.add_argument("path", metavar="STUDY", help="a store (.db) or a results file (.nc)")
    plot.add_argument("output", metavar="OUTPUT", help="the output (detector) to plot, e.g. P")
    plot.add_argument("-o", "--out", metavar="FILE",
                      help="image file (default STUDY-OUTPUT.png); any matplotlib format")
    convert = commands.add_parser(
        "convert", help="print the Finesse 3 KatScript of a Finesse 2 kat file",
        description="Print the Finesse 3 KatScript of a Finesse 2 kat file where the "
                    "translation is exact; otherwise say why and at which line (exit 1).")
    convert.add_argument("katfile", metavar="OLD.kat", help="a Finesse 2 kat file")
    for name, subparser in commands.choices.items():
        subparser.set_defaults(command=name, parser=subparser)
    return parser


# ---------------------------------------------------------------- commands
class _UsageError(Exception):
    """Bad arguments or input: reported as one ``error:`` line, exit status 2."""


def _load_python_model(path: Path) -> tuple[Any, Any]:
    namespace = runpy.run_path(str(path), run_name="katparallel_model")
    has_model, has_factory = "model" in namespace, "factory" in namespace
    if has_model == has_factory:
        problem = "both" if has_model else "neither"
        raise _UsageError(
            f"{path} defines {problem} 'model' and 'factory'; define exactly one: model "
            "(a finesse.Model, KatScript text or a pykat kat) or factory(values, rng) -> model"
        )
    source = namespace["model"] if has_model else namespace["factory"]
    if has_factory and not callable(source):
        raise _UsageError(f"{path}: 'factory' must be a function factory(values, rng) -> model")
    perturb = namespace.get("perturb")
    if perturb is not None and not callable(perturb):
        raise _UsageError(f"{path}: 'perturb' must be a function perturb(model, rng)")
    return source, perturb


def _ensemble(args: argparse.Namespace) -> Any:
    """The study the arguments describe; any problem with them is a usage error."""
    from .ensemble import Ensemble

    path = Path(args.model)
    if not path.is_file():
        raise _UsageError(f"model file {args.model!r} does not exist")
    perturb = None
    if path.suffix == ".py":
        source, perturb = _load_python_model(path)
    else:
        source = path.read_text()
    try:
        ensemble = _described(Ensemble(source, seed=args.seed, syntax=args.syntax), args)
        if perturb is not None:
            ensemble = ensemble.perturb(perturb)
        _check_analysis(ensemble, args.analysis)
    except (ValueError, TypeError) as exc:  # values, distributions, the analysis
        raise _UsageError(str(exc)) from None
    return ensemble


def _described(ensemble: Any, args: argparse.Namespace) -> Any:
    """``ensemble`` with the --vary, --zip and --sample axes added."""
    axes: list[dict[str, np.ndarray]] = []
    for option, text in args.axes:
        name, spec = _split_assignment(option, text)
        if option == "--zip":
            if not axes:
                raise _UsageError(f"--zip {text!r} needs a --vary before it to step with")
            axes[-1][name] = parse_values(spec)
        else:
            axes.append({name: parse_values(spec)})
    for axis in axes:
        ensemble = ensemble.vary(axis)
    distributions = {}
    for text in args.sample:
        name, spec = _split_assignment("--sample", text)
        distributions[name] = parse_distribution(spec)
    if distributions and args.samples is None:
        raise _UsageError("--sample needs -n N, the number of draws")
    if args.samples is not None:
        ensemble = ensemble.sample(args.samples, distributions)
    return ensemble


def _check_analysis(ensemble: Any, analysis: str | None) -> None:
    """Read --analysis now, so a typo is reported before anything runs."""
    if analysis is not None:
        ensemble._adapter.parse_analysis(analysis)


def _backend(args: argparse.Namespace) -> Any:
    """The backend --backend, --workers and --timeout ask for (nothing starts yet,
    but a running scheduler named by --scheduler or --scheduler-file is reached now)."""
    from .backends import make_backend

    try:
        if args.scheduler or args.scheduler_file:
            return _dask_scheduler(args)
        return make_backend(args.backend, args.workers, args.timeout)
    except (ValueError, TypeError) as exc:
        raise _UsageError(str(exc)) from None


def _dask_scheduler(args: argparse.Namespace) -> Any:
    """The dask backend on the running scheduler --scheduler or --scheduler-file names."""
    option = "--scheduler" if args.scheduler else "--scheduler-file"
    if args.backend != "dask":
        raise _UsageError(f"{option} connects to a running Dask scheduler: add --backend dask")
    if args.workers is not None:
        raise _UsageError(f"--workers cannot resize a running Dask scheduler's workers; drop "
                          f"--workers with {option} (its workers are used as they are)")
    from .backends import make_backend
    from .backends.dask import DaskBackend

    backend = DaskBackend(address=args.scheduler, scheduler_file=args.scheduler_file,
                          connect_timeout=args.connect_timeout)
    make_backend(backend, None, args.timeout)  # refuses --timeout
    try:
        backend.wait_for_workers()
    except (ConnectionError, TimeoutError) as exc:
        raise _UsageError(str(exc)) from None
    return backend


def _check_outputs(outs: Sequence[str]) -> None:
    for out in outs:
        path = Path(out)
        if path.suffix not in (".nc", ".csv"):
            raise _UsageError(f"--out {out!r}: give a .nc (netCDF) or .csv file")
        if not path.absolute().parent.is_dir():
            raise _UsageError(f"--out {out!r}: the directory {str(path.parent)!r} does not exist")


def _run(args: argparse.Namespace) -> int:
    _check_outputs(args.out)
    if args.retry_failed and not args.store:
        raise _UsageError("--retry-failed needs --store: the failures to retry are in a store")
    ensemble = _ensemble(args)
    engine = _backend(args)
    started = time.perf_counter()
    results = ensemble.run(
        args.analysis,
        backend=engine,
        timeout=args.timeout,
        progress=args.progress,
        store=args.store,
        resume=True if args.resume else None,
        retry_failed=args.retry_failed,
    )
    attrs = results.to_xarray().attrs
    failures = results.failures
    print(attrs["plan"])
    print(
        f"{attrs['n_jobs'] - len(failures)} jobs succeeded, {len(failures)} failed, in "
        f"{time.perf_counter() - started:.1f} s on {attrs['backend']} "
        f"({_workers(attrs['workers'])})"
    )
    _write(results, args.out, args.store)
    if args.store:
        print(f"checkpoint: {args.store}")
    if not args.out and not args.store:
        print(results.to_xarray())
    for failure in failures[:5]:
        print(f"failed: {failure.summary}", file=sys.stderr)
    if len(failures) > 5:
        print(f"... and {len(failures) - 5} more (katparallel show)", file=sys.stderr)
    return 1 if failures else 0


def _write(results: Any, outs: Sequence[str], store: str | None) -> None:
    """Write the lossless .nc files first, then the CSVs.

    A CSV can hold only scalar outputs, which is known only once the study has
    run. If one cannot be written and nothing else keeps the results (no .nc,
    no store), they are saved to a .nc beside it before the error is reported.
    """
    netcdf = [out for out in outs if Path(out).suffix == ".nc"]
    for out in netcdf:
        results.save(out)
        print(f"wrote {out}")
    for out in outs:
        if Path(out).suffix != ".csv":
            continue
        try:
            written = results.to_csv(out)
        except ValueError as exc:
            kept = ", ".join(netcdf) or store
            if not kept:
                kept = str(_free_path(Path(out).with_suffix(".nc")))
                results.save(kept)
            raise _UsageError(f"--out {out!r}: {exc} The results are in {kept}.") from None
        print(f"wrote {out} ({', '.join(written)})")


def _free_path(path: Path) -> Path:
    """``path``, or ``stem-1.nc``, ``stem-2.nc``... if it exists: never overwrite."""
    candidate, number = path, 0
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return candidate


def _workers(count: int) -> str:
    return f"{count} worker" + ("" if count == 1 else "s")


def _kat_program() -> str:
    try:
        from .finesse2 import which_kat
    except ImportError as exc:
        return f"unknown (katparallel.finesse2 unavailable: {exc})"
    info = which_kat()
    if info.path is None:
        return (
            "none on PATH or in FINESSE_DIR; pykat studies install katparallel's "
            "Finesse-3-backed kat when they start (katparallel.finesse2.ensure_kat)"
        )
    kind = "katparallel's Finesse-3-backed kat" if info.is_katparallel else "Finesse 2"
    version = info.version_line or "version unknown"
    return f"{info.path} ({kind}, found via {info.source}; {version})"


def _info(args: argparse.Namespace) -> int:
    from . import __version__
    from .backends import BACKENDS, available
    from .store import installed_version

    usable = available()
    missing = [name for name in BACKENDS if name not in usable]
    backends = ", ".join(usable)
    if missing:
        backends += f"  (unavailable: {', '.join(missing)})"
    rows = [
        ("katparallel", __version__),
        ("finesse", installed_version("finesse")),
        ("pykat", installed_version("pykat")),
        ("python", f"{sys.version.split()[0]} ({sys.executable})"),
        ("backends", backends),
        ("cpus", str(os.cpu_count())),
        ("kat", _kat_program()),
    ]
    for name, value in rows:
        print(f"{name:<12} {value}")
    return 0


def _is_store(path: Path) -> bool:
    from .store import SQLITE_MAGIC

    with open(path, "rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def _open_results(path_text: str) -> Any:
    """Results of a store (read as far as it got) or a netCDF file."""
    from .results import load
    from .store import Store

    path = Path(path_text)
    if not path.is_file():
        raise _UsageError(f"{path_text!r} does not exist")
    if _is_store(path):
        with Store(path) as store:
            return store.results()
    try:
        return load(path)
    except (OSError, ValueError) as exc:
        raise _UsageError(
            f"{path_text!r} is neither a katparallel store nor a results file (.nc): {exc}"
        ) from None


def _first_lines(text: str, count: int = 6) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    shown = "\n".join(f"    {line}" for line in lines[:count])
    return shown + (f"\n    ... ({len(lines) - count} more lines)" if len(lines) > count else "")


def _show(args: argparse.Namespace) -> int:
    from .store import Store

    path = Path(args.path)
    if path.is_file() and _is_store(path):
        with Store(path) as store:
            definition = store.definition
            if definition is None:
                print(f"{args.path}: an empty store (no study recorded yet)")
                return 0
            done, total = store.progress()
            failures = store.failures()
        print(f"store     {args.path} (created {definition.get('created', '?')})")
        print(f"plan      {definition['plan']}")
        print(f"analysis  {definition['analysis']}")
        if definition.get("perturb"):
            print(f"perturb   {definition['perturb']}")
        print(f"versions  katparallel {definition['katparallel_version']}, "
              f"finesse {definition['finesse_version']}")
        status = "complete" if done == total else f"{total - done} to go; rerun to resume"
        retry = " (rerun with --retry-failed to run them again)" if failures else ""
        print(f"progress  {done}/{total} jobs done ({100 * done / max(total, 1):.1f}%, {status}), "
              f"{len(failures)} failed{retry}")
        print("model")
        print(_first_lines(definition["model"]))
    else:
        results = _open_results(args.path)
        attrs = results.to_xarray().attrs
        failures = results.failures
        print(f"results   {args.path}")
        print(f"plan      {attrs.get('plan', '?')}")
        print(f"outputs   {', '.join(results.outputs)}")
        print(f"ran on    {attrs.get('backend', '?')} ({_workers(attrs.get('workers', 0))}) in "
              f"{float(attrs.get('elapsed_seconds', float('nan'))):.1f} s")
        n_jobs = int(attrs.get("n_jobs", 0))
        print(f"progress  {n_jobs}/{n_jobs} jobs done, {len(failures)} failed")
        print("model")
        print(_first_lines(attrs.get("model", "")))
    for failure in failures[: args.failures]:
        print(f"failed    {failure.summary}")
    if len(failures) > args.failures:
        print(f"          ... and {len(failures) - args.failures} more (--failures N)")
    return 0


def _plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = _open_results(args.path)
    if args.output not in results:
        raise _UsageError(f"no output named {args.output!r}; the outputs are {results.outputs}")
    out = args.out or f"{Path(args.path).with_suffix('')}-{args.output}.png"
    ax = results.plot(args.output)
    ax.figure.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(ax.figure)
    print(f"wrote {out}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from .finesse2.convert import main as convert

    return convert(args.katfile)


_COMMANDS = {"run": _run, "info": _info, "show": _show, "plot": _plot, "convert": _convert}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``katparallel`` command; return its exit status."""
    from .errors import KatParallelError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="katparallel: %(message)s",
    )
    try:
        return _COMMANDS[args.command](args)
    except (_UsageError, KatParallelError) as exc:  # bad arguments or input
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        if len(lines) > 1:
            print("\n".join(lines[1:]).strip(), file=sys.stderr)
        args.parser.error(lines[0])
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
