"""The warm ``kat`` server: real launcher, client, server and worker processes.

Each test gets its own cache directory (``XDG_CACHE_HOME``), so its server is its own:
it never meets the user's server nor another test's, and it is stopped (or killed)
when the test ends. A run goes through the server when its worker is a child of the
server process; runs with ``--pykat=PIPE`` make that visible, since the worker waits
for a reader of the pipe it created. Importing Finesse costs about 2 s per process,
so the tests start as few servers and direct runs as they need.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from katparallel.finesse2.client import (
    ENV_IDLE,
    ENV_SWITCH,
    ServerPaths,
    server_paths,
    server_pid,
    stop_server,
)
from katparallel.finesse2.locate import install_launcher

pytestmark = pytest.mark.timeout(120)

SUN_PATH_MAX = 107
# A plane-wave Fabry-Perot swept over its tuning, read out as amplitude and power.
CAVITY = """
l l1 2 0 n0
s s0 1 n0 n1
m m1 0.9 0.1 0 n1 n2
s sc 1 n2 n3
m m2 0.95 0.05 0 n3 n4
pd pcirc n2
pd ptrans n4
ad adt 0 n4
xaxis m1 phi lin -30 30 6
yaxis re:im
"""
BAD_KAT = "l l1 1 0 n0\nfoo bar\nnoxaxis\n"


# --- processes, read from /proc -------------------------------------------------------

def _stat(pid: int, thread: int | None = None) -> list[str] | None:
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        with open(path, "rb") as fh:
            return fh.read().rpartition(b")")[2].decode().split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """True while any thread of process ``pid`` runs (zombies have ended): a killed
    process's main thread can be a zombie while its other threads, which still hold
    its files, are ending."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for thread in threads:
        fields = _stat(pid, int(thread))
        if fields is not None and fields[0] not in ("Z", "X"):
            return True
    return False


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(name))
    return found


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and alive(int(name)):
                found.append(int(name))
    return found


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def as_in_a_terminal() -> None:
    """Give a child the signal handling of a command typed in a terminal: a test run
    as a background job inherits SIGINT and SIGQUIT ignored, and so would the runs."""
    for signum in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)


# --- one private kat launcher and server per test -------------------------------------

