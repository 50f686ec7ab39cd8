"""The warm ``kat`` server: import Finesse 3 once, fork one worker per run.

Started in the background by :mod:`katparallel.finesse2.client` as
``python -m katparallel.finesse2.server SOCKET``. It

1. takes an exclusive ``flock`` on ``SOCKET``'s ``.lock`` file, or exits if another
   server holds it (so concurrent clients never leave two servers running);
   any socket file left by a killed server is then stale and is removed;
2. imports Finesse 3 and the ``kat`` program, and *only* imports: it never runs a
   simulation, so no OpenMP thread exists when it forks (a process forked after
   libgomp has run a parallel region can deadlock; see DESIGN.md);
3. binds a temporary socket, listens and renames it to ``SOCKET``, so clients either
   find a server ready to accept or no socket (and then run without it);
4. for each connection from the same user, forks a worker, which receives the run
   (command line, environment, CPU affinity, working directory and the client's
   standard streams), takes on all of it, runs :func:`katparallel.finesse2.program.main`
   and reports the exit status to the client. The server reaps the workers, reports
   one killed by a signal, and exits after ``KATPARALLEL_KAT_SERVER_IDLE`` minutes
   (default 10) without runs, or on SIGTERM once its runs have ended.

A worker whose client goes away (killed, or interrupted) is killed by SIGIO, as a run
in the client's own process would have been.
"""

from __future__ import annotations

import fcntl
import gc
import importlib
import json
import logging
import os
import pkgutil
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from katparallel.finesse2.client import ENV_IDLE, ServerPaths

if TYPE_CHECKING:
    from threadpoolctl import ThreadpoolController

__all__ = ("serve",)

LOGGER = logging.getLogger("katparallel.finesse2.server")  # also when run as __main__

_HEADER = struct.Struct("!I")
_MAX_REQUEST = 64 << 20  # bytes; a request is a command line and an environment
_MAX_FDS = 4  # stdin, stdout, stderr, working directory
_BACKLOG = 128
_DEFAULT_IDLE_MINUTES = 10.0
_LOCK_PATIENCE = 1.0  # seconds
_WARM_UP_MODULES = (
    "finesse.analysis.actions",  # imported by program.simulate
    "finesse.script.legacy",  # imported by program.load_model
    "multiprocessing.synchronize",  # imported by tqdm's progress bar in a run
)
_WARM_UP_PACKAGES = (
    "finesse.components.modal",
    "finesse.detectors.compute",
    "finesse.simulations.sparse",
)
_WARM_UP_KAT = """
l l1 1 0 n0
s s0 1 n0 n1
m m1 0.9 0.1 0 n1 n2
s s1 1 n2 n3
bs b1 0.5 0.5 0 0 n3 n4 n5 n6
pd p1 n4
ad a1 0 n5
xaxis m1 phi lin 0 10 2
"""


def _paths(socket_path: str) -> ServerPaths:
    stem = socket_path.removesuffix(".sock")
    return ServerPaths(socket=socket_path, lock=stem + ".lock", log=stem + ".log")


def _idle_seconds() -> float:
    text = os.environ.get(ENV_IDLE, "").strip()
    try:
        minutes = float(text) if text else _DEFAULT_IDLE_MINUTES
    except ValueError:
        LOGGER.warning("%s=%r is not a number of minutes; using %g",
                       ENV_IDLE, text, _DEFAULT_IDLE_MINUTES)
        minutes = _DEFAULT_IDLE_MINUTES
    return max(minutes, 0.0) * 60.0


