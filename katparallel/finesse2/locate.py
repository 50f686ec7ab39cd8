"""Find the ``kat`` program PyKat will run; install katparallel's when there is none.

PyKat 1.2.94 looks for the Finesse 2 binary each time a ``pykat.finesse.kat()`` object
is created (``kat._finesse_exec``), and once more at ``import pykat``:

1. ``$FINESSE_DIR/kat`` if ``FINESSE_DIR`` is set (PyKat never falls back to ``PATH``
   when it is set, even if no ``kat`` is there);
2. otherwise the directory of the first file called ``kat`` on ``PATH``
   (``distutils.spawn.find_executable``).

The file must then exist and be executable, or PyKat raises ``MissingFinesse``.

:func:`ensure_kat` keeps any usable ``kat`` found this way, so a real Finesse 2 always
wins. Only when there is none does it write a launcher script for
``python -m katparallel.finesse2`` into a private cache directory and point
``FINESSE_DIR`` at it for this process and its children.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from katparallel.finesse2.client import launcher_dir, package_parent

__all__ = ("KatInfo", "ensure_kat", "which_kat")

LOGGER = logging.getLogger(__name__)

#: Written into every launcher; how :func:`which_kat` recognises katparallel's ``kat``.
SHIM_MARKER = "katparallel-finesse3-kat"

_KAT_NAME = "kat.exe" if sys.platform == "win32" else "kat"
_VERSION_TIMEOUT = 60.0  # seconds; only a hung kat program gets near it

KatSource = Literal["FINESSE_DIR", "PATH"]


@dataclasses.dataclass(frozen=True)
class KatInfo:
    """Which ``kat`` program PyKat will run.

    Attributes
    ----------
    path : pathlib.Path or None
        The executable PyKat will run, or None if PyKat finds none.
    source : {"FINESSE_DIR", "PATH"} or None
        Where PyKat finds it.
    is_katparallel : bool
        True for katparallel's Finesse-3-backed launcher, False for anything else
        (a real Finesse 2).
    version_line : str or None
        The line ``kat -v`` prints, as PyKat parses it; None if it could not be run.
    """

    path: Path | None
    source: KatSource | None
    is_katparallel: bool
    version_line: str | None

    @property
    def version(self) -> str | None:
        """The version PyKat reads: :attr:`version_line`'s third word, unwrapped."""
        words = (self.version_line or "").split()
        return words[2][1:-2] if len(words) > 2 else None


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _find_on_path() -> Path | None:
    """Return the first file called ``kat`` on ``PATH``, as distutils finds it."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = Path(folder) / _KAT_NAME
        if candidate.is_file():
            return candidate
    return None


def _lookup() -> tuple[Path | None, KatSource | None]:
    """Return the ``kat`` PyKat would try to run and where it comes from.

    The path is returned even when it is not usable, so callers can report it.
    """
    finesse_dir = os.environ.get("FINESSE_DIR", "").strip()
    if finesse_dir:
        return Path(finesse_dir) / _KAT_NAME, "FINESSE_DIR"
    on_path = _find_on_path()
    if on_path is not None:
        return on_path, "PATH"
    return None, None


def is_katparallel_kat(path: Path) -> bool:
    """Tell whether ``path`` is a launcher written by katparallel.

    Parameters
    ----------
    path : pathlib.Path
        An executable file.

    Returns
    -------
    bool
        True if the file carries katparallel's marker in its first kilobyte.
    """
    try:
        with open(path, "rb") as fh:
            return SHIM_MARKER.encode() in fh.read(1024)
    except OSError:
        return False


def _launcher_text() -> str:
    python = shlex.quote(sys.executable)
    parent = shlex.quote(package_parent())
    return (
        "#!/bin/sh\n"
        f"# {SHIM_MARKER}: Finesse-2-compatible kat backed by Finesse 3.\n"
        "# Written by katparallel.finesse2.ensure_kat(); a real Finesse 2 found\n"
        "# through FINESSE_DIR or PATH is always used instead of this file.\n"
        f"PYTHONPATH={parent}${{PYTHONPATH:+:$PYTHONPATH}}\n"
        "export PYTHONPATH\n"
        f'exec {python} -m katparallel.finesse2 "$@"\n'
    )


def install_launcher() -> Path:
    """Write katparallel's ``kat`` launcher into its private directory.

    The file is replaced atomically and only when its content changes, so several
    processes may call this at once.

    Returns
    -------
    pathlib.Path
        The executable launcher.
    """
    folder = Path(launcher_dir())
    folder.mkdir(parents=True, exist_ok=True)
    launcher = folder / _KAT_NAME
    text = _launcher_text()
    if _usable(launcher) and launcher.read_text() == text:
        return launcher
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".kat-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, launcher)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    LOGGER.info("wrote katparallel's Finesse-3-backed kat launcher %s", launcher)
    return launcher


def ensure_kat() -> Path:
    """Make sure PyKat finds a ``kat`` program, preferring a real Finesse 2.

    A usable ``kat`` in ``FINESSE_DIR`` or on ``PATH`` is kept untouched. If
    ``FINESSE_DIR`` is set but holds no usable ``kat`` (PyKat would fail), a ``kat`` on
    ``PATH`` is used instead. Only when neither exists is katparallel's launcher
    installed and ``FINESSE_DIR`` set to its directory, in ``os.environ``, so this
    process and the processes it starts see it.

    PyKat reads ``FINESSE_DIR`` when a ``kat()`` object is created and once at
    ``import pykat``; call this before ``import pykat`` to avoid PyKat's
    "Could not find the finesse executable" warning.

    Returns
    -------
    pathlib.Path
        The ``kat`` executable PyKat will now run.
    """
    path, source = _lookup()
    if path is not None and _usable(path):
        LOGGER.debug("PyKat will run %s (found through %s)", path, source)
        return path
    if source == "FINESSE_DIR":
        on_path = _find_on_path()
        if on_path is not None and _usable(on_path):
            LOGGER.warning(
                "FINESSE_DIR=%s holds no executable kat, so PyKat would fail; "
                "pointing FINESSE_DIR at %s found on PATH instead",
                os.environ["FINESSE_DIR"],
                on_path.parent,
            )
            os.environ["FINESSE_DIR"] = str(on_path.parent)
            return on_path
        LOGGER.warning(
            "FINESSE_DIR=%s holds no executable kat; using katparallel's "
            "Finesse-3-backed kat instead",
            os.environ["FINESSE_DIR"],
        )
    launcher = install_launcher()
    os.environ["FINESSE_DIR"] = str(launcher.parent)
    if "pykat" in sys.modules:
        LOGGER.debug(
            "pykat was imported before ensure_kat(): new kat() objects find %s, "
            "but pykat.kat and pykat.v were set at import without it",
            launcher,
        )
    return launcher


def which_kat() -> KatInfo:
    """Tell which ``kat`` program PyKat will run, following PyKat's own lookup.

    Returns
    -------
    KatInfo
        Its path, where it was found, whether it is katparallel's Finesse-3-backed
        program, and the version line it prints (running ``kat -v``).
    """
    path, source = _lookup()
    if path is None or not _usable(path):
        return KatInfo(path=None, source=None, is_katparallel=False, version_line=None)
    try:
        proc = subprocess.run(
            [str(path), "-v"], capture_output=True, text=True, timeout=_VERSION_TIMEOUT
        )
        version_line = proc.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired) as exc:
        LOGGER.warning("could not run %s -v: %s", path, exc)
        version_line = None
    return KatInfo(
        path=path,
        source=source,
        is_katparallel=is_katparallel_kat(path),
        version_line=version_line,
    )
