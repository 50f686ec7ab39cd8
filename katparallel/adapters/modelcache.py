"""Parsed Finesse models on disk: parse a big model once per machine, not once per process.

Parsing KatScript is the biggest fixed cost of a study on a real detector: the
aLIGO design model parses in 2-3 s, in the parent and again in every worker
of a fresh pool. Loading the same model with dill takes about a tenth of that.
So a model that took long to parse is written here from a background thread,
before a run whose workers would read it, or else after the run (workers
forked from the parent inherit the model and need no copy); workers and later
sessions load it instead of parsing::

    parent: parse (2 s) ─► check paths ─► run on forked workers ─► results ─► thread: save
    parent: parse (2 s) ─► check paths ─► thread: save ─► run on other workers ─► results
    save:   dill.dumps (1-2 s), check that it loads back identical, write atomically
    worker: load (0.25 s) if the file is there, else parse

Entries are keyed by the model text and the versions of Python, Finesse, dill
and katparallel, written atomically (a reader sees a whole file or none) and
readable only by their owner; the oldest are removed beyond
:data:`MAX_ENTRIES`. A failure anywhere only means a parse. Set
``KATPARALLEL_MODEL_CACHE=0`` to turn the cache off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

import dill

LOGGER = logging.getLogger(__name__)

__all__ = ("cache_dir", "entry_key", "load", "save_in_background", "MIN_PARSE_SECONDS")

#: Models that parse faster than this are not cached (loading would not pay).
MIN_PARSE_SECONDS = 0.3
#: Most entries kept; the least recently written go first.
MAX_ENTRIES = 32
# Pickling a big model recurses deeply: a thread with a stack of its own.
_STACK_BYTES = 256 * 1024 * 1024
_RECURSION_LIMIT = 50_000
_LOCK = threading.Lock()


def enabled() -> bool:
    """False when ``KATPARALLEL_MODEL_CACHE=0``."""
    return os.environ.get("KATPARALLEL_MODEL_CACHE", "1") != "0"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/katparallel/models`` (default ``~/.cache/katparallel/models``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "katparallel" / "models"


def entry_key(text: str, syntax: str) -> str:
    """The cache key of ``text`` read as ``syntax`` with the installed versions."""
    import finesse

    from .. import __version__

    versions = f"{sys.version}|{finesse.__version__}|{dill.__version__}|{__version__}|{syntax}"
    return hashlib.sha256((versions + "\n" + text).encode()).hexdigest()


def load(key: str) -> Any | None:
    """The model stored under ``key``, or None (absent, unreadable, or the cache is off)."""
    path = cache_dir() / f"{key}.dill"
    if not enabled() or not path.is_file():
        return None
    try:
        return dill.loads(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - a stale or broken entry: parse instead
        LOGGER.debug("could not load cached model %s: %s", path.name, exc)
        return None


def save_in_background(key: str, model: Any, same: Callable[[Any, Any], bool]) -> threading.Thread | None:
    """Write ``model`` under ``key`` from a background thread; return the thread.

    ``same(model, loaded)`` must confirm that the pickle loads back as the
    same model, else nothing is written. The caller must not change ``model``
    until the thread has finished (:meth:`threading.Thread.join`).
    """
    if not enabled() or (cache_dir() / f"{key}.dill").is_file():
        return None
    with _LOCK:  # stack_size applies to threads created after it: set and restore together
        previous = threading.stack_size(_STACK_BYTES)
        try:
            # Not a daemon: a script that ends right after its run still leaves
            # the model cached (its exit waits for the write).
            thread = threading.Thread(target=_save, args=(key, model, same), daemon=False,
                                      name="katparallel-model-cache")
            thread.start()
        finally:
            threading.stack_size(previous)
    return thread


def _save(key: str, model: Any, same: Callable[[Any, Any], bool]) -> None:
    try:
        data = _dumps(model)
        if not same(model, dill.loads(data)):
            LOGGER.debug("model %s does not load back identical; not cached", key[:12])
            return
        _write(cache_dir(), f"{key}.dill", data)
    except Exception as exc:  # noqa: BLE001 - only the speed-up is lost
        LOGGER.debug("could not cache model %s: %s", key[:12], exc)


def _dumps(model: Any) -> bytes:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, _RECURSION_LIMIT))
    try:
        return dill.dumps(model)
    finally:
        sys.setrecursionlimit(limit)


def _write(folder: Path, name: str, data: bytes) -> None:
    """Write atomically (temporary file, then rename), owner-only, and prune old entries."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".writing-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, folder / name)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    entries = sorted(folder.glob("*.dill"), key=lambda p: p.stat().st_mtime)
    for old in entries[:-MAX_ENTRIES]:
        old.unlink(missing_ok=True)
