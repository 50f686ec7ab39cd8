"""Checkpoint store: every finished job on disk, so a study outlives its process.

``Ensemble.run(store="study.db")`` commits each chunk's results (or failures)
to an SQLite database in WAL mode, one transaction per chunk, as it arrives.
Running the same study with the same store again runs only the jobs the store
lacks, and the results are those of one uninterrupted run::

    ChunkResult ──Store.add──► study.db ──Store.load_into──► Collector

The store holds the study's definition (model text, plan, seed, analysis,
versions); resuming a different study is refused. One process writes a store
at a time: the writer holds an exclusive lock on ``<store>.lock`` (``flock`` on
Linux and macOS, ``msvcrt.locking`` on Windows), which the operating system
releases when the process dies, even by SIGKILL.
Readers (``katparallel show``) need no lock.

Schema (``PRAGMA application_id`` = :data:`APPLICATION_ID`)::

    meta(key, value)                          the definition, JSON values
    plan_values(axis, position, path, data)   each axis's values (.npy bytes)
    chunks(id, n, indices, params)            job indices and parameter values
    outputs(chunk, name, data)                each output, stacked per chunk
    output_axes(name, position, dim, data)    an output's own axes (e.g. xaxis)
    failures(job, params, type, message, traceback)

A job's random numbers come from the study seed and its index alone (see
:func:`katparallel.sampling.job_rng`), so the seed in ``meta`` is every job's seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import functools
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import KatParallelError
from .plan import Axis, Plan
from .errors import Failure
from .jobs import ChunkResult

LOGGER = logging.getLogger(__name__)

__all__ = (
    "Store",
    "StoreError",
    "StoreLocked",
    "StudyMismatch",
    "describe_analysis",
    "plan_hash",
    "study_definition",
)

#: ``PRAGMA application_id`` of a katparallel store ("KPst").
APPLICATION_ID = 0x4B507374
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"

#: Definition entries that must match for a study to be resumed.
COMPARED = (
    "model",
    "plan_hash",
    "seed",
    "analysis",
    "perturb",
    "katparallel_version",
    "finesse_version",
)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE plan_values (
    axis INTEGER NOT NULL, position INTEGER NOT NULL, path TEXT NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (axis, position));
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY, n INTEGER NOT NULL,
    indices BLOB NOT NULL, params BLOB NOT NULL);
CREATE TABLE outputs (
    chunk INTEGER NOT NULL REFERENCES chunks(id), name TEXT NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (chunk, name));
CREATE TABLE output_axes (
    name TEXT NOT NULL, position INTEGER NOT NULL, dim TEXT NOT NULL,
    data BLOB NOT NULL, PRIMARY KEY (name, position));
CREATE TABLE failures (
    job INTEGER PRIMARY KEY, params TEXT NOT NULL, type TEXT NOT NULL,
    message TEXT NOT NULL, traceback TEXT NOT NULL);
"""


class StoreError(KatParallelError):
    """A file given as a store cannot be used (foreign, damaged, missing)."""


class StoreLocked(StoreError):
    """Another process is writing the store."""


class StudyMismatch(StoreError):
    """The store holds a different study than the one being run."""


# --------------------------------------------------------------- definitions
def _axes_shape(axes: tuple) -> tuple:
    return tuple(len(values) for _, values in axes)


def _to_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _from_npy(data: bytes) -> np.ndarray:
    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


def plan_hash(plan: Plan) -> str:
    """SHA-256 of everything that decides a plan's jobs: axes, values, seed."""
    digest = hashlib.sha256()
    digest.update(json.dumps(_axes_layout(plan)).encode())
    digest.update(str(plan.seed).encode())
    for axis in plan.axes:
        for path, values in axis.values.items():
            digest.update(path.encode())
            digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _axes_layout(plan: Plan) -> list[dict[str, Any]]:
    return [{"dim": a.dim, "size": len(a), "paths": list(a.paths)} for a in plan.axes]


def describe_analysis(analysis: Any) -> str:
    """A stable text for ``run(analysis=...)``: the KatScript, or the action's settings.

    Finesse actions have no stable ``repr``; this walks their attributes,
    naming parameters by full name and hashing arrays.
    """
    if analysis is None:
        return "the model's own analysis"
    if isinstance(analysis, str):
        return analysis.strip()
    return json.dumps(_describe_object(analysis, depth=0), sort_keys=True)


