"""Parsed Finesse models on disk: parse a big model once per machine, not once per process.

Parsing KatScript is the biggest fixed cost of a study on a real detector: the
aLIGO design model parses in 2-4 s, in the parent and again in every worker
of a fresh pool. Loading the same model with dill takes about a tenth of that.
So right after a slow parse the parent forks a child, whose copy-on-write
snapshot holds the model as parsed whatever jobs later do to it; the parent
goes on at once. The child pickles the model, checks that it loads back as
parsed, writes it to a temporary file and ends. The entry gets its name (a
rename) when the parent says so: before a run whose workers would read it
(the parent waits for the child), or after the run (workers forked from the
parent inherit the model and need no copy; the child gives way to them), or
when the parent lets go of the model. The child names the file if it hears
that before it ends, else the parent does. Workers and later sessions load
it instead of parsing::

    parent: parse (4 s) ─► fork (0.1 s) ─► run on forked workers ─► results ─► name it
    child:      pickle, check, write (2 s; gives way to the workers) ─► end
    parent: parse (4 s) ─► fork ─► "name it", wait ─► run on other workers ─► results
    child:      pickle, check, write (2 s) ─► name ─┘
    write:  temporary file, fsync; name: rename, fsync the folder, prune
    worker: load (0.2 s) if the file is there and ours, else parse

The child is forked by a middle process that the parent reaps at once, so it
is never the parent's zombie. It runs no simulation (a forked process that
runs OpenMP after its parent did can hang in libgomp), none of the parent's
signal handlers, and never returns into the parent's code. A fork that
fails, or a child that dies, only loses the entry.

An entry is keyed by the model text, its syntax, the versions of Python,
Finesse, dill and numpy, and a digest of katparallel's own source files, so a
change to any of them (an upgrade, a ``git pull``) means a parse. It holds the
model and the notes its parse logged (Finesse 2 quirks), said again on a load.
An entry is loaded only if it is a regular file, not a link, owned by the
user, in a folder of the user's that no one else can write: anyone who could
plant a file there would run code in every process that loads it. Entries are
written atomically and durably (a reader sees a whole file or none), readable
only by their owner; beyond :data:`MAX_ENTRIES` the least recently used go.
A failure anywhere only means a parse. Set ``KATPARALLEL_MODEL_CACHE=0`` to
turn the cache off; it is off where ownership cannot be checked or a process
not forked (Windows).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import select
import signal
import socket
import stat
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn

import dill

LOGGER = logging.getLogger(__name__)

__all__ = (
    "Entry", "MIN_PARSE_SECONDS", "Saving", "cache_dir", "entry_key", "load", "recording_notes",
    "save_in_child", "source_digest",
)

#: Models that parse faster than this are not cached (loading would not pay).
MIN_PARSE_SECONDS = 0.3
#: Most entries kept; the least recently used go first.
MAX_ENTRIES = 32
#: A partial write (``.writing-*``) older than this was left by a process that died.
STALE_WRITE_SECONDS = 3600.0
#: A child still writing after this long when its entry is awaited is stopped.
SETTLE_SECONDS = 300.0
# Pickling a big model recurses deeply (dill needs a recursion limit of 1600-1900
# for the aLIGO model: benchmarks/modelcache_costs.py); the child that pickles
# raises its own limit (a crash there only loses the entry).
_RECURSION_LIMIT = 50_000
_SAY_BYTES = select.PIPE_BUF - 1  # a line from the child: one atomic pipe write
_WRITTEN = "written"
# A word to a child that is gone must not kill this process (a user's SIGPIPE set
# to its default action) where the flag exists (Linux); elsewhere SIGPIPE is ignored.
_NO_SIGPIPE = getattr(socket, "MSG_NOSIGNAL", 0)
_SAID: set[str] = set()
_CAN_CHECK = (hasattr(os, "O_NOFOLLOW") and hasattr(os, "getuid") and hasattr(os, "fork")
              and os.open in os.supports_dir_fd)

#: A note a parse logged: ``(logger name, level, message)``.
Note = tuple[str, int, str]


@dataclass(frozen=True)
class Entry:
    """A model loaded from the cache and the notes its parse logged."""

    model: Any
    notes: tuple[Note, ...]

    def replay_notes(self) -> None:
        """Log the notes again, as the parse did."""
        for name, level, message in self.notes:
            logging.getLogger(name).log(level, "%s", message)


def enabled() -> bool:
    """False when ``KATPARALLEL_MODEL_CACHE=0``, or where a file's owner cannot be
    checked or a link not followed (Windows)."""
    return _CAN_CHECK and os.environ.get("KATPARALLEL_MODEL_CACHE", "1") != "0"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/katparallel/models`` (default ``~/.cache/katparallel/models``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "katparallel" / "models"


@functools.cache
def source_digest() -> str:
    """A digest of katparallel's own source files (computed once per process)."""
    return _digest_of(Path(__file__).resolve().parents[1])


