"""The ``kat`` program: Finesse 2's command line, run by Finesse 3's legacy parser.

Usage, as PyKat 1.2.94 calls Finesse 2::

    kat -v
    kat [--pykat=PIPE | --perl1] [--no-backspace] [-format=FMT] file.kat [file.out]

``-v``
    Print one version line, ``Finesse 2.3.0 (BUILD), ...``; PyKat reads BUILD (its
    third word without the brackets and comma) and needs it to be at least 2.3.0.
``--pykat=PIPE``
    Create the named pipe PIPE, wait for PyKat to open it, write ``version:BUILD``
    and ``progress:LABEL<TAB>VALUE<TAB>STATUS`` lines, and close it when done (PyKat
    reads until end of file). VALUE runs to 100 with an xaxis and to 1 without, as
    PyKat's progress bar expects.
``--perl1``
    Run without a pipe; PyKat then reads the version from ``(build BUILD)`` in the
    banner on standard output.
``--no-backspace``
    Accepted; this program never writes backspace-animated progress.
``-cr=on``, ``-cr=off``
    Accepted (PyKat's ``ifo.scan_f`` passes ``-cr=on``): Finesse 2's coupling
    reduction left its output byte for byte the same on four reference files
    (modes, two cavities, a strain signal, quantum noise).
``-format=FMT``
    printf-style format of each number in the output file (default ``%.15g``).

The output file (``file.out`` unless given) has four comment lines, then one row per
point::

    % Finesse 2.3.0 (BUILD), katparallel Finesse 3 backend
    % input file: file.kat
    %XLABEL[,X2LABEL],DET1 KIND,DET2 KIND,...
    %
    x [x2] det1 det2 ...

PyKat takes the third line as the labels (split on commas), skips four rows and reads
the rest with ``numpy.loadtxt``. Detectors appear in the order the file declares them.
With ``x2axis`` the second axis varies fastest, one block per xaxis value, each
followed by a blank line. With ``x3axis`` Finesse 2 writes the third axis first and
varies it slowest (columns ``x3 x x2``), the x2axis fastest. With
``noxaxis`` there is one row with x = 0. ``yaxis`` kinds give one column each per
detector: ``abs`` (the value itself for real-valued detectors, so demodulated
signals keep their sign, the modulus for complex ones), ``deg`` (phase in degrees,
0 for real-valued detectors), ``re``, ``im``, and ``db`` (20 log10 of the modulus);
``abs:deg``, ``db:deg`` and ``re:im`` give two columns labelled with the same
detector name, which PyKat recombines into complex values; as in Finesse 2,
``abs:deg`` and ``db:deg`` give only the first column when every output is real.

The kat file first goes through katparallel's Finesse 2 front end
(:mod:`katparallel.finesse2.frontend`), which translates what Finesse 3's legacy parser
lacks and follows Finesse 2's quirks (each said once on standard error). Anything it
refuses, or that Finesse 3 cannot parse, does not implement or cannot run, ends the
program with exit status 1 and a message on standard error naming the file's line;
no output file is written.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np

from katparallel.finesse2 import frequencies
from katparallel.finesse2.frontend import (
    PLANCK_FINESSE2, STANDARD_INI, Refusal, Translation,
)
from katparallel.finesse2.model import (
    KatError, _code_words, _declarations, _finesse3_version, _line_of, _translated,
    load_model,
)

if TYPE_CHECKING:
    import finesse

__all__ = ("main", "version_line")

#: The Finesse 2 release whose command line and output this program reproduces.
FINESSE2_LEVEL = "2.3.0"
DEFAULT_FORMAT = "%.15g"
_PIPE_TIMEOUT = 10.0  # seconds to wait for PyKat to open its pipe
_DASHES = "-" * 72  # PyKat cuts the banner at the second line of 72 dashes

_ABSENT_BIN = re.compile(r"Error in amplitude detector (\S+):\s*Could not find a "
                         r"frequency bin")
_COLUMN_KINDS = {"abs": "Abs", "deg": "Phase [Deg]", "re": "Re", "im": "Im", "db": "dB"}


class UsageError(Exception):
    """The command line cannot be understood."""


@dataclasses.dataclass(frozen=True)
class Options:
    """The parsed command line."""

    katfile: Path | None = None
    outfile: Path | None = None
    pipe: Path | None = None
    fmt: str = DEFAULT_FORMAT
    version: bool = False


@dataclasses.dataclass(frozen=True)
class Table:
    """One simulation's output, ready to write.

    Attributes
    ----------
    axes : list of (str, numpy.ndarray)
        Label and values of each swept axis, in the order Finesse 2 writes their
        columns (the first varies slowest); one ``("noxaxis", [0])`` axis without a
        sweep.
    columns : list of (str, numpy.ndarray)
        Label and real values of each output column, shaped like the axes.
    """

    axes: list[tuple[str, np.ndarray]]
    columns: list[tuple[str, np.ndarray]]

    @property
    def swept(self) -> bool:
        """False for a ``noxaxis`` run."""
        return self.axes[0][0] != "noxaxis"


def parse_args(argv: Sequence[str]) -> Options:
    """Read Finesse 2's command line.

    Parameters
    ----------
    argv : sequence of str
        The arguments after the program name.

    Returns
    -------
    Options

    Raises
    ------
    UsageError
        On an option this program does not support or a malformed format.
    """
    version = False
    pipe: Path | None = None
    fmt = DEFAULT_FORMAT
    files: list[Path] = []
    for arg in argv:
        if arg == "-v":
            version = True
        elif arg in ("--perl1", "--no-backspace"):
            pass  # no pipe is the default; progress is never backspace-animated
        elif arg in ("-cr=on", "-cr=off"):
            pass  # coupling reduction (PyKat's scan_f): Finesse 2's numbers unchanged
        elif arg.startswith("--pykat="):
            pipe = Path(arg.split("=", 1)[1])
        elif arg.startswith("-format="):
            fmt = _checked_format(arg.split("=", 1)[1])
        elif arg.startswith("-"):
            raise UsageError(
                f"option '{arg}' is not supported by katparallel's Finesse-3-backed "
                "kat (supported: -v, --perl1, --pykat=PIPE, --no-backspace, "
                "-cr=on|off, -format=FMT)"
            )
        else:
            files.append(Path(arg))
    if len(files) > 2 or not (version or files):
        raise UsageError("expected: kat [options] file.kat [file.out]")
    return Options(
        katfile=files[0] if files else None,
        outfile=files[1] if len(files) == 2 else None,
        pipe=pipe,
        fmt=fmt,
        version=version,
    )


def _checked_format(fmt: str) -> str:
    try:
        fmt % 1.5
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"-format={fmt}: not a printf format for one number ({exc}); "
            "use e.g. -format=%.15g"
        ) from exc
    return fmt


def build_id() -> str:
    """Return the build identifier PyKat records as the Finesse version.

    It starts with the Finesse 2 level this program reproduces, which PyKat checks,
    and names the Finesse 3 release doing the work.
    """
    return f"{FINESSE2_LEVEL}-katparallel-finesse{_finesse3_version()}"


def version_line() -> str:
    """Return the line ``kat -v`` prints, in Finesse 2's layout."""
    return f"Finesse {FINESSE2_LEVEL} ({build_id()}), katparallel Finesse 3 backend"


