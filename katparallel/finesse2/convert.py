"""``katparallel convert old.kat``: Finesse 3 KatScript for a Finesse 2 kat file.

The kat file goes through the same front end as the ``kat`` program
(:mod:`katparallel.finesse2.frontend`) and Finesse 3's legacy parser; the model is
then written out with ``Model.unparse()``. The KatScript is printed only where it
reproduces Finesse 2 by itself: a construct that the ``kat`` program applies to the
output (``scale``, a ``max`` demodulation phase) or cannot reproduce at all is
reported with its line, and nothing is printed.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import finesse

    from katparallel.finesse2.frontend import Translation

__all__ = ("ConversionError", "convert", "exact_model", "main")

LOGGER = logging.getLogger(__name__)

class ConversionError(ValueError):
    """The kat file has no exact Finesse 3 KatScript translation.

    Parameters
    ----------
    problems : list of (int or None, str)
        Each problem's line in the kat file (None if unknown) and why.
    """

    def __init__(self, problems: list[tuple[int | None, str]]):
        super().__init__("; ".join(f"line {n}: {why}" if n else why
                                   for n, why in problems))
        self.problems = problems


def exact_model(text: str) -> finesse.Model:
    """Build the Finesse 3 model of Finesse 2 kat text, where it alone reproduces it.

    Parameters
    ----------
    text : str
        The Finesse 2 kat file's contents.

    Returns
    -------
    finesse.Model
        The model, its analysis included. Finesse 2 quirks the translation follows
        (e.g. ``10_000`` steps read as 10) are logged as warnings.

    Raises
    ------
    ConversionError
        Naming each line whose meaning the model would not carry.
    """
    from katparallel.finesse2.frontend import Refusal, translate
    from katparallel.finesse2.program import KatError, load_model

    try:
        translation = translate(text)
    except Refusal as exc:
        raise ConversionError([exc.problem]) from exc
    if translation.inexact:
        raise ConversionError([
            (lineno, f"'{what}' " + (
                "is iterated around the Finesse 3 model point by point, as Finesse 2 "
                "does, which a Finesse 3 model cannot express"
                if what in ("lock", "lock*") else
                "acts on Finesse 2's output columns, which a Finesse 3 model cannot "
                "express") + "; run the file with katparallel's kat instead")
            for lineno, what in translation.inexact])
    try:
        model = load_model(text, translation)
    except KatError as exc:
        raise ConversionError(exc.problems) from exc
    problems = _tuned_between_indices(model, translation, text)
    if problems:
        raise ConversionError(problems)
    for note in translation.notes:
        LOGGER.warning("Finesse 2 quirk: %s", note)
    for warning in translation.warnings:
        LOGGER.warning(warning)
    return model


def _tuned_between_indices(model: finesse.Model, translation: Translation,
                           text: str) -> list[tuple[int | None, str]]:
    """Tuned mirrors and beam splitters with a different refractive index each side.

    Finesse 2 shifts their reflection phase by twice the tuning whatever the index;
    the model does so only with a setting (``v2_transmission_phase``) that KatScript
    cannot write, so its KatScript would give other numbers.

    Parameters
    ----------
    model : finesse.Model
        The model of the kat file.
    translation : Translation
        What the front end made of it (the parameters the run varies).
    text : str
        The kat file's contents, for the line of each component.

    Returns
    -------
    list of (int or None, str)
        The line of each such component and why, as :class:`ConversionError` takes.
    """
    from finesse.components import Beamsplitter, Mirror
    from finesse.utilities.components import refractive_index

    varied = {(component, param) for _, _, component, param in translation.targets}
    lines = [line.split()[1:2] for line in text.splitlines()]
    problems: list[tuple[int | None, str]] = []
    for comp in model.components:
        if (not isinstance(comp, (Mirror, Beamsplitter))
                or len({refractive_index(n) for n in comp.optical_nodes}) < 2):
            continue
        if float(comp.phi.eval()) != 0 or (comp.name, "phi") in varied:
            lineno = next((i for i, words in enumerate(lines, 1) if words == [comp.name]),
                          None)
            problems.append((lineno, f"'{comp.name}' is tuned and has a different "
                             "refractive index on its two sides: Finesse 2's reflection "
                             "phase there needs a Finesse 3 setting KatScript cannot "
                             "write; run the file with katparallel's kat instead"))
    return problems


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
        See :func:`exact_model`.
    """
    model = exact_model(text)
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
