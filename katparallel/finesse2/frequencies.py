"""Outputs whose meaning depends on which frequencies exist at each point of a run.

Finesse 2 looks up, at every point of a sweep, the fields an amplitude detector's
frequency names: their sum where one or more light fields are within 1e-13 of it
(relative; measured against Finesse 2.3.1: a sideband at 10 MHz + 1 Hz is found by
an ``ad`` 9.9e-7 Hz away and not 1.01e-6 Hz away, at 1 GHz 9e-5 Hz and not 1.1e-4
Hz, at 1 kHz 9e-11 Hz and not 1.1e-10 Hz; at 0 Hz a laser 1e-20 Hz away is not
found), and 0 where none is. Finesse 3 binds each ``ad`` to the frequency bin it
names when the simulation is built and follows that bin as its frequency moves (an
``fsig`` swept, a laser's or modulator's ``f`` swept or ``put``), or, absent then,
is left out. So when a frequency moves, an ``ad`` at a fixed frequency kept reading
a moving sideband where Finesse 2 writes 0 (``ad_fsig_sweep``).

:func:`install` gives each ``ad`` of such a file one hidden amplitude detector per
frequency bin of its node (every carrier, and each carrier +- the signal frequency),
each bound to its bin by the bin's symbolic frequency, and math detectors for the
bins' and the ``ad``'s own frequencies; :func:`ad_output` then writes, point by point,
Finesse 2's sum of the fields at the ``ad``'s frequency.

Refused (:class:`KatError` at run time, naming the line): a signal frequency, or
twice it, equal to a difference of carrier frequencies at some point, with detectors
other than ``ad`` and ``pd`` (Finesse 2 then mixes signal sidebands with carriers,
measured: a ``pd2`` transfer function 0.451 there, 1e-17 beside it; an ``ad`` sums
the fields there and a ``pd`` is unchanged, as :func:`ad_output` does, measured on
``ad_fsig_meets``); a demodulated photodiode whose demodulation frequencies are all numbers, where they match a beat of a carrier
with a signal sideband at some points and not at others (Finesse 2 then writes a
transfer function there, Finesse 3 the carriers' beat alone: 0.90 against 0); a
demodulated photodiode while a laser's or modulator's frequency changes the
carriers' beats (Finesse 2 demodulates the beats present at each point, Finesse 3
those present when built: 2.09e-3 against 0 at a step where no beat is at the
demodulation frequency); two carriers meeting at one frequency (Finesse 2 lets them
interfere: a DC power 2.59 against 1.0, and doubles an ``ad`` at the other carrier).
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import TYPE_CHECKING

import numpy as np

from katparallel.finesse2.constructs import Refusal

if TYPE_CHECKING:
    import finesse

    from katparallel.finesse2.frontend import Translation

LOGGER = logging.getLogger(__name__)

#: Finesse 2's relative tolerance when it matches two frequencies (measured).
TOLERANCE = 1e-13
_SIGNAL_F = "__fs"  # the math detector of the signal frequency
_CARRIERS = "__carrier_f"  # those of the carriers' frequencies (and their names)


def _line(translation: Translation, name: str) -> int | None:
    """The line declaring detector ``name`` in the translated text (lines are kept)."""
    for lineno, line in enumerate(translation.text.splitlines(), start=1):
        words = line.split()
        if len(words) > 1 and words[1] == name and re.match(r"(ad|pd\d*)$", words[0]):
            return lineno
    return None


def moving(model: finesse.Model, translation: Translation) -> dict[str, tuple[int, str]]:
    """Which frequencies change during the run: ``{"signal"|"carrier"|"detector":
    (line, what)}`` for the first sweep or ``put`` of each kind."""
    from finesse.components import Laser, Modulator, SignalGenerator
    from finesse.detectors import AmplitudeDetector

    kinds: dict[str, tuple[int, str]] = {}
    for lineno, cmd, component, param in translation.targets:
        element = model.elements.get(component)
        if param.lower() != "f" or element is None:
            continue
        kind = ("signal" if isinstance(element, SignalGenerator) else
                "carrier" if isinstance(element, (Laser, Modulator)) else
                "detector" if isinstance(element, AmplitudeDetector) else None)
        if kind is not None:
            kinds.setdefault(kind, (lineno, f"{cmd} {component} {param}"))
    return kinds


def unfollowed(model: finesse.Model,
               translation: Translation) -> list[tuple[int | None, str]]:
    """Amplitude detectors a Finesse 3 model alone cannot write as Finesse 2 does.

    Those of a run whose frequencies move (see :func:`moving`), but for an ``ad`` at
    ``$fs``-relative frequencies or at a carrier's while only the signal frequency
    moves, whose bin moves as its frequency does (their meeting other fields is
    checked by the kat program alone: :func:`refuse_coincidences`). The kat program
    computes the others' columns from hidden detectors (:func:`ad_output`).
    """
    from finesse.detectors import AmplitudeDetector
    from finesse.frequency import generate_frequency_list

    kinds = moving(model, translation)
    if not kinds:
        return []
    carriers = np.array([float(c.eval()) for c in generate_frequency_list(model)])
    swept = {component for _, _, component, param in translation.targets
             if param.lower() == "f"}
    problems = []
    for d in model.detectors:
        if not isinstance(d, AmplitudeDetector) or d.name in translation.quadratures:
            continue
        number = isinstance(d.f.value, (int, float))
        if (d.name not in swept and "carrier" not in kinds
                and (not number or np.any(_matches(carriers, float(d.f.value))))):
            continue
        lineno, what = (kinds.get("detector") if d.name in swept else
                        kinds.get("carrier") or kinds.get("signal"))
        problems.append((_line(translation, d.name), f"'ad {d.name}': Finesse 2 writes "
                         f"the field at its frequency at each point, or 0, while "
                         f"'{what}' (line {lineno}) moves frequencies; Finesse 3 follows "
                         "the bin the detector was built on; run the file with "
                         "katparallel's kat instead"))
    return problems


def install(model: finesse.Model, translation: Translation) -> None:
    """Hidden detectors for :func:`ad_output` and :func:`refuse_coincidences`.

    The carriers' and signal's frequencies with a signal or moving frequencies, and
    each ``ad``'s bins when frequencies move (see :func:`moving`).
    """
    from finesse.components import Laser, Modulator
    from finesse.detectors import AmplitudeDetector, MathDetector
    from finesse.frequency import generate_frequency_list

    kinds = moving(model, translation)
    signal = model.fsig.f.value is not None
    if not (signal or kinds):
        return
    carriers = list(generate_frequency_list(model))
    for lineno, cmd, component, param in translation.targets:
        element = model.elements.get(component)
        if (isinstance(element, (Laser, Modulator)) and param.lower() == "f"
                and not any(f"{component}.f" in str(c) for c in carriers)):
            raise Refusal(lineno, cmd, f"'{component}' starts at another source's "
                          "frequency and moves: Finesse 3 does not let their light "
                          "interfere there (measured: a DC power 19.0 where Finesse 2 "
                          "gives 37.97)")
    bins = [*carriers] + ([c + sign * model.fsig.f.ref for c in carriers
                           for sign in (1, -1)] if signal else [])
    names = [f"{_CARRIERS}{k}" for k in range(len(carriers))]
    for name, f in zip(names, carriers):
        model.add(MathDetector(name, f))
    translation.frequency_bins[_CARRIERS] = names
    translation.helpers.update(names)
    if signal:
        model.add(MathDetector(_SIGNAL_F, model.fsig.f.ref))
        translation.helpers.add(_SIGNAL_F)
    ads = [d for d in model.detectors if isinstance(d, AmplitudeDetector)
           and d.name not in translation.quadratures] if kinds else []  # (qd: a carrier)
    for name, (lineno, detector) in translation.sets.items():
        if detector in {ad.name for ad in ads}:
            raise Refusal(lineno, "set", f"'{name}' reads amplitude detector "
                          f"'{detector}' while frequencies move during the run: a "
                          "function or lock would read Finesse 3's field of the bin the "
                          "detector was built on, not Finesse 2's field at its frequency")
    for ad in ads:
        names = []
        for k, f in enumerate(bins):
            names.append(f"{ad.name}__bin{k}")
            model.add(AmplitudeDetector(names[-1], ad.node, f, n=ad.n, m=ad.m))
            model.add(MathDetector(f"{names[-1]}_f", f))
        model.add(MathDetector(f"{ad.name}__f", ad.f.ref))
        translation.frequency_bins[ad.name] = names
        translation.helpers.update([*names, *(f"{n}_f" for n in names),
                                    f"{ad.name}__f"])
        LOGGER.debug("ad %s: %d hidden frequency bins", ad.name, len(names))


def snap(model: finesse.Model, name: str) -> bool:
    """Put ``ad`` ``name``, at no frequency bin, on the one Finesse 2 would find.

    Finesse 3 finds a bin within 1e-15 relative, Finesse 2 within 1e-13 (measured:
    an ``ad`` 9e-7 Hz from a sideband at 10 MHz + 5 Hz reads it in Finesse 2, and
    read 0 here; ``ad_tolerance``). Returns whether one bin was that close.
    """
    from finesse.frequency import generate_frequency_list

    ad = model.elements[name]
    if ad.f.is_changing or not isinstance(ad.f.value, (int, float)):
        return False
    bins = [float(c.eval()) for c in generate_frequency_list(model)]
    if model.fsig.f.value is not None:
        fs = float(model.fsig.f.eval())
        bins += [c + sign * fs for c in bins for sign in (1, -1)]
    near = [f for f in bins if _matches(np.float64(ad.f.value), np.float64(f))]
    if len(near) != 1:
        return False
    ad.f = near[0]
    return True


def _matches(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Where Finesse 2 takes frequencies ``f`` and ``g`` as one (see TOLERANCE)."""
    return np.abs(f - g) <= TOLERANCE * np.maximum(np.abs(f), np.abs(g))


