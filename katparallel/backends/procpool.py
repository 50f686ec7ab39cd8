"""A small process pool that knows which task each worker holds.

The stdlib ``ProcessPoolExecutor`` marks every pending task broken when one
worker dies. Here each worker runs one task at a time over its own pipe, so a
worker that dies (SIGKILL, segfault, out of memory) or overruns its timeout
costs exactly the task it held; the worker is replaced and the rest go on::

    parent ──(fn, task)──► pipe ──► worker process ──► fn(task)
           ◄──(i, result)─ pipe ◄──

A worker is forked from this process when that is safe (:func:`can_fork`): it
then starts in milliseconds with everything the parent has imported and read,
a parsed model included. Otherwise workers start with ``forkserver`` (or
``spawn``). Workers ignore SIGINT, so Ctrl-C reaches only the parent, which
then stops them all. A SIGTERM or SIGHUP (a cancelled batch job signals every
process) stops a worker without running a handler of the parent's code, which
may save results or close a store. A worker whose parent dies sees its pipe
close and exits, leaving no orphans.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.connection import wait
from typing import Any

from ..errors import BackendUnavailable, Failure
from .pinning import pin_threads

LOGGER = logging.getLogger(__name__)

__all__ = ("ProcessPool", "can_fork", "reset_signals", "worker_start_failed")


def can_fork(threads: int | None) -> bool:
    """True if a worker forked now, then pinned to ``threads``, cannot hang on a lock.

    A forked child has only the thread that forked it, and every lock as it
    was when it was forked. So no other Python thread may be running (it
    could hold a Python lock), apart from the idle ones that
    :func:`_stop_idle_threads` stops first. Native thread pools are allowed:
    OpenBLAS stops its threads around a fork, and libgomp's pool, which exists
    once this process has run an OpenMP region (Finesse does, with
    higher-order modes), is never used by a child pinned to one OpenMP thread
    before it runs anything: libgomp runs a one-thread region on the calling
    thread alone. Unpinned, such a child hangs at its first parallel region,
    so ``threads`` must be 1. Linux only: elsewhere system libraries are not
    fork-safe.
    """
    idle = _idle_library_threads()
    return (
        threads == 1
        and sys.platform.startswith("linux")
        and threading.current_thread() is threading.main_thread()
        and all(t is threading.main_thread() or t in idle for t in threading.enumerate())
    )


def _idle_library_threads() -> list[threading.Thread]:
    """tqdm's monitor threads: every tqdm bar starts one, even a disabled bar,
    and Finesse leaves one behind after each ``Series``. It sleeps, waking
    every 10 s to take tqdm's lock; tqdm starts it again with its next bar."""
    tqdm_std = sys.modules.get("tqdm.std")
    if tqdm_std is None:
        return []
    return [t for t in threading.enumerate() if isinstance(t, tqdm_std.TMonitor)]


def _stop_idle_threads() -> None:
    """Stop the idle threads libraries leave running (before a fork)."""
    for thread in _idle_library_threads():
        thread.exit()


def worker_start_failed(exitcode: int | None) -> BackendUnavailable:
    """The error for a worker process that died before it could run a task."""
    return BackendUnavailable(
        f"a worker process exited with code {exitcode} while starting, before it "
        "ran any job (its error is printed above). Worker processes import the "
        "script that started them: put the code that runs the ensemble under "
        '`if __name__ == "__main__":` (the multiprocessing docs, \'Safe importing '
        "of main module')."
    )