def _digest_of(package: Path) -> str:
    """SHA-256 of every ``.py`` file under ``package``: their paths and contents."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def entry_key(text: str, syntax: str) -> str:
    """The cache key of ``text`` read as ``syntax`` by this Python, Finesse, dill,
    numpy and katparallel source."""
    import finesse
    import numpy

    versions = "|".join((sys.version, finesse.__version__, dill.__version__, numpy.__version__,
                         source_digest(), syntax))
    return hashlib.sha256((versions + "\n" + text).encode()).hexdigest()


@contextlib.contextmanager
def recording_notes(logger: logging.Logger) -> Iterator[list[Note]]:
    """Collect what this thread logs on ``logger`` at WARNING or above inside the
    block (the records are still logged as usual)."""
    notes: list[Note] = []
    me = threading.get_ident()

    def record(rec: logging.LogRecord) -> bool:
        if rec.thread == me and rec.levelno >= logging.WARNING:
            notes.append((rec.name, rec.levelno, rec.getMessage()))
        return True

    logger.addFilter(record)
    try:
        yield notes
    finally:
        logger.removeFilter(record)


# ------------------------------------------------------------------ reading
class _Untrusted(Exception):
    """An entry or folder that someone else could have written."""


def load(key: str) -> Entry | None:
    """The entry stored under ``key``, or None (absent, not safely ours, broken,
    or the cache is off)."""
    if not enabled():
        return None
    name = f"{key}.dill"
    try:
        data = _read_private(cache_dir(), name)
    except FileNotFoundError:
        return None
    except _Untrusted as exc:
        _say_once(f"ignored cached model {name[:12]}: {exc}")
        return None
    except OSError as exc:
        _say_once(f"could not read cached model {name[:12]}: {exc}")
        return None
    try:
        stored = dill.loads(data)
        return Entry(stored["model"], tuple(stored["notes"]))
    except Exception as exc:  # noqa: BLE001 - a stale or broken entry: parse instead
        _say_once(f"could not load cached model {name[:12]}: {type(exc).__name__}: {exc}")
        return None


def _read_private(folder: Path, name: str) -> bytes:
    """The bytes of ``folder/name`` if both are ours alone; touch it (it was used)."""
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _check_private(os.fstat(folder_fd), "its folder")
        try:  # no link followed; a FIFO planted there must not block the open
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Untrusted("it is a symbolic link") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _Untrusted("it is not a regular file")
            _check_private(info, "it")
            with open(fd, "rb", closefd=False) as handle:
                data = handle.read()
            with contextlib.suppress(OSError):  # e.g. a read-only file system
                os.utime(fd)  # used now: the least recently used go first
        finally:
            os.close(fd)
    finally:
        os.close(folder_fd)
    return data


def _check_private(info: os.stat_result, what: str) -> None:
    if info.st_uid != os.getuid():
        raise _Untrusted(f"{what} is owned by user {info.st_uid}, not by this user ({os.getuid()})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _Untrusted(f"{what} can be written by others (mode {stat.filemode(info.st_mode)})")


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        LOGGER.debug(message)


# ------------------------------------------------------------------ writing
class Saving:
    """A child process caching a fresh parse, as the parent sees it.

    The child pickles the model right away, writes it to a temporary file and
    ends; the entry gets its name once the parent says so (:meth:`start`) or
    lets go of this object (drops it, or exits): by the child, if it hears
    that before it ends, else here (a rename). It is forked through a
    short-lived middle process that this one reaps at once: the writer is
    nobody's child here, so it leaves no zombie and no ``os.wait()`` of the
    caller's ever returns it.
    """

    def __init__(self, key: str, go: int, done: int):
        self.key = key
        self._link = _Link(key, go, done)
        weakref.finalize(self, self._link.let_go)
        self._link.listen(0.0)  # the middle process said the writer's id before it ended
        self.pid = self._link.pid()

    def start(self) -> None:
        """Have the entry written now (this does not wait for the child)."""
        self._link.tell()

    def make_way(self) -> None:
        """Let the child run only on CPU time that no one else here wants (a run
        whose workers need every core starts now, and does not wait for it)."""
        if self.pid and not self._link.listen(0.0):  # running: the id is still its
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, self.pid, 19)

    def wait(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for the child to end; True if it has."""
        return self._link.listen(timeout)

    def settle(self) -> None:
        """:meth:`start`, and wait until the entry is written (or not). A child
        still at it after :data:`SETTLE_SECONDS` is stopped: only the entry is lost."""
        self.start()
        if not self.wait(SETTLE_SECONDS) and self.pid:
            LOGGER.debug("model %s not cached after %.0f s; its writer is stopped",
                         self.key[:12], SETTLE_SECONDS)
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)