def ad_output(solution, name: str, translation: Translation,
              model: finesse.Model) -> np.ndarray:
    """An ``ad``'s output as Finesse 2 writes it: the sum of the fields at its
    frequency (measured: a carrier's signal sideband and a modulation sideband's at
    one frequency, ``ad_fsig_meets``), or 0 where none is.

    Raises
    ------
    KatError
        Where two fields are at the ``ad``'s frequency at some point with
        higher-order modes on (Finesse 3's ``ad`` of all modes is then no field).
    """
    from katparallel.finesse2.model import KatError

    own = np.real(np.asarray(solution[f"{name}__f"]))
    values = np.zeros(np.shape(own), dtype=complex)
    count = np.zeros(np.shape(own), dtype=int)
    for hidden in translation.frequency_bins[name]:
        at = _matches(own, np.real(np.asarray(solution[f"{hidden}_f"])))
        values = values + np.where(at, np.asarray(solution[hidden]), 0)
        count = count + at
    if np.any(count > 1) and model.is_modal:
        raise KatError("run", [(_line(translation, name), f"two light fields are at "
                                f"the frequency of amplitude detector '{name}' at some "
                                "point of the run, with higher-order modes on: how "
                                "Finesse 2 sums them is not reproduced")])
    return values


def _written(model: finesse.Model, translation: Translation, kinds: tuple) -> list[str]:
    """Detectors written as columns that are none of ``kinds``."""
    hidden = translation.hidden()
    return [d.name for d in model.detectors
            if d.name not in hidden and not isinstance(d, kinds)]