def reset_signals() -> None:
    """In a new worker: ignore SIGINT, and give back their default action to the
    other signals that have a Python handler (the parent's, inherited through
    a fork or installed again by its ``__main__``).

    SIGTERM and SIGHUP then stop the worker. A signal the parent ignores (SIGHUP
    under ``nohup``) stays ignored.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in signal.valid_signals():
        if callable(signal.getsignal(signum)):
            signal.signal(signum, signal.SIG_DFL)


def _worker_main(conn, env: Mapping[str, str], threads: int | None, inherited=()) -> None:
    reset_signals()
    for parent_end in inherited:  # a forked worker's copies: else it never sees EOF
        parent_end.close()
    pin_threads(threads, env)
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # parent gone
        if message is None:
            return
        fn, task = message
        try:
            reply = ("ok", fn(task))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            reply = ("raised", Failure.capture(exc))
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable result
            conn.send(("raised", Failure.capture(exc)))


class _Worker:
    """One worker process and the parent's end of its pipe.

    ``others`` are the parent's ends of the other workers' pipes: a forked
    worker closes its copies of them, and of its own, so that every worker
    sees its pipe close when the parent dies.
    """

    def __init__(self, ctx, env: Mapping[str, str], threads: int | None, others=()):
        self.conn, child_conn = ctx.Pipe(duplex=True)
        forked = ctx.get_start_method() == "fork"
        inherited = (*others, self.conn) if forked else ()
        self.process = ctx.Process(
            target=_worker_main, args=(child_conn, dict(env), threads, inherited), daemon=True
        )
        self.process.start()
        child_conn.close()
        self.task: int | None = None
        self.started = 0.0

    def wait_ready(self) -> None:
        """Block until the worker has started; raise if it died starting."""
        ready = wait([self.conn, self.process.sentinel])
        try:
            if self.conn in ready and self.conn.recv() == "ready":
                return
        except (EOFError, OSError):
            pass
        self.process.join(timeout=5)
        raise worker_start_failed(self.process.exitcode)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=2)
        self.kill()


class ProcessPool:
    """A fixed number of persistent worker processes.

    Parameters
    ----------
    workers : int
        Number of processes.
    env : mapping, optional
        Environment variables set in each worker before it runs anything.
    threads : int or None, optional
        OpenMP/BLAS threads of each worker (:func:`~.pinning.pin_threads`),
        also of the runtimes its ``__main__`` loaded before it started;
        None leaves them alone.
    start_method : str, optional
        ``"forkserver"`` or ``"spawn"``. By default each worker is forked
        when :func:`can_fork`, else started with ``forkserver`` (or ``spawn``
        where there is none).
    """

    def __init__(
        self,
        workers: int,
        env: Mapping[str, str] | None = None,
        start_method: str | None = None,
        threads: int | None = None,
    ):
        if start_method == "fork":
            raise ValueError(
                "start_method='fork' deadlocks inside Finesse's OpenMP runtime once "
                "this process has simulated a model with higher-order modes; use "
                "'forkserver' or 'spawn', or leave it unset: katparallel then forks "
                "only while that is safe."
            )
        self._may_fork = start_method is None
        if start_method is None:
            methods = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        self._ctx = multiprocessing.get_context(start_method)
        self._env = dict(env or {})
        self._threads = threads
        self._workers: list[_Worker] = []
        for _ in range(int(workers)):
            self._workers.append(self._start_worker())
        self.closed = False
        try:
            for worker in self._workers:
                worker.wait_ready()
        except BaseException:
            self.shutdown()
            raise

    @property
    def size(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [w.process.pid for w in self._workers if w.process.is_alive()]

    def _start_worker(self) -> _Worker:
        """A new worker: forked if that is safe now, else from the fallback context."""
        if self._may_fork:
            _stop_idle_threads()
            if can_fork(self._threads):
                others = [w.conn for w in self._workers]
                return _Worker(multiprocessing.get_context("fork"), self._env, self._threads, others)
        LOGGER.debug("starting a worker with %s", self._ctx.get_start_method())
        return _Worker(self._ctx, self._env, self._threads)

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        new = self._workers[self._workers.index(worker)] = self._start_worker()
        new.wait_ready()
        return new

    def map_unordered(
        self,
        fn: Callable[[Any], Any],
        tasks: Sequence[Any],
        timeout: float | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """Yield ``(i, fn(tasks[i]))`` as tasks complete.

        A task whose worker died, that overran ``timeout`` seconds (its worker
        is killed and replaced) or where ``fn`` raised yields a
        :class:`~katparallel.errors.Failure` saying which.
        """
        if self.closed:
            raise RuntimeError("this pool has been shut down")
        pending = list(range(len(tasks)))[::-1]
        busy: dict[Any, _Worker] = {}
        clean_exit = False
        try:
            while pending or busy:
                for worker in self._workers:
                    if not pending:
                        break
                    if worker.task is None:
                        task = pending.pop()
                        try:
                            worker.conn.send((fn, tasks[task]))
                        except OSError:  # it died while idle, holding no task
                            worker = self._replace(worker)
                            worker.conn.send((fn, tasks[task]))
                        worker.task, worker.started = task, time.monotonic()
                        busy[worker.conn] = worker
                        busy[worker.process.sentinel] = worker
                wait_for = None
                if timeout is not None:
                    oldest = min(w.started for w in set(busy.values()))
                    wait_for = max(0.0, oldest + timeout - time.monotonic())
                ready = wait(list(busy), timeout=wait_for)
                for obj in ready:
                    worker = busy.get(obj)
                    if worker is None or worker.task is None:
                        continue
                    index = worker.task
                    outcome = self._collect(worker, obj)
                    del busy[worker.conn], busy[worker.process.sentinel]
                    worker.task = None
                    yield index, outcome
                if timeout is not None:
                    now = time.monotonic()
                    for worker in set(busy.values()):
                        if worker.task is not None and now - worker.started > timeout:
                            index = worker.task
                            del busy[worker.conn], busy[worker.process.sentinel]
                            self._replace(worker)
                            yield index, Failure(
                                None, None, "TimeoutError",
                                f"task exceeded its timeout of {timeout:g} s; its "
                                "worker was stopped. Raise `timeout=` if jobs "
                                "legitimately take longer."
                            )
            clean_exit = True
        finally:
            if not clean_exit:
                # Interrupted (Ctrl-C, an exception, or the caller stopped
                # iterating): tasks still running cannot be cancelled, so
                # their workers are killed and replaced.
                for worker in set(busy.values()):
                    if worker in self._workers:
                        self._replace(worker)

    def _collect(self, worker: _Worker, obj: Any) -> Any:
        try:
            if obj is worker.conn or worker.conn.poll():
                _, payload = worker.conn.recv()  # ("ok", result) or ("raised", Failure)
                return payload
        except (EOFError, OSError):
            pass
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        self._replace(worker)
        how = f"was killed by signal {-code}" if code and code < 0 else f"exited with code {code}"
        return Failure.worker_crashed(
            f"the worker process running this job {how} (a segfault, the OOM killer "
            "or a kill); the job did not finish."
        )

    def shutdown(self) -> None:
        """Stop every worker and wait for it to exit."""
        if self.closed:
            return
        self.closed = True
        for worker in self._workers:
            worker.stop()
        self._workers = []
