"""PyKat adapter: run ensembles of pykat ``kat`` objects.

In the parent, :meth:`PykatAdapter.from_source` keeps only the kat's Finesse 2
text (``kat.generateKatScript()``, as pykat's ``parakat`` ships it) and checks
parameter paths against a copy parsed from that text. In a worker,
:meth:`PykatAdapter.base_model` parses the text once per process and caches
the kat; each job sets its values as attributes (``kat.m1.T = 0.3``), runs
``kat.run()`` in a scratch directory of its own, puts the old values back, and
reduces the :class:`pykat.finesse.KatRun` to arrays.

Paths are ``"<name>.<parameter>"`` where ``name`` is a component, detector or
command of the kat and ``parameter`` is one of its pykat parameters, exactly as
written in Python: ``"m1.T"`` for ``kat.m1.T``, ``"s1.L"``, ``"l1.P"``.

``kat.run()`` runs the ``kat`` program PyKat finds: a real Finesse 2 when
installed, else katparallel's Finesse-3-backed one (:func:`katparallel.finesse2.ensure_kat`).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import logging
import re
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..errors import ModelSourceError, UnknownParameterError
from .finesse import Outputs, remember, thread_cache

LOGGER = logging.getLogger(__name__)

__all__ = ("PykatAdapter", "new_kat", "kat_outputs")

# Second words of Finesse 2 output labels that pykat recombines into complex values.
_COMPLEX_PAIRS = {"abs:deg": lambda a, d: a * np.exp(1j * np.pi * d / 180.0),
                  "re:im": lambda re, im: re + 1j * im}


def new_kat(script: str, tempdir: str | None = None):
    """Return a quiet pykat ``kat`` parsed from Finesse 2 ``script``.

    Makes sure PyKat finds a ``kat`` program first (a real Finesse 2, else
    katparallel's), so this works in a fresh worker process.

    Parameters
    ----------
    script : str
        Finesse 2 kat text.
    tempdir : str, optional
        Where ``kat.run()`` writes its ``.kat`` and ``.out`` files.
    """
    from ..finesse2 import ensure_kat

    ensure_kat()
    import pykat

    kat = pykat.finesse.kat(tempdir=tempdir)
    kat.verbose = False
    kat.parse(script)
    return kat


def _is_param(value: Any) -> bool:
    from pykat.param import Param

    return isinstance(value, Param)


def _elements(kat) -> dict[str, Any]:
    """Everything in ``kat`` a path can name: components, detectors, commands."""
    found: dict[str, Any] = {}
    for group in (kat.commands, kat.detectors, kat.components):
        found.update(group)
    return found


def _param_names(element) -> list[str]:
    """Attribute names of ``element`` that hold pykat parameters (``T`` of a mirror)."""
    names = []
    for attr in dir(type(element)):
        if attr.startswith("_") or not isinstance(getattr(type(element), attr, None), property):
            continue
        try:
            if _is_param(getattr(element, attr)):
                names.append(attr)
        except Exception:  # noqa: BLE001 - some properties raise on incomplete elements
            continue
    return names


def _lookup(kat, path: str) -> tuple[Any, str]:
    """The element and attribute a path names, or a helpful error."""
    name, _, attr = path.partition(".")
    elements = _elements(kat)
    element = elements.get(name)
    if element is not None and attr and _is_param(getattr(element, attr, None)):
        return element, attr
    if element is not None:
        params = _param_names(element)
        close = difflib.get_close_matches(attr, params, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(f'{name}.{p}') for p in close)}?" if close else ""
        raise UnknownParameterError(
            f"{name!r} of the kat has no parameter {attr!r}.{hint} "
            f"Its parameters are {', '.join(params) or 'none'}; paths are written as in "
            f"Python, '{name}.<parameter>' for kat.{name}.<parameter>."
        )
    candidates = list(elements)
    for element_name, element in elements.items():
        candidates.extend(f"{element_name}.{p}" for p in _param_names(element))
    close = difflib.get_close_matches(path, candidates, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownParameterError(
        f"The kat has no parameter {path!r}.{hint} Paths are '<name>.<parameter>' as "
        "written in Python (kat.m1.T is 'm1.T'); names are components, detectors "
        f"and commands: {', '.join(sorted(elements)) or 'none'}."
    )


def _axis_dims(script: str) -> tuple[list[str], bool]:
    """Names of the swept parameters (xaxis, x2axis) in a kat script, and noxaxis."""
    dims: dict[str, str] = {}
    noxaxis = False
    for line in script.splitlines():
        words = line.split("#")[0].split("%")[0].split()
        if not words:
            continue
        command = words[0].rstrip("*")
        if command == "noxaxis":
            noxaxis = True
        elif command in ("xaxis", "x2axis") and len(words) >= 3:
            dims[command] = f"{words[1]}.{words[2]}"
    return [dims[c] for c in ("xaxis", "x2axis") if c in dims], noxaxis


def _clean(word: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "", word).lower()


def _columns(out) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Labels, one array per output column, and the axis coordinates of a run."""
    from pykat.finesse import KatRun, KatRun2D

    if isinstance(out, KatRun2D):
        # pykat stores z as (output, x2, x); katparallel puts the xaxis first.
        columns = [np.asarray(out.z[i]).reshape(np.size(out.y), np.size(out.x)).T
                   for i in range(len(out.zlabels))]
        coords = [np.atleast_1d(np.asarray(out.x, float)), np.atleast_1d(np.asarray(out.y, float))]
        return out.zlabels, columns, coords
    if isinstance(out, KatRun):
        y = np.asarray(out.y)
        columns = [y[:, i] for i in range(len(out.ylabels))]
        return out.ylabels, columns, [np.atleast_1d(np.asarray(out.x, float))]
    raise TypeError(
        f"kat.run() returned {type(out).__name__!r}, not a KatRun; katparallel reduces "
        "single runs only (no multisig, getTraceData or perf timing)."
    )


def kat_outputs(out) -> Outputs:
    """Reduce a pykat ``KatRun`` or ``KatRun2D`` to one array per detector.

    Output names are the detector names, the first word of each label as
    pykat's ``out["name"]`` reads them. Two columns of one detector are
    combined into complex values for ``yaxis abs:deg`` and ``re:im``, as pykat
    does; otherwise each column is named ``<detector>_<kind>`` (``ad1_db``).
    Axes are named after the swept parameter (``"l1.P"`` for
    ``xaxis l1 P ...``); with ``noxaxis`` every output is a scalar.
    """
    labels, columns, coords = _columns(out)
    names, noxaxis = _axis_dims(out.katScript or "")
    if noxaxis:
        axes: tuple = ()
        columns = [c.reshape(-1)[0] for c in columns]
    else:
        names = names + [f"axis{k}" for k in range(len(names), len(coords))]
        axes = tuple(zip(names, coords))
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label.split()[0] if label.split() else f"column{i}", []).append(i)
    combine = next((f for kind, f in _COMPLEX_PAIRS.items() if kind in (out.yaxis or "")), None)
    values: dict[str, np.ndarray] = {}
    for name, idx in groups.items():
        if len(idx) == 1:
            values[name] = np.asarray(columns[idx[0]])
        elif len(idx) == 2 and combine is not None:
            values[name] = np.asarray(combine(columns[idx[0]], columns[idx[1]]))
        else:
            for i in idx:
                words = labels[i].split()
                key = f"{name}_{_clean(words[1]) if len(words) > 1 else i}"
                while key in values or key in groups:
                    key += f"_{i}"
                values[key] = np.asarray(columns[i])
    return Outputs(values, {name: axes for name in values})