def _banner() -> str:
    return (
        f"{_DASHES}\n"
        f"  FINESSE {FINESSE2_LEVEL} (build {build_id()})\n"
        f"  Finesse 2 kat files run by Finesse {_finesse3_version()}'s legacy parser "
        "(katparallel)\n"
        f"{_DASHES}\n"
    )


class PykatPipe:
    """The named pipe PyKat reads ``tag:value`` lines from (``--pykat=PIPE``).

    Made by :meth:`connect`; leaving the ``with`` block closes and removes the pipe,
    which PyKat sees as end of file.

    Parameters
    ----------
    path : pathlib.Path
        The pipe's name, as PyKat gave it.
    fd : int
        The pipe's writing end.
    """

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def connect(cls, path: Path) -> PykatPipe:
        """Create the named pipe and wait until PyKat has opened it for reading.

        Raises
        ------
        OSError
            If the pipe cannot be made, or PyKat does not open it in time.
        """
        os.mkfifo(path)
        deadline = time.monotonic() + _PIPE_TIMEOUT
        while True:
            try:
                # Non-blocking: fails with ENXIO until PyKat opens the reading end.
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    path.unlink()
                    raise
                time.sleep(0.001)
        os.set_blocking(fd, True)
        return cls(path, fd)

    def __enter__(self) -> PykatPipe:
        return self

    def send(self, tag: str, value: str) -> None:
        """Write one ``tag:value`` line; a reader that has gone away is ignored."""
        if self._fd is None:
            return
        try:
            os.write(self._fd, f"{tag}:{value}\n".encode())
        except BrokenPipeError:
            os.close(self._fd)
            self._fd = None

    def progress(self, label: str, value: int) -> None:
        """Send a progress line: ``progress:LABEL<TAB>VALUE<TAB>``."""
        self.send("progress", f"{label}\t{value}\t")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)