def refuse_coincidences(solution, model: finesse.Model, translation: Translation) -> None:
    """Refuse what Finesse 3 cannot follow when frequencies meet during the run.

    Two carriers at one frequency, a signal
    frequency, or twice it, equal to a carrier beat (but for ``ad`` and ``pd``, which
    Finesse 2 does not change there), a demodulation while the carriers' beats
    change, and numeric demodulation frequencies meeting a signal beat at some
    points only (see the module docstring).

    Raises
    ------
    KatError
        Naming the line of the sweep, ``fsig`` or photodiode.
    """
    from finesse.detectors import (
        AmplitudeDetector, PowerDetector, PowerDetectorDemod1, PowerDetectorDemod2,
    )

    from katparallel.finesse2.model import KatError

    names = translation.frequency_bins.get(_CARRIERS)
    if names is None:
        return
    carriers = [np.real(np.asarray(solution[n])) for n in names]
    beats = [a - b for a, b in itertools.permutations(carriers, 2)]
    if any(np.any(_matches(beat, 0 * beat)) for beat in beats):
        lineno = moving(model, translation).get("carrier", (None,))[0]
        raise KatError("run", [(lineno, "at some point of the run two sources' light "
                                "meets at one frequency (a laser's or modulator's "
                                "frequency swept onto another's): Finesse 2 lets it "
                                "interfere, Finesse 3 keeps the two apart (measured: a "
                                "DC power 1.0 against Finesse 2's 2.59; an 'ad' at the "
                                "other laser's carrier, 0.705 in both elsewhere, doubled "
                                "by Finesse 2 there)")])
    demodulated = [d for d in model.detectors
                   if isinstance(d, (PowerDetectorDemod1, PowerDetectorDemod2))]
    if demodulated and any(np.ptp(beat) > TOLERANCE * np.max(np.abs(beat))
                           for beat in beats):
        name = demodulated[0].name
        raise KatError("run", [(_line(translation, name), f"'{name}' demodulates while "
                                "a laser's or modulator's frequency moves the carriers' "
                                "beats: Finesse 2 demodulates the beats present at each "
                                "point, Finesse 3 those present when the run starts "
                                "(measured: 2.09e-3 against 0 where no beat is at the "
                                "demodulation frequency)")])
    if _SIGNAL_F not in translation.helpers:
        return
    fs = np.real(np.asarray(solution[_SIGNAL_F]))
    others = _written(model, translation, (AmplitudeDetector, PowerDetector))
    if others and any(np.any(_matches(np.abs(k * fs), np.abs(beat))) for beat in beats
                      for k in (1, 2)):
        raise KatError("run", [(_fsig_line(translation), "at some point of the run the "
                                "signal frequency, or twice it, equals the difference of "
                                "two carrier frequencies (signal sidebands meet carriers "
                                "or each other): Finesse 2 then mixes signal sidebands "
                                "with carriers (measured: a pd2 transfer function 0.451 "
                                "there, 1e-17 beside it; 6.5e-11 where twice it meets "
                                "one), Finesse 3 keeps them apart (an 'ad' or 'pd' "
                                f"alone is reproduced, here '{others[0]}' is not one)")])
    _refuse_signal_beats(model, translation, fs, beats)


