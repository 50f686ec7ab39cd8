"""Finesse 2 kat text as a Finesse 3 model: the front end, then the legacy parser.

A library piece shared by the ``kat`` program (:mod:`katparallel.finesse2.program`),
``katparallel convert`` (:mod:`katparallel.finesse2.convert`) and the Finesse adapter
(:mod:`katparallel.adapters.finesse`): :func:`load_model` builds the model the ``kat``
program runs, :func:`exact_model` the model alone where it reproduces Finesse 2 by
itself. Problems are raised as :class:`KatError` and :class:`ConversionError`, naming
the kat file's lines.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import re
import sys
import warnings
from typing import TYPE_CHECKING

from katparallel.finesse2 import frequencies
from katparallel.finesse2.frontend import Refusal, Translation, apply, translate

if TYPE_CHECKING:
    import finesse

__all__ = ("ConversionError", "KatError", "exact_model", "fixed_parameters", "load_model")

LOGGER = logging.getLogger(__name__)

# Commands whose second word names another element rather than declaring one.
_REFERRING = {"attr", "put", "put*", "set", "xaxis", "xaxis*", "x2axis", "x2axis*",
              "x3axis", "x3axis*", "pdtype", "tem", "lock", "lock*", "noplot"}
_FINESSE3_MESSAGE = re.compile(r"^(\d+):(\d+): (.+)$")
_NAMED_ELEMENT = re.compile(r"In block '[^']*': (\S+):")
_QUOTED = re.compile(r"'([^'\s]+)'")

@functools.cache  # a metadata lookup costs ms, and a server asks on every run
def _finesse3_version() -> str:
    return importlib.metadata.version("finesse")


class KatError(Exception):
    """Finesse 3 cannot read or run the kat file.

    Parameters
    ----------
    action : str
        What failed, completing "Finesse 3's legacy (Finesse 2) parser cannot ...".
    problems : list of (int or None, str)
        Each problem's line number in the kat file (None if unknown) and message.
    """

    def __init__(self, action: str, problems: list[tuple[int | None, str]]):
        super().__init__(action)
        self.action = action
        self.problems = problems

    def render(self, text: str, filename: str) -> str:
        """Return the Finesse-style error message for standard error.

        Parameters
        ----------
        text : str
            The kat file's contents, to quote the offending lines.
        filename : str
            The kat file's name.
        """
        lines = text.splitlines()
        out = [f"*** Error: Finesse 3's legacy (Finesse 2) parser cannot "
               f"{self.action} '{filename}':"]
        for lineno, message in self.problems:
            if lineno is not None and 0 < lineno <= len(lines):
                out.append(f"    line {lineno}: {lines[lineno - 1].strip()}")
                out.append(f"      {message}")
            else:
                out.append(f"    {message}")
        out.append(
            f"    This kat is katparallel's Finesse-3-backed stand-in for Finesse 2 "
            f"(Finesse {_finesse3_version()}). To run this file, install Finesse 2 "
            "and set FINESSE_DIR to its directory; a real Finesse 2 is always used "
            "when present."
        )
        return "\n".join(out) + "\n"



def _code_words(line: str) -> list[str]:
    return re.split(r"[#%]", line, maxsplit=1)[0].split()


def _declarations(text: str) -> dict[str, int]:
    """Map each element name to the (1-based) line declaring it."""
    found: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        words = _code_words(line)
        if len(words) > 1 and words[0] not in _REFERRING:
            found.setdefault(words[1], lineno)
    return found


def _line_of(message: str, text: str) -> int | None:
    """Guess the line a Finesse 3 message without a line number is about.

    The element it names first (``In block 'b': NAME: ...``, then quoted names) is
    looked up among the file's declarations.
    """
    declared = _declarations(text)
    names = _NAMED_ELEMENT.findall(message) + _QUOTED.findall(message)
    return next((declared[n] for n in names if n in declared), None)


def _numbered_problems(message: str) -> list[tuple[int | None, str]]:
    """Split Finesse 3's ``LINE:COL: message`` lines into (line, message) pairs."""
    problems = []
    for raw in message.splitlines():
        match = _FINESSE3_MESSAGE.match(raw.strip())
        if match:
            problems.append((int(match[1]), match[3]))
    return problems


