"""Reference models: the real detector model katparallel is tested on, ready to study.

>>> from katparallel import Ensemble
>>> from katparallel.models import aligo
>>> design = Ensemble(aligo() + "modes(maxtem=2)")

The aLIGO design model ships as KatScript inside the finesse-ligo wheel on PyPI.
The wheel is downloaded once (``pip download``, nothing is installed) into a
cache folder and checked against its published digest every time it is read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

LOGGER = logging.getLogger(__name__)

__all__ = ("ALIGO_DARM_SIGNALS", "aligo", "data_folder")

#: The wheel that ships the aLIGO design model as KatScript. Only its data is
#: used: finesse-ligo 1.0.15 itself does not import with finesse 3.0.2.
ALIGO_WHEEL = "finesse-ligo==1.0.15"
_WHEEL_NAME = "finesse_ligo-1.0.15-py3-none-any.whl"

#: KatScript to append to :func:`aligo` for sensitivity curves: no higher-order
#: modes, a DARM strain signal, the quantum-noise-to-signal ratio ``NSR`` (float)
#: and the DARM transfer function ``DARMTF`` (complex) at the output mode cleaner;
#: analyse with ``Xaxis("fsig.f", "log", 5, 5000, 99)`` or ``FrequencyResponse``.
ALIGO_DARM_SIGNALS = """
modes(off)
fsig(1)
sgen darm STRAIN.AC.i
qnoised NSR OMC_OC.p3.o nsr=True
pd1 DARMTF OMC_OC.p3.o f=fsig
"""
#: The digest PyPI publishes for that wheel.
_WHEEL_SHA256 = "94ca29acaaf68527264e19791d3ce359c8c8248c6bb8bb9366f2129c555e14b6"


def data_folder(cache: str | os.PathLike | None = None) -> Path:
    """The folder downloaded model files are kept in.

    Parameters
    ----------
    cache : path-like, optional
        The folder to use. Default: ``$KATPARALLEL_DATA`` if set, else
        ``~/.cache/katparallel-data``.

    Returns
    -------
    pathlib.Path
        The folder (not created here).
    """
    default = os.environ.get("KATPARALLEL_DATA") or Path.home() / ".cache" / "katparallel-data"
    return Path(cache or default)


def aligo(cache: str | os.PathLike | None = None) -> str:
    """The Advanced LIGO design model as KatScript text: 213 elements.

    ``finesse_ligo/katscript/aligo.kat`` from the finesse-ligo 1.0.15 wheel,
    with its one ``disabled=true`` written ``enabled=false``, the spelling
    finesse 3.0.2 reads. It sets no higher-order modes (append for example
    ``"modes(maxtem=2)"``) and no analysis (a run is a ``Noxaxis``). Among
    its outputs are the power detectors of each port and the math detectors
    ``PRG`` (power-recycling gain) and ``AGX``/``AGY`` (arm gains); ``Xloss``,
    ``Yloss``, ``Larm`` and ``lschnupp`` are model variables, and mirror losses
    such as ``ITMX.L`` are written in terms of them.

    Parameters
    ----------
    cache : path-like, optional
        Folder for the downloaded wheel (:func:`data_folder`). The first call
        downloads it with ``pip download --no-deps``; later calls read it.

    Returns
    -------
    str
        The model's KatScript, for ``Ensemble(text)`` or ``finesse.Model().parse(text)``.

    Raises
    ------
    RuntimeError
        If the wheel cannot be downloaded (the message has pip's output), or
        the file in the cache is not the published wheel.
    """
    with zipfile.ZipFile(_wheel(data_folder(cache))) as wheel:
        text = wheel.read("finesse_ligo/katscript/aligo.kat").decode()
    return text.replace("disabled=true", "enabled=false")


def _wheel(folder: Path) -> Path:
    """The verified finesse-ligo wheel in ``folder``, downloaded first if missing."""
    path = folder / _WHEEL_NAME
    if not path.is_file():
        _download(folder)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != _WHEEL_SHA256:
        raise RuntimeError(
            f"{path} is not the {ALIGO_WHEEL} wheel published on PyPI (its sha256 is "
            f"{digest}, not {_WHEEL_SHA256}): delete it to download it again."
        )
    return path


def _download(folder: Path) -> None:
    """Download the wheel into ``folder`` whole: beside runs never see half of it."""
    folder.mkdir(parents=True, exist_ok=True)
    LOGGER.info("downloading %s into %s", ALIGO_WHEEL, folder)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as scratch:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", scratch,
             ALIGO_WHEEL],
            capture_output=True, text=True,
        )
        got = Path(scratch, _WHEEL_NAME)
        if done.returncode or not got.is_file():
            raise RuntimeError(
                f"could not download {ALIGO_WHEEL} (pip exit {done.returncode}):\n"
                f"{done.stdout}{done.stderr}\nCheck the network, or put {_WHEEL_NAME} "
                f"in {folder}."
            )
        os.replace(got, folder / _WHEEL_NAME)
