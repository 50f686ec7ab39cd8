"""What the ``kat`` launcher runs: hand the run to a warm server, or run it here.

Importing Finesse 3 takes seconds, and PyKat starts a new ``kat`` process for every
``kat.run()``. So the launcher runs this small client, which imports neither Finesse
nor numpy: it connects to a per-user server (:mod:`katparallel.finesse2.server`) that
has imported Finesse once, and passes it the command line, the environment, the
working directory and its standard input, output and error as file descriptors. The
server forks one worker per run; the worker writes exactly where this process would
have, and the client exits with the worker's exit status (or dies by the same signal).

Outcomes, for each run:

- a server answers: the run happens in its forked worker;
- no server answers (none started yet, one still importing Finesse, or one that was
  killed and left its socket behind): the client starts a server in the background for
  the next runs and runs this one itself, exactly as without a server. Not waiting for
  the server keeps the first run as fast as before and well inside PyKat's 5 s
  deadline for the ``--pykat`` pipe to appear. (No server is started when the socket's
  path, in the cache directory, is longer than a Unix socket address allows: every
  run then happens in the client's own process);
- the worker ends without reporting (the server's process group was killed during the
  run): an error on standard error and exit status 1. The run is not repeated here,
  because it may already have written output or created PyKat's pipe.

The server runs on Linux only (it relies on epoll, ``SO_PEERCRED``, ``SIGIO`` on a
socket and passing file descriptors); elsewhere (macOS, Windows) every run happens in
the client's own process, as with ``KATPARALLEL_KAT_SERVER=0``.

``KATPARALLEL_KAT_SERVER=0`` turns the server off (every run in the client's own
process). ``KATPARALLEL_KAT_SERVER_IDLE`` sets the minutes a server waits for work
before it exits (default 10). ``python -m katparallel.finesse2 --stop-server`` (or
:func:`stop_server`) stops this interpreter's server.

Wire protocol, over a Unix stream socket: the client sends a 4-byte big-endian length
and that many bytes of JSON ``{"argv", "env", "cpus"}``, with file descriptors 0, 1, 2
and one for its working directory attached to the first bytes (``SCM_RIGHTS``). The
server answers with lines ``S PID`` (a worker has taken the run), then ``X STATUS``
(its exit status) or ``K SIGNAL`` (it died by that signal).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from typing import NamedTuple, NoReturn

__all__ = ("main", "server_paths", "stop_server")

#: Set to "0" to run every ``kat`` in its own process, without a server.
ENV_SWITCH = "KATPARALLEL_KAT_SERVER"
#: Minutes a server waits for a request before it exits.
ENV_IDLE = "KATPARALLEL_KAT_SERVER_IDLE"

_HEADER = struct.Struct("!I")
_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL
#: Where the server works: it uses epoll, SO_PEERCRED and F_SETOWN, which are Linux's.
SERVER_PLATFORM = sys.platform.startswith("linux")


class ServerPaths(NamedTuple):
    """Files of one interpreter's server, all in its launcher's cache directory.

    Attributes
    ----------
    socket : str
        The Unix socket the server listens on.
    lock : str
        Held (``flock``) by the running server for its whole life; holds its pid.
    log : str
        The server's standard error and log.
    """

    socket: str
    lock: str
    log: str


def package_parent() -> str:
    """Return the directory that holds the ``katparallel`` package being run."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