class _Link:
    """The parent's ends of the pipes to one writer, and what came through.

    Lines come from the child: ``pid N`` (from the middle process), then
    ``written``, or ``temp PATH`` (written there, named by the parent), or why
    it did not cache the model. End of file: the writer is gone.
    """

    def __init__(self, key: str, go: int, done: int):
        self.key = key
        self.go: int | None = go
        self.done: int | None = done
        self.heard = b""
        self.told = False
        self.owner = os.getpid()  # a forked copy (a worker, a writer) leaves the link alone

    def pid(self) -> int:
        return next((int(line[4:]) for line in self._lines() if line.startswith("pid ")), 0)

    def tell(self) -> None:
        """Say "write now" (the end of file says it too)."""
        self.told = True
        if self.go is not None:
            with socket.socket(fileno=self.go) as go, contextlib.suppress(OSError):
                go.send(b"w", _NO_SIGPIPE)  # the child is gone: it said what it did
            self.go = None
        self._name_it()

    def listen(self, timeout: float) -> bool:
        """Read what the child says for at most ``timeout`` s; True once it is gone."""
        deadline = time.monotonic() + timeout
        while self.done is not None:
            waiting = select.poll()  # not select(): any file number
            waiting.register(self.done, select.POLLIN)
            if not waiting.poll(max(deadline - time.monotonic(), 0.0) * 1000):
                return False
            heard = os.read(self.done, 4096)
            self.heard += heard
            self._name_it()
            if not heard:
                os.close(self.done)
                self.done = None
                said = [ln for ln in self._lines() if not ln.startswith("pid ")]
                if not said or not said[0].startswith(("temp ", _WRITTEN)):
                    LOGGER.debug("model %s %s", self.key[:12],
                                 " ".join(said) or "not cached: its writer died")
        return True

    def let_go(self) -> None:
        """The parent is done with the model (a finalizer): have it written."""
        if os.getpid() != self.owner:  # its file numbers may name other files here
            return
        self.tell()
        self.listen(0.0)
        if self.done is not None:
            os.close(self.done)
            self.done = None

    def _name_it(self) -> None:
        """Once told, give the child's temporary file its name, if it left that to us."""
        temporary = next((ln[5:] for ln in self._lines() if ln.startswith("temp ")), None)
        if self.told and temporary is not None:
            line = f"temp {temporary}\n".encode()
            self.heard = self.heard.replace(line, f"{_WRITTEN}\n".encode())  # named once
            try:
                _name(temporary, Path(temporary).parent / f"{self.key}.dill")
            except OSError as exc:
                LOGGER.debug("could not cache model %s: %s", self.key[:12], exc)

    def _lines(self) -> list[str]:
        return self.heard.decode(errors="replace").split("\n")[:-1]  # whole lines


def _close_all(fds: list[int]) -> None:
    while fds:
        with contextlib.suppress(OSError):
            os.close(fds.pop())