class PykatAdapter:
    """Recipe for a pykat ``kat``: its Finesse 2 text, shipped to workers.

    Parameters
    ----------
    script : str
        The kat's Finesse 2 text, as ``"".join(kat.generateKatScript())``.
    """

    name = "pykat"
    is_factory = False

    def __init__(self, script: str):
        self.script = script
        self.key = "pykat:" + hashlib.sha1(script.encode()).hexdigest()
        self._probe = None  # parent-side kat used for checks; not shipped

    def __getstate__(self):
        return {"script": self.script, "key": self.key}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._probe = None

    # ------------------------------------------------------------------ parent
    @classmethod
    def from_source(cls, source: Any) -> "PykatAdapter":
        """Make the recipe for a pykat ``kat`` object.

        Raises
        ------
        ModelSourceError
            If ``source`` is not a kat, or its text does not parse back.
        """
        import pykat

        if not isinstance(source, pykat.finesse.kat):
            raise ModelSourceError(
                f"Cannot make jobs from the pykat object {type(source).__name__!r}: "
                "give a pykat.finesse.kat (the whole simulation), not one of its parts."
            )
        script = "".join(source.generateKatScript())
        adapter = cls(script)
        try:
            adapter._probe = new_kat(script)
        except Exception as exc:
            raise ModelSourceError(
                f"pykat could not read back the text of this kat ({type(exc).__name__}: "
                f"{str(exc).strip()}); check kat.generateKatScript()."
            ) from exc
        return adapter

    def probe(self, values: Mapping[str, float] | None = None):
        """A parent-side kat to check paths against (parsed once)."""
        if self._probe is None:
            self._probe = new_kat(self.script)
        return self._probe

    def check_paths(self, paths, values: Mapping[str, float] | None = None) -> None:
        """Raise :class:`UnknownParameterError` for a path the kat lacks."""
        kat = self.probe(values)
        for path in paths:
            _lookup(kat, path)

    def parse_analysis(self, analysis: Any) -> str | None:
        """Check ``run(analysis=...)``: Finesse 2 lines parsed into each job's kat.

        E.g. ``"xaxis m1 phi lin 0 90 100"`` or ``"noxaxis"``.
        """
        if analysis is None:
            return None
        if not isinstance(analysis, str):
            raise TypeError(
                "With a pykat kat, analysis must be Finesse 2 text such as "
                f"'xaxis l1 P lin 1 10 100' or 'noxaxis', got {analysis!r}"
            )
        try:
            copy.deepcopy(self.probe()).parse(analysis)
        except Exception as exc:
            raise ValueError(
                f"pykat could not read the analysis {analysis!r}: {str(exc).strip()}\n"
                "Write it as Finesse 2 text, e.g. 'xaxis l1 P lin 1 10 100'."
            ) from None
        return analysis

    def describe(self) -> str:
        """The kat's Finesse 2 text, recorded with results."""
        return self.script

    def read_seconds(self) -> float:
        """Parsing a kat costs milliseconds: nothing worth weighing."""
        return 0.0

    def before_dispatch(self, workers_inherit: bool) -> None:
        """Nothing to ready: workers parse a kat in milliseconds."""

    def after_run(self) -> None:
        """Nothing is cached on disk for a kat."""

    def batch_reason(self, paths: tuple[str, ...], analysis: Any, forced: bool) -> str:
        """Jobs of a kat always run one by one (each is a run of the ``kat`` program)."""
        return "only Finesse 3 models can be stepped inside one simulation"

    def expected_outputs(self, analysis: Any) -> dict[str, tuple]:
        """Detector names of a ``noxaxis`` kat (scalars); empty when it has an axis."""
        kat = self.probe()
        _, noxaxis = _axis_dims(self.script + "\n" + (analysis or ""))
        return {name: () for name in kat.detectors} if noxaxis else {}

    # ------------------------------------------------------------------ worker
    def base_model(self):
        """The parsed kat, cached in this process and thread."""
        return thread_cache("kats").get(self.key) or remember("kats", self.key, new_kat(self.script))

    def discard(self) -> None:
        """Forget the cached kat."""
        thread_cache("kats").pop(self.key, None)

    @contextlib.contextmanager
    def job_model(
        self, values: Mapping[str, float], rng: np.random.Generator | None, fresh: bool = False
    ) -> Iterator[Any]:
        """The kat a job runs on: a copy when ``fresh`` (2.3 ms against 2.4 ms to
        re-parse), else the cached kat, whose values :meth:`apply` set are put
        back when the job ends (``kat.run()`` changes nothing else)."""
        if fresh:
            yield copy.deepcopy(self.base_model())
            return
        kat = self.base_model()
        try:
            yield kat
        finally:
            try:
                for param, original in reversed(kat.__dict__.pop("_katparallel_undo", [])):
                    param.value = original
            except Exception:  # noqa: BLE001 - parse it afresh for the next job
                LOGGER.warning("could not restore the kat after a job; reparsing it")
                self.discard()

    def apply(self, kat, values: Mapping[str, float]) -> None:
        """Set ``values`` as attributes (``kat.m1.T = v``), noting the old ones.

        pykat checks R + T <= 1 only when it writes the kat's text (in
        ``kat.run()``), so co-varied R and T may be set in any order.
        """
        undo = kat.__dict__.setdefault("_katparallel_undo", [])
        for path, value in values.items():
            element, attr = _lookup(kat, path)
            param = getattr(element, attr)
            undo.append((param, param.constantName if param.isConstant else param.value))
            setattr(element, attr, float(value))

    def run(self, kat, analysis: str | None = None):
        """``kat.run()`` in a scratch directory that is removed afterwards.

        pykat leaves its ``.kat`` and ``.out`` files behind; they go to a
        directory of this job's own instead of the system's temp folder.
        """
        if analysis:
            kat = copy.deepcopy(kat)
            kat.parse(analysis)
        saved = kat._kat__tempdir
        with tempfile.TemporaryDirectory(prefix="katparallel-pykat-") as scratch:
            kat._kat__tempdir = scratch
            try:
                out = kat.run(rethrowExceptions=True)
            finally:
                kat._kat__tempdir = saved
        if out is None:
            raise RuntimeError("kat.run() returned nothing (interrupted?)")
        return out

    def outputs(self, solution) -> Outputs:
        """Reduce a ``KatRun`` to one array per detector (see :func:`kat_outputs`)."""
        return kat_outputs(solution)