def _describe_object(obj: Any, depth: int) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return f"array{obj.shape}:{hashlib.sha1(np.ascontiguousarray(obj).tobytes()).hexdigest()}"
    if isinstance(obj, (list, tuple)):
        return [_describe_object(x, depth + 1) for x in obj]
    if isinstance(obj, Mapping):
        return {str(k): _describe_object(v, depth + 1) for k, v in obj.items()}
    full_name = getattr(obj, "full_name", None)
    if isinstance(full_name, str):
        return full_name
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if depth > 6 or not hasattr(obj, "__dict__"):
        return kind
    fields = {
        k: _describe_object(v, depth + 1)
        for k, v in vars(obj).items()
        if not callable(v) and "state_manager" not in k
    }
    return {"type": kind, **fields}


def study_definition(
    model: str, plan: Plan, analysis: str, perturb: str = ""
) -> dict[str, str]:
    """What a study is: the entries a store records and compares on resume.

    Parameters
    ----------
    model : str
        The model's text (or a factory's name), from the adapter.
    plan : Plan
        The plan, with its seed.
    analysis : str
        From :func:`describe_analysis`.
    perturb : str
        Names of the perturb functions.
    """
    definition = {
        "model": model,
        "plan": plan.describe(),
        "plan_hash": plan_hash(plan),
        "seed": str(plan.seed),
        "analysis": analysis,
        "perturb": perturb,
        "katparallel_version": __version__,
        "finesse_version": installed_version("finesse"),
    }
    return definition


