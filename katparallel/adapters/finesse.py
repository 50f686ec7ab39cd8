"""Finesse 3 adapter: rebuild, parameterise, run and reduce Finesse models.

In the parent, :meth:`FinesseAdapter.from_source` reads the user's model once,
checks it and keeps only a recipe: KatScript text (small and safe to ship),
Finesse 2 text, dill bytes when the model does not round-trip through
KatScript, or a dill-pickled factory. The model it parsed for the checks
becomes this process's cached base model, so the parent parses a model at
most once.

In a worker, :meth:`FinesseAdapter.base_model` parses the recipe once per
process (and thread) and records the value of every parameter. A job sets its
values on that model and runs; afterwards every parameter that changed --
the job's own values, and whatever the analysis changed, such as the tunings
``RunLocks`` converged to -- is put back. So every job starts from the base
model's state, and a job's result does not depend on which jobs ran before it
in the same worker.

A varied parameter that is symbolic in the model (``ITMX.L = Xloss/2``) takes
the job's value in place of its expression for that job; parameters whose
expressions refer to a varied one (a model ``variable`` such as ``Xloss``)
follow it. Both hold on the per-job path and on the batched fast path
(:mod:`katparallel.adapters.stepping`).
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import logging
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dill
import numpy as np

from ..errors import InvalidValuesError, ModelSourceError, UnknownParameterError
from ..finesse2.model import EVERY_PARAMETER, exact_model, fixed_parameters
from . import modelcache
from .support import as_array, detector_values, quiet

LOGGER = logging.getLogger(__name__)

__all__ = ("FinesseAdapter", "Outputs", "as_array", "detector_values")

#: Most entries of each kind (parsed models, factories, analyses) kept per thread.
_CACHE_SIZE = 4
_LOCAL = threading.local()


def thread_cache(kind: str) -> dict[Any, Any]:
    """This thread's cache of ``kind`` ("models", "factories", "actions", "kats").

    Per thread, because jobs change a model in place: threads never share one.
    """
    caches = getattr(_LOCAL, "caches", None)
    if caches is None:
        caches = _LOCAL.caches = {}
    return caches.setdefault(kind, {})


def remember(kind: str, key: Any, value: Any) -> Any:
    """Keep ``value`` in this thread's cache of ``kind``, dropping the oldest; return it."""
    cache = thread_cache(kind)
    if len(cache) >= _CACHE_SIZE:
        cache.pop(next(iter(cache)))
    cache[key] = value
    return value


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


class BaseModel:
    """A parsed model and the value of each of its parameters when parsed.

    ``saving`` is set while a model that was slow to parse is not yet in the
    on-disk cache: the child process that pickles its fresh parse, whose
    entry :meth:`save` has named there (:meth:`settle` waits for it).
    """

    def __init__(self, model: Any, read_seconds: float = 0.0,
                 saving: modelcache.Saving | None = None):
        self.model = model
        self.snapshot = [(p, p.value) for p in model.all_parameters]
        self.read_seconds = read_seconds
        self.saving = saving

    def save(self) -> None:
        """Have the fresh parse written to the on-disk cache, if it is due there
        (this does not wait for it)."""
        if self.saving is not None:
            self.saving.start()
            if self.saving.wait(0.0):
                self.saving = None

    def make_way(self) -> None:
        """Let the child process that caches the model run only on CPU time the
        jobs about to run here do not want."""
        if self.saving is not None:
            self.saving.make_way()

    def settle(self) -> "BaseModel":
        """Have the model written to the on-disk cache and wait for it; return self."""
        if self.saving is not None:
            self.saving.settle()
            self.saving = None
        return self

    def reset(self) -> bool:
        """Put back every parameter that changed; False if Finesse refused one."""
        changed = [(p, v) for p, v in self.snapshot if not _same(p.value, v)]
        # Values that decrease first, so R + T never passes 1 on the way back.
        changed.sort(key=lambda pv: _as_float(pv[1]) - _as_float(pv[0].value))
        try:
            for param, value in changed:
                param.value = value
        except Exception as exc:  # noqa: BLE001 - the caller reparses
            LOGGER.debug("could not reset %s: %s", param.full_name, exc)
            return False
        return True


def _same(current: Any, original: Any) -> bool:
    if current is original:
        return True
    numbers = (int, float, complex, np.number)
    return isinstance(current, numbers) and isinstance(original, numbers) and current == original


def _as_float(value: Any) -> float:
    try:
        return float(value.eval() if hasattr(value, "eval") else value)
    except (TypeError, ValueError):
        return 0.0


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