def _refuse_signal_beats(model: finesse.Model, translation: Translation,
                         fs: np.ndarray, beats: list[np.ndarray]) -> None:
    """Refuse a ``pdN`` at numbers that meet a carrier's beat with a signal sideband
    at some points of the run only (or not as Finesse 3 reads them).

    Raises
    ------
    KatError
        Naming the photodiode's line.
    """
    from finesse.detectors import PowerDetectorDemod1, PowerDetectorDemod2
    from finesse.detectors.compute.power import check_is_fsig

    from katparallel.finesse2.model import KatError

    for detector in model.detectors:
        if not isinstance(detector, (PowerDetectorDemod1, PowerDetectorDemod2)):
            continue
        demods = [detector.f] if isinstance(detector, PowerDetectorDemod1) \
            else [detector.f1, detector.f2]
        if any(d.is_changing or "fsig" in str(d.value) for d in demods):
            continue  # at $fs (a transfer function) or moving: not a number
        matched = np.zeros(np.shape(fs), dtype=bool)
        for signs in itertools.product((1, -1), repeat=len(demods)):
            total = abs(sum(s * float(d.eval()) for s, d in zip(signs, demods)))
            for beat, s in itertools.product([np.zeros_like(fs), *beats], (1, -1)):
                matched |= _matches(np.full_like(fs, total), np.abs(beat + s * fs))
        # Finesse 3 demodulates signal sidebands when the last frequency equals the
        # signal frequency as the run starts (fsig_mod_amp_orders); Finesse 2 where
        # the numbers meet a beat with a signal sideband, at each point.
        if matched.all() and check_is_fsig(model, demods[-1]) or not matched.any():
            continue
        raise KatError("run", [(_line(translation, detector.name), f"'{detector.name}' "
                                "demodulates at numbers that match a carrier's beat "
                                "with a signal sideband at some points of the run and "
                                "not at others (or not as Finesse 3 reads them): "
                                "Finesse 2 demodulates the signal there (measured: "
                                "0.90 against 0)")])


def _fsig_line(translation: Translation) -> int | None:
    for lineno, line in enumerate(translation.text.splitlines(), start=1):
        if line.split()[:1] == ["fsig"]:
            return lineno
    return None