class Kat:
    """katparallel's ``kat`` launcher with a private cache directory, and its server."""

    def __init__(self, cache: Path, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
        monkeypatch.setenv(ENV_IDLE, "2")  # a safety net: servers left behind idle out
        monkeypatch.delenv(ENV_SWITCH, raising=False)
        self.launcher = install_launcher()
        self.paths: ServerPaths = server_paths()
        self.work = cache.parent / "work"
        self.work.mkdir(exist_ok=True)
        (self.work / "cav.kat").write_text(CAVITY)
        self.clients: list[subprocess.Popen] = []

    @property
    def log(self) -> str:
        return Path(self.paths.log).read_text()

    def env(self, server: bool = True, **extra: str) -> dict[str, str]:
        return {**os.environ, ENV_SWITCH: "1" if server else "0", **extra}

    def run(self, *args: str, server: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([self.launcher, *args], cwd=self.work, env=self.env(server),
                              capture_output=True, text=True, timeout=60,
                              preexec_fn=as_in_a_terminal)

    def popen(self, *args: str, server: bool = True) -> subprocess.Popen:
        client = subprocess.Popen([self.launcher, *args], cwd=self.work,
                                  env=self.env(server), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  preexec_fn=as_in_a_terminal)
        self.clients.append(client)
        return client

    def start_server(self, **env: str) -> None:
        """Start a server in the background as a client does, from a process that exits
        at once (so no test process is left to reap it)."""
        subprocess.run(
            [sys.executable, "-c", "from katparallel.finesse2.client import "
             "server_paths, start_server; start_server(server_paths())"],
            env=self.env(**env), check=True, timeout=60)

    def listening(self) -> int | None:
        """The pid of the server if it has logged that it listens, else None.

        A server locks, then truncates the log, then imports Finesse, then moves its
        socket into place and logs so: the socket file alone may be a dead server's.
        """
        pid = server_pid(self.paths)
        if pid is None or not os.path.exists(self.paths.socket):
            return None
        try:
            log = self.log
        except FileNotFoundError:
            return None
        return pid if f" {pid} INFO listening on " in log else None

    def wait_for_server(self, timeout: float = 60) -> int:
        """Wait until a server listens; return its pid."""
        wait_for(self.listening, timeout, "a listening server")
        pid = self.listening()
        assert pid is not None and alive(pid)
        return pid

    def start_pipe_run(self, katfile: str = "cav.kat", server: bool = True,
                       ) -> tuple[subprocess.Popen, Path, int]:
        """Start ``kat --pykat=PIPE katfile`` and wait until the pipe exists: the process
        running the kat program then waits for a reader.

        Returns the client, the pipe and the pid of the process running the program:
        the server's worker, checked to be its child, with ``server``, else the client.
        """
        pipe = self.work / "pipe"
        pipe.unlink(missing_ok=True)
        client = self.popen(f"--pykat={pipe}", katfile, server=server)
        wait_for(pipe.exists, 30, "the kat program to create PyKat's pipe")
        if not server:
            return client, pipe, client.pid
        server_id = server_pid(self.paths)
        assert server_id is not None
        workers = children(server_id)
        assert len(workers) == 1, workers
        worker = workers[0]
        assert children(client.pid) == []  # the client runs nothing itself
        # The worker took on the client's standard streams and working directory.
        for fd in (1, 2):
            assert os.readlink(f"/proc/{worker}/fd/{fd}") == os.readlink(
                f"/proc/{client.pid}/fd/{fd}")
        assert os.readlink(f"/proc/{worker}/cwd") == os.path.realpath(self.work)
        return client, pipe, worker

    def pipe_run(self, katfile: str = "cav.kat", server: bool = True,
                 ) -> tuple[subprocess.CompletedProcess, list[str], str | None]:
        """Run ``kat --pykat=PIPE katfile`` as PyKat does; return the finished process,
        the lines read from the pipe and the ``.out`` file's text (None if none)."""
        outfile = self.work / Path(katfile).with_suffix(".out")
        outfile.unlink(missing_ok=True)
        client, pipe, runner = self.start_pipe_run(katfile, server)
        with open(pipe, encoding="utf-8") as fifo:
            lines = fifo.read().splitlines()
        stdout, stderr = client.communicate(timeout=60)
        wait_for(lambda: not alive(runner), 10, "the worker to end")
        done = subprocess.CompletedProcess(client.args, client.returncode, stdout, stderr)
        return done, lines, outfile.read_text() if outfile.exists() else None

    def close(self) -> None:
        """Stop this test's server, and kill anything of this test still running."""
        for client in self.clients:
            if client.poll() is None:
                client.kill()
            client.communicate()
        pid = server_pid(self.paths)
        try:
            stop_server(timeout=15)
        except TimeoutError:
            if pid is not None:
                os.killpg(pid, signal.SIGKILL)  # the server leads its own session
        for leftover in processes_mentioning(self.paths.socket):
            try:
                os.kill(leftover, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not processes_mentioning(self.paths.socket), 10,
                 "this test's processes to end")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a Unix socket's path holds at most 107 bytes."""
    root = Path(tempfile.mkdtemp(prefix="kps-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def kat(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kat]:
    harness = Kat(short_dir / "cache", monkeypatch)
    assert len(os.fsencode(harness.paths.socket)) <= SUN_PATH_MAX, harness.paths.socket
    assert server_pid(harness.paths) is None
    yield harness
    harness.close()


def check_cavity_out(text: str) -> None:
    lines = text.splitlines()
    assert lines[2] == ("%m1 phi [degrees],pcirc Re,pcirc Im,ptrans Re,ptrans Im,"
                        "adt Re,adt Im")
    assert len(lines) == 4 + 7
    tuned = [float(v) for v in lines[4 + 3].split()]  # phi = 0: on resonance
    assert tuned[0] == 0 and tuned[1] > 30  # 2 W times a power gain of about 20


# --- the tests ------------------------------------------------------------------------

def test_first_run_starts_a_server_and_later_runs_go_through_it(kat: Kat) -> None:
    first = kat.run("cav.kat")
    assert (first.returncode, first.stderr) == (0, "")
    assert "FINESSE 2.3.0" in first.stdout
    out = (kat.work / "cav.out").read_text()
    check_cavity_out(out)
    server = kat.wait_for_server()  # started in the background by that first run
    assert processes_mentioning(kat.paths.socket) == [server]

    done, lines, again = kat.pipe_run()  # checks that the server's worker runs it
    assert (done.returncode, done.stderr, done.stdout) == (0, "", first.stdout)
    assert again == out
    assert lines[0].startswith("version:2.3.0-katparallel-finesse")
    assert lines[1:] == ["progress:Calculating\t0\t", "progress:Calculating\t100\t"]
    assert server_pid(kat.paths) == server  # the same server, still serving


def test_results_are_the_same_with_and_without_server(kat: Kat) -> None:
    direct, direct_lines, direct_out = kat.pipe_run(server=False)
    version = kat.run("-v", server=False)
    # KATPARALLEL_KAT_SERVER=0: everything ran in the client, and no server was started.
    assert not os.path.exists(kat.paths.lock)
    assert not os.path.exists(kat.paths.socket)

    kat.start_server()
    kat.wait_for_server()
    served, served_lines, served_out = kat.pipe_run(server=True)
    assert (served.returncode, served.stdout, served.stderr) == (
        direct.returncode, direct.stdout, direct.stderr) == (0, direct.stdout, "")
    assert served_lines == direct_lines
    assert served_out == direct_out
    check_cavity_out(served_out)
    assert kat.run("-v").stdout == version.stdout


def test_failures_are_reported_the_same_with_and_without_server(kat: Kat) -> None:
    (kat.work / "bad.kat").write_text(BAD_KAT)
    kat.start_server()  # it imports Finesse while the direct runs below do too
    cases = [["missing.kat"], ["--trace", "cav.kat"], ["-format=%d %d", "cav.kat"]]
    direct = [kat.run(*args, server=False) for args in cases]
    direct_pipe = kat.pipe_run("bad.kat", server=False)
    kat.wait_for_server()
    served = [kat.run(*args) for args in cases]
    served_pipe = kat.pipe_run("bad.kat", server=True)  # checks the worker runs it

    for args, a, b in zip(cases, direct, served):
        assert (b.returncode, b.stdout, b.stderr) == (a.returncode, a.stdout, a.stderr)
        assert a.returncode == 1 and a.stderr.startswith("*** Error:"), args
    (a, a_lines, a_out), (b, b_lines, b_out) = direct_pipe, served_pipe
    assert (b.returncode, b.stdout, b.stderr) == (a.returncode, a.stdout, a.stderr)
    assert a.returncode == 1 and "line 2: foo bar" in a.stderr
    assert b_lines == a_lines and len(a_lines) == 1  # the version line only
    assert a_out is None and b_out is None


def test_a_killed_server_leaves_a_stale_socket_that_runs_survive(kat: Kat) -> None:
    kat.start_server()
    old = kat.wait_for_server()
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not alive(old), 10, "the killed server to die")
    assert os.path.exists(kat.paths.socket)  # left behind, refusing connections
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(kat.paths.socket)

    first = kat.run("cav.kat")  # runs in the client, and starts a new server
    assert (first.returncode, first.stderr) == (0, "")
    check_cavity_out((kat.work / "cav.out").read_text())
    new = kat.wait_for_server()
    assert new != old
    done, _, out = kat.pipe_run()
    assert (done.returncode, done.stdout, done.stderr) == (0, first.stdout, "")
    check_cavity_out(out)
    assert "removing the stale socket" in kat.log

    assert stop_server() is True
    assert not alive(new)
    assert not os.path.exists(kat.paths.socket) and server_pid(kat.paths) is None
    assert stop_server() is False


def test_clients_started_at_once_leave_one_server(kat: Kat) -> None:
    count = 4
    for i in range(count):
        (kat.work / f"cav{i}.kat").write_text(CAVITY)
    clients = [kat.popen(f"cav{i}.kat") for i in range(count)]
    results = [client.communicate(timeout=60) for client in clients]
    assert [c.returncode for c in clients] == [0] * count
    assert all(err == "" and out == results[0][0] for out, err in results)
    outs = {(kat.work / f"cav{i}.out").read_text().split("\n", 2)[2] for i in range(count)}
    assert len(outs) == 1  # the same table, below a header naming each input file
    server = kat.wait_for_server()
    # Servers that lost the race for the lock exit without importing Finesse.
    wait_for(lambda: processes_mentioning(kat.paths.socket) == [server], 10,
             f"one server left, pid {server}")
    time.sleep(0.2)
    assert processes_mentioning(kat.paths.socket) == [server]


def test_a_client_checking_for_a_server_does_not_stop_one_starting(kat: Kat) -> None:
    # server_pid() holds a shared lock on the lock file for an instant; a server
    # starting meanwhile must not take that for another server and give up.
    os.makedirs(os.path.dirname(kat.paths.lock), exist_ok=True)
    fd = os.open(kat.paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        kat.start_server()
        time.sleep(0.3)  # the server has started and tried to lock by now
    finally:
        os.close(fd)
    wait_for(lambda: server_pid(kat.paths) is not None, 10, "the server to lock")
    pid = server_pid(kat.paths)
    assert pid is not None and alive(pid)
    assert stop_server() is True  # also while it is still importing Finesse
    assert not alive(pid)


def test_stop_server_lets_runs_end(kat: Kat) -> None:
    kat.start_server()
    server = kat.wait_for_server()
    client, pipe, worker = kat.start_pipe_run()
    stopper = subprocess.Popen(
        [sys.executable, "-m", "katparallel.finesse2", "--stop-server"],
        env=kat.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # It stops taking runs at once (new clients find no socket) ...
    wait_for(lambda: not os.path.exists(kat.paths.socket), 10, "the socket to go")
    time.sleep(0.1)
    assert alive(server) and alive(worker) and stopper.poll() is None
    # ... and exits when the run it has taken ends.
    with open(pipe, encoding="utf-8") as fifo:
        assert fifo.read().startswith("version:")
    out, err = client.communicate(timeout=60)
    assert (client.returncode, err) == (0, "")
    check_cavity_out((kat.work / "cav.out").read_text())
    assert stopper.communicate(timeout=30) == ("stopped katparallel's kat server\n", "")
    assert stopper.returncode == 0
    assert not alive(server) and server_pid(kat.paths) is None
    again = kat.run("--stop-server")  # the launcher takes the same option
    assert (again.returncode, again.stdout) == (
        0, "no katparallel kat server was running\n")


def test_server_exits_when_idle(kat: Kat) -> None:
    kat.start_server(**{ENV_IDLE: "0.02"})  # 1.2 s
    server = kat.wait_for_server()
    wait_for(lambda: not alive(server), 30, "the idle server to exit")
    assert not os.path.exists(kat.paths.socket) and server_pid(kat.paths) is None
    assert "without runs" in kat.log


def test_signals_reach_the_run_as_without_server(kat: Kat) -> None:
    kat.start_server()  # it imports Finesse while the direct runs do too
    outcomes = {}
    for server in (False, True):
        if server:
            kat.wait_for_server()
        for signum in (signal.SIGTERM, signal.SIGINT):
            client, pipe, runner = kat.start_pipe_run(server=server)
            client.send_signal(signum)
            _, err = client.communicate(timeout=30)
            wait_for(lambda: not alive(runner), 10, "the run to end")
            lines = err.strip().splitlines()
            outcomes[server, signum] = (client.returncode, lines[-1:])
            if server:  # the worker itself died by the signal
                assert f"worker {runner} was killed by signal {signum:d}\n" in kat.log
    assert outcomes[False, signal.SIGTERM] == (-signal.SIGTERM, [])
    assert outcomes[False, signal.SIGINT] == (-signal.SIGINT, ["KeyboardInterrupt"])
    assert outcomes[True, signal.SIGTERM] == outcomes[False, signal.SIGTERM]
    assert outcomes[True, signal.SIGINT] == outcomes[False, signal.SIGINT]


# A client that receives SIGNUM right after sending its request, before the server has
# named the worker: the window a loaded machine opens between the two.
SIGNAL_AFTER_REQUEST = """
import os, signal, sys
from katparallel.finesse2 import client
send = client._send_request
def send_then_signal(sock, argv):
    send(sock, argv)
    os.kill(os.getpid(), int(os.environ["SIGNUM"]))
client._send_request = send_then_signal
sys.exit(client.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_the_worker_is_named_reaches_the_worker(
        kat: Kat, signum: int) -> None:
    kat.start_server()
    kat.wait_for_server()
    # The run waits for a reader of PyKat's pipe before it reads the model: Finesse's
    # legacy parser wraps node tagging in a bare `except: pass`, which would swallow
    # a KeyboardInterrupt landing there (in a direct run too).
    client = subprocess.run(
        [sys.executable, "-c", SIGNAL_AFTER_REQUEST, f"--pykat={kat.work / 'pipe'}", "cav.kat"],
        cwd=kat.work,
        env=kat.env(SIGNUM=str(int(signum))), capture_output=True, text=True, timeout=60,
        preexec_fn=as_in_a_terminal)
    assert client.returncode == -signum, client.stderr
    if signum == signal.SIGINT:
        assert client.stderr.strip().splitlines()[-1] == "KeyboardInterrupt"
    # The worker died by the signal itself, not by SIGIO when its client went away
    # (the server logs that before it tells the client).
    assert f"was killed by signal {signum:d}\n" in kat.log, kat.log
    assert not (kat.work / "cav.out").exists()


def test_killed_client_kills_its_worker_killed_server_fails_its_run(kat: Kat) -> None:
    kat.start_server()
    server = kat.wait_for_server()
    client, pipe, worker = kat.start_pipe_run()
    client.kill()
    client.communicate()
    # Well before the 10 s the worker would wait for a reader of the pipe.
    # Killed by SIGIO; without it, the worker would exit by itself after waiting 10 s
    # for a reader of the pipe.
    killed = f"worker {worker} was killed by signal {signal.SIGIO:d}"
    wait_for(lambda: killed in kat.log, 20, "the server to reap the killed worker")
    assert not alive(worker)
    done, _, out = kat.pipe_run()  # the server still serves
    assert done.returncode == 0
    check_cavity_out(out)
    assert server_pid(kat.paths) == server

    # The other way round: the server and its worker killed during a run.
    client, pipe, worker = kat.start_pipe_run()
    os.killpg(server, signal.SIGKILL)  # the server leads its own process group
    out, err = client.communicate(timeout=30)
    assert client.returncode == 1
    assert f"worker (pid {worker}) ended without reporting" in err
    wait_for(lambda: not alive(server) and not alive(worker), 10, "both to die")


def test_no_server_when_the_socket_path_is_too_long(
        short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Kat(short_dir / ("c" * 100), monkeypatch)
    try:
        assert len(os.fsencode(harness.paths.socket)) > SUN_PATH_MAX
        done = harness.run("cav.kat")
        assert (done.returncode, done.stderr) == (0, "")
        check_cavity_out((harness.work / "cav.out").read_text())
        # No server was started: it could never listen on that socket.
        assert os.listdir(harness.launcher.parent) == ["kat"]
        assert processes_mentioning(harness.paths.socket) == []
    finally:
        harness.close()


ELSEWHERE = """
import sys
from katparallel.finesse2 import client
client.SERVER_PLATFORM = False  # as on macOS and Windows: no epoll, no SO_PEERCRED
sys.exit(client.main(sys.argv[1:]))
"""


def test_where_the_server_cannot_work_every_run_is_its_own_process(kat: Kat) -> None:
    done = subprocess.run([sys.executable, "-c", ELSEWHERE, "cav.kat"], cwd=kat.work,
                          env=kat.env(), capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    check_cavity_out((kat.work / "cav.out").read_text())
    assert not os.path.exists(kat.paths.lock)  # no server was started, nor tried
    assert processes_mentioning(kat.paths.socket) == []