def _kind_columns(values: np.ndarray, kind: str) -> np.ndarray:
    real = not np.iscomplexobj(values)
    if kind == "abs":
        return values if real else np.abs(values)
    if kind == "deg":
        return np.zeros_like(values, float) if real else np.degrees(np.angle(values))
    if kind == "re":
        return np.real(values)
    if kind == "im":
        return np.zeros_like(values, float) if real else np.imag(values)
    with np.errstate(divide="ignore"):
        return 20 * np.log10(np.abs(values))


def _axis_label(model: finesse.Model, name: str) -> str:
    param = model.get(name)
    units = f" [{param.units}]" if param.units else ""
    return f"{param.owner.name} {param.name}{units}"


def simulate(model: finesse.Model, text: str, translation: Translation) -> Table:
    """Run the model's ``xaxis``/``x2axis``/``noxaxis`` and lay out its output.

    Parameters
    ----------
    model : finesse.Model
        A model from :func:`load_model`.
    text : str
        The kat file's contents, for the detectors' declaration order and errors.
    translation : Translation
        What the Finesse 2 front end made of ``text`` (output scales and moduli).

    Returns
    -------
    Table

    Raises
    ------
    KatError
        If there is no axis, an unknown ``yaxis`` kind, or Finesse 3 fails to run
        the model.
    """
    from finesse.analysis.actions import Noxaxis, X2axis, X3axis, Xaxis

    if translation.beam_axes:
        model.analysis = Noxaxis()  # the camera is the sweep
    analysis = model.analysis
    if not isinstance(analysis, (Noxaxis, Xaxis, X2axis, X3axis)):
        what = type(analysis).__name__ if analysis is not None else "no analysis"
        raise KatError("run", [(None, f"needs one 'xaxis', 'x2axis', 'x3axis' or "
                                      f"'noxaxis' command, found {what}")])
    if not model.detectors:
        raise KatError("run", [(None, "no outputs have been specified in the input "
                                      "file (Finesse 2 refuses this too); add a "
                                      "detector such as 'pd NAME NODE'")])
    kinds = ((model.yaxis or {}).get("axes") or "abs").split(":")
    unknown = [k for k in kinds if k not in _COLUMN_KINDS]
    if unknown:
        raise KatError("run", [(None, f"yaxis kind '{':'.join(kinds)}' is not one "
                                      f"of {', '.join(_COLUMN_KINDS)}")])
    solution, absent = _run_model(model, text)
    frequencies.refuse_coincidences(solution, model, translation)
    silent = [d.name for d in model.detectors
              if d.name not in solution.outputs and d.name not in absent]
    if silent:  # an output Finesse 2 writes must never go missing silently
        raise KatError("run", [(_line_of(f"'{silent[0]}'", text), f"Finesse 3 "
                                f"computed no output for detector '{silent[0]}'")])
    if translation.beam_axes:
        axes = _camera_axes(model, translation.beam_axes)
    elif isinstance(analysis, Noxaxis):
        axes = [("noxaxis", np.zeros(1))]
    else:
        axes = [(_axis_label(model, name), np.asarray(values))
                for name, values in zip(analysis.parameters, solution.x)]
    shape = tuple(len(values) for _, values in axes)
    declared = _declarations(text)
    declared.update({name: lineno for name, (_, lineno) in translation.renamed.items()})
    # Finesse 2 writes its detectors first, then its functions and locks, each in file
    # order.
    computed = {name: lineno for lineno, name, _ in translation.funcs}
    computed.update({lock.name: lock.lineno for lock in translation.locks})
    hidden = translation.hidden()
    names = sorted([n for n in [*solution.outputs, *absent] if n not in hidden],
                   key=lambda n: (n in computed, computed.get(n) or
                                  declared.get(n, len(text))))
    outputs = {name: _output(solution, name, absent, translation, model, shape)
               for name in names}
    # Finesse 2 writes no phase column for 'abs:deg' or 'db:deg' when every output is
    # real (DC photodiodes, demodulated ones with all phases given, bp, gouy, funcs,
    # qshot); an 'ad', even at a frequency no source makes, is complex, and so is a
    # qnoised or qnoisedS (measured: a phase column of zeros).
    if (kinds in (["abs", "deg"], ["db", "deg"]) and not absent
            and not any(np.iscomplexobj(values) for values in outputs.values())
            and not any(type(model.elements.get(name)).__name__.startswith(
                "QuantumNoiseDetector") for name in names)):
        kinds = kinds[:1]
    columns = [
        (f"{translation.renamed.get(name, (name,))[0]} {_COLUMN_KINDS[kind]}",
         _kind_columns(outputs[name], kind).reshape(shape))
        for name in names
        for kind in kinds
    ]
    return _finesse2_order(Table(axes=axes, columns=columns))