def launcher_dir() -> str:
    """Return the private cache directory of this interpreter's ``kat`` launcher.

    One directory per interpreter and katparallel checkout, so virtual environments
    sharing a cache directory do not mix.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    key = f"{sys.executable}\0{package_parent()}".encode()
    name = f"kat-{hashlib.sha256(key).hexdigest()[:12]}"
    return os.path.join(cache, "katparallel", name)


def _code_fingerprint() -> str:
    """Hash what a server has loaded that may change under it: this package's source
    and the installed Finesse, so an edit or upgrade gets a new server."""
    digest = hashlib.sha256()
    here = os.path.dirname(os.path.realpath(__file__))
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as fh:
                digest.update(name.encode() + b"\0" + fh.read())
    import importlib.util  # already imported by site; find_spec imports nothing

    spec = importlib.util.find_spec("finesse")
    if spec is not None and spec.origin:
        stat = os.stat(spec.origin)
        digest.update(f"{spec.origin}\0{stat.st_mtime_ns}\0{stat.st_size}".encode())
    return digest.hexdigest()[:12]


def server_paths() -> ServerPaths:
    """Return the files of the server this interpreter and katparallel would use."""
    stem = os.path.join(launcher_dir(), f"server-{_code_fingerprint()}")
    return ServerPaths(socket=stem + ".sock", lock=stem + ".lock", log=stem + ".log")


def server_pid(paths: ServerPaths) -> int | None:
    """Return the pid of the running (or starting) server, or None if there is none.

    A server holds an exclusive ``flock`` on ``paths.lock`` for its whole life; the
    kernel drops it when the server dies, however it dies. There is never one where
    the server does not work (see :data:`SERVER_PLATFORM`).
    """
    if not SERVER_PLATFORM:
        return None
    import fcntl

    try:
        fd = os.open(paths.lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    """Read the pid the server writes into its lock file right after locking it."""
    for _ in range(100):
        text = os.pread(fd, 32, 0).strip()
        if text:
            return int(text)
        time.sleep(0.01)
    return None


def start_server(paths: ServerPaths) -> None:
    """Start a server in the background, unless one is running or starting.

    The server runs in a new session with its standard streams on ``/dev/null``, so
    it holds none of this process's pipes or files. Two clients may both start one: the
    second finds the lock taken and exits. Nothing is started when ``paths.socket`` is
    too long for a Unix socket address: such a server could never listen.
    """
    if len(os.fsencode(paths.socket)) > _SUN_PATH_MAX or server_pid(paths) is not None:
        return
    import subprocess

    folder = os.path.dirname(paths.socket)
    os.makedirs(folder, exist_ok=True)
    subprocess.Popen(
        [sys.executable, "-m", "katparallel.finesse2.server", paths.socket],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=folder, start_new_session=True, close_fds=True,
    )


def stop_server(timeout: float = 60.0) -> bool:
    """Stop this interpreter's ``kat`` server, if one is running.

    The server stops taking runs at once and exits when the runs it has taken end.

    Parameters
    ----------
    timeout : float, optional
        Seconds to wait for it to exit.

    Returns
    -------
    bool
        True if a server was running and has exited, False if none was running.

    Raises
    ------
    TimeoutError
        If the server is still running after ``timeout`` seconds.
    """
    paths = server_paths()
    pid = server_pid(paths)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # exited meanwhile
    deadline = time.monotonic() + timeout
    # The server releases its lock just before it exits: wait for both.
    while server_pid(paths) is not None or _alive(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"katparallel's kat server (pid {pid}) is still running {timeout:g} s "
                f"after SIGTERM; its log is {paths.log}")
        time.sleep(0.02)
    return True


def _alive(pid: int) -> bool:
    """Tell whether process ``pid`` still runs: any of its threads, since its main
    thread can be a zombie while the others are still ending (and hold its files)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:  # no such process
        return False
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/stat", "rb") as fh:
                state = fh.read().rpartition(b")")[2].split()[:1]
        except OSError:  # that thread has ended
            continue
        if state not in ([b"Z"], [b"X"]):
            return True
    return False


def _connect(path: str) -> socket.socket | None:
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        return None  # cannot be bound either, so no server is ever started
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:  # no socket yet (ENOENT) or a dead server's (ECONNREFUSED)
        sock.close()
        return None
    return sock


