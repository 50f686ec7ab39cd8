"""Picklable helper functions for backend tests and benchmarks.

They live in an importable module, not in a test file, so every engine
(process pools, ipyparallel engines, MPI ranks) can unpickle them by reference.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from .models import aligo

__all__ = (
    "square", "scaled", "noop", "crash_on", "sleep_then", "pid_of", "omp_threads", "hom_power",
    "MPI_ENV", "mpiexec_python", "aligo_katscript", "CAVITY_KATSCRIPT",
    "Counted", "unpickled_here", "KillOnce", "Gate",
)

#: ``crash_on`` kills its own process for this task value.
CRASH_VALUE = -1


def square(x: float) -> float:
    """Return ``x * x``."""
    return x * x


def scaled(factor: float, x: float) -> float:
    """Return ``factor * x`` (a task of ``Backend.map_shared``: ``factor`` is shared)."""
    return factor * x


def noop(x: object) -> object:
    """Return ``x`` unchanged (measures pure dispatch overhead)."""
    return x


def crash_on(x: int) -> int:
    """Return ``x * x``, but SIGKILL the calling process when ``x == CRASH_VALUE``.

    A short sleep first lets other tasks start on other workers, so a test
    sees a crash in the middle of a run.
    """
    if x == CRASH_VALUE:
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


#: token -> how many times a :class:`Counted` with that token was unpickled here.
UNPICKLED: dict[str, int] = {}


class Counted:
    """Bytes that count, per process, how many times they are unpickled.

    A test hands one to :meth:`Backend.map_shared` and reads the counts back
    with :func:`unpickled_here`: what an engine really sent to each worker.
    """

    def __init__(self, token: str, size: int):
        self.token = token
        self.payload = os.urandom(size)

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        UNPICKLED[self.token] = UNPICKLED.get(self.token, 0) + 1


def unpickled_here(shared: Counted, task: object) -> tuple[int, int]:
    """``(this process's id, times shared was unpickled in it so far)``."""
    return os.getpid(), UNPICKLED.get(shared.token, 0)


class KillOnce:
    """A perturb function that SIGKILLs the first worker process to run it.

    The first call creates ``marker`` and kills its own process; every later
    call, anywhere, finds the file and leaves the model alone.
    """

    def __init__(self, marker: str | os.PathLike):
        self.marker = str(marker)

    def __call__(self, model: object, rng: object) -> None:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def sleep_then(x: tuple[float, object]) -> object:
    """Sleep ``x[0]`` seconds, then return ``x[1]``."""
    delay, value = x
    time.sleep(delay)
    return value


def pid_of(delay: float) -> int:
    """Sleep ``delay`` seconds, then return the id of the process that ran the task."""
    time.sleep(delay)
    return os.getpid()


def omp_threads(x: object = None) -> int | None:
    """The threads an OpenMP parallel region started in this process would use.

    ``omp_get_max_threads()`` of the OpenMP runtimes loaded here, read through
    threadpoolctl: what libgomp will really do, whatever ``OMP_NUM_THREADS``
    says now (libgomp reads the variable once, when it is loaded). If no
    OpenMP runtime is loaded yet, Finesse is imported first, as a job would.
    None if there is still none.
    """
    found = _openmp_threads()
    if not found:
        import finesse  # noqa: F401 - loads Finesse's OpenMP runtime (libgomp)

        found = _openmp_threads()
    return max(found) if found else None


def _openmp_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"]


class Gate:
    """A perturb function that records each call and holds jobs until a file appears.

    Each call writes a file in ``calls`` named after the Slurm job and process
    running it (``SLURMJOBID-PID-UNIQUE``); once ``calls`` holds more than
    ``free`` files, calls wait until the file ``gate`` exists. A test sees from
    ``calls`` which batch jobs are running study jobs, cancels one while they are
    held, then opens the gate: "mid-study" without timing. The model is not
    changed, so results equal a run without it.

    Parameters
    ----------
    calls : path
        A directory shared with the workers.
    gate : path
        The file that releases held calls.
    free : int
        Calls that run without waiting (in a serial run: the first ``free`` jobs).
    deadline : float
        Seconds a call waits before it raises: only a broken test reaches it.
    """

    def __init__(self, calls: str | os.PathLike, gate: str | os.PathLike, free: int = 0,
                 deadline: float = 120.0):
        self.calls, self.gate = Path(calls), Path(gate)
        self.free, self.deadline = free, deadline

    def __repr__(self) -> str:  # what a store records of a perturb: stable across runs
        return f"Gate({str(self.calls)!r}, {str(self.gate)!r}, free={self.free})"

    def __call__(self, model: object, rng: object) -> None:
        name = f"{os.environ.get('SLURM_JOB_ID', 'none')}-{os.getpid()}-{time.time_ns()}"
        (self.calls / name).touch()
        if len(list(self.calls.iterdir())) <= self.free:
            return
        end = time.monotonic() + self.deadline
        while not self.gate.exists():
            if time.monotonic() > end:
                raise TimeoutError(f"{self.gate} did not appear within {self.deadline} s")
            time.sleep(0.05)

    @staticmethod
    def slurm_jobs(calls: str | os.PathLike) -> list[str]:
        """Slurm job ids of the calls recorded in ``calls``, one per call."""
        return [p.name.split("-")[0] for p in Path(calls).iterdir()]


#: A laser and one mirror, a power and an amplitude detector: the model of the studies
#: run alike on every engine (``tests/mpi/identical_study.py``, the Slurm tests).
MIRROR_KATSCRIPT = """
l L0 P=1
s s0 L0.p1 m.p1 L=1
m m R=0.4 T=0.5
pd P m.p2.o
ad a m.p2.o f=0
"""


#: A plane-wave two-mirror cavity: the suite's model for fast real studies.
CAVITY_KATSCRIPT = """
l L0 P=1
s s0 L0.p1 m1.p1 L=1
m m1 R=0.99 T=0.01
s cav m1.p2 m2.p1 L=1
m m2 R=0.99 T=0.01
pd P m2.p2.o
"""

#: A two-mirror cavity with higher-order modes: running it starts OpenMP
#: threads, after which a fork-started pool deadlocks.
HOM_KATSCRIPT = """
l L0 P=1
s s0 L0.p1 m1.p1 L=1
m m1 R=0.99 T=0.01 Rc=-2
s s1 m1.p2 m2.p1 L=1
m m2 R=0.99 T=0.01 Rc=2
cav c1 m1.p2
modes(maxtem=4)
pd P m2.p1.o
"""


def hom_power(xbeta: float) -> float:
    """Circulating power of :data:`HOM_KATSCRIPT` with mirror m1 tilted by ``xbeta`` rad."""
    import finesse

    model = finesse.Model()
    model.parse(HOM_KATSCRIPT)
    model.m1.xbeta = xbeta
    return float(model.run()["P"])


#: Open MPI refuses to run as root (containers, CI) without these, and needs
#: oversubscription for ``mpiexec -n 3`` on two cores.
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "PRTE_ALLOW_RUN_AS_ROOT": "1",
    "PRTE_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
}


def mpiexec_python(n: int, *args: str) -> list[str]:
    """``mpiexec -n N python -m mpi4py.futures ARGS``, with this venv's launcher if it has one."""
    mpiexec = Path(sys.executable).with_name("mpiexec")
    launcher = str(mpiexec) if mpiexec.exists() else "mpiexec"
    return [launcher, "-n", str(n), sys.executable, "-m", "mpi4py.futures", *args]


#: The aLIGO design model: use :func:`katparallel.models.aligo`. This name is
#: kept for code written against it before that module existed.
aligo_katscript = aligo