def _finesse2_order(table: Table) -> Table:
    """Put an ``x3axis`` first, as Finesse 2 writes it (and varies it slowest)."""
    if len(table.axes) < 3:
        return table
    return Table(axes=[table.axes[2], *table.axes[:2]],
                 columns=[(label, np.moveaxis(values, 2, 0))
                          for label, values in table.columns])


def _camera(model: finesse.Model):
    from finesse.detectors.camera import Image, ScanLine

    return next(d for d in model.detectors if isinstance(d, (Image, ScanLine)))


def _camera_axes(model: finesse.Model, order: list[str]) -> list[tuple[str, np.ndarray]]:
    """The axes of a beam detector swept over its own x/y, xaxis first."""
    camera = _camera(model)
    data = {"x": camera.xdata, "y": camera.ydata}
    return [(f"{camera.name} {axis}", np.atleast_1d(data[axis])) for axis in order]


def _camera_values(model: finesse.Model, values: np.ndarray, name: str,
                   order: list[str], shape: tuple[int, ...]) -> np.ndarray:
    """A detector's output over the camera's sweep: images are indexed [y, x]."""
    if name != _camera(model).name:
        return np.broadcast_to(values, shape)
    return values.T if order == ["x", "y"] else values


def _run_model(model: finesse.Model, text: str) -> tuple[object, list[str]]:
    """Run the model; amplitude detectors at absent frequencies are left out.

    Finesse 2 outputs 0 for an ``ad`` at a frequency no source produces; Finesse 3
    refuses to build it. One within Finesse 2's tolerance of a bin is put on it
    (``frequencies.snap``). Returns the solution and the names of the detectors left
    out, whose outputs are 0.
    """
    absent: list[str] = []
    snapped: set[str] = set()
    while True:
        try:
            return model.run(), absent
        except Refusal as exc:  # a lock Finesse 2 gives up on
            raise KatError("run", [exc.problem]) from exc
        except Exception as exc:
            match = _ABSENT_BIN.search(str(exc))
            if match is None or match[1] not in model.elements:
                raise KatError("run", [(_line_of(str(exc), text), str(exc))]) from exc
            if match[1] not in snapped and frequencies.snap(model, match[1]):
                snapped.add(match[1])  # a bin within Finesse 2's tolerance
                continue
            absent.append(match[1])
            model.remove(model.elements[match[1]])