def _lock(path: str) -> int | None:
    """Take the server lock and write this pid in it; None if another server has it.

    A client checking for a server (:func:`katparallel.finesse2.client.server_pid`)
    holds a shared lock for an instant, so a lock still taken after
    ``_LOCK_PATIENCE`` seconds is another server's.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + _LOCK_PATIENCE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.01)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _log_to(path: str) -> None:
    """Send standard output and error, and this module's log, to ``path``.

    The log keeps a descriptor of its own, so it still reaches ``path`` in workers,
    whose standard streams are the client's. The root logger is left alone: a worker
    shows Finesse's log records exactly as a run without the server would.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    handler = logging.StreamHandler(open(fd, "w", buffering=1))
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s %(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


def _warm_up() -> ThreadpoolController:
    """Import everything a run needs, without running any simulation.

    Returns
    -------
    threadpoolctl.ThreadpoolController
        The thread pools (OpenMP, BLAS) of the loaded libraries, for the workers to
        limit; finding them costs more than a small run.
    """
    for name in _WARM_UP_MODULES:
        importlib.import_module(name)
    for name in _WARM_UP_PACKAGES:  # what Finesse imports only when a run needs it
        package = importlib.import_module(name)
        for module in pkgutil.iter_modules(package.__path__, f"{name}."):
            importlib.import_module(module.name)
    from threadpoolctl import ThreadpoolController

    from katparallel.finesse2 import program

    program.version_line()  # caches Finesse's version
    # Parsing (never running) a model sets up what the legacy parser builds lazily
    # on first use, which would otherwise cost each worker tens of milliseconds.
    program.load_model(_WARM_UP_KAT)
    pools = ThreadpoolController()
    # Keep the garbage collector out of the imported objects, so workers do not
    # copy the server's memory page by page (copy-on-write) by scanning them.
    gc.collect()
    gc.freeze()
    return pools


def _listen(path: str) -> socket.socket:
    """Bind and listen on a temporary name, then move it to ``path`` atomically."""
    tmp = f"{path}.{os.getpid()}.tmp"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        listener.bind(tmp)
    finally:
        os.umask(old_umask)
    listener.listen(_BACKLOG)
    os.replace(tmp, path)
    listener.setblocking(False)
    return listener


def _same_user(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                            struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid == os.getuid()


class _Server:
    """The accept loop: fork a worker per connection, reap workers, idle out."""

    def __init__(self, paths: ServerPaths, lock_fd: int, idle: float,
                 pools: ThreadpoolController):
        self.paths = paths
        self.pools = pools
        self.lock_fd = lock_fd
        self.idle = idle
        self.listener: socket.socket | None = _listen(paths.socket)
        self.workers: dict[int, socket.socket] = {}
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self.selector = selectors.EpollSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.stopping = True

    def run(self) -> None:
        last_activity = time.monotonic()
        while True:
            if self.stopping and self.listener is not None:
                LOGGER.info("stopping: %d run(s) to finish", len(self.workers))
                self._close_listener()
            if self.listener is None and not self.workers:
                return
            timeout = None
            if not self.workers and self.listener is not None:
                timeout = last_activity + self.idle - time.monotonic()
                if timeout <= 0:
                    LOGGER.info("exiting after %g s without runs", self.idle)
                    self._close_listener()
                    return
            for key, _ in self.selector.select(timeout):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    self._drain_wakeups()
            if self._reap():
                last_activity = time.monotonic()

    def _close_listener(self) -> None:
        """Stop taking runs: new clients find no socket and run without a server."""
        assert self.listener is not None
        os.unlink(self.paths.socket)
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        if not _same_user(conn):
            LOGGER.warning("refused a connection from another user")
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            inherited = [self.listener.fileno(), self.selector.fileno(), self.lock_fd,
                         self.wake_r, self.wake_w,
                         *(c.fileno() for c in self.workers.values())]
            _worker(conn, inherited, self.pools)
        self.workers[pid] = conn

    def _reap(self) -> bool:
        """Reap ended workers; report those killed by a signal. True if any ended."""
        ended = False
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            ended = True
            conn = self.workers.pop(pid)
            if os.WIFSIGNALED(status):
                signum = os.WTERMSIG(status)
                LOGGER.info("worker %d was killed by signal %d", pid, signum)
                try:
                    conn.sendall(f"K {signum}\n".encode())
                except OSError:
                    pass  # the client has gone: it is what killed the worker
            conn.close()
        return ended


def serve(socket_path: str) -> int:
    """Run a server on ``socket_path`` until it idles out or gets SIGTERM.

    Parameters
    ----------
    socket_path : str
        The socket to listen on; the lock and log files sit next to it
        (see :func:`katparallel.finesse2.client.server_paths`).

    Returns
    -------
    int
        The exit status: 0, also when another server already runs.
    """
    paths = _paths(socket_path)
    lock_fd = _lock(paths.lock)
    if lock_fd is None:
        return 0  # another server runs or is starting
    _log_to(paths.log)
    try:
        # Under the lock, a socket file can only be a dead server's.
        if os.path.lexists(paths.socket):
            LOGGER.info("removing the stale socket of a server that died")
            os.unlink(paths.socket)
        start = time.perf_counter()
        pools = _warm_up()
        LOGGER.info("imported Finesse in %.2f s; %d thread(s)",
                    time.perf_counter() - start, len(os.listdir("/proc/self/task")))
        server = _Server(paths, lock_fd, _idle_seconds(), pools)
        LOGGER.info("listening on %s", paths.socket)
        server.run()
    except Exception:
        LOGGER.exception("the kat server failed")
        if os.path.lexists(paths.socket):
            os.unlink(paths.socket)
        return 1
    finally:
        os.close(lock_fd)  # only now may another server take over
    return 0


# --- the forked worker ---------------------------------------------------------------

def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, _MAX_FDS)
    if len(data) < _HEADER.size or len(fds) != _MAX_FDS:
        raise ConnectionError("incomplete request")
    (size,) = _HEADER.unpack_from(data)
    if size > _MAX_REQUEST:
        raise ConnectionError(f"request of {size} bytes")
    body = bytearray(data[_HEADER.size:])
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("incomplete request")
        body += chunk
    return json.loads(body), fds


def _die_with_client(conn: socket.socket) -> None:
    """Have the kernel kill this process (SIGIO) when the client closes its end.

    The client sends nothing after its request, so the socket becomes readable only
    when the client has gone.
    """
    signal.signal(signal.SIGIO, signal.SIG_DFL)
    fcntl.fcntl(conn, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(conn, fcntl.F_SETFL, fcntl.fcntl(conn, fcntl.F_GETFL) | os.O_ASYNC)
    try:
        gone = conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        gone = False
    if gone:  # before SIGIO was armed
        os._exit(1)


def _take_on(request: dict, fds: list[int], pools: ThreadpoolController) -> None:
    """Become the client's process: streams, directory, environment, CPUs, threads."""
    os.environ.clear()
    os.environ.update(request["env"])
    try:
        os.sched_setaffinity(0, request["cpus"])
    except OSError as exc:  # logged while standard error is still the server's log
        LOGGER.warning("cannot take on the client's CPUs %s: %s", request["cpus"], exc)
    _limit_threads(pools, len(os.sched_getaffinity(0)))
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    os.fchdir(fds[3])
    for fd in fds:
        os.close(fd)
    # As a directly started Python would: line-buffered only on terminals.
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)


def _thread_count(names: Sequence[str], default: int) -> int:
    """Read a thread count as OpenMP and OpenBLAS do: the first set variable wins."""
    for name in names:
        text = os.environ.get(name, "").split(",")[0].strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
    return default


def _limit_threads(pools: ThreadpoolController, cpus: int) -> None:
    """Apply the client's OpenMP and BLAS thread counts.

    libgomp and OpenBLAS read ``OMP_NUM_THREADS`` (``OPENBLAS_NUM_THREADS``) once,
    when loaded, which was in the server under the environment of whichever client
    started it. Without them set, both use one thread per available CPU.
    """
    pools.select(user_api="openmp").limit(
        limits=_thread_count(["OMP_NUM_THREADS"], cpus))
    pools.select(user_api="blas").limit(limits=_thread_count(
        ["OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"], cpus))


def _run_program(argv: list[str]) -> int:
    """Run the ``kat`` program as ``python -m katparallel.finesse2`` would."""
    from katparallel.finesse2.program import main

    try:
        return main(argv)
    except Exception:
        traceback.print_exc()
        return 1


def _die_of_interrupt() -> NoReturn:
    """Print the KeyboardInterrupt and die by SIGINT, as an interrupted Python does."""
    traceback.print_exc()
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    os._exit(128 + signal.SIGINT)  # not reached: SIGINT's default action ends us


def _worker(conn: socket.socket, inherited: Sequence[int],
            pools: ThreadpoolController) -> NoReturn:
    """Run one request in a forked child of the server; never returns.

    The worker names itself to the client (``S``) only once it has taken on the
    client's streams, so a signal the client forwards from then on is reported on
    them, as in a direct run: SIGINT as a printed ``KeyboardInterrupt``.
    """
    status = 1
    try:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in inherited:
            os.close(fd)
        conn.setblocking(True)
        request, fds = _receive(conn)
        _die_with_client(conn)
        _take_on(request, fds, pools)
        try:
            conn.sendall(f"S {os.getpid()}\n".encode())
            status = _run_program(request["argv"])
        except KeyboardInterrupt:  # forwarded by the client
            _die_of_interrupt()
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGIO, signal.SIG_IGN)  # done: the client may now go
        conn.sendall(f"X {status}\n".encode())
    except BaseException:  # never return into the server's loop
        LOGGER.exception("worker failed")
    finally:
        os._exit(status)


if __name__ == "__main__":
    raise SystemExit(serve(sys.argv[1]))