@functools.cache
def installed_version(package: str) -> str:
    """``package``'s installed version, or "not installed" (read once: it costs milliseconds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _first_difference(stored: str, now: str) -> str:
    a, b = stored.splitlines(), now.splitlines()
    for number, (x, y) in enumerate(zip(a, b), start=1):
        if x != y:
            return f"line {number}: stored {x.strip()!r}, now {y.strip()!r}"
    if len(a) != len(b):
        return f"stored {len(a)} lines, now {len(b)}"
    return "whitespace only"


def _without_seed(plan_description: str) -> str:
    return plan_description.rsplit("; seed", 1)[0]


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------- lock
class _Lock:
    """An exclusive lock on ``<path>.lock``, released by the OS at exit."""

    def __init__(self, path: Path):
        self.path = path.with_name(path.name + ".lock")
        self.fd: int | None = None

    def acquire(self, store: Path) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                holder = _read_at_start(fd).decode(errors="replace").strip()
                os.close(fd)
                raise StoreLocked(
                    f"The store {str(store)!r} is being written by another process "
                    f"({holder or 'unknown'}); wait for it to finish, or give this run "
                    "a different store path."
                )
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file its last holder unlinked meanwhile
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(
            fd,
            f"pid {os.getpid()} on {socket.gethostname()}, since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(),
        )
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        if os.name == "nt":  # Windows unlinks no open file: close (unlock) first
            os.close(self.fd)
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        else:  # unlink while locked, so no one locks a file about to vanish
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            import fcntl

            # Unlock explicitly: a worker forked meanwhile holds a copy of fd,
            # which would keep the lock alive after close.
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
        self.fd = None


#: Windows locks byte ranges, and a locked range cannot be read by others: lock a
#: byte past the holder's description, so a refused writer can still say who holds it.
_WINDOWS_LOCK_OFFSET = 1 << 20


def _try_lock(fd: int) -> bool:
    """Take an exclusive, non-blocking lock on the open file ``fd``; False if taken."""
    if os.name == "nt":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_at_start(fd: int, size: int = 200) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, size)


# -------------------------------------------------------------------- store
class Store:
    """A study's checkpoint: an SQLite file holding every finished job.

    Parameters
    ----------
    path : str or os.PathLike
        The store file; created when writing and absent.
    write : bool
        Open to record a run (takes the writer's lock), else read only.

    Raises
    ------
    StoreError
        If the file is not a katparallel store (another format, another
        application's database, damaged), or is missing when reading.
    StoreLocked
        If another process is writing it.

    Examples
    --------
    >>> with Store("study.db") as store:
    ...     store.progress()
    (412, 1000)
    """

    def __init__(self, path: str | os.PathLike, write: bool = False):
        self.path = Path(path)
        self.write = write
        self._lock = _Lock(self.path) if write else None
        self._definition: dict[str, str] | None = None
        self._check_file()
        if self._lock is not None:
            self._lock.acquire(self.path)
        try:
            self._db = self._connect()
            with self._errors():
                self._check_database()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- opening
    def _check_file(self) -> None:
        if self.path.is_dir():
            raise StoreError(
                f"The store {str(self.path)!r} is a directory; give a file path such as study.db."
            )
        if not self.path.exists():
            if self.write and not self.path.parent.is_dir():
                raise StoreError(
                    f"Cannot create the store {str(self.path)!r}: the folder "
                    f"{str(self.path.parent)!r} does not exist; create it or give another path."
                )
            if not self.write:
                raise StoreError(
                    f"No store at {str(self.path)!r}; run a study with store= (or "
                    "katparallel run --store) to create one."
                )
            return
        with open(self.path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
        if head and head != SQLITE_MAGIC:
            raise StoreError(
                f"{str(self.path)!r} is not a katparallel store: it is not an SQLite "
                f"database (it starts with {head[:8]!r}). Give a new path for the store; "
                "katparallel will not overwrite it."
            )

    def _connect(self) -> sqlite3.Connection:
        if self.write or os.access(self.path, os.W_OK):
            # A reader opens read-write too (but queries only): a read-only
            # connection cannot remove the -wal and -shm files when it closes.
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            if not self.write:
                db.execute("PRAGMA query_only = 1")
            return db
        return sqlite3.connect(
            f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None
        )

    def _check_database(self) -> None:
        app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        query = "SELECT name FROM sqlite_master WHERE type='table'"
        tables = [row[0] for row in self._db.execute(query)]
        if app_id == APPLICATION_ID:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{str(self.path)!r} was written by a newer katparallel (store format "
                    f"{version}, this one reads {SCHEMA_VERSION}); upgrade katparallel."
                )
        elif app_id == 0 and not tables and self.write:
            self._create()
        else:
            what = f"tables {', '.join(tables[:6])}" if tables else "no tables"
            raise StoreError(
                f"{str(self.path)!r} is an SQLite database of another application "
                f"({what}), not a katparallel store. Give a new path for the store; "
                "katparallel will not write into it."
            )
        if self.write:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes

    def _create(self) -> None:
        with self._transaction():
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise StoreLocked(
                    f"The store {str(self.path)!r} is locked by another process ({exc}); "
                    "wait for it to finish."
                ) from exc
            raise StoreError(
                f"The store {str(self.path)!r} is damaged or not a katparallel store "
                f"(SQLite: {exc}). Move it aside or delete it, and run the study again."
            ) from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database and release the writer's lock."""
        db = self.__dict__.pop("_db", None)
        if db is not None:
            db.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------- definition
    @property
    def definition(self) -> dict[str, str] | None:
        """The stored study definition, or None for a new store."""
        if self._definition is None:
            with self._errors():
                rows = self._db.execute("SELECT key, value FROM meta").fetchall()
            if rows:
                self._definition = {k: json.loads(v) for k, v in rows}
        return self._definition

    @property
    def seed(self) -> int | None:
        """The stored study's seed (None for a new store)."""
        definition = self.definition
        return int(definition["seed"]) if definition else None

    def begin(self, definition: Mapping[str, str], plan: Plan, resume: bool | None = None) -> None:
        """Record a new study, or check that ``definition`` is the stored one.

        Parameters
        ----------
        definition : mapping
            From :func:`study_definition`.
        plan : Plan
            The study's plan (its values are stored for readers).
        resume : bool, optional
            None: continue a matching study or start one. True: the store
            must already hold the study. False: the store must be new.

        Raises
        ------
        StudyMismatch
            If the store holds another study, or ``resume`` is not met.
        """
        stored = self.definition
        if stored is None:
            if resume:
                raise StudyMismatch(
                    f"Nothing to resume: the store {str(self.path)!r} holds no study yet; "
                    "run without resume=True (--resume) to start it."
                )
            self._record(definition, plan)
            return
        if resume is False:
            raise StudyMismatch(
                f"The store {str(self.path)!r} already holds a study ({stored['plan']}); "
                "pass resume=True (or leave it unset) to continue it, or give a new store path."
            )
        differences = []
        for key in COMPARED:
            old, new = stored.get(key, ""), definition.get(key, "")
            if old == new:
                continue
            if key == "model":
                differences.append(f"the model ({_first_difference(old, new)})")
            elif key == "plan_hash":
                if _without_seed(stored["plan"]) != _without_seed(definition["plan"]):
                    differences.append(
                        f"the plan (stored {stored['plan']!r}, now {definition['plan']!r})"
                    )
                elif stored.get("seed") == definition.get("seed"):
                    differences.append("the varied or sampled values")
            else:
                label = key.replace("_", " ")
                differences.append(f"the {label} (stored {_shorten(old)!r}, now {_shorten(new)!r})")
        if differences:
            raise StudyMismatch(
                f"The store {str(self.path)!r} holds a different study: "
                + "; ".join(differences)
                + ". Give this study a new store path, or delete the store to start over."
            )
        done, total = self.progress()
        LOGGER.info("resuming %s from %s: %d of %d jobs already done", stored["plan"], self.path,
                    done, total)

    def _record(self, definition: Mapping[str, str], plan: Plan) -> None:
        meta = dict(definition)
        meta.update(
            n_jobs=str(plan.n_jobs),
            axes=json.dumps(_axes_layout(plan)),
            created=time.strftime("%Y-%m-%d %H:%M:%S %z"),
        )
        with self._errors(), self._transaction():
            self._db.executemany(
                "INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
            )
            self._db.executemany(
                "INSERT INTO plan_values VALUES (?, ?, ?, ?)",
                [
                    (a, p, path, _to_npy(values))
                    for a, axis in enumerate(plan.axes)
                    for p, (path, values) in enumerate(axis.values.items())
                ],
            )
        self._definition = None

    # ---------------------------------------------------------------- writing
    def add(self, result: ChunkResult, plan: Plan) -> None:
        """Commit one chunk's outputs and failures in one transaction.

        Jobs whose outputs differ from the others' (:attr:`ChunkResult.others`)
        are stored as they came: the collector decides which of them fail.
        """
        with self._errors(), self._transaction():
            for part in result.parts():
                if len(part.indices):
                    self._add_outputs(part, plan)
            self._db.executemany(
                "INSERT INTO failures VALUES (?, ?, ?, ?, ?)",
                [
                    (f.index, json.dumps(f.values), f.type, f.message, f.traceback)
                    for f in result.failures
                ],
            )

    def _add_outputs(self, part: ChunkResult, plan: Plan) -> None:
        cursor = self._db.execute(
            "INSERT INTO chunks (n, indices, params) VALUES (?, ?, ?)",
            (len(part.indices), _to_npy(part.indices), _to_npy(plan.values_for(part.indices))),
        )
        chunk = cursor.lastrowid
        self._db.executemany(
            "INSERT INTO outputs VALUES (?, ?, ?)",
            [(chunk, name, _to_npy(values)) for name, values in part.outputs.items()],
        )
        self._db.executemany(
            "INSERT OR IGNORE INTO output_axes VALUES (?, ?, ?, ?)",
            [
                (name, position, dim, _to_npy(np.asarray(values)))
                for name, axes in part.axes.items()
                for position, (dim, values) in enumerate(axes)
            ],
        )

    def forget_failures(self) -> np.ndarray:
        """Delete the recorded failures so that their jobs run again; return their indices."""
        with self._errors(), self._transaction():
            failed = [row[0] for row in self._db.execute("SELECT job FROM failures")]
            self._db.execute("DELETE FROM failures")
        return np.array(sorted(failed), dtype=np.int64)

    # ---------------------------------------------------------------- reading
    def done_indices(self) -> np.ndarray:
        """Indices of every job the store holds (succeeded or failed), sorted."""
        with self._errors():
            parts = [_from_npy(row[0]) for row in self._db.execute("SELECT indices FROM chunks")]
            failed = [row[0] for row in self._db.execute("SELECT job FROM failures")]
            parts.append(np.array(failed, dtype=np.int64))
        return np.sort(np.concatenate(parts).astype(np.int64))

    def progress(self) -> tuple[int, int]:
        """``(jobs done, jobs in the study)``; failed jobs count as done."""
        definition = self.definition
        total = int(definition["n_jobs"]) if definition else 0
        with self._errors():
            done = self._db.execute("SELECT COALESCE(SUM(n), 0) FROM chunks").fetchone()[0]
            done += self._db.execute("SELECT COUNT(*) FROM failures").fetchone()[0]
        return int(done), total

    def failures(self) -> list[Failure]:
        """The failed jobs, by index."""
        with self._errors():
            rows = self._db.execute("SELECT * FROM failures ORDER BY job").fetchall()
        return [Failure(job, json.loads(params), kind, message, tb)
                for job, params, kind, message, tb in rows]

    def _output_axes(self) -> dict[str, tuple]:
        axes: dict[str, list] = {}
        rows = self._db.execute("SELECT name, dim, data FROM output_axes ORDER BY name, position")
        for name, dim, data in rows:
            axes.setdefault(name, []).append((dim, _from_npy(data)))
        return {name: tuple(pairs) for name, pairs in axes.items()}

    def chunk_results(self) -> Iterator[ChunkResult]:
        """Everything stored, as chunk results (failures in one last result)."""
        with self._errors():
            axes = self._output_axes()
            chunks = self._db.execute("SELECT id, indices FROM chunks ORDER BY id").fetchall()
            for chunk, indices in chunks:
                outputs = {
                    name: _from_npy(data)
                    for name, data in self._db.execute(
                        "SELECT name, data FROM outputs WHERE chunk = ?", (chunk,)
                    )
                }
                # An output's axes are stored once, by name: a job whose output of
                # that name has another shape gets none (it fails in the collector).
                fitting = {name: axes[name] for name, values in outputs.items()
                           if name in axes and _axes_shape(axes[name]) == values.shape[1:]}
                yield ChunkResult(_from_npy(indices), outputs, fitting)
        failures = self.failures()
        if failures:
            yield ChunkResult(np.empty(0, dtype=np.int64), {}, {}, failures)

    def load_into(self, collector: Any) -> int:
        """Pass every stored result to ``collector.add``; return the number of jobs."""
        count = 0
        for result in self.chunk_results():
            collector.add(result)
            count += len(result.indices) + len(result.failures)
        return count

    def plan(self) -> Plan:
        """The stored study's plan, rebuilt from its stored values."""
        definition = self.definition
        if definition is None:
            raise StoreError(f"The store {str(self.path)!r} holds no study yet.")
        with self._errors():
            values: dict[int, dict[str, np.ndarray]] = {}
            for axis, path, data in self._db.execute(
                "SELECT axis, path, data FROM plan_values ORDER BY axis, position"
            ):
                values.setdefault(axis, {})[path] = _from_npy(data)
        layout = json.loads(definition["axes"])
        axes = tuple(
            Axis(a["dim"], values.get(number, {}), size=a["size"])
            for number, a in enumerate(layout)
        )
        return Plan(axes, int(definition["seed"]))

    def results(self) -> Any:
        """What the store holds as :class:`~katparallel.results.Results` (NaN where not run)."""
        from .results import Collector, Results

        plan = self.plan()
        collector = Collector(plan)
        self.load_into(collector)
        done, total = self.progress()
        definition = self.definition or {}
        attrs = {
            "seed": plan.seed,
            "plan": definition.get("plan", ""),
            "model": definition.get("model", ""),
            "analysis": definition.get("analysis", ""),
            "n_jobs": total,
            "n_done": done,
            "n_failed": len(collector.failures),
            "store": str(self.path),
            "katparallel_version": definition.get("katparallel_version", ""),
            "finesse_version": definition.get("finesse_version", ""),
        }
        failures = sorted(collector.failures, key=lambda f: f.index)
        return Results(collector.dataset(attrs), failures)