def _output(solution, name: str, absent: list[str], translation: Translation,
            model: finesse.Model, shape: tuple[int, ...]) -> np.ndarray:
    """One detector's output, as Finesse 2 writes it (``scale``, ``max``, absent, and
    ``inf`` for the radius of curvature at a waist, where Finesse 3 gives NaN)."""
    if name in translation.frequency_bins:  # Finesse 2's field at its frequency
        return (frequencies.ad_output(solution, name, translation, model).reshape(shape)
                * translation.scale_of(name, float(model.lambda0)))
    if name in absent:
        return np.zeros(shape)
    values = np.asarray(solution[name])
    if _is_roc(model.elements[name]):
        values = np.where(np.isnan(values), np.inf, values)
    if translation.beam_axes:
        values = _camera_values(model, values, name, translation.beam_axes, shape)
    if name in translation.first_max:  # see frontend._Translator.first_demod_max
        other, phase = translation.first_max[name]
        p = values + 1j * np.asarray(solution[other])
        q = values - 1j * np.asarray(solution[other])
        phi = (np.angle(p) - np.angle(q)) / 2  # each angle in (-pi, pi], unwrapped
        values = (p * np.exp(-1j * phi) + q * np.exp(1j * phi)) / 2
        if phase is not None:
            values = np.real(np.exp(-1j * math.radians(phase)) * values)
    if name in translation.quadratures:
        values = _quadrature(solution, name, translation.quadratures[name][1], model)
    if name in translation.moduli:
        values = np.abs(values)
    if name in translation.noise:  # see frontend._Translator.noise
        signal = translation.noise[name]
        if name in translation.noise_max:
            values = _noise_at_max(solution, name, signal, translation, model)
        else:
            values = _noise(solution, name, translation, model)
            if signal is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    values = values / np.abs(np.asarray(solution[signal]))
        values = values * math.sqrt(PLANCK_FINESSE2 / _planck())
        if name in translation.snr:  # an N form: signal over noise
            with np.errstate(divide="ignore"):
                values = 1 / values
    return values * translation.scale_of(name, float(model.lambda0))


def _noise(solution, name: str, translation: Translation,
           model: finesse.Model) -> np.ndarray:
    """A quantum-noise detector's output, its modes' vacuum noise summed as Finesse 2.

    See ``frontend._mode_fields``. For each vacuum frequency g = f_k + sum s_i f_i
    (+- fs, alike) that no signal sideband occupies (any, for qshot), Finesse 3 adds
    (1 + g / f0) sum_j |S_j|^2 where S_j = c_0 + ... + c_j and c_j is mode j's sum
    over carriers k of a_kj exp(i sum s_i phi_i); Finesse 2 adds sum_j |c_j|^2. The
    square of the output changes by K times the difference, K = 2 0.25^N h f0 (N
    demodulations; Finesse 3's normalisation, fields a = sqrt(2) times the field
    detectors' outputs).
    """
    values = np.asarray(solution[name])
    fields = translation.mode_fields.get(name)
    if not fields:
        return values
    shot, freqs, phases = translation.rf_noise[name]
    carriers = [float(model.elements[field].f.value) for field in fields]
    f0 = float(model.f0)
    groups: dict[float, list[np.ndarray]] = {}
    for fk, field in zip(carriers, fields):
        amplitude = np.asarray(solution[field]) * math.sqrt(2)
        for signs in itertools.product((1, -1), repeat=len(freqs)):
            g = fk + sum(s * f for s, f in zip(signs, freqs))
            key = next((x for x in groups if math.isclose(x, g, abs_tol=1e-6)), g)
            phi = math.radians(sum(s * p for s, p in zip(signs, phases)))
            groups.setdefault(key, []).append(amplitude * np.exp(1j * phi))
    change = np.zeros(np.shape(values))
    for g, terms in groups.items():
        if not shot and any(math.isclose(g, fk, abs_tol=1e-6) for fk in carriers):
            continue  # a signal sideband's frequency: no pure vacuum there
        c = np.sum(terms, axis=0)
        change += 2 * (1 + g / f0) * (np.sum(np.abs(c) ** 2, axis=-1)
                                      - np.sum(np.abs(np.cumsum(c, axis=-1)) ** 2, axis=-1))
    factor = 2 * 0.25 ** (len(freqs) + 1) * _planck() * f0
    return np.sqrt(values ** 2 + factor * change)


