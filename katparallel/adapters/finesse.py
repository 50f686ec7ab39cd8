"""Finesse 3 adapter: rebuild, parameterise, run and reduce Finesse models.

In the parent, :meth:`FinesseAdapter.from_source` reads the user's model once,
checks parameter paths against it and keeps only a recipe: KatScript text
(``model.unparse()``, small and safe to ship), Finesse 2 text for the legacy
parser, dill bytes when neither round-trips, or a dill-pickled factory. In a
worker, :meth:`FinesseAdapter.base_model` parses that recipe once per process
and caches it; each job sets its values on the cached model and restores them
afterwards, so a job costs a simulation build, not a parse.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import logging
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dill
import numpy as np

from ..errors import ModelSourceError, UnknownParameterError
from ..finesse2.convert import exact_model

LOGGER = logging.getLogger(__name__)

__all__ = ("FinesseAdapter", "Outputs")

# Parsed models kept per process: recipe key -> model.
_CACHE: dict[str, Any] = {}
_CACHE_SIZE = 4


def _import_finesse():
    import finesse

    finesse.config.show_progress_bars = False
    return finesse


@dataclass
class Outputs:
    """A job's reduced solution: arrays per output and their own axes.

    ``axes[name]`` is a tuple of ``(dim, coordinate values)`` pairs, e.g. the
    xaxis the model's analysis swept.
    """

    values: dict[str, np.ndarray]
    axes: dict[str, tuple[tuple[str, np.ndarray], ...]]


def _read_text(source: str | os.PathLike) -> tuple[str, str | None]:
    """Return (text, file name or None) for a path or literal model text."""
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and source.strip().endswith(".kat")
    ):
        path = Path(source)
        if not path.is_file():
            raise ModelSourceError(
                f"Model file {str(path)!r} does not exist; give the path to a .kat "
                "file, or the model text itself."
            )
        return path.read_text(), str(path)
    return source, None


def _parse(text: str, syntax: str):
    finesse = _import_finesse()
    model = finesse.Model()
    if syntax == "finesse2":
        model = exact_model(text)  # katparallel's Finesse 2 front end
    else:
        model.parse(text)
    return model


def _close_matches(model, path: str) -> list[str]:
    names = []
    for element in model.elements.values():
        names.append(element.name)
        names.extend(p.full_name for p in element.parameters)
    return difflib.get_close_matches(path, names, n=5, cutoff=0.5)


class FinesseAdapter:
    """Recipe for a Finesse 3 model, shipped to workers instead of the model.

    Parameters
    ----------
    kind : {"katscript", "finesse2", "dill", "factory"}
        How ``data`` rebuilds the model.
    data : str or bytes
        Script text, or dill bytes of a model or factory.
    """

    name = "finesse"

    def __init__(self, kind: str, data: str | bytes):
        self.kind = kind
        self.data = data
        raw = data.encode() if isinstance(data, str) else data
        self.key = kind + ":" + hashlib.sha1(raw).hexdigest()
        self._probe = None  # parent-side model used for checks; not shipped

    def __getstate__(self):
        return {"kind": self.kind, "data": self.data, "key": self.key}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._probe = None

    # ------------------------------------------------------------------ parent
    @classmethod
    def from_source(cls, source: Any, syntax: str | None = None) -> "FinesseAdapter":
        """Make the recipe for ``source`` (see :func:`katparallel.adapters.adapter_for`)."""
        finesse = _import_finesse()
        if isinstance(source, finesse.Model):
            return cls._from_model(source)
        if isinstance(source, (str, os.PathLike)):
            return cls._from_text(source, syntax)
        if callable(source):
            adapter = cls("factory", dill.dumps(source, recurse=True))
            adapter._factory = source
            return adapter
        raise ModelSourceError(
            f"Cannot make jobs from {type(source).__name__!r}: give a finesse.Model, "
            "KatScript or Finesse 2 text, a .kat file path, a pykat kat object, or a "
            "factory callable (values, rng) -> model."
        )

    @classmethod
    def _from_model(cls, model) -> "FinesseAdapter":
        try:
            text = model.unparse()
            _parse(text, "katscript")
            adapter = cls("katscript", text)
        except Exception as exc:  # unparse is not complete for every model
            LOGGER.info("model does not round-trip through KatScript (%s); using dill", exc)
            adapter = cls("dill", dill.dumps(model))
        adapter._probe = model
        return adapter

    @classmethod
    def _from_text(cls, source, syntax: str | None) -> "FinesseAdapter":
        text, filename = _read_text(source)
        where = f" in {filename}" if filename else ""
        if syntax not in (None, "katscript", "finesse2"):
            raise ValueError(f"syntax must be 'katscript' or 'finesse2', got {syntax!r}")
        attempts = [syntax] if syntax else ["katscript", "finesse2"]
        errors = {}
        for kind in attempts:
            try:
                model = _parse(text, kind)
            except Exception as exc:
                errors[kind] = f"{type(exc).__name__}: {str(exc).strip()}"
                continue
            adapter = cls(kind, text)
            adapter._probe = model
            return adapter
        detail = "\n\n".join(f"As {k}:\n{msg}" for k, msg in errors.items())
        raise ModelSourceError(
            f"Could not read the model{where} as "
            + " or ".join(attempts)
            + f".\n\n{detail}\n\nFix the line shown, or pass syntax='katscript' or "
            "syntax='finesse2' to say which language the text is in."
        )

    @property
    def is_factory(self) -> bool:
        return self.kind == "factory"

    def probe(self, values: Mapping[str, float] | None = None):
        """A parent-side model to check paths against (built once)."""
        if self._probe is None:
            if self.is_factory:
                factory = getattr(self, "_factory", None) or dill.loads(self.data)
                rng = np.random.default_rng(0)
                self._probe = factory(dict(values or {}), rng)
                _check_is_model(self._probe)
            else:
                self._probe = self._build()
        return self._probe

    def check_paths(self, paths, values: Mapping[str, float] | None = None) -> None:
        """Raise :class:`UnknownParameterError` for a path the model lacks.

        With a factory, names without a dot are the factory's own arguments
        and are not checked against the model.
        """
        model = self.probe(values)
        for path in paths:
            if self.is_factory and "." not in path:
                continue
            _lookup(model, path)

    def parse_analysis(self, analysis: Any):
        """Check ``run(analysis=...)`` and return what to ship to workers.

        Text is parsed here to catch mistakes early but shipped as text (a
        parsed action holds live parameters that do not pickle); an action
        object must pickle.
        """
        if analysis is None:
            return None
        if isinstance(analysis, str):
            _action_from_text(self.probe(), analysis)
            return analysis
        from finesse.analysis.actions import Action

        if not isinstance(analysis, Action):
            raise TypeError(
                f"analysis must be a Finesse action or KatScript text, got {analysis!r}"
            )
        try:
            pickle.dumps(analysis)
        except Exception as exc:
            raise TypeError(
                f"The analysis {analysis!r} cannot be sent to workers ({exc}); build it "
                "with parameter names, e.g. Xaxis('L0.P', 'lin', 1, 10, 100), or pass "
                "it as KatScript text."
            ) from None
        return analysis

    def describe(self) -> str:
        """Model text recorded with results (for a factory, its name)."""
        if self.kind in ("katscript", "finesse2"):
            return self.data
        if self.is_factory:
            factory = getattr(self, "_factory", None) or dill.loads(self.data)
            return f"factory {getattr(factory, '__qualname__', repr(factory))}"
        return self.probe().unparse()

    # ------------------------------------------------------------------ worker
    def _build(self):
        if self.kind in ("katscript", "finesse2"):
            return _parse(self.data, self.kind)
        _import_finesse()
        return dill.loads(self.data)

    def base_model(self):
        """The parsed model, cached in this process (not for factories)."""
        model = _CACHE.get(self.key)
        if model is None:
            if len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            model = _CACHE[self.key] = self._build()
        return model

    def discard(self) -> None:
        """Forget the cached model (after a job left it in an unknown state)."""
        _CACHE.pop(self.key, None)

    def fresh_model(self, values: Mapping[str, float], rng: np.random.Generator):
        """A model of the job's own: the factory's, or a copy of the base model."""
        if self.is_factory:
            factory = _CACHE.get(self.key)
            if factory is None:
                factory = _CACHE[self.key] = dill.loads(self.data)
            model = factory(dict(values), rng)
            _check_is_model(model)
            return model
        return copy.deepcopy(self.base_model())

    def apply(self, model, values: Mapping[str, float]) -> dict:
        """Set ``values`` on ``model``; return what :meth:`restore` needs.

        Values that decrease are set first, so co-varied R and T of a mirror
        never pass through R + T > 1 on the way.
        """
        params = {}
        for path, value in values.items():
            if self.is_factory and "." not in path:
                continue
            params[path] = _lookup(model, path)
        undo = {"params": params, "originals": {path: p.value for path, p in params.items()}}
        order = sorted(
            params, key=lambda path: values[path] - _as_float(undo["originals"][path])
        )
        try:
            for path in order:
                params[path].value = float(values[path])
        except Exception:
            # Finesse keeps a rejected value (e.g. R + T > 1): undo before raising.
            if not self.restore(undo):
                self.discard()
            raise
        return undo

    def restore(self, undo: dict) -> bool:
        """Put back the values :meth:`apply` replaced; False if that failed."""
        params, originals = undo["params"], undo["originals"]
        order = sorted(
            params, key=lambda path: _as_float(originals[path]) - _as_float(params[path].value)
        )
        try:
            for path in order:
                params[path].value = originals[path]
        except Exception:
            return False
        return all(params[p].value is originals[p] or params[p].value == originals[p] for p in params)

    def run(self, model, analysis):
        """Run ``analysis`` (default: the model's own, else ``Noxaxis``)."""
        from finesse.analysis.actions import Noxaxis

        if isinstance(analysis, str):
            key = (self.key, analysis)
            if key not in _CACHE:
                _CACHE[key] = _action_from_text(model, analysis)
            analysis = _CACHE[key]
        return model.run(analysis or model.analysis or Noxaxis())

    def outputs(self, solution) -> Outputs:
        """Reduce a Finesse solution (or tree of them) to arrays."""
        from finesse.solutions import ArraySolution

        found = []

        def visit(node, prefix):
            if isinstance(node, ArraySolution):
                found.append((prefix, node))
            for child in getattr(node, "children", ()) or ():
                visit(child, prefix + (child.name,))

        visit(solution, ())
        values, axes = {}, {}
        for prefix, sol in found:
            dims = tuple(
                (str(name), np.asarray(x, dtype=float))
                for name, x in zip(sol.params or (), sol.x or ())
            )
            for name in sol.outputs:
                key = ".".join(prefix + (name,)) if len(found) > 1 else name
                values[key] = np.asarray(sol[name])
                axes[key] = dims
        return Outputs(values, axes)


def _action_from_text(model, text: str):
    """Parse analysis KatScript against a copy of ``model``; actions refer to
    parameters by name, so the result runs on any copy of the model."""
    scratch = copy.deepcopy(model)
    scratch.analysis = None
    try:
        scratch.parse(text)
    except Exception as exc:
        raise ValueError(
            f"Could not read the analysis {text!r}: {str(exc).strip()}\n"
            "Write it as KatScript, e.g. 'xaxis(L0.P, lin, 1, 10, 100)'."
        ) from None
    return scratch.analysis


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _check_is_model(model) -> None:
    import finesse

    if not isinstance(model, finesse.Model):
        raise TypeError(
            f"The factory returned {type(model).__name__!r}, not a finesse.Model; "
            "a factory must build and return a fresh model for each job."
        )


def _lookup(model, path: str):
    """The Parameter named ``path`` in ``model``, or a helpful error."""
    from finesse.parameter import Parameter

    try:
        item = model.get(path)
    except Exception:
        item = None
    if isinstance(item, Parameter):
        return item
    matches = _close_matches(model, path)
    if item is not None:
        params = [p.full_name for p in getattr(item, "parameters", [])][:8]
        raise UnknownParameterError(
            f"{path!r} is a {type(item).__name__}, not a parameter; vary one of its "
            f"parameters instead, e.g. {', '.join(params) or 'its numeric settings'}."
        )
    hint = f" Did you mean {', '.join(map(repr, matches))}?" if matches else ""
    raise UnknownParameterError(
        f"The model has no parameter {path!r}.{hint} Paths are "
        "'<component>.<parameter>', e.g. 'm1.T' or 'L0.P'."
    )