def load_model(text: str, translation: Translation | None = None, run: bool = False
               ) -> finesse.Model:
    """Parse Finesse 2 kat script with Finesse 3's legacy parser.

    The text goes through katparallel's Finesse 2 front end first (see
    :mod:`katparallel.finesse2.frontend`). Commands the legacy parser accepts but does
    not implement (``tf``, ``map``, ...) would silently change the model, so they are
    errors here; commands it calls obsolete (``gnuterm``, ``time``, ...) are ignored
    as Finesse 2's output does not depend on them.

    Parameters
    ----------
    text : str
        The kat file's contents.
    translation : Translation, optional
        ``translate(text)``, if already made.
    run : bool
        True for this program's own run of the file (see :func:`frontend.apply`).

    Returns
    -------
    finesse.Model

    Raises
    ------
    KatError
        Naming each offending line.
    """
    # Imported here: importing Finesse 3 takes seconds, and `kat -v` must not wait.
    import finesse
    from finesse.script.legacy import KatParserError

    translation = translation or _translated(text)
    model = finesse.Model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.parse_legacy(translation.text)
        except KatParserError as exc:
            raise KatError("read", _numbered_problems(str(exc))) from exc
        except Exception as exc:  # the legacy builder raises plain ValueError/KeyError
            raise KatError("read", [(_line_of(str(exc), text), str(exc))]) from exc
    unimplemented = []
    for warning in caught:
        message = str(warning.message)
        if "not yet implemented" in message:
            unimplemented += _numbered_problems(message)
        elif "is obsolete, ignoring" not in message:
            sys.stderr.write(f"** Warning: {message}\n")
    if unimplemented:
        raise KatError("run", unimplemented)
    try:
        apply(model, translation, run)  # Rc 0, func and put, which the parser lacks
    except Refusal as exc:
        raise KatError("run", [exc.problem]) from exc
    return model


def _translated(text: str) -> Translation:
    """Run the Finesse 2 front end; its refusals become a :class:`KatError`."""
    try:
        translation = translate(text)
    except Refusal as exc:
        raise KatError("run", [exc.problem]) from exc
    for note in translation.notes:
        sys.stderr.write(f"** Finesse 2 quirk: {note}\n")
    for warning in translation.warnings:
        sys.stderr.write(f"** Warning: {warning}\n")
    return translation


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
    problems = (_tuned_between_indices(model, translation, text)
                + _fixed_laser_gouy_phases(model, text)
                + frequencies.unfollowed(model, translation))
    if problems:
        raise ConversionError(problems)
    for note in translation.notes:
        LOGGER.warning("Finesse 2 quirk: %s", note)
    for warning in translation.warnings:
        LOGGER.warning(warning)
    return model


#: ``fixed_parameters``'s key for every parameter but the signal frequency.
EVERY_PARAMETER = "*"


def fixed_parameters(text: str, model: finesse.Model) -> dict[str, str]:
    """Parameters an ensemble must not vary in ``exact_model(text)``, and why.

    The model reproduces Finesse 2 there only for the values the file gives: the
    kat program refuses a sweep or ``put`` of the same parameters (see
    :mod:`katparallel.finesse2.frontend`), and an ensemble job varying them would
    give Finesse 3's numbers silently.

    Parameters
    ----------
    text : str
        The Finesse 2 kat file's contents.
    model : finesse.Model
        Its model, from :func:`exact_model`.

    Returns
    -------
    dict
        ``"component.parameter"`` (or :data:`EVERY_PARAMETER`: all but ``fsig.f``)
        -> the reason.
    """
    from finesse.components import Laser, Modulator

    try:
        translation = translate(text)
    except Refusal:
        return {}  # exact_model refuses the file
    fixed = {}
    for name in translation.opaque:
        fixed[f"{name}.T"] = (
            f"'{name}' sends its transmitted light into a dump, which Finesse 2 leaves "
            "out of the radiation-pressure force; katparallel folds T into the loss "
            "for the file's own T")
    if model.fsig.f.value is not None:
        for element in model.elements.values():
            if isinstance(element, (Laser, Modulator)):
                fixed[f"{element.name}.f"] = (
                    "a carrier frequency changing with a signal on: Finesse 3's signal "
                    "sidebands then differ from Finesse 2's (0.47 against 0.95 in a "
                    "cavity's transfer function)")
    if translation.modulators:
        lineno, name = translation.modulators[0]
        fixed[EVERY_PARAMETER] = (
            f"the signal at modulator '{name}' (line {lineno}) is computed as Finesse "
            "2 does only for the light the file gives it: Finesse 3 does not recompute "
            "the modulator's signal sidebands when anything but the signal frequency "
            "changes")
    return fixed


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


def _fixed_laser_gouy_phases(model: finesse.Model,
                             text: str) -> list[tuple[int | None, str]]:
    """Lasers given Finesse 2's Gouy phase for the geometry as it stands.

    The front end writes it into the laser's mode phases and switches the laser's own
    Gouy phase off (``frontend._laser_gouy_phases``), a setting KatScript cannot
    write, and which a study varying the geometry would leave stale.
    """
    from finesse.components import Laser

    lines = [line.split()[1:2] for line in text.splitlines()]
    return [(next((i for i, words in enumerate(lines, 1) if words == [laser.name]), None),
             f"'{laser.name}' emits higher-order modes and Finesse 2's beam trace "
             "reaches it from a cavity: Finesse 2's Gouy phase there is fixed for one "
             "geometry with a setting KatScript cannot write; run the file with "
             "katparallel's kat instead")
            for laser in model.elements.values()
            if isinstance(laser, Laser) and not laser.add_gouy_phase]