def _noise_at_max(solution, name: str, signal: str, translation: Translation,
                  model: finesse.Model) -> np.ndarray:
    """An ``S`` form's noise over signal at the RF phase maximising the signal.

    See ``frontend._Translator.noise_at_max``: phi = (arg P - arg Q) / 2 with
    P, Q = Z(0) +- i Z(90), the noise power A + B cos 2phi + C sin 2phi.
    """
    q45, q90, signal90, phase = translation.noise_max[name]
    n0, n45, n90 = (_noise(solution, n, translation, model) ** 2
                    for n in (name, q45, q90))
    z0, z90 = np.asarray(solution[signal]), np.asarray(solution[signal90])
    p, q = z0 + 1j * z90, z0 - 1j * z90
    phi = (np.angle(p) - np.angle(q)) / 2
    mean, cosine = (n0 + n90) / 2, (n0 - n90) / 2
    noise = np.sqrt(mean + cosine * np.cos(2 * phi) + (n45 - mean) * np.sin(2 * phi))
    z = (p * np.exp(-1j * phi) + q * np.exp(1j * phi)) / 2
    if phase is not None:
        z = np.real(np.exp(-1j * math.radians(phase)) * z)
    with np.errstate(divide="ignore", invalid="ignore"):
        return noise / np.abs(z)


def _quadrature(solution, name: str, phase: float, model: finesse.Model) -> np.ndarray:
    """``qd``: the noise variance over the vacuum's in the quadrature -(PHASE + arg c),
    a + b cos 2phi + c sin 2phi from the homodyne noise at 0, 45 and 90 degrees (see
    ``frontend._Translator.quadrature``); ``solution[name]`` is the carrier c."""
    from finesse.constants import values as constants

    vacuum = 2 * constants.H_PLANCK * constants.C_LIGHT / float(model.lambda0)
    v0, v45, v90 = (np.abs(np.asarray(solution[f"{name}__q{p}"])) ** 2 / vacuum
                    for p in (0, 45, 90))
    mean, cos2 = (v0 + v90) / 2, (v0 - v90) / 2
    phi = -(math.radians(phase) + np.angle(np.asarray(solution[name])))
    return mean + cos2 * np.cos(2 * phi) + (v45 - mean) * np.sin(2 * phi)


def _planck() -> float:
    """Planck's constant as Finesse 3 computes quantum noise with it."""
    from finesse.constants import values

    return float(values.H_PLANCK)


def _is_roc(detector) -> bool:
    """True for a ``bp … rc`` detector."""
    from finesse.detectors import BeamPropertyDetector
    from finesse.detectors.compute.gaussian import BeamProperty

    return isinstance(detector, BeamPropertyDetector) and detector.detecting is BeamProperty.ROC


def _blocks(table: Table) -> Iterator[np.ndarray]:
    """Yield the output rows in blocks: one per value of the axes before the last.

    Finesse 2 writes a blank line after each block when there are several axes.
    """
    *outer, (_, last) = table.axes
    for index in np.ndindex(*(len(values) for _, values in outer)):
        yield np.column_stack(
            [np.full(len(last), values[i]) for (_, values), i in zip(outer, index)]
            + [last] + [values[index] for _, values in table.columns])