def _load_or_parse(text: str, syntax: str, save: bool) -> BaseModel:
    """The model of ``text``: from the on-disk cache (saying again the notes its
    parse logged), else parsed (and, if ``save`` and the parse was slow, handed
    as parsed to a child process that pickles it, for :meth:`BaseModel.save`)."""
    _import_finesse()
    key = modelcache.entry_key(text, syntax)
    started = time.perf_counter()
    cached = modelcache.load(key)
    if cached is not None:
        cached.replay_notes()
        return BaseModel(cached.model, read_seconds=time.perf_counter() - started)
    with modelcache.recording_notes(logging.getLogger(exact_model.__module__)) as notes:
        model = _parse(text, syntax)
    seconds = time.perf_counter() - started
    saving = None
    if save and seconds > modelcache.MIN_PARSE_SECONDS:
        saving = modelcache.save_in_child(key, model, notes, _parameter_state)
    return BaseModel(model, seconds, saving)


def unparse(model) -> str:
    """``model.unparse()`` without Finesse's "Intent-preserving regeneration ... not
    implemented" notes, which it logs on every call and which say nothing of the model."""
    with quiet("finesse.script.generator"):
        return model.unparse()


def _parameter_state(model) -> dict[str, Any]:
    """What must survive a KatScript round trip: element types, parameter values."""
    state: dict[str, Any] = {name: type(el).__name__ for name, el in model.elements.items()}
    for param in model.all_parameters:
        value = param.value
        evaluated = value.eval() if param.is_symbolic else value
        state[param.full_name] = (param.is_symbolic, np.asarray(evaluated, dtype=object).tolist())
    return state


def round_trip(model, text: str) -> tuple[BaseModel | None, str | None]:
    """``(the model read from text, None)``, or ``(None, how it differs from model)``."""
    try:
        reparsed = _load_or_parse(text, "katscript", save=True)
    except Exception as exc:  # noqa: BLE001 - reported as the difference
        return None, f"its KatScript does not parse back ({type(exc).__name__}: {str(exc).strip()})"
    before, after = _parameter_state(model), _parameter_state(reparsed.model)
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            return None, (
                f"{name} is {before.get(name)!r} in the model but "
                f"{after.get(name)!r} after unparse()"
            )
    return reparsed, None


