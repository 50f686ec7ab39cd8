"""Parsed Finesse models on disk: parse a big model once per machine, not once per process.

Parsing KatScript is the biggest fixed cost of a study on a real detector: the
aLIGO design model parses in 2-4 s, in the parent and again in every worker
of a fresh pool. Loading the same model with dill takes about a tenth of that.
So a model that took long to parse is pickled as soon as it is parsed (before
any job changes it), and written from a background thread before a run whose
workers would read it, or else after the run (workers forked from the parent
inherit the model and need no copy); workers and later sessions load it
instead of parsing::

    parent: parse (4 s) ─► pickle (2 s) ─► run on forked workers ─► results ─► thread: save
    parent: parse (4 s) ─► pickle (2 s) ─► thread: save ─► run on other workers ─► results
    save:   check that the pickle loads back as the parse (0.2 s), write, fsync, rename
    worker: load (0.2 s) if the file is there and ours, else parse

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
turn the cache off; it is off where ownership cannot be checked (Windows).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import dill

LOGGER = logging.getLogger(__name__)

__all__ = (
    "Entry", "MIN_PARSE_SECONDS", "Unsaved", "cache_dir", "entry_key", "load", "recording_notes",
    "save_in_background", "source_digest", "unsaved",
)

#: Models that parse faster than this are not cached (loading would not pay).
MIN_PARSE_SECONDS = 0.3
#: Most entries kept; the least recently used go first.
MAX_ENTRIES = 32
#: A partial write (``.writing-*``) older than this was left by a process that died.
STALE_WRITE_SECONDS = 3600.0
# Pickling a big model recurses deeply (dill needs a recursion limit of 1600-1900
# for the aLIGO model: benchmarks/modelcache_costs.py): a thread with a stack of
# its own does it while the thread that asked waits, having raised the limit.
_STACK_BYTES = 256 * 1024 * 1024
_RECURSION_LIMIT = 50_000
_LOCK = threading.Lock()
_SAID: set[str] = set()
_CAN_CHECK = hasattr(os, "O_NOFOLLOW") and hasattr(os, "getuid") and os.open in os.supports_dir_fd

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


@dataclass(frozen=True)
class Unsaved:
    """A freshly parsed model, pickled before any job ran on it, not yet on disk.

    ``fingerprint(model)`` must be the same for the parse and for the model
    the pickle loads back as; else nothing is written.
    """

    key: str
    data: bytes
    expected: Any
    fingerprint: Callable[[Any], Any]


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
def unsaved(
    key: str, model: Any, notes: list[Note], fingerprint: Callable[[Any], Any]
) -> Unsaved | None:
    """Pickle a freshly parsed ``model`` and its ``notes`` now, for a later
    :func:`save_in_background`; None if it cannot be pickled (it is then not cached).

    The pickling runs on a thread with a big stack while this thread waits; this
    thread raises the recursion limit for it and puts it back.
    """
    if not enabled():
        return None
    done: dict[str, Any] = {}

    def pickle() -> None:
        try:
            done["data"] = dill.dumps({"model": model, "notes": list(notes)})
        except BaseException as exc:  # noqa: BLE001 - e.g. RecursionError: not cached
            done["error"] = exc

    thread = _big_stack_thread(pickle, "katparallel-model-pickle")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, _RECURSION_LIMIT))
    try:
        thread.start()
        thread.join()
    except RuntimeError as exc:  # can't start new thread
        done["error"] = exc
    finally:
        sys.setrecursionlimit(limit)
    if "data" not in done:
        LOGGER.debug("could not pickle model %s: %s", key[:12], done.get("error"))
        return None
    return Unsaved(key, done["data"], fingerprint(model), fingerprint)


def _big_stack_thread(target: Callable[[], None], name: str) -> threading.Thread:
    with _LOCK:  # stack_size applies to threads created after it: set and restore together
        previous = threading.stack_size(_STACK_BYTES)
        try:
            return threading.Thread(target=target, name=name)
        finally:
            threading.stack_size(previous)


def save_in_background(entry: Unsaved) -> threading.Thread | None:
    """Write ``entry`` from a background thread; return the thread (None if
    the cache is off or no thread could start: only the speed-up is lost)."""
    if not enabled():
        return None
    # Not a daemon: a script that ends right after its run still leaves
    # the model cached (its exit waits for the write).
    thread = threading.Thread(target=_save, args=(entry,), daemon=False,
                              name="katparallel-model-cache")
    try:
        thread.start()
    except RuntimeError as exc:  # can't start new thread
        LOGGER.debug("could not start writing model %s: %s", entry.key[:12], exc)
        return None
    return thread


def _save(entry: Unsaved) -> None:
    try:
        loaded = dill.loads(entry.data)["model"]
        if entry.fingerprint(loaded) != entry.expected:
            LOGGER.debug("model %s does not load back as parsed; not cached", entry.key[:12])
            return
        _write(cache_dir(), f"{entry.key}.dill", entry.data)
    except Exception as exc:  # noqa: BLE001 - only the speed-up is lost
        LOGGER.debug("could not cache model %s: %s", entry.key[:12], exc)


def _write(folder: Path, name: str, data: bytes) -> None:
    """Write durably and atomically (temporary file, fsync, rename), owner-only; prune."""
    _private_folder(folder)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".writing-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, folder / name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder_fd)  # the rename itself survives a crash
    finally:
        os.close(folder_fd)
    _prune(folder)


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
