"""ParaKat: pykat's ``parakat`` on any katparallel backend, without ``ipcluster``.

::

    pk = ParaKat(backend="multiprocessing", workers=2)
    pk.run(kat1); pk.run(kat2, my_func, extra_arg)
    outs = pk.getResults()       # [KatRun, my_func(...)] in submission order

``run`` records a job: the kat's Finesse 2 text (``kat.generateKatScript()``),
its IFO object if any, and the function that runs it, as ``parakat`` ships
them. ``getResults`` sends the jobs not yet run to the backend, waits for all
of them with a progress bar, and returns every result since the last
``clear()``::

    run(kat) ──► job(script, IFO, func, args) ──getResults──► backend.map_unordered
        ──► worker: fresh temp dir, func(script, tempdir, IFO, *args, **kwargs)
        ──► slot[i] = return value, or the exception it raised

Unlike ``parakat`` under ipyparallel 9, a job that fails does not take the
others with it: its exception (with the worker's traceback as ``__cause__``)
sits in its own slot, and ``clear()`` resets the job count as well.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dill

from .backends import get_backend_class
from .backends.base import Backend
from .errors import Failure
from .runner import progress_bar

LOGGER = logging.getLogger(__name__)

__all__ = ("ParaKat", "run_kat")


def run_kat(commands: str, pwd: str, IFO: Any = None, **kwargs: Any):  # noqa: N803 - parakat's name
    """Parse ``commands`` into a fresh kat and run it: ParaKat's default job.

    The same arguments as ``parakat``'s ``_run``, so a custom ``func`` written
    for parakat can call it or replace it. Runs in ``pwd`` (the job's own
    temporary directory), where pykat also writes its scratch files.

    Parameters
    ----------
    commands : str
        The kat's Finesse 2 text.
    pwd : str
        The directory the job runs in.
    IFO : object, optional
        The kat's ``IFO`` helper (pykat.ifo), reattached to the new kat.
    **kwargs
        Passed to ``kat.run`` (e.g. ``getTraceData=True``).

    Returns
    -------
    pykat.finesse.KatRun
        What ``kat.run()`` returns.
    """
    from .adapters.pykat import new_kat

    kat = new_kat(commands, tempdir=pwd)
    if IFO is not None:  # as parakat: point the IFO back at its kat
        kat.IFO = IFO
        kat.IFO._IFO__kat = kat
    return kat.run(rethrowExceptions=True, **kwargs)


@dataclass
class _Job:
    """What a worker needs to run one ParaKat job (all picklable)."""

    script: str
    payload: bytes  # dill of (func or None, IFO or None, args, kwargs)


def _run_job(job: _Job) -> Any:
    """Run one job in a temporary directory of its own; never raises."""
    from .finesse2 import ensure_kat

    cwd = os.getcwd()
    try:
        ensure_kat()
        func, ifo, args, kwargs = dill.loads(job.payload)
        with tempfile.TemporaryDirectory(prefix="katparallel-parakat-") as scratch:
            os.chdir(scratch)
            try:
                value = (func or run_kat)(job.script, scratch, ifo, *args, **kwargs)
            finally:
                os.chdir(cwd)
    except Exception as exc:  # noqa: BLE001 - reported in the job's slot
        return Failure.capture(exc)
    if isinstance(value, BaseException):  # parakat-style funcs return their exception
        return Failure.capture(value)
    return value


_PENDING = object()


class ParaKat:
    """Drop-in for ``pykat.parallel.parakat`` that starts its own workers.

    Parameters
    ----------
    backend : str or Backend
        Where jobs run: ``"multiprocessing"`` (default), ``"serial"``, or any
        name from :func:`katparallel.available`, or a :class:`Backend`
        instance (which :meth:`close` then leaves open: it is yours).
    workers : int, optional
        Parallel workers (default: one per core).
    progress : bool
        Show a progress bar while :meth:`getResults` waits.
    **backend_options
        Passed to the backend, e.g. ``profile=`` for ``"ipyparallel"``
        (where parakat passed its keyword arguments to ``ipyparallel.Client``).

    Notes
    -----
    Jobs start when :meth:`getResults` is called, not at :meth:`run`. Each job
    runs in its own temporary directory (no shared working directory is
    needed), so files a kat script reads must be given by absolute path.
    Calling this makes sure pykat finds a ``kat`` program (see
    :func:`katparallel.finesse2.ensure_kat`), so kat objects can be created
    afterwards even where Finesse 2 is not installed.
    """

    def __init__(
        self,
        backend: str | Backend = "multiprocessing",
        workers: int | None = None,
        *,
        progress: bool = True,
        **backend_options: Any,
    ):
        from .finesse2 import ensure_kat

        ensure_kat()
        if isinstance(backend, Backend):
            if workers is not None or backend_options:
                raise TypeError(
                    "workers= and backend options apply to a backend name; configure "
                    "a Backend instance when you create it."
                )
            self._backend, self._owns_backend = backend, False
        elif isinstance(backend, str):
            self._backend = get_backend_class(backend)(workers=workers, **backend_options)
            self._owns_backend = True
        else:
            raise TypeError(f"backend must be a name or a Backend instance, got {backend!r}")
        self._progress = progress
        self._jobs: list[_Job] = []
        self._results: list[Any] = []
        self._run_count = 0

    @property
    def backend(self) -> Backend:
        """The backend jobs run on."""
        return self._backend

    def run(
        self, kat: Any, func: Callable[..., Any] | None = None, *args: Any, **kwargs: Any
    ) -> None:
        """Add a job running ``kat``, as ``parakat.run`` does.

        Parameters
        ----------
        kat : pykat.finesse.kat
            The simulation; its current text is shipped (later changes to the
            object do not affect this job).
        func : callable, optional
            Called in the worker as ``func(commands, pwd, IFO, *args, **kwargs)``
            with the kat's text, the job's directory and the kat's IFO object;
            its return value is the job's result. Default :func:`run_kat`
            (``kwargs`` then go to ``kat.run``). It need not pickle by
            reference: it is shipped with dill.
        *args, **kwargs
            Passed to ``func``.
        """
        ifo = getattr(kat, "IFO", None)
        detached = ifo is not None and hasattr(ifo, "_IFO__kat")
        if detached:
            ifo._IFO__kat = None  # the IFO's kat is rebuilt in the worker
        elif not hasattr(kat, "IFO"):
            ifo = None
        try:
            script = "".join(kat.generateKatScript())
            payload = dill.dumps((func, ifo, args, kwargs), recurse=True)
        finally:
            if detached:
                ifo._IFO__kat = kat
        self._jobs.append(_Job(script, payload))
        self._results.append(_PENDING)
        self._run_count += 1

    def getResults(self) -> list[Any]:  # noqa: N802 - parakat's name
        """Run the jobs not yet run and return every result, in submission order.

        Returns
        -------
        list
            One entry per :meth:`run` since the last :meth:`clear`: the
            ``KatRun`` (or ``func``'s return value), or, for a job that
            failed, the exception it raised, with the worker's traceback as
            its ``__cause__``.
        """
        pending = [i for i, result in enumerate(self._results) if result is _PENDING]
        if pending:
            tasks = [self._jobs[i] for i in pending]
            initial = self._run_count - len(pending)
            with progress_bar(self._run_count, "Parallel jobs", self._progress, initial) as bar:
                for position, outcome in self._backend.map_unordered(_run_job, tasks):
                    self._results[pending[position]] = _unwrap(outcome)
                    bar.update(1)
        failed = [i for i, result in enumerate(self._results) if isinstance(result, BaseException)]
        if failed:
            first = self._results[failed[0]]
            LOGGER.warning(
                "%d of %d ParaKat jobs failed (their slots hold the exceptions); "
                "first, job %d: %s: %s",
                len(failed), self._run_count, failed[0], type(first).__name__, first,
            )
        return list(self._results)

    def clear(self) -> None:
        """Forget every job and result, and reset the job count."""
        self._jobs, self._results, self._run_count = [], [], 0

    def close(self) -> None:
        """Stop the workers this ParaKat started (a Backend instance you gave stays open)."""
        if self._owns_backend:
            self._backend.close()

    def __len__(self) -> int:
        return self._run_count

    def __enter__(self) -> "ParaKat":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _unwrap(outcome: Any) -> Any:
    """A job's slot value from what the backend returned."""
    if isinstance(outcome, Failure):
        return outcome.original()
    return outcome