def _send_request(sock: socket.socket, argv: Sequence[str]) -> None:
    body = json.dumps({
        "argv": list(argv),
        "env": dict(os.environ),
        "cpus": sorted(os.sched_getaffinity(0)),
    }).encode()
    data = _HEADER.pack(len(body)) + body
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY)
    try:
        sent = socket.send_fds(sock, [data], [0, 1, 2, cwd])
    finally:
        os.close(cwd)
    sock.sendall(data[sent:])


def _die_by(signum: int) -> NoReturn:
    """End this process by ``signum``, as the run it stands for did."""
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    os.kill(os.getpid(), signum)
    raise SystemExit(128 + signum)  # only for signals that do not terminate


class _Forwarder:
    """Pass the signals that would stop a direct run on to the worker doing it.

    Installed before the request is sent: a signal that arrives before the server has
    named the worker is held, then forwarded the moment it does, so the worker dies by
    that very signal, exactly as a direct run would. (Without this, a signal in that
    window killed the client alone, and its worker died of SIGIO instead.) The same
    signal a second time before then, or a connection that breaks first, ends this
    process by it.
    """

    def __init__(self) -> None:
        self.worker: int | None = None
        self.held: list[int] = []
        self.previous = {}
        for signum in _FORWARDED:
            if signal.getsignal(signum) is not signal.SIG_IGN:  # a direct run ignores it
                self.previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.worker is None:
            if signum in self.held:
                _die_by(signum)
            self.held.append(signum)
            return
        try:
            os.kill(self.worker, signum)
        except ProcessLookupError:
            pass

    def start(self, worker: int) -> None:
        """Forward to ``worker`` from now on, starting with the signals held."""
        self.worker = worker
        for signum in self.held:
            self._on_signal(signum, None)

    def stop(self) -> None:
        """Restore the previous handlers; die by a held signal no worker received."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        if self.worker is None and self.held:
            _die_by(self.held[0])


def _through_server(paths: ServerPaths, argv: Sequence[str]) -> int | None:
    """Run ``argv`` in a server worker; return its exit status.

    Returns
    -------
    int or None
        The worker's exit status, or None if no server took the run (nothing of it
        has happened, so it can be run here instead).
    """
    sock = _connect(paths.socket)
    if sock is None:
        return None
    forwarder = _Forwarder()
    with sock:
        try:
            _send_request(sock, argv)
            with sock.makefile("rb") as replies:
                for line in replies:
                    tag, _, value = line.decode().partition(" ")
                    if tag == "S":
                        forwarder.start(int(value))
                    elif tag == "X":
                        return int(value)
                    elif tag == "K":
                        _die_by(int(value))
        except OSError:
            pass  # the connection broke; what that means depends on the worker
    worker = forwarder.worker
    if worker is None:
        forwarder.stop()
        return None
    sys.stderr.write(
        f"*** Error: katparallel's kat server worker (pid {worker}) ended without "
        "reporting how this run finished: it or its server was killed. The run was "
        "not repeated, as it may have written output already; run it again, or set "
        f"{ENV_SWITCH}=0 to run kat without a server (log: {paths.log}).\n")
    return 1


def _direct(argv: Sequence[str]) -> int:
    from katparallel.finesse2.program import main as run_here

    return run_here(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kat`` program, through the warm server when possible.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after the program name; ``sys.argv[1:]`` by default. The single
        argument ``--stop-server`` stops this interpreter's server instead.

    Returns
    -------
    int
        The ``kat`` program's exit status (see :mod:`katparallel.finesse2.program`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--stop-server"]:
        stopped = stop_server()
        sys.stdout.write("stopped katparallel's kat server\n" if stopped
                         else "no katparallel kat server was running\n")
        return 0
    if not SERVER_PLATFORM or os.environ.get(ENV_SWITCH, "1").strip() == "0":
        return _direct(argv)
    paths = server_paths()
    status = _through_server(paths, argv)
    if status is not None:
        return status
    start_server(paths)
    return _direct(argv)