class FinesseAdapter:
    """Recipe for a Finesse 3 model, shipped to workers instead of the model.

    Parameters
    ----------
    kind : {"katscript", "finesse2", "dill", "factory"}
        How ``data`` rebuilds the model.
    data : str or bytes
        Script text, or dill bytes of a model or factory.
    description : str, optional
        The model text recorded with results (default: ``data`` for text).
    """

    name = "finesse"

    def __init__(self, kind: str, data: str | bytes, description: str | None = None):
        self.kind = kind
        self.data = data
        raw = data.encode() if isinstance(data, str) else data
        self.key = kind + ":" + hashlib.sha1(raw).hexdigest()
        self.description = description if description is not None else (
            data if isinstance(data, str) else ""
        )
        self._probe = None  # parent-side model used for checks; not shipped
        self._factory = None

    def __getstate__(self):
        return {"kind": self.kind, "data": self.data, "key": self.key}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.description = ""
        self._probe = None
        self._factory = None

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
            adapter.description = f"factory {getattr(source, '__qualname__', repr(source))}"
            return adapter
        raise ModelSourceError(
            f"Cannot make jobs from {type(source).__name__!r}: give a finesse.Model, "
            "KatScript or Finesse 2 text, a .kat file path, a pykat kat object, or a "
            "factory callable (values, rng) -> model."
        )

    @classmethod
    def _from_model(cls, model) -> "FinesseAdapter":
        """Ship ``model`` as KatScript if that reproduces it exactly, else with dill.

        Checked once, here, before any job runs: a model neither form can carry
        is refused with the reasons.
        """
        try:
            text = unparse(model)
        except Exception as exc:  # noqa: BLE001 - unparse is not complete for every model
            text, why = None, f"unparse() raised {type(exc).__name__}: {str(exc).strip()}"
        else:
            reparsed, why = round_trip(model, text)
        if why is None:
            adapter = cls("katscript", text)
            adapter._seed_cache(reparsed)
            return adapter
        LOGGER.info("the model does not round-trip through KatScript (%s); using dill", why)
        try:
            data = dill.dumps(model)
            copy_ = dill.loads(data)
        except Exception as exc:  # noqa: BLE001 - e.g. RecursionError on big models
            raise ModelSourceError(
                "This finesse.Model cannot be sent to worker processes: as KatScript, "
                f"{why}; with dill, {type(exc).__name__}: {str(exc).strip()[:200]}. "
                "Pass the KatScript text or .kat file the model was parsed from, or a "
                "factory that builds it."
            ) from None
        adapter = cls("dill", data, description=text or f"<a finesse.Model: {why}>")
        adapter._seed_cache(BaseModel(copy_))
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
            adapter = cls(kind, text)
            known = thread_cache("models").get(adapter.key)
            if known is not None:  # read here before: no second parse
                adapter._probe = known.model
                return adapter
            try:
                base = _load_or_parse(text, kind, save=True)
            except Exception as exc:
                errors[kind] = f"{type(exc).__name__}: {str(exc).strip()}"
                continue
            adapter._seed_cache(base)
            return adapter
        detail = "\n\n".join(f"As {k}:\n{msg}" for k, msg in errors.items())
        raise ModelSourceError(
            f"Could not read the model{where} as "
            + " or ".join(attempts)
            + f".\n\n{detail}\n\nFix the line shown, or pass syntax='katscript' or "
            "syntax='finesse2' to say which language the text is in."
        )

    def _seed_cache(self, base: BaseModel) -> None:
        """Use the model read for the checks as this process's base model too."""
        self._probe = remember("models", self.key, base).model

    @property
    def is_factory(self) -> bool:
        return self.kind == "factory"

    def probe(self, values: Mapping[str, float] | None = None):
        """A parent-side model to check paths against (built once)."""
        if self._probe is None:
            if self.is_factory:
                factory = self._factory or dill.loads(self.data)
                self._probe = factory(dict(values or {}), np.random.default_rng(0))
                _check_is_model(self._probe)
            else:
                self._probe = self.base_model()
        return self._probe

    def check_paths(self, paths, values: Mapping[str, float] | None = None) -> None:
        """Raise :class:`UnknownParameterError` for a path the model lacks.

        With a factory, names without a dot are the factory's own arguments
        and are not checked against the model.
        """
        model = self.probe(values)
        fixed = fixed_parameters(self.data, model) if self.kind == "finesse2" else {}
        for path in paths:
            if self.is_factory and "." not in path:
                continue
            _lookup(model, path)
            why = fixed.get(path) or (path != "fsig.f" and fixed.get(EVERY_PARAMETER))
            if why:
                raise InvalidValuesError(
                    f"{path!r} cannot be varied in this Finesse 2 file: {why}. Run "
                    "each value as its own kat file (katparallel's kat refuses the "
                    "same sweep), or write the model in KatScript to vary it with Finesse 3's own conventions.")

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
        return self.description

    def before_dispatch(self, workers_inherit: bool) -> None:
        """Ready the model for the workers of a run.

        Workers that read the model get it on disk first, if it was slow to
        parse (they load it instead of parsing it again). Workers that inherit
        this process's memory need nothing; its disk copy then waits for
        :meth:`after_run`, and the child process that writes it gives way to
        the jobs. A child process, not a thread: a pool may fork.
        """
        entry = None if self.is_factory else thread_cache("models").get(self.key)
        if entry is not None and not workers_inherit:
            entry.settle()
        elif entry is not None:
            entry.make_way()

    def after_run(self) -> None:
        """Have a model that was slow to parse written to the on-disk cache, if
        that is not done yet, without waiting: later sessions load it instead of
        parsing it. The child process that writes it outlives a script that
        ends here."""
        entry = None if self.is_factory else thread_cache("models").get(self.key)
        if entry is not None:
            entry.save()

    def read_seconds(self) -> float:
        """How long reading the model took here (a worker pays about as much once)."""
        entry = None if self.is_factory else thread_cache("models").get(self.key)
        return entry.read_seconds if entry is not None else 0.0

    def batch_reason(self, paths: tuple[str, ...], analysis: Any, forced: bool) -> str | None:
        """Why jobs varying ``paths`` cannot be stepped in one simulation (None if they can).

        ``forced`` (``run(batch=True)``) changes nothing here: whether an
        analysis with its own axis is worth stepping is measured by the runner.
        """
        if self.is_factory:
            return "a factory builds a new model for every job"
        from .stepping import batch_reason

        return batch_reason(self.probe(), paths, self.action(self.probe(), analysis))

    def nested_points(self, analysis: Any) -> int:
        """Points of the analysis axis a stepped job runs whole (0: none, e.g. ``Noxaxis``)."""
        from .stepping import nested_points

        return 0 if self.is_factory else nested_points(self.probe(), self.action(self.probe(), analysis))

    def expected_outputs(self, analysis: Any) -> dict[str, tuple]:
        """Output names and axes a job would give, read from the model without running it."""
        from .stepping import expected_outputs

        if self.is_factory:
            return {}
        return expected_outputs(self.probe(), self.action(self.probe(), analysis))

    # ------------------------------------------------------------------ worker
    def _build(self) -> BaseModel:
        if self.kind in ("katscript", "finesse2"):
            return _load_or_parse(self.data, self.kind, save=False)
        _import_finesse()
        return BaseModel(dill.loads(self.data))

    def _base(self) -> BaseModel:
        entry = thread_cache("models").get(self.key)
        if entry is None:
            entry = remember("models", self.key, self._build())
        return entry

    def base_model(self):
        """The parsed model, cached in this process and thread (not for factories)."""
        return self._base().model

    def discard(self) -> None:
        """Forget the cached model (after a job left it in an unknown state)."""
        thread_cache("models").pop(self.key, None)

    @contextlib.contextmanager
    def job_model(
        self, values: Mapping[str, float], rng: np.random.Generator, fresh: bool = False
    ) -> Iterator[Any]:
        """The model a job runs on, in the base model's state.

        A factory's model, a copy of the base model when ``fresh`` (for perturb
        functions, which may change its structure), or the cached base model
        itself, every parameter of which is put back when the job ends.
        """
        if self.is_factory:
            factory = thread_cache("factories").get(self.key) or remember(
                "factories", self.key, dill.loads(self.data))
            model = factory(dict(values), rng)
            _check_is_model(model)
            yield model
            return
        if fresh:
            yield copy.deepcopy(self.base_model())
            return
        base = self._base()
        try:
            yield base.model
        finally:
            if not base.reset():
                LOGGER.warning("could not restore the model after a job; reparsing it")
                self.discard()

    def apply(self, model, values: Mapping[str, float]) -> None:
        """Set ``values`` on ``model`` (decreasing ones first, so co-varied R
        and T of a mirror never pass through R + T > 1 on the way)."""
        params = {
            path: _lookup(model, path)
            for path in values
            if not (self.is_factory and "." not in path)
        }
        for path in sorted(params, key=lambda p: values[p] - _as_float(params[p].value)):
            params[path].value = float(values[path])

    def action(self, model, analysis: Any):
        """The action a job runs: ``analysis``, else the model's own, else ``Noxaxis``."""
        from finesse.analysis.actions import Noxaxis

        if isinstance(analysis, str):
            key = (self.key, analysis)
            analysis = thread_cache("actions").get(key) or remember(
                "actions", key, _action_from_text(model, analysis))
        return analysis or model.analysis or Noxaxis()

    def run(self, model, analysis: Any):
        """Run ``analysis`` (default: the model's own, else ``Noxaxis``)."""
        return model.run(self.action(model, analysis))

    def step(self, chunk, warning_scope: Callable | None = None) -> tuple[Any, list[int]]:
        """Run ``chunk`` on the fast path: ``(ChunkResult, positions to run job by job)``.

        ``warning_scope()`` opens a context that counts the warnings raised
        inside for one job, or for as many jobs as it is told (see
        :func:`~katparallel.adapters.stepping.step_chunk`).
        """
        from .stepping import step_chunk

        base = self._base()
        try:
            return step_chunk(base.model, chunk, self, warning_scope)
        finally:
            if not base.reset():
                LOGGER.warning("could not restore the model after a batch; reparsing it")
                self.discard()

    def outputs(self, solution) -> Outputs:
        """Reduce a Finesse solution (or tree of them) to arrays.

        An ``ArraySolution`` gives one array per detector (dtypes as
        :func:`detector_values` says), with its swept parameters as axes. A
        ``FrequencyResponse`` gives one complex array named after the action,
        with axes ``fsig.f``, ``output`` and ``input`` (node names).
        """
        from finesse.analysis.actions.lti import FrequencyResponseSolution
        from finesse.solutions import ArraySolution

        found = []

        def visit(node, prefix):
            if isinstance(node, (ArraySolution, FrequencyResponseSolution)):
                found.append((prefix, node))
            for child in getattr(node, "children", ()) or ():
                visit(child, prefix + (child.name,))

        visit(solution, ())
        values, axes = {}, {}
        for prefix, sol in found:
            if isinstance(sol, FrequencyResponseSolution):
                key = ".".join(prefix) if len(found) > 1 and prefix else sol.name
                values[key] = np.asarray(sol.out)
                axes[key] = (
                    ("fsig.f", np.asarray(sol.f, dtype=float)),
                    ("output", np.asarray(sol.outputs, dtype=str)),
                    ("input", np.asarray(sol.inputs, dtype=str)),
                )
                continue
            dims = tuple(
                (str(name), np.asarray(x, dtype=float))
                for name, x in zip(sol.params or (), sol.x or ())
            )
            for name in sol.outputs:
                key = ".".join(prefix + (name,)) if len(found) > 1 else name
                values[key] = detector_values(sol, name)
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


def _check_is_model(model) -> None:
    import finesse

    if not isinstance(model, finesse.Model):
        raise TypeError(
            f"The factory returned {type(model).__name__!r}, not a finesse.Model; "
            "a factory must build and return a fresh model for each job."
        )


def _close_matches(model, path: str) -> list[str]:
    names = []
    for element in model.elements.values():
        names.append(element.name)
        names.extend(p.full_name for p in element.parameters)
    return difflib.get_close_matches(path, names, n=5, cutoff=0.5)


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