def write_out(path: Path, table: Table, katfile: Path, fmt: str) -> None:
    """Write the output file in Finesse 2's text layout (see the module docstring).

    Parameters
    ----------
    path : pathlib.Path
        The output file.
    table : Table
        What to write.
    katfile : pathlib.Path
        The input file, named in the header.
    fmt : str
        printf-style format for each number.
    """
    labels = [label for label, _ in table.axes] + [label for label, _ in table.columns]
    with open(path, "w") as fh:
        fh.write(f"% {version_line()}\n% input file: {katfile}\n")
        fh.write(f"%{','.join(labels)}\n%\n")  # PyKat strips no space off x labels
        line = " ".join([fmt] * len(labels)) + "\n"
        blank = "\n" if len(table.axes) > 1 else ""
        for rows in _blocks(table):
            fh.write("".join(line % row for row in map(tuple, rows.tolist())) + blank)


def _wants_time(text: str) -> bool:
    return any(_code_words(line)[:1] == ["time"] for line in text.splitlines())


def nonstandard_kat_ini() -> str | None:
    """Why the ``kat.ini`` Finesse 2 would read here changes results, or None.

    Finesse 2 reads ``./kat.ini``, else the file ``$KATINI`` names. This program
    follows the standard settings
    (:data:`~katparallel.finesse2.frontend.STANDARD_INI`) and reads no kat.ini, so
    one that sets any of them otherwise would give silently different numbers.
    """
    found = [Path("kat.ini"), Path(os.environ.get("KATINI", "") or "kat.ini")]
    path = next((p for p in found if p.is_file()), None)
    if path is None:
        return None
    for line in path.read_text(errors="replace").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 2 or words[0] not in STANDARD_INI:
            continue
        try:
            same = math.isclose(float(words[1]), STANDARD_INI[words[0]], rel_tol=1e-12)
        except ValueError:
            same = False
        if not same:
            return (
                f"{path.resolve()} sets '{words[0]} {words[1]}', and katparallel's kat "
                f"follows Finesse 2's standard kat.ini ({words[0]} "
                f"{STANDARD_INI[words[0]]:g}): remove that line, or run a real Finesse 2"
            )
    return None


def _run(opts: Options, pipe: PykatPipe | None) -> int:
    assert opts.katfile is not None
    start = time.perf_counter()
    sys.stdout.write(_banner())
    problem = nonstandard_kat_ini()
    if problem is not None:
        sys.stderr.write(f"*** Error: {problem}\n")
        return 1
    try:
        text = opts.katfile.read_text()
    except OSError as exc:
        sys.stderr.write(f"*** Error: cannot read input file '{opts.katfile}': "
                         f"{exc.strerror}\n")
        return 1
    try:
        translation = _translated(text)
        model = load_model(text, translation, run=True)
        if pipe is not None:
            pipe.progress("Calculating", 0)
        table = simulate(model, text, translation)
    except KatError as exc:
        sys.stderr.write(exc.render(text, str(opts.katfile)))
        return 1
    write_out(opts.outfile or opts.katfile.with_suffix(".out"), table, opts.katfile,
              opts.fmt)
    if pipe is not None:
        pipe.progress("Calculating", 100 if table.swept else 1)
    if _wants_time(text):
        sys.stdout.write(f"computation time: {time.perf_counter() - start:.6g}s\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kat`` program.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments after the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit status: 0 on success, 1 on any error (reported on standard error).
    """
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        sys.stderr.write(f"*** Error: {exc}\n")
        return 1
    if opts.version:
        sys.stdout.write(version_line() + "\n")
        return 0
    if opts.pipe is None:
        return _run(opts, None)
    try:
        pipe = PykatPipe.connect(opts.pipe)
    except OSError as exc:
        sys.stderr.write(f"*** Error: cannot open PyKat's pipe '{opts.pipe}': {exc}\n")
        return 1
    with pipe:
        pipe.send("version", build_id())
        return _run(opts, pipe)