def save_in_child(
    key: str, model: Any, notes: list[Note], fingerprint: Callable[[Any], Any]
) -> Saving | None:
    """Fork a child that caches the freshly parsed ``model`` and its ``notes``;
    None if the cache is off or no process could start (only the speed-up is lost).

    The child has a copy-on-write snapshot of this process as it is now, so it
    pickles the parse whatever jobs do to ``model`` here, and this process goes
    on at once. It writes only if ``fingerprint`` is the same for ``model`` and
    for what the pickle loads back as. It runs no simulation (a forked process
    that runs OpenMP after its parent did can hang in libgomp).
    """
    if not enabled():
        return None
    go_read, go_write = (end.detach() for end in socket.socketpair())
    done_read, done_write = os.pipe()
    try:
        middle = os.fork()
    except OSError as exc:
        _close_all([go_read, go_write, done_read, done_write])
        LOGGER.debug("could not start caching model %s: %s", key[:12], exc)
        return None
    if middle == 0:
        try:
            writer = os.fork()
            if writer == 0:
                _child(key, model, notes, fingerprint, go_read, done_write)
            os.write(done_write, f"pid {writer}\n".encode())
        finally:
            os._exit(0)  # never back into the caller's code, its atexit or its buffers
    _close_all([go_read, done_write])
    with contextlib.suppress(ChildProcessError):  # e.g. SIGCHLD ignored: reaped already
        os.waitpid(middle, 0)
    return Saving(key, go_write, done_read)


def _child(key: str, model: Any, notes: list[Note], fingerprint: Callable[[Any], Any],
           go: int, done: int) -> NoReturn:
    """The writer: pickle, check, write a temporary file; name it if the parent
    said the word (or is gone), else leave that to the parent."""
    said = "not cached: stopped"
    try:
        _detach(keep=(go, done))
        sys.setrecursionlimit(_RECURSION_LIMIT)  # its own process: nobody else sees it
        expected = fingerprint(model)
        data = dill.dumps({"model": model, "notes": list(notes)})
        if fingerprint(dill.loads(data)["model"]) != expected:
            said = "does not load back as parsed; not cached"
        else:
            temporary = _write_temporary(cache_dir(), data)
            told = select.poll()
            told.register(go, select.POLLIN)
            if told.poll(0):  # the word, or the parent's end: name it now
                _name(temporary, Path(temporary).parent / f"{key}.dill")
                said = _WRITTEN
            else:  # the parent names it when it says the word
                said = f"temp {temporary}"
    except BaseException as exc:  # noqa: BLE001 - e.g. RecursionError: not cached
        said = f"not cached: {type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(BaseException):
            os.write(done, said.encode()[:_SAY_BYTES] + b"\n")
        os._exit(0)


def _detach(keep: tuple[int, int]) -> None:
    """In the child: none of the parent's signal handlers (a user's SIGTERM handler
    that saves results) nor its files (a pool's pipes, whose workers must see the
    parent exit); SIGINT ignored (a Ctrl-C for the parent); stdio on /dev/null."""
    for signum in signal.valid_signals():
        if callable(signal.getsignal(signum)):
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a parent gone: its status is lost, no more
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    low, high = sorted(keep)
    os.closerange(3, low)
    os.closerange(low + 1, high)
    os.closerange(high + 1, os.sysconf("SC_OPEN_MAX"))


def _write_temporary(folder: Path, data: bytes) -> str:
    """Write ``data`` durably (fsync) to a new owner-only temporary file in
    ``folder``, created for this user alone if need be; its path."""
    _private_folder(folder)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".writing-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary


def _name(temporary: str, path: Path) -> None:
    """Give a written temporary file its name, atomically and durably; prune."""
    os.replace(temporary, path)
    folder_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder_fd)  # the rename itself survives a crash
    finally:
        os.close(folder_fd)
    _prune(path.parent)


def _private_folder(folder: Path) -> None:
    """Create ``folder`` for this user alone, or check that an existing one is so."""
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        _check_private(os.stat(folder), "the cache folder")  # refused, never loosened or chmod-ed
    else:
        os.chmod(folder, 0o700)


def _prune(folder: Path) -> None:
    """Remove partial writes older than :data:`STALE_WRITE_SECONDS` and the least
    recently used entries beyond :data:`MAX_ENTRIES`."""
    now = time.time()
    entries = []
    for path in folder.iterdir():
        try:
            mtime = path.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:  # another process removed it
            continue
        if path.name.startswith(".writing-") and now - mtime > STALE_WRITE_SECONDS:
            path.unlink(missing_ok=True)
        elif path.suffix == ".dill":
            entries.append((mtime, path))
    entries.sort()
    for _, old in entries[:-MAX_ENTRIES]:
        old.unlink(missing_ok=True)
