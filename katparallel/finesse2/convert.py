"""``katparallel convert old.kat``: Finesse 3 KatScript for a Finesse 2 kat file.

The kat file goes through the same front end as the ``kat`` program
(:mod:`katparallel.finesse2.frontend`) and Finesse 3's legacy parser; the model is
then written out with ``Model.unparse()``. The KatScript is printed only where it
reproduces Finesse 2 by itself: a construct that the ``kat`` program applies to the
output (``scale``, a ``max`` demodulation phase) or cannot reproduce at all is
reported with its line, and nothing is printed.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from katparallel.finesse2.frontend import translate
from katparallel.finesse2.model import ConversionError, exact_model

__all__ = ("ConversionError", "convert", "exact_model", "main")


def convert(text: str) -> str:
    """Translate Finesse 2 kat text into Finesse 3 KatScript.

    Parameters
    ----------
    text : str
        The Finesse 2 kat file's contents.

    Returns
    -------
    str
        The Finesse 3 model as KatScript, analysis included.

    Raises
    ------
    ConversionError
        See :func:`exact_model`; also where a mirror's or beam splitter's motion or a
        modulator's signal needs Finesse 2's coupling
        (:mod:`katparallel.finesse2.signals`).
    """
    model = exact_model(text)
    translation = translate(text)
    rescaled = ([(lineno, f"the motion of '{name}'") for lineno, name, _
                 in translation.motion]
                + [(lineno, f"the signal at modulator '{name}'") for lineno, name
                   in translation.modulators]
                + [(lineno, f"the strain at space '{name}' with modes on")
                   for lineno, name in translation.strains
                   if translation.maxtem not in (None, "off")])
    if rescaled:
        raise ConversionError([
            (lineno, f"{what} reaches the light as in Finesse 2 only through "
             "katparallel's rescaling of Finesse 3's signal matrix "
             "(katparallel.finesse2.signals), which KatScript cannot express; run the "
             "file with katparallel's kat, or give it to an Ensemble as it is")
            for lineno, what in rescaled])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unparse()'s "intent-preserving" notices
        return model.unparse()


def main(path: str | Path) -> int:
    """Print the KatScript of the kat file at ``path``; return the exit status.

    Parameters
    ----------
    path : str or pathlib.Path
        The Finesse 2 kat file.

    Returns
    -------
    int
        0 when the KatScript was printed; 1 when the translation is not exact (each
        reason and line on standard error) or the file cannot be read.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        sys.stderr.write(f"error: cannot read '{path}': {exc.strerror}\n")
        return 1
    try:
        katscript = convert(text)
    except ConversionError as exc:
        sys.stderr.write(f"error: no exact Finesse 3 translation of '{path}':\n")
        lines = text.splitlines()
        for lineno, why in exc.problems:
            where = (f"line {lineno}: {lines[lineno - 1].strip()}\n      "
                     if lineno and 0 < lineno <= len(lines) else "")
            sys.stderr.write(f"    {where}{why}\n")
        return 1
    sys.stdout.write(katscript if katscript.endswith("\n") else katscript + "\n")
    return 0
