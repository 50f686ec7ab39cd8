"""Finesse 2 front end: what Finesse 3's legacy parser lacks, before and after it runs.

:func:`translate` reads a Finesse 2 kat file line by line and returns a
:class:`Translation`: kat text the legacy parser (``finesse.Model.parse_legacy``) reads
as Finesse 2 would, plus what has to happen to the parsed model and to its outputs.
Line numbers are kept (a rewritten line stays on its line, a removed one becomes
blank, added lines go at the end), so the legacy parser's messages still point at the
user's file.

Translated, as Finesse 2.3.1 does it:

* two components on one node with no space between them: a space of length 0
  joins them (the node stays with the component that names it first);
* parameter names are case-insensitive in Finesse 2 (``xaxis m2 r``, ``put m2 t``,
  ``attr m1 rc``): written as the legacy parser spells them, with Finesse 2's aliases
  (a laser's or modulator's ``phi`` is its ``phase``, a space's ``n`` its ``nr``;
  ``attr``'s ``ROC``, ``yaw``, ``pitch``); ``attr`` of a parameter Finesse 2's
  ``attr`` refuses (``R``, ``phi``, a space's ``L``...) is refused, and so is a sweep
  or ``put`` of a mirror's or beam splitter's ``Rc`` (Finesse 2 takes ``Rcx``/``Rcy``)
  or ``L``;
* ``xaxis``/``x2axis``/``x3axis`` steps such as ``10_000``: Finesse 2 reads the
  leading digits (10), said once on standard error;
* ``maxtem`` without ``cav`` or ``gauss``: Finesse 2 gives each laser a beam of
  waist 2 mm at the laser and switches retrace off (said on standard error);
* ``cav`` or ``gauss`` without ``maxtem``: Finesse 2 switches higher-order modes on
  with ``maxtem 0``, so mode mismatch costs power (said once on standard error); so
  does a ``bp`` or ``beam`` detector, with the 2 mm beam at each laser if untraced;
* ``tem`` factors all 0 on a laser (Finesse 2 runs it dark; Finesse 3 refuses): a
  laser of power 0;
* ``var``/``variable NAME VALUE``, swept by ``xaxis NAME ANYTHING`` and put with
  ``$x1``: a laser of no power alone on its own node, whose phase holds the value;
* ``attr NAME Rc 0`` (and ``Rcx``/``Rcy``): a flat surface;
* ``multi`` (a gnuplot setting) changes no output and is left out;
* ``scale FACTOR|deg|rad|meter [DET]``: the output columns are multiplied;
* ``pdN ... max``: the last demodulation phase chosen to maximise the output, which
  is then the modulus of the demodulated signal;
* a detector at a node of a lens or isolator: Finesse 2's default direction there is
  the beam going into the component (the legacy parser takes the other one);
* ``beam`` detectors swept over their own x (and y): a camera, laid out as Finesse 2
  writes the sweep;
* ``tf``/``tf2`` and ``attr NAME zmech|rxmech|rymech TF`` without ``fsig``: Finesse 2
  uses mechanical transfer functions only for signal sidebands, so they change no
  output; left out (said once on standard error);
* ``attr NAME r_ap R`` without higher-order modes (no ``maxtem``, ``cav``, ``gauss``,
  ``bp`` or ``beam``, each of which switches them on): an aperture changes no plane wave;
  an ``xaxis``/``x2axis`` of ``NAME r_ap`` only writes its values (a ``var`` stand-in);
* a sweep, ``put`` or lock taking a mirror's or beam splitter's R + T past 1: the kat
  program computes it, R + T + L = 1 being checked only where the file gives the
  component (:func:`allow_sums_past_one`);
* a tuned mirror or beam splitter with a different refractive index on its two sides:
  Finesse 2's phases, which ignore the indices (reflection 2*phi and -2*phi,
  transmission i);
* several ``cav``/``gauss`` commands with higher-order modes: Finesse 2's beam trace
  (the last cavity's beam where cavities overlap, the rest by a walk from the first
  cavity; see :mod:`katparallel.finesse2.trace`), by cavity priorities and a ``gauss``
  where Finesse 3 would take a node's beam from another cavity; refused when such a
  fixed beam parameter would go stale because a sweep or ``put`` changes the geometry.
* ``ad`` while frequencies move during the run: Finesse 2's field at the detector's
  frequency at each point, or 0 (:mod:`katparallel.finesse2.frequencies`, which also
  refuses the coincidences and demodulations Finesse 3 cannot follow).
* a laser whose node Finesse 2's beam trace reaches from the rest of the network (a
  ``cav``, a ``gauss`` downstream): Finesse 2 gives its modes the Gouy phase of the
  beam going into the laser, the opposite of Finesse 3's (:func:`_laser_gouy_phases`).

* ``fsig NAME COMPONENT [TYPE] f PHASE [AMP]`` at a laser (no type, ``amp``, ``freq``,
  ``phase``; an ``amp`` amplitude halved, Finesse 3's amplitude modulation being
  twice Finesse 2's) or at a mirror or beam splitter (no type: motion, with Finesse
  2's coupling to the light where Finesse 3's differs: each carrier's own
  wavenumber, a beam splitter's back surface without cos(alpha), with modes on a
  mirror's or beam splitter's signs of the modes odd in x;
  :mod:`katparallel.finesse2.signals`) or at a phase modulator (``amp``; its phase
  given as 0, which Finesse 2 ignores, and its sidebands Finesse 2's by the signal
  module; no lock);
  ``$mfs`` is written ``-$fs`` (the legacy parser reads ``$mfs`` as ``$fs``); at a
  space (no type or ``phase``: a gravitational-wave strain, with its sign turned to
  Finesse 2's, and with higher-order modes every mode's sidebands; see
  :meth:`_Translator.strain`); the whole signal matrix refilled at every step
  (:func:`_refill_signals`); with
  radiation pressure (``attr NAME mass``), a mirror's own motion signal turned by 180
  degrees when it has a mass (:meth:`_Translator.flip_motion_with_mass`); one ``fsig``
  name at several components (the later ones renamed); ``$fs`` without ``fsig``: 0.
* ``qnoised``/``qshot`` and their ``S`` and ``N`` forms with no demodulation or the
  last at ``$fs``: Finesse 2's Planck constant, ``S`` and ``N`` normalisations, and
  its undemodulated ``qnoised``, which is its ``qshot`` (:meth:`_Translator.noise`),
  its RF demodulation phases (negated for Finesse 3,
  :meth:`_Translator.rf_demodulations`), its RF ``max`` in ``S`` forms
  (:meth:`_Translator.noise_at_max`) and, with modes on, its sum of the modes'
  vacuum noise (:func:`_mode_fields`); a squeezer's 2 mm beam without ``cav`` or
  ``gauss`` (:meth:`_Translator.dummy_gauss`).
* ``qhd``/``qhdS``/``qhdN NAME PHASE NODE1 NODE2``: the noise of two nodes'
  photocurrents summed, the second node's light turned by the phase
  (:mod:`katparallel.finesse2.homodyne`), its signal and phase as Finesse 2 takes them,
  and ``hd``, that signal (:meth:`_Translator.homodyne`).
* ``qd NAME 0 PHASE NODE``: the noise in one quadrature in units of the vacuum's, from
  three hidden ideal-oscillator homodyne detectors (:meth:`_Translator.quadrature`);
* ``dump`` nodes: without modes, no vacuum enters there for any quantum-noise
  detector, as in Finesse 2 (:func:`_dump_sources`); refused where Finesse 2 refuses
  them or gives other light (:meth:`_Translator.check_dumps`).

* ``lock[*] NAME $INPUT GAIN ACCURACY [OFFSET]``: a model parameter ``NAME__lock``
  holding the lock's value (an output column ``NAME``), iterated before each point
  as Finesse 2 does it (see :mod:`katparallel.finesse2.lock`).

Refused with the line and the construct (:class:`Refusal`): constructs whose results
Finesse 3 cannot reproduce or that the legacy parser would silently drop (``fsig``
signal injection other than the above, ``qhd`` without ``fsig``, the mixed
``q[n]hd``, quantum noise other than the above, a ``set`` of a quantum-noise output,
apertures with higher-order modes, ``put`` of a function of detector outputs, a
``lock`` on a ``beam`` camera sweep). A command whose numbers were never
checked against Finesse 2.3.1 (not in :data:`CHECKED`) is said on standard error.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING

from katparallel.finesse2 import frequencies
from katparallel.finesse2.constructs import STANDARD_INI, Lock, Refusal

if TYPE_CHECKING:
    import finesse

__all__ = ("Lock", "Refusal", "STANDARD_INI", "Translation", "apply", "translate")

# Commands declaring a component, and how many of their last words are nodes.
_COMPONENT_NODES = {
    "l": 1, "laser": 1, "light": 1, "sq": 1,
    "m": 2, "m1": 2, "m2": 2, "mirror": 2, "lens": 2, "mod": 2, "isol": 2, "diode": 2,
    "bs": 4, "bs1": 4, "bs2": 4, "beamsplitter": 4, "dbs": 4,
}
# Components that take a 'dump' node in Finesse 2 (see _Translator.check_dumps).
_DUMPS = ("m", "m1", "m2", "mirror", "bs", "bs1", "bs2", "beamsplitter", "dbs")
_QUANTUM = re.compile(r"^(qd[SN]|sd[SN]?)$")  # refused with a signal
_NOISE_DETECTORS = ("qnoised", "qnoisedS", "qnoisedN", "qshot", "qshotS", "qshotN")
_HOMODYNES = ("hd", "qhd", "qhdS", "qhdN")  # see _Translator.homodyne
# Detectors of quantum noise that vacuum at an open port changes (not qshot: shot noise
# of the DC power).
_VACUUM_NOISE = re.compile(r"^(qnoised[SN]?|qd|sd|q\d*hd[SN]?)$")
#: Planck's constant in Finesse 2.3.1 (CODATA 2014; measured: its quantum noise is
#: Finesse 3's, which uses CODATA 2018's 6.62607015e-34, times 1 - 8.3e-9).
PLANCK_FINESSE2 = 6.62607004e-34
_DETECTORS = re.compile(r"^(pd\d*|ad|qnoisedS?|qshotS?|bp|beam)$")
# Components at whose nodes Finesse 2's default detector direction is the beam going
# into the component (the legacy parser assumes the beam coming out of it).
_INWARD = ("lens", "isol", "diode")
# Commands whose second word is not the name of something they declare (or gauss).
_UNNAMED = {"attr", "xaxis", "xaxis*", "x2axis", "x2axis*", "x3axis", "x3axis*", "put",
            "put*", "maxtem", "phase", "yaxis", "noxaxis", "trace", "retrace", "scale",
            "startnode", "tem", "map", "knm", "smotion", "conf", "mask", "pdtype",
            "lambda", "time", "gnuterm", "pyterm", "noplot", "multi", "gauss", "gauss*"}
_SCALE_WORDS = {"deg": 180 / math.pi, "rad": math.pi / 180}
# Signal injections Finesse 3 reproduces (measured against Finesse 2.3.1), by the kind
# of component and the type word (None: no type given).
_INJECTIONS = {("laser", None), ("laser", "amp"), ("laser", "freq"), ("laser", "phase"),
               ("mirror", None), ("bs", None), ("space", None), ("space", "phase"),
               ("mod", "amp")}
# Commands declaring a component of each kind whose parameter names Finesse 2 takes
# case-insensitively, and those names as the legacy parser spells them (lower case
# -> spelling; Finesse 2's aliases included).
_KINDS = {
    "mirror": ("m", "m1", "m2", "mirror"), "bs": ("bs", "bs1", "bs2", "beamsplitter"),
    "space": ("s", "space"), "laser": ("l", "laser", "light"), "mod": ("mod",),
    "lens": ("lens",), "isol": ("isol", "diode"),
}
_MIRROR_PARAMETERS = {"r": "R", "t": "T", "phi": "phi", "rcx": "Rcx",
                      "rcy": "Rcy", "xbeta": "xbeta", "ybeta": "ybeta"}
# What a sweep, put or set cannot change at a mirror or beam splitter, and why.
_NOT_SWEPT = {"rc": "a radius of curvature is changed through Rcx and Rcy",
              "l": "a loss is what R and T leave"}
_PARAMETERS = {
    "mirror": _MIRROR_PARAMETERS, "bs": {**_MIRROR_PARAMETERS, "alpha": "alpha"},
    "space": {"l": "L", "n": "nr"}, "laser": {"p": "P", "f": "f", "phi": "phase"},
    "mod": {"f": "f", "midx": "midx", "phase": "phase", "phi": "phase"},
    "lens": {"f": "f"}, "isol": {"s": "S"},
}
# What Finesse 2's attr sets (case-insensitive, its aliases included), spelt for the
# legacy parser (and for 'attr' below); beyond these and the settings of mirror maps
# it says "no attribute named". Ix and Iy need higher-order modes in Finesse 2; the
# legacy parser lacks them.
_ATTRIBUTES = {
    "rc": "Rc", "roc": "Rc", "rcx": "Rcx", "rocx": "Rcx", "rx": "Rcx", "rcy": "Rcy",
    "rocy": "Rcy", "ry": "Rcy", "xbeta": "xbeta", "yaw": "xbeta", "ybeta": "ybeta",
    "pitch": "ybeta", "m": "mass", "mass": "mass", "r_ap": "r_ap", "rap": "r_ap",
    "zmech": "zmech", "rxmech": "rxmech", "rymech": "rymech", "g": "g", "gouy": "g",
    "gx": "gx", "gouyx": "gx", "gy": "gy", "gouyy": "gy", "ix": "Ix", "iy": "Iy",
}
_MAP_ATTRIBUTES = ("map_deg", "alpha", "eta", "rho", "offset")
_OUTPUT_PARTS = ("re", "im", "abs", "deg")  # set NAME DETECTOR PART
# What Finesse 2's bp measures (case-insensitive, its aliases included), spelt for the
# legacy parser; it refuses the legacy parser's 'div' and 's'.
_BEAM_PARAMETERS = {"w": "w", "w0": "w0", "z": "z", "zr": "zr", "g": "gouy",
                    "gouy": "gouy", "r": "rc", "rc": "rc", "q": "q"}
_AXES = ("xaxis", "xaxis*", "x2axis", "x2axis*", "x3axis", "x3axis*")
# Finesse 2's mixed homodyne detector: node pairs weighted by functions.
_MIXED_HOMODYNE = re.compile(r"^q\d+hd[SN]?$")


#: Every command whose numbers katparallel has checked against Finesse 2.3.1, and a
#: reference file of ``tests/data/finesse2`` that checks it (``.extra``: appended to
#: PyKat's aLIGO design file). A command missing here (and from
#: :data:`NO_NUMBERS`) is said on standard error as unchecked: its numbers may differ
#: from Finesse 2's, and a difference must never be written silently. A test checks
#: that each file exists and uses its command.
CHECKED = {
    "l": "ad_absent.kat", "tem": "laser_gouy_cav_modes.kat", "m": "ad_absent.kat",
    "m1": "beam_field_yx.kat", "m2": "aligo_design_homs.extra", "bs": "bp_direction.kat",
    "bs1": "open_port_gauss.kat", "bs2": "tuned_substrate.kat",
    "dbs": "aligo_design_homs.extra", "s": "ad_absent.kat", "mod": "ad_absent.kat",
    "lens": "bp_direction.kat", "isol": "bp_direction.kat", "attr": "bp_direction.kat",
    "cav": "bp_direction.kat", "gauss": "beam_field_yx.kat", "maxtem": "beam_x.kat",
    "phase": "ftblock_modes.kat", "pd": "beam_x.kat", "pd1": "case_names.kat",
    "pd2": "fsig_laser_amp.kat", "ad": "ad_absent.kat", "bp": "bp_direction.kat",
    "beam": "beam_field_yx.kat", "gouy": "gauss_name_shared.kat",
    "fsig": "fsig_laser_amp.kat", "const": "const_ref.kat", "var": "var_put.kat",
    "set": "case_names.kat", "func": "case_names.kat", "put": "case_names.kat",
    "put*": "func_put.kat", "lock": "lock_one.kat", "lock*": "lock_star.kat",
    "scale": "scale.kat", "tf": "mech_no_fsig.kat", "xaxis": "ad_absent.kat",
    "xaxis*": "var_sweep.kat", "x2axis": "beam_field_yx.kat",
    "x3axis": "x3axis_func_put.kat", "noxaxis": "bp_direction.kat",
    "yaxis": "ad_absent.kat", "multi": "x3axis_func_put.kat", "sq": "sq_classical.kat",
    "qnoised": "qnoise_squeezed.kat", "qshot": "qnoise_squeezed.kat",
    "qnoisedS": "qnoise_ratio.kat", "qshotS": "qnoise_ratio.kat",
    "qnoisedN": "qnoise_snr.kat", "qshotN": "qnoise_snr.kat", "qhd": "qhd_squeezed.kat",
    "qhdS": "qhd_signal.kat", "qhdN": "qhd_signal.kat", "hd": "hd_signal.kat",
    "xd": "fsig_mass_xd.kat", "qd": "qd_ponderomotive.kat",
}
#: Other spellings Finesse 2 (and the legacy parser) read as the same command.
ALIASES = {"laser": "l", "light": "l", "mirror": "m", "beamsplitter": "bs",
           "space": "s", "diode": "isol", "cavity": "cav", "variable": "var",
           "x2axis*": "xaxis*", "x3axis*": "xaxis*", "gauss*": "gauss", "tf2": "tf"}
#: Commands that change no number of the output (plots, printing, timing).
NO_NUMBERS = {"gnuterm", "pyterm", "noplot", "time", "trace", "retrace", "debug",
              "pause", "printmatrix", "showiterate", "width", "frequency", "FTblock",
              "FTend", "startnode"}


@dataclasses.dataclass
class Translation:
    """A Finesse 2 kat file made ready for Finesse 3's legacy parser.

    Attributes
    ----------
    text : str
        Kat text for ``parse_legacy``.
    notes : list of str
        Finesse 2 quirks followed, each to be said once on standard error.
    warnings : list of str
        Where Finesse 3's results are known to be able to differ from Finesse 2's,
        each to be said on standard error.
    flat : list of (str, str, int)
        ``(component, attribute, line)`` radii of curvature to set to infinity
        (``Rc 0``).
    scales : list of (str or None, str)
        Output factors (a number, ``deg``, ``rad`` or ``meter``) and the detector
        each applies to (``None``: every detector).
    moduli : set of str
        Detectors whose output is the modulus of their demodulated signal (``max``).
    inexact : list of (int, str)
        Lines and constructs the Finesse 3 model alone does not reproduce (they act
        on the output); empty when the model is an exact translation.
    funcs : list of (int, str, str)
        ``func NAME = EXPR``: line, name and expression, in file order.
    puts : list of (int, str, str, str, bool)
        ``put[*] COMP PARAM $FUNC``: line, component, parameter, function, and
        whether ``put*`` adds to the parameter's value.
    sets : dict
        ``set NAME DET re``: name -> (line, detector).
    consts : dict
        ``const NAME VALUE``: name -> value as written.
    maxtem : str or None
        The last ``maxtem`` (a number or ``off``); ``"0"`` when a cavity or gauss
        switches modes on. The legacy parser lets a later FTblock's default undo it.
    beam_axes : list of str
        ``x``/``y`` in the order ``xaxis``/``x2axis`` sweep a ``beam`` detector's own
        coordinates (the legacy parser makes that detector a camera).
    phase : str
        The last ``phase`` level (Finesse 2's default is 3); same FTblock problem.
    trace_sources : list of (int, str)
        ``cav``/``gauss`` lines and names, in file order.
    targets : list of (int, str, str, str)
        What ``xaxis``/``x2axis``/``put`` change during the run: line, command,
        component and parameter.
    locks : list of Lock
        ``lock``/``lock*`` lines, in file order.
    flipped : list of str
        Signals (``fsig`` names) whose phase Finesse 2 turns by 180 degrees.
    motion : list of (int, str, bool)
        Mirrors and beam splitters whose motion coupling differs from Finesse 2's:
        the line of their ``fsig`` or ``attr ... mass``, the name, and whether it is an
        ``fsig`` injection or radiation-pressure motion (see
        :meth:`_Translator.motion_coupling`, :mod:`katparallel.finesse2.signals`).
    modulators : list of (int, str)
        ``fsig ... amp`` lines at phase modulators, and the modulators (see
        :meth:`_Translator.modulation`).
    strains : list of (int, str)
        ``fsig`` lines at spaces, and the spaces: with higher-order modes on, their
        sidebands in every mode are Finesse 2's
        (:func:`katparallel.finesse2.signals.install_strain`).
    noise : dict
        Quantum-noise detectors -> the hidden detector of the signal an ``S`` form
        divides by, or an ``N`` form divides (None: neither); see
        :meth:`_Translator.noise`.
    snr : set of str
        The ``N`` forms: Finesse 2 writes signal over noise.
    homodynes : dict
        ``qhd[S|N] NAME PHASE NODE1 NODE2``: name -> (line, command); see
        :meth:`_Translator.homodyne`.
    dc_signals : set of str
        ``qnoisedS``/``qnoisedN``/``qshotS``/``qshotN`` with no demodulation, whose
        signal is twice the DC power (``NAME__dc``).
    helpers : set of str
        Detectors added to compute another's output, not written as columns.
    renamed : dict
        A detector named like an earlier one (Finesse 2 writes both) -> (its name in
        the file, its line); a ``scale`` or ``set`` of that name means the first.
    quadratures : dict
        ``qd NAME 0 PHASE NODE`` -> (line, PHASE); see :meth:`_Translator.quadrature`.
    first_max : dict
        ``pd2 NAME f1 max f2 [PHASE2] NODE`` -> (the hidden detector demodulating
        at 90 degrees first, PHASE2 or None); see :meth:`_Translator.demod_max`.
    noise_max : dict
        ``qnoisedS``/``qshotS NAME 2 f1 max $fs [PHASE2] NODE`` -> (the hidden noise
        detectors at Finesse 2's RF phases 45 and 90, the hidden signal demodulated
        at 90 degrees first, PHASE2 or None); see :meth:`_Translator.noise_at_max`.
    rf_noise : dict
        RF-demodulated quantum-noise detectors (hidden ones too) -> (whether shot
        noise only, the RF frequencies in Hz, Finesse 3's RF phases in degrees); see
        :meth:`_Translator.rf_demodulations`.
    mode_fields : dict
        With modes on, each of those -> the hidden field detectors of every carrier
        at its node (made by :func:`apply`; see :func:`_mode_fields`).
    dumps : list of (str, int)
        In files with vacuum-noise detectors, each ``dump`` node's component and port
        number (1 for the first node); see :func:`_dump_sources`.
    opaque : list of str
        Mirrors with a dump that move under radiation pressure: their T becomes loss
        (see :meth:`_Translator.check_dumps`).
    frequency_bins : dict
        Amplitude detectors of a run whose frequencies move -> their hidden detectors
        of each frequency bin (see :mod:`katparallel.finesse2.frequencies`).
    """

    text: str
    notes: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    flat: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    scales: list[tuple[str | None, str]] = dataclasses.field(default_factory=list)
    moduli: set[str] = dataclasses.field(default_factory=set)
    inexact: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    funcs: list[tuple[int, str, str]] = dataclasses.field(default_factory=list)
    puts: list[tuple[int, str, str, str, bool]] = dataclasses.field(default_factory=list)
    sets: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)
    consts: dict[str, str] = dataclasses.field(default_factory=dict)
    maxtem: str | None = None
    beam_axes: list[str] = dataclasses.field(default_factory=list)
    phase: str = "3"
    trace_sources: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    targets: list[tuple[int, str, str, str]] = dataclasses.field(default_factory=list)
    locks: list[Lock] = dataclasses.field(default_factory=list)
    flipped: list[str] = dataclasses.field(default_factory=list)
    motion: list[tuple[int, str, bool]] = dataclasses.field(default_factory=list)
    modulators: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    strains: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    noise: dict[str, str | None] = dataclasses.field(default_factory=dict)
    snr: set[str] = dataclasses.field(default_factory=set)
    homodynes: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)
    dc_signals: set[str] = dataclasses.field(default_factory=set)
    helpers: set[str] = dataclasses.field(default_factory=set)
    renamed: dict[str, tuple[str, int]] = dataclasses.field(default_factory=dict)
    quadratures: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)
    first_max: dict[str, tuple[str, float | None]] = dataclasses.field(
        default_factory=dict)
    noise_max: dict[str, tuple[str, str, str, float | None]] = dataclasses.field(
        default_factory=dict)
    rf_noise: dict[str, tuple[bool, tuple[float, ...], tuple[float, ...]]] = (
        dataclasses.field(default_factory=dict))
    mode_fields: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    dumps: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    opaque: list[str] = dataclasses.field(default_factory=list)
    frequency_bins: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def hidden(self) -> set[str]:
        """Detectors the front end added for a computation, not written as columns."""
        return ({signal for signal in self.noise.values() if signal}
                | {other for other, _ in self.first_max.values()} | self.helpers
                | {name for *names, _ in self.noise_max.values() for name in names}
                | {name for names in self.mode_fields.values() for name in names}
                | {f"{name}__q{phase}" for name in self.quadratures for phase in (0, 45, 90)})

    def scale_of(self, detector: str, lambda0: float) -> float:
        """Return the factor ``scale`` commands put on ``detector``'s output.

        Parameters
        ----------
        detector : str
            The detector's name.
        lambda0 : float
            The model's wavelength in metres (``meter`` is 2 pi / lambda).
        """
        factor = 1.0
        meter = 2 * math.pi / lambda0
        # Finesse 2 divides a noise-to-signal ratio (an S form) by the 'scale meter'
        # that names it (measured on qnoise_scale_meter.kat; a 'scale meter' for every
        # detector multiplies it, as every other scale does).
        ratio = bool(self.noise.get(detector)) and detector not in self.snr
        for target, word in self.scales:
            if target == detector and word == "meter" and ratio:
                factor /= meter
            elif target in (None, detector):
                factor *= (meter if word == "meter"
                           else _SCALE_WORDS.get(word) or float(word))
        return factor


def _code(line: str) -> tuple[list[str], str]:
    """Split a line into its words and its comment (kept verbatim)."""
    match = re.search(r"[#%]", line)
    if match is None:
        return line.split(), ""
    return line[: match.start()].split(), line[match.start():]


class _Translator:
    """One pass over the kat file; see :func:`translate`."""

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.out: list[str] = []
        self.extra: list[str] = []
        self.owner: dict[str, str] = {}  # node -> component naming it first
        self.variables: set[str] = set()
        # Dark lasers standing in for a value (var, a qhd's phase): name, node.
        self.stand_ins: list[tuple[str, str]] = []
        self.lasers: list[tuple[str, str]] = []  # (name, node)
        self.traced = 0  # line of the first cav or gauss
        self.beam_parameters = 0  # line of the first bp
        self.beam_detector = 0  # line of the first beam
        self.trace_sources = 0  # how many cav and gauss commands
        self.apertures: list[tuple[int, str]] = []
        self.unchecked: set[str] = set()  # commands noted as never checked
        self.detector_names: set[str] = set()
        self.fs_zero = 0  # line of the first $fs read as 0 (no fsig)
        self.block = ""  # the end of a GNUPLOT or /* block being skipped, if in one
        self.result = Translation(text="")
        self.handlers = {
            "fsig": self.fsig, "var": self.variable, "variable": self.variable,
            "maxtem": self.modes, "phase": self.modes, "tem": self.tem,
            "l": self.laser, "laser": self.laser, "light": self.laser,
            **dict.fromkeys(_AXES, self.axis), "attr": self.attr, "scale": self.scale,
            "set": self.set_output, "func": self.func, "put": self.put,
            "put*": self.put, "const": self.const, "tf": self.transfer,
            "tf2": self.transfer, "lock": self.lock, "lock*": self.lock,
            "multi": self.plot_only, **dict.fromkeys(_NOISE_DETECTORS, self.noise),
            **dict.fromkeys(_HOMODYNES, self.homodyne),
            "qd": self.quadrature,
        }
        self.kinds = _component_kinds(self.lines)
        self.beams = {words[1] for line in self.lines
                      for words in [_code(line)[0]] if words[:1] == ["beam"]
                      and len(words) > 2}
        self.dark = _dark_lasers(self.lines)
        # Names declared by commands other than gauss (which Finesse 2 keeps apart).
        self.named = {words[1] for line in self.lines
                      for words in [_code(line)[0]]
                      if len(words) > 1 and words[0] not in _UNNAMED}
        # Names a 'put' can take: funcs and locks.
        self.put_sources = {words[1] for line in self.lines
                            for words in [_code(line)[0]]
                            if words[:1] in (["func"], ["lock"], ["lock*"])
                            and len(words) > 1}
        # qhd names: a sweep or put of their phase goes to a stand-in (see homodyne).
        self.homodyne_names = {words[1] for line in self.lines
                               for words in [_code(line)[0]]
                               if words[:1] and words[0] in _HOMODYNES and len(words) > 1}
        self.fsig_line = next((i for i, line in enumerate(self.lines, start=1)
                               if _code(line)[0][:1] == ["fsig"]), 0)
        self.mechanics = 0  # line of the first tf or mechanical attr dropped
        # RF-demodulated quantum-noise detectors -> (line, command)
        self.rf_noise: dict[str, tuple[int, str]] = {}
        self.dumped: list[tuple[str, int]] = []  # dump nodes: component, port number
        # Whether a detector's noise depends on the vacuum entering at open ports.
        self.vacuum_noise = any(_VACUUM_NOISE.match(words[0]) for line in self.lines
                                for words in [_code(line)[0]] if words)
        # (line, fsig name, kind of component, component)
        self.injections: list[tuple[int, str, str, str]] = []
        self.inward = {word for line in self.lines
                       for words in [_code(line)[0]] if words and words[0] in _INWARD
                       for word in words[-2:]}

    def run(self) -> Translation:
        """Translate every line, then refuse what only the whole file shows."""
        for lineno, line in enumerate(self.lines, start=1):
            words, comment = _code(line)
            if not words:
                self.out.append(line)
                continue
            words = self.line(lineno, words)
            self.out.append(" ".join(words) + (" " + comment if comment else "")
                            if words else "")
        self.check_injections()
        self.check_dumps()
        if self.trace_sources > 1 and self.result.maxtem != "off":
            self.result.notes.append(
                f"line {self.traced}: {self.trace_sources} cav/gauss commands with "
                "higher-order modes: Finesse 2 gives overlapping cavities' nodes the "
                "last cavity's beam and traces the rest from the first cavity; "
                "katparallel follows it")
        if self.result.locks and self.result.beam_axes:
            lock = self.result.locks[0]
            raise Refusal(lock.lineno, "lock", "a lock with a beam detector swept over "
                          "its own x or y is not reproduced")
        if self.mechanics:
            self.result.notes.append(
                f"line {self.mechanics}: without fsig, Finesse 2 computes no signal "
                "sidebands, so mechanical transfer functions (tf, attr zmech/rxmech/"
                "rymech) change no output; katparallel leaves them out")
        beam_lines = [line for line in (self.beam_parameters, self.beam_detector) if line]
        if beam_lines and self.result.maxtem == "off":
            lineno = min(beam_lines)
            cmd = "bp" if lineno == self.beam_parameters else "beam"
            raise Refusal(lineno, cmd, "Finesse 2 refuses beam parameter detectors and "
                          "beam analysers without Hermite-Gauss modes (maxtem off)")
        if beam_lines and self.result.maxtem is None and not self.traced:
            # Finesse 2 switches modes on for bp or beam alone too (maxtem 0, and the
            # 2 mm beam at each laser: measured on beam_no_trace.kat).
            self.result.maxtem = "0"
        if not self.traced and self.result.maxtem not in (None, "off"):
            self.dummy_gauss()
        if self.traced and self.result.maxtem is None:
            self.result.maxtem = "0"
            self.result.notes.append(
                f"line {self.traced}: with a cavity or gauss and no maxtem, Finesse 2 "
                "switches on higher-order modes with maxtem 0 (mode mismatch costs "
                "power); katparallel follows it")
        self.check_tem_orders()
        self.check_noise_with_modes()
        self.check_rf_noise()
        self.check_sets()
        if self.result.maxtem not in (None, "off") and self.apertures:
            # Also with the maxtem 0 a cav, gauss, bp or beam implies: Finesse 2 then
            # clips the TEM00 mode (by a numerical overlap integral: a 10 cm aperture
            # on a 0.6 mm beam still moves the power by 6e-4; rap.kat in issue 19).
            lineno, name = self.apertures[0]
            raise Refusal(lineno, "r_ap", f"the aperture of '{name}' clips "
                          "Hermite-Gauss modes (switched on here), which Finesse 2 "
                          "integrates numerically and Finesse 3 models with maps only")
        if self.result.maxtem not in (None, "off"):
            # Finesse 3 traces a beam to every node, a stand-in's too (it has no light);
            # Finesse 3 takes two gauss commands at nodes without spaces for both ends
            # of one space, so each stand-in gets a space.
            for name, node in self.stand_ins:
                self.extra += [f"s {name}__space 0 {node} {node}__end",
                               f"gauss {name}__beam {name} {node} 2m 0"]
        self.result.text = "\n".join(self.out + self.extra) + "\n"
        return self.result

    def check_noise_with_modes(self) -> None:
        """Warn that quantum noise with higher-order modes keeps Finesse 3's rounding.

        Measured on PyKat's aLIGO design with ``maxtem 2`` (``aligo_sensitivity_modes``):
        with one length one ulp longer, katparallel's ``qnoised`` moves by 2e-8 of
        itself at 5 kHz and 2e-10 at 900 Hz (1e-9 and 2e-12 with ``maxtem 1``, 3e-13
        with ``maxtem 0``), Finesse 2.3.1's by 1e-12, and the two differ by as much.
        The transfer function at the same port moves by 4e-9 of itself at 5 kHz,
        within 1e-9 of its column's largest (at 5 Hz). Rounding in Finesse 3's signal
        solve with modes is the cause, not a convention: without katparallel's
        signal conventions a one-ulp change moves the noise there by 5e-2.
        """
        if self.result.maxtem in (None, "off", "0"):
            return
        lines = [lineno for lineno, cmd in self.result.inexact if cmd in _NOISE_DETECTORS]
        if lines:
            self.result.warnings.append(
                f"line {min(lines)}: quantum noise with higher-order modes (maxtem "
                f"{self.result.maxtem}): katparallel's noise keeps rounding that "
                "Finesse 2's does not, growing with the signal frequency: on PyKat's "
                "aLIGO design with maxtem 2 it moves by 2e-8 of itself at 5 kHz "
                "(2e-10 at 900 Hz), and the signal by 4e-9, when one length is one "
                "ulp longer, Finesse 2.3.1 by 1e-12, and the two differ by as much")

    def line(self, lineno: int, words: list[str]) -> list[str]:
        """Return the words the legacy parser should read for this line (none: drop)."""
        cmd = words[0]
        if _MIXED_HOMODYNE.match(cmd):
            raise Refusal(lineno, cmd, "Finesse 2's mixed quantum homodyne detector "
                          "(q[n]hd: node pairs weighted by functions) has not been "
                          "measured against Finesse 2.3.1; its one-pair form qhd runs")
        self.checked(lineno, cmd)
        if len(words) > 2 and (_DETECTORS.match(cmd) or cmd in _NOISE_DETECTORS
                               or cmd in _HOMODYNES):
            words = self.unique_detector(lineno, words)
        if cmd in ("gauss", "gauss*") and len(words) > 1 and words[1] in self.named:
            # Finesse 2 keeps gauss names apart from other names; Finesse 3 does not.
            words = [cmd, f"{words[1]}__gauss", *words[2:]]
            self.result.notes.append(
                f"line {lineno}: gauss '{words[1][:-len('__gauss')]}' shares its name "
                "with another element, as Finesse 2 allows; katparallel renames it")
        if cmd in ("cav", "cavity", "gauss", "gauss*") and len(words) > 1:
            self.traced = self.traced or lineno
            self.trace_sources += 1
            self.result.trace_sources.append((lineno, words[1]))
        if cmd in (*_AXES, "put", "put*") and len(words) > 3:
            if words[1] in self.homodyne_names:
                words = [words[0], f"{words[1]}__qhd", *words[2:]]
            words = self.parameter(lineno, words, 2)
            self.result.targets.append((lineno, cmd, words[1], words[2]))
        if cmd == "set" and len(words) == 4 and words[3] not in _OUTPUT_PARTS:
            words = self.parameter(lineno, words, 3)
        if cmd != "func":  # (a func's $mfs: see _namespace)
            # The legacy parser reads Finesse 2's negative signal frequency as $fs.
            words = ["-$fs" if word == "$mfs" else word for word in words]
        if not self.fsig_line and cmd != "func" and ({"$fs", "-$fs"} & set(words)):
            # Without fsig Finesse 2's signal frequency is 0 (measured: a pd2 at
            # '5M 0 $fs' then equals the pd1 at '5M 0'); the legacy parser lacks $fs.
            words = ["0" if word in ("$fs", "-$fs") else word for word in words]
            if not self.fs_zero:
                self.fs_zero = lineno
                self.result.notes.append(f"line {lineno}: without fsig, Finesse 2 "
                                         "reads $fs as 0; katparallel follows it")
        handler = self.handlers.get(cmd)
        if handler is not None:
            return handler(lineno, words)
        if cmd in _COMPONENT_NODES and len(words) > _COMPONENT_NODES[cmd]:
            return self.component(words, _COMPONENT_NODES[cmd])
        if _DETECTORS.match(cmd) and len(words) > 2:
            return self.detector(lineno, words)
        return words

    def checked(self, lineno: int, cmd: str) -> None:
        """Say once per command when its numbers were never checked against Finesse 2."""
        if cmd in ("GNUPLOT", "/*") or cmd.startswith("/*"):
            self.block = "END" if cmd == "GNUPLOT" else "*/"
        if self.block:
            if cmd == self.block or cmd.endswith("*/"):
                self.block = ""
            return
        known = ALIASES.get(cmd, cmd)
        if known in CHECKED or known in NO_NUMBERS or cmd in self.unchecked:
            return
        self.unchecked.add(cmd)
        self.result.warnings.append(
            f"line {lineno}: '{cmd}' has not been checked against Finesse 2.3.1 by "
            "katparallel: its numbers may differ from Finesse 2's")

    def parameter(self, lineno: int, words: list[str], index: int) -> list[str]:
        """Spell parameter ``words[index]`` of ``words[index - 1]`` as the parser does.

        Finesse 2 reads parameter names case-insensitively and refuses a mirror's or
        beam splitter's ``Rc`` and ``L`` here.
        """
        kind = self.kinds.get(words[index - 1])
        param = words[index]
        if kind in ("mirror", "bs") and param.lower() in _NOT_SWEPT:
            raise Refusal(lineno, words[0], f"no parameter '{param}' at {kind} (Finesse "
                          f"2 refuses it too): {_NOT_SWEPT[param.lower()]}")
        spelt = _PARAMETERS.get(kind, {}).get(param.lower(), param)
        return [*words[:index], spelt, *words[index + 1:]]

    def unique_detector(self, lineno: int, words: list[str]) -> list[str]:
        """A detector named like an earlier one gets a name of its own.

        Finesse 2 writes a column for each (measured: ``scale NAME`` then changes the
        first only); Finesse 3 names must be unique.
        """
        name = words[1]
        if name not in self.detector_names:
            self.detector_names.add(name)
            return words
        unique = f"{name}__{lineno}"
        self.result.renamed[unique] = (name, lineno)
        self.result.notes.append(
            f"line {lineno}: a second detector named '{name}', which Finesse 2 writes "
            f"too (a scale or set of '{name}' means the first); katparallel names it "
            f"'{unique}'")
        return [words[0], unique, *words[2:]]

    def plot_only(self, lineno: int, words: list[str]) -> list[str]:
        """``multi`` (every surface in one 3D plot) changes no output: dropped."""
        return []

    def fsig(self, lineno: int, words: list[str]) -> list[str]:
        """``fsig NAME f`` runs; so do the signal injections Finesse 3 reproduces.

        ``fsig NAME COMPONENT [TYPE] f PHASE [AMP]`` at a laser (no type, ``amp``,
        ``freq``, ``phase``) or at a mirror (no type: motion) is passed on, with a
        laser's ``amp`` amplitude halved (Finesse 3's amplitude modulation is twice
        Finesse 2's); what else the injection needs is checked in :meth:`run`.
        """
        if len(words) <= 3:
            return words
        typed = len(words) > 4 and not _is_number(words[3])
        kind = self.kinds.get(words[2])
        mod_type = words[3] if typed else None
        construct = " ".join(words[:4 if typed else 3])
        if kind == "mod" and (mod_type != "amp" or not self.phase_modulator(words[2])):
            raise Refusal(lineno, construct, "Finesse 3 implements no phase or "
                          "frequency signal at a modulator and no signal at an amplitude "
                          "modulator (katparallel reproduces fsig at a phase "
                          "modulator's amp)")
        if (kind, mod_type) not in _INJECTIONS:
            raise Refusal(lineno, construct, "Finesse 3's legacy parser injects this "
                          "signal differently from Finesse 2 (katparallel reproduces "
                          "fsig at a laser, of no type, amp, freq or phase, at a "
                          "mirror, of no type, and at a space, of no type or phase)")
        count = sum(1 for i in self.injections if i[1].split("__")[0] == words[1])
        if count:  # Finesse 2 injects one signal at several components (PyKat's DOFs)
            words = [words[0], f"{words[1]}__{count + 1}", *words[2:]]
        self.injections.append((lineno, words[1], kind, words[2]))
        if kind == "space":
            self.result.strains.append((lineno, words[2]))
            return self.strain(lineno, words, typed, construct)
        amp_index = 6 if typed else 5
        if kind == "mod":
            return self.modulation(lineno, words)
        if mod_type == "amp":
            amp = words[amp_index] if len(words) > amp_index else "1"
            if not _is_number(amp):
                raise Refusal(lineno, construct, f"amplitude '{amp}' is not a number")
            words = [*words[:amp_index], repr(_number(amp) / 2)]
        return words

    def strain(self, lineno: int, words: list[str], typed: bool,
               construct: str) -> list[str]:
        """``fsig NAME SPACE [phase] f PHASE [AMP]``: a gravitational-wave strain.

        Finesse 2 and Finesse 3 both follow Bond, Brown and Freise (LIGO-T1300190):
        a strain h of the space's length gives each carrier the sidebands
        i m e^(-i w_g n L / 2c) with m = (w_0 / 2 w_g) sin(w_g n L / 2c) (upper; the
        lower has +i). Finesse 3 writes m with a minus sign (its Eq. 14 as coded), so
        its sidebands are Finesse 2's times -1 (measured against Finesse 2.3.1:
        equal and opposite to 1e-12 at 1 m and 3 km, 1 Hz to 100 kHz). The front end
        passes the strain node (no type: the legacy parser's ``phase`` would be the
        space's phase signal instead) with the signal's phase turned by 180 degrees.
        """
        phase_index = 5 if typed else 4
        if len(words) <= phase_index or not _is_number(words[phase_index]):
            raise Refusal(lineno, construct, "expected 'fsig name space [phase] f "
                          "phase [amplitude]' with a number for the phase")
        phase = _number(words[phase_index]) + 180.0
        rest = words[phase_index + 1:]
        return [words[0], words[1], words[2], words[phase_index - 1], repr(phase), *rest]

    def phase_modulator(self, name: str) -> bool:
        """Whether ``name`` is declared by a ``mod`` line of type ``pm``."""
        return any(words[:2] == ["mod", name] and "pm" in words[5:7]
                   for words in (_code(line)[0] for line in self.lines))

    def modulation(self, lineno: int, words: list[str]) -> list[str]:
        """``fsig NAME MOD amp f PHASE [AMP]`` at a phase modulator.

        Finesse 2 ignores the signal's phase there (measured: the same sidebands at 0
        and 30 degrees), so it is passed as 0; the amplitude is Finesse 3's (the
        relative change of the modulation index in both). Finesse 2's top-order
        sidebands are given by :func:`katparallel.finesse2.signals.install_modulator`.
        """
        self.result.modulators.append((lineno, words[2]))
        return [*words[:5], "0", *words[6:]]

    def check_injections(self) -> None:
        """Refuse what Finesse 3 computes differently around a signal injection.

        Also notes the mirrors and beam splitters whose motion coupling needs Finesse
        2's convention (:attr:`Translation.motion`).

        Raises
        ------
        Refusal
            Naming the first line Finesse 3 cannot reproduce.
        """
        if not self.injections:
            return
        for lineno, cmd, component, param in self.result.targets:
            if component in {i[1] for i in self.injections} and param != "f":
                raise Refusal(lineno, cmd, f"a sweep or put of a signal's '{param}' is "
                              "not reproduced (only its frequency f)")
        for lineno, line in enumerate(self.lines, start=1):
            words = _code(line)[0]
            if not words:
                continue
            if _QUANTUM.match(words[0]):
                raise Refusal(lineno, words[0], "quantum noise detectors with a signal "
                              "injected by fsig are not reproduced")
        sources = {name for name, _ in self.lasers} | {
            name for name, kind in self.kinds.items() if kind == "mod"}
        for lineno, cmd, component, param in self.result.targets:
            if component in sources and param.lower() == "f":
                raise Refusal(lineno, cmd, f"the frequency of '{component}' changing "
                              "during a run with a signal: Finesse 3's signal sidebands "
                              "then differ from Finesse 2's (measured in a cavity's "
                              "transfer function at the second step: 0.47 against 0.95 "
                              "for a laser, 0.944 against 0.970 for a modulator)")
        self.flip_motion_with_mass()
        self.check_massless_motion()
        self.motion_coupling()
        if self.result.modulators and self.result.locks:
            # Sweeps and puts agree, the signal matrix being refilled at every step
            # (_refill_signals; fsig_mod_amp_sweep), a lock was not measured.
            raise Refusal(self.result.locks[0].lineno, "lock", "a lock with a signal "
                          "at a modulator is not reproduced (not measured against "
                          "Finesse 2.3.1)")

    def motion_coupling(self) -> None:
        """Note where Finesse 2's motion coupling differs from Finesse 3's.

        Measured against Finesse 2.3.1 (``fsig_mirror_rf*``, ``fsig_bs_*``,
        ``fsig_mass_rf*``; see :mod:`katparallel.finesse2.signals`): an ``fsig`` at a
        mirror or beam splitter without a mass injects by one convention (each
        carrier's own wavenumber, its tuning phase at the signal frequency alone, a
        beam splitter's back surface without cos(alpha)), the motion of a mirror with
        a mass (driven by radiation pressure or by an ``fsig``) by another (each
        carrier's own wavenumber only; at a beam splitter its tuning phase times
        cos(alpha), and cos(alpha) on its back surface where Finesse 3 has
        cos(alpha_2), ``fsig_bs_mass*``). Both equal Finesse 3's when every carrier is
        at the reference frequency, but for the injection at a beam splitter, a beam
        splitter with a mass and, with modes on, a mirror's light odd in x
        (``fsig_mirror_odd``, ``fsig_mass_odd``, ``fsig_mass_yaw*``).
        """
        offset = self.carriers_off_reference()
        masses = self.attributes(("mass",))
        # With modes on motion reaches light odd in x with Finesse 2's
        # signs (signals._odd_modes).
        modes = self.result.maxtem not in (None, "off")
        motion = []
        for lineno, _, kind, component in self.injections:
            if kind in ("bs", "mirror") and component not in masses and (
                    kind == "bs" or offset or modes):
                motion.append((lineno, component, True))
        for component, lineno in masses.items():
            if offset or modes or self.kinds.get(component) == "bs":
                motion.append((lineno, component, False))
        if offset and masses:
            # Measured (aligo_darm*.extra): one test mass's signal agrees to 4e-10;
            # their DARM difference at REFL is 1/13700 of either at 5 Hz, and there
            # the radiation-pressure loop of the tuned arms magnifies rounding.
            self.result.warnings.append(
                f"line {min(masses.values())}: radiation pressure with a signal and "
                "carriers off the reference frequency: katparallel follows Finesse "
                "2's coupling (to 1e-12 on single cavities, 4e-10 for one test mass "
                "of PyKat's aLIGO design), but a transfer function that is a small "
                "residual of larger ones keeps only what rounding leaves at low "
                "signal frequencies: on PyKat's aLIGO design with no DARM offset, "
                "DARM at the 9 MHz REFL port (1/13700 of each test mass's signal at "
                "5 Hz) differs from Finesse 2.3.1 by 7.7e-8 at 5 Hz and 5.5e-10 at "
                "16 Hz, as much as katparallel itself moves (6.1e-8, 1.4e-9) when "
                "every length is one ulp longer or shorter (Finesse 2: 1.4e-8, "
                "1.7e-10)")
        self.result.motion = motion

    def carriers_off_reference(self) -> bool:
        """Whether a carrier is off the reference frequency (a modulator, a laser's
        frequency; a swept one is refused in :meth:`check_injections`)."""
        for line in self.lines:
            words = _code(line)[0]
            if words[:1] == ["mod"] or (words[:1] and words[0] in _KINDS["laser"]
                                         and len(words) > 4 and not _is_zero(words[3])):
                return True
        return False

    def noise(self, lineno: int, words: list[str]) -> list[str]:
        """``qnoised``/``qshot`` ``NAME N [f1 PHASE1 ...] [fN PHASEN] NODE``, ``S``/``N`` forms.

        Measured against Finesse 2.3.1 (``qnoise_*`` references: a detuned cavity with
        masses, modulator sidebands, a squeezer), with no demodulation or the last at
        the signal frequency Finesse 3's noise is Finesse 2's times sqrt(h3 / h2), the
        two programs taking Planck's constant from different CODATA releases; the
        kat program divides that factor out (:data:`PLANCK_FINESSE2`). The phase of
        the demodulation at the signal frequency changes no noise in either (and
        ``max`` there is dropped). RF demodulations before it: see
        :meth:`rf_demodulations`. Finesse 2's ``S`` form is that noise over the
        modulus of the signal a ``pdN`` with the same demodulations gives (its complex
        modulus without a last phase or with ``max``; measured with and without RF
        demodulations); Finesse 3's differs, so the front end adds that ``pdN`` as a
        hidden detector ``NAME__signal`` and the kat program divides. The ``N`` form
        is the inverse, that modulus over the noise (measured to 1e-15 with no
        demodulation, one and two, a phase given, none and ``max``).

        With no demodulation, Finesse 2's ``qnoised`` is its ``qshot`` (measured with
        squeezed light, radiation pressure and both; Finesse 3's noise at the signal
        frequency, written before, was 2.09 times Finesse 2's on ``qnoise_snr.kat``),
        and the signal of its ``S`` and ``N`` forms is twice the DC power (measured to
        1e-15: a ``pd`` at the same node, modulator sidebands included).
        """
        cmd, construct = words[0], words[0]
        if not self.fsig_line:
            raise Refusal(lineno, construct, "without fsig Finesse 3 computes no "
                          "quantum noise (it writes no output for this detector)")
        if len(words) < 4 or not words[2].isdigit():
            raise Refusal(lineno, construct, "expected 'qnoised name N [f1 phase1 ...] "
                          "node'")
        demods = int(words[2])
        spec = words[3:-1]
        if demods == 0 and spec:
            raise Refusal(lineno, construct, "expected 'qnoised name 0 node'")
        rf, last = spec[:2 * demods - 2], spec[2 * demods - 2:]
        if demods and (len(last) not in (1, 2) or last[0] not in ("$fs", "-$fs", "$mfs")):
            raise Refusal(lineno, construct, "only quantum noise whose last "
                          "demodulation is at the signal frequency ($fs) is reproduced")
        if last[1:] == ["max"]:
            last = last[:1]
        last = ["-$fs" if word == "$mfs" else word for word in last]
        phases = self.rf_demodulations(lineno, cmd, rf)
        kind = "qshot" if demods == 0 else cmd.rstrip("SN")  # see above
        words = self.detector(lineno, [kind, words[1], words[2], *phases, *last,
                                       words[-1]])
        signal = None
        if cmd[-1] in "SN" and "max" in rf[1::2]:
            signal = self.noise_at_max(words, rf[0], last)
        elif cmd[-1] in "SN" and demods:
            signal = f"{words[1]}__signal"
            self.extra.append(" ".join([f"pd{demods}", signal, *rf, *last, words[-1]]))
        elif cmd[-1] in "SN":  # see _add_noise_signals
            signal = f"{words[1]}__signal"
            self.extra.append(f"pd {words[1]}__dc {words[-1]}")
            self.result.helpers.add(f"{words[1]}__dc")
            self.result.dc_signals.add(words[1])
        if cmd.endswith("N"):
            self.result.snr.add(words[1])
        self.result.noise[words[1]] = signal
        self.result.inexact.append((lineno, cmd))
        if rf:
            self.rf_noise.setdefault(words[1], (lineno, cmd))
            self.result.rf_noise[words[1]] = (
                cmd.startswith("qshot"), tuple(self.hertz(f) for f in rf[::2]),
                tuple(_number(p) for p in phases[1::2]))
        return words

    def hertz(self, word: str) -> float:
        """A frequency as written (a number or a ``$const``) in Hz."""
        return _number(self.result.consts.get(word[1:], word) if word.startswith("$")
                       else word)

    def rf_demodulations(self, lineno: int, cmd: str, rf: list[str]) -> list[str]:
        """RF demodulations ``f1 PHASE1 [f2 PHASE2]`` before the one at ``$fs``, for
        Finesse 3's ``QuantumNoiseDetectorDemod1/2`` and ``QuantumShotNoise...``.

        Measured against Finesse 2.3.1 (``qnoise_rf*`` references; ``qnoised`` and
        ``qshot``, a detuned cavity, radiation pressure, squeezing, modes, one RF
        demodulation, and two for ``qshot``, at modulation frequencies and
        elsewhere): Finesse 2's noise at RF phases (phi1, phi2) is Finesse 3's at
        (-phi1, -phi2), to 1e-11. The
        difference is a convention of the demodulation phase: a photocurrent
        demodulated at phase phi picks up the vacuum field at f_c + f1 + fs beating
        with the carrier at f_c weighted by exp(-i phi) in Finesse 2, by exp(+i phi)
        in Finesse 3 (whose own source marks it: "FIXME: There should be a minus sign
        here"). Where the carrier's upper and lower sidebands are alike (no cavity,
        phi = 0 or 90) the two agree; where a detuned cavity makes them differ,
        Finesse 3 is off (0.7% at 20 degrees on the reference). So each RF phase is
        negated. The signal (``pdN``, also the hidden one of an ``S`` form) keeps its
        phases: Finesse 2 and Finesse 3 agree there. ``max`` as an RF phase: Finesse
        2 computes the noise at phase 0 (measured, whatever phase maximises the
        signal); for its ``S`` form see :meth:`noise_at_max`.
        """
        if len(rf) // 2 > 2:
            raise Refusal(lineno, cmd, "Finesse 3 has quantum-noise detectors with at "
                          "most two RF demodulations before the one at $fs")
        if len(rf) // 2 > 1 and cmd.startswith("qnoised"):
            raise Refusal(lineno, cmd, "qnoised with two RF demodulations: Finesse 2's "
                          "differs from its own qshot where nothing can make them "
                          "differ (no squeezing, no radiation pressure: by 2% to 41% "
                          "with one modulator), Finesse 3's equals its qshot there")
        if len(rf) // 2 > 1 and cmd[-1] in "SN":
            raise Refusal(lineno, cmd, "an S or N form with two RF demodulations: its signal "
                          "would be a pd3, which Finesse 3's legacy parser lacks")
        out = []
        for freq, phase in zip(rf[::2], rf[1::2]):
            value = self.result.consts.get(freq[1:], freq) if freq.startswith("$") \
                else freq
            if not _is_number(value) or _number(value) < 0:
                raise Refusal(lineno, cmd, f"an RF demodulation frequency '{freq}' "
                              "that is not a number >= 0 (Finesse 2 refuses negative "
                              "ones in quantum-noise detectors)")
            value = self.result.consts.get(phase[1:], phase) if phase.startswith("$") \
                else phase
            if phase != "max" and not _is_number(value):
                raise Refusal(lineno, cmd, f"an RF demodulation phase '{phase}' that "
                              "is not a number or 'max'")
            out += [freq, "0" if phase == "max" else repr(-_number(value) + 0.0)]
        return out

    def noise_at_max(self, words: list[str], freq: str, last: list[str]) -> str:
        """``qnoisedS``/``qshotS NAME 2 f1 max $fs [PHASE2] NODE``: Finesse 2's ``max``.

        Measured against Finesse 2.3.1 (``qnoise_rf_max``, to 1e-11): Finesse 2 takes
        the RF phase phi that maximises the signal after the RF demodulation, as for
        ``pd2 ... f1 max ...`` (:meth:`first_demod_max`), and writes the noise at phi
        over that signal's modulus (demodulated at PHASE2 when given). phi varies
        along a sweep; Finesse 3's detector has one phase. The noise power is a
        quadratic form in exp(+-i phi): N^2(phi) = A + B cos 2phi + C sin 2phi, with
        A + B, A + C and A - B the noise powers at Finesse 2's phases 0, 45 and 90
        (the detector ``NAME`` itself and two hidden ones, at Finesse 3's phases 0,
        -45 and -90); the kat program evaluates it at phi, which it finds from the
        hidden signals ``NAME__signal`` and ``NAME__signal__90`` (RF phases 0, 90).
        """
        cmd, name, node = words[0], words[1], words[-1]
        hidden = []
        for phase in ("45", "90"):
            hidden.append(f"{name}__q{phase}")
            self.extra.append(" ".join([cmd, hidden[-1], "2", freq, f"-{phase}",
                                        last[0], node]))
            self.result.rf_noise[hidden[-1]] = (cmd == "qshot", (self.hertz(freq),),
                                                (-float(phase),))
        signal = f"{name}__signal"
        for other, phase in ((signal, "0"), (f"{signal}__90", "90")):
            self.extra.append(" ".join(["pd2", other, freq, phase, last[0], node]))
        second = _number(last[1]) if len(last) > 1 else None
        self.result.noise_max[name] = (*hidden, f"{signal}__90", second)
        return signal

    def check_rf_noise(self) -> None:
        """Refuse what RF-demodulated quantum noise cannot follow along a sweep.

        A sweep or ``put`` of such a detector's phase would skip the sign
        :meth:`rf_demodulations` gives it; with modes on, the carrier fields
        :func:`_mode_fields` reads are at fixed frequencies.
        """
        if not self.rf_noise:
            return
        modes = self.result.maxtem not in (None, "off", "0")
        for target_line, cmd, component, param in self.result.targets:
            if modes and param.lower() == "f" and self.kinds.get(component) in (
                    "laser", "mod"):
                raise Refusal(target_line, cmd, f"a sweep or put of '{component} "
                              f"{param}' with RF-demodulated quantum noise and modes on "
                              "(the carriers' frequencies must stay fixed)")
            if component in self.rf_noise:
                raise Refusal(target_line, cmd, f"a sweep or put of '{component} "
                              f"{param}' (an RF-demodulated quantum-noise detector) "
                              "is not reproduced")

    def check_sets(self) -> None:
        """Refuse ``set`` of an output the kat program computes after Finesse 3 runs.

        Quantum noise (Planck's constant, ``S``/``N`` forms, ``qhd``) and ``max``
        phases are worked out from Finesse 3's outputs when they are written; a
        ``func`` or ``lock`` would read Finesse 3's own output instead.
        """
        computed = {*self.result.noise, *self.result.moduli, *self.result.first_max}
        for name, (lineno, detector) in self.result.sets.items():
            if detector in computed:
                raise Refusal(lineno, "set", f"the output of '{detector}' is worked out "
                              "from Finesse 3's outputs as they are written (Finesse "
                              "2's conventions), which a func or lock cannot read")

    def homodyne(self, lineno: int, words: list[str]) -> list[str]:
        """``[q]hd[S|N] NAME PHASE NODE1 NODE2``: Finesse 2's homodyne detectors.

        The noise of ``qhd`` is :class:`katparallel.finesse2.homodyne.QuantumHomodyne`'s
        (added by :func:`apply`), times Finesse 2's Planck constant over Finesse 3's
        as for ``qnoised``. Hidden ``pd1 NAME__1 $fs NODE1`` and ``NAME__2`` detectors
        give the nodes, as Finesse 2's default directions make them, and the signals:
        Finesse 2's ``hd`` writes ``NAME__1 + e^{i PHASE} NAME__2`` (without ``fsig``,
        with the DC powers of ``pd NAME__1 NODE1``...); ``qhdS`` is the ``qhd`` noise
        over its modulus and ``qhdN`` the modulus of its real part over the noise
        (measured to 1e-15 over a full turn of the signal's phase). The phase is held
        by a dark stand-in laser ``NAME__qhd``, so that ``xaxis``/``put NAME phase``
        (which Finesse 2 allows) reach it.
        """
        cmd = words[0]
        if len(words) != 5:
            raise Refusal(lineno, cmd, f"expected '{cmd} name phase node1 node2'")
        if not self.fsig_line and cmd != "hd":
            raise Refusal(lineno, cmd, "without fsig Finesse 2 computes no quantum "
                          "noise for it (measured: it writes 0 for qhd and qhdS, inf "
                          "for qhdN); add 'fsig NAME F' for the noise at frequency F")
        name, phase, nodes = words[1], words[2], words[3:]
        for i, node in enumerate(nodes, start=1):
            helper = (["pd1", f"{name}__{i}", "$fs", node] if self.fsig_line
                      else ["pd", f"{name}__{i}", node])
            helper = self.detector(lineno, helper)
            self.extra.append(" ".join(helper))
            self.result.helpers.add(helper[1])
        self.result.homodynes[name] = (lineno, cmd)
        if cmd != "hd":
            self.result.noise[name] = None if cmd == "qhd" else f"{name}__signal"
            if cmd == "qhdN":
                self.result.snr.add(name)
            self.result.inexact.append((lineno, cmd))
        self.stand_ins.append((f"{name}__qhd", f"{name}__qhd_node"))
        return ["l", f"{name}__qhd", "0", "0", phase, f"{name}__qhd_node"]

    def quadrature(self, lineno: int, words: list[str]) -> list[str]:
        """``qd NAME f PHASE NODE``: Finesse 2's quantum noise in one quadrature, in
        units of the vacuum's (1 for vacuum or coherent light).

        Measured against Finesse 2.3.1 (``qd_*`` references: a squeezer mixed with a
        laser; a detuned cavity with radiation pressure, PyKat's ``test_rad_pressure``),
        it is the noise of Finesse 3's balanced homodyne detector with an ideal local
        oscillator (``QuantumBHD``), squared, over the vacuum's (2 h nu P_lo), at the
        oscillator phase phi = -(PHASE + arg c), c the carrier at the node: Finesse 2
        counts quadratures from the local carrier and in the other sense. The variance
        a + b cos 2phi + c sin 2phi follows from three hidden homodyne detectors (0,
        45 and 90 degrees, added by :func:`apply`); the legacy text gets ``ad NAME 0
        NODE``, which resolves the node and its direction and gives c.
        """
        if len(words) != 5 or not _is_number(words[3]):
            raise Refusal(lineno, "qd", "expected 'qd name f phase node'")
        if not self.fsig_line:
            raise Refusal(lineno, "qd", "without fsig Finesse 3 computes no quantum "
                          "noise (Finesse 2 writes 0)")
        if not _is_zero(words[2]):
            raise Refusal(lineno, "qd", "only quadratures of the carrier (f = 0) are "
                          "reproduced")
        self.result.quadratures[words[1]] = (lineno, float(words[3]))
        self.result.inexact.append((lineno, "qd"))
        return self.detector(lineno, ["ad", words[1], "0", words[4]])

    def check_dumps(self) -> None:
        """Refuse a ``dump`` node where Finesse 2 refuses it or gives other light.

        Measured with Finesse 2.3.1: it refuses a dump at a space, a modulator, an
        isolator or a diode ("space s1 connected to beam dump"), a laser or a squeezer
        ("not connected to interferometer"); at a lens's first node it fails (a KLU
        error) and at its second it scales every power of a file by 1/1.4 (a laser
        through a mirror of T = 0.4 onto the lens). The legacy parser would run them
        all (and join a space to another component's dump port). With a signal, a
        dump at a component that moves under radiation pressure differs too:
        Finesse 2 takes the light leaving into the dump out of the force (measured: a
        detuned cavity's transfer function 4e-5 apart at 1 Hz, and equal to that of
        the same mirror with T = 0), Finesse 3 counts it. At a mirror the kat program
        folds T into the loss (``Translation.opaque``): the light that would leave
        into the dump is absorbed in the mirror instead, so no outputs change but the
        force, now Finesse 2's. The loss's vacuum noise would grow by T, so files
        with vacuum-noise detectors are refused, as are a swept T and beam splitters.
        """
        for lineno, line in enumerate(self.lines, start=1):
            words = _code(line)[0]
            if not words or "dump" not in words[1:]:
                continue
            space = words[0] in ("s", "space")
            nodes = 2 if space else _COMPONENT_NODES.get(words[0], 0)
            if words[0] in _DUMPS or "dump" not in words[len(words) - nodes:]:
                continue
            why = ("gives a lens's dump other light (every power 1/1.4 of the "
                   "open port's, measured) or fails" if words[0] == "lens" else
                   "refuses it (only mirrors and beam splitters take one)")
            raise Refusal(lineno, words[0], f"a dump node here: Finesse 2 {why}")
        moving = self.attributes(("mass", "zmech", "rxmech", "rymech", "Ix", "Iy"))
        swept = {component for _, _, component, param in self.result.targets
                 if param.lower() == "t"}
        for name, _ in self.dumped if self.fsig_line else ():
            if name not in moving or name in self.result.opaque:
                continue
            if (self.kinds.get(name) == "mirror" and not self.vacuum_noise
                    and name not in swept):
                self.result.opaque.append(name)
                continue
            raise Refusal(moving[name], "attr", f"'{name}' moves under radiation "
                          "pressure and has a dump node: Finesse 2 leaves the light "
                          "going into a dump out of the radiation pressure (measured: "
                          "a detuned cavity's transfer function 4e-5 apart at 1 Hz); "
                          "reproduced only at a mirror whose T is not swept, in a "
                          "file without vacuum noise (qnoised, qd, qhd...)")

    def attributes(self, keys: tuple[str, ...]) -> dict[str, int]:
        """Components given a nonzero ``attr`` of ``keys``, and the first such line."""
        found: dict[str, int] = {}
        for lineno, line in enumerate(self.lines, start=1):
            words = _code(line)[0]
            if words[:1] == ["attr"] and len(words) > 3:
                for key, value in zip(words[2::2], words[3::2]):
                    if _ATTRIBUTES.get(key.lower()) in keys and not _is_zero(value):
                        found.setdefault(words[1], lineno)
        return found

    def check_massless_motion(self) -> None:
        """Refuse ``xd`` at a mirror or beam splitter that an ``fsig`` moves, massless.

        Finesse 2 writes 0 there (its ``xd`` reads the motion radiation pressure
        drives, which needs a mass); Finesse 3 writes the injected motion, lambda /
        2 pi per unit signal (measured: 1.69e-7 against 0).
        """
        moved = {component for _, _, kind, component in self.injections
                 if kind in ("mirror", "bs")}
        masses = self.attributes(("mass",))
        for lineno, line in enumerate(self.lines, start=1):
            words = _code(line)[0]
            if words[:1] == ["xd"] and len(words) > 2 and words[2] in moved - set(
                    masses):
                raise Refusal(lineno, "xd", f"'{words[2]}' has no mass and an fsig "
                              "moves it: Finesse 2 writes 0 for its motion, Finesse 3 "
                              "the injected motion")

    def flip_motion_with_mass(self) -> None:
        """Finesse 2's sign of a motion signal at a mirror that has a mass.

        Radiation pressure (``attr NAME mass``) with a signal agrees with Finesse 3 as
        it stands: signals at a laser or a space drive the masses alike (references
        ``fsig_mass_*``, a detuned cavity with modulator sidebands). So does a motion
        signal at a mirror without a mass. At a mirror with a mass, Finesse 2 moves it
        the other way: every output is Finesse 3's times -1 (measured against
        Finesse 2.3.1 with and without a mass on the other mirror), so that signal's
        phase is turned by 180 degrees (:func:`apply`).
        """
        masses = self.attributes(("mass",))
        self.result.flipped = [name for _, name, kind, component in self.injections
                               if kind == "mirror" and component in masses]

    def variable(self, lineno: int, words: list[str]) -> list[str]:
        """``var NAME VALUE``: a laser of no power alone on its node (see above)."""
        if len(words) != 3:
            return words
        self.variables.add(words[1])
        self.stand_ins.append((words[1], f"{words[1]}__var"))
        # Finesse 2's $x1 is the axis value whatever the var's, so the value is unused.
        return ["l", words[1], "0", "0", f"{words[1]}__var"]

    def modes(self, lineno: int, words: list[str]) -> list[str]:
        """``maxtem``/``phase``: kept for :func:`apply` to set once for the file."""
        if len(words) == 2 and _is_number_or_off(words[1]):
            setattr(self.result, words[0], words[1])
            return []
        return words  # a $constant: the legacy parser resolves it

    def laser(self, lineno: int, words: list[str]) -> list[str]:
        """Note each laser for a dummy beam; a laser Finesse 2 runs dark gets P = 0."""
        if len(words) > 3:
            self.lasers.append((words[1], words[-1]))
            if words[1] in self.dark:
                words = [words[0], words[1], "0", *words[3:]]
        return self.component(words, 1)

    def check_tem_orders(self) -> None:
        """Refuse a ``tem`` of order n + m above ``maxtem``, as Finesse 2 does.

        Measured on Finesse 2.3.1: "n+m larger then maximum order for TEM modes", with
        ``maxtem 1`` and with ``maxtem off`` or none (order 0); Finesse 3 would only
        warn and drop the mode's power.
        """
        maxtem = self.result.maxtem
        if maxtem is not None and maxtem != "off" and not _is_number(maxtem):
            return  # a $constant: the legacy parser resolves it
        order = int(_number(maxtem)) if maxtem not in (None, "off") else 0
        for lineno, line in enumerate(self.lines, start=1):
            words = _code(line)[0]
            if (words[:1] == ["tem"] and len(words) > 3 and words[2].isdigit()
                    and words[3].isdigit() and int(words[2]) + int(words[3]) > order):
                raise Refusal(lineno, "tem", f"n+m = {int(words[2]) + int(words[3])} "
                              f"is above the maximum order {order} (maxtem); Finesse 2 "
                              "refuses it too")

    def tem(self, lineno: int, words: list[str]) -> list[str]:
        """A dark laser's ``tem`` lines go (its power is 0)."""
        return [] if len(words) > 1 and words[1] in self.dark else words

    def put(self, lineno: int, words: list[str]) -> list[str]:
        """``put[*] COMP PARAM $FUNC`` (or ``$LOCK``): applied by :func:`apply`."""
        if len(words) == 4 and words[1] in self.variables:
            words = [*words[:2], "phase", words[3]]  # a var's value (see set_output)
        if len(words) == 4 and words[3][1:] in self.put_sources:
            self.result.puts.append((lineno, words[1], words[2], words[3][1:],
                                     words[0] == "put*"))
            return []
        return words

    def const(self, lineno: int, words: list[str]) -> list[str]:
        """Record ``const`` for functions; the legacy parser reads it too."""
        if len(words) == 3:
            self.result.consts[words[1]] = words[2]
        return words

    def scale(self, lineno: int, words: list[str]) -> list[str]:
        """Record ``scale FACTOR [DET]`` for the output columns."""
        if len(words) not in (2, 3):
            raise Refusal(lineno, "scale", "expected 'scale factor [detector]'")
        word = words[1]
        if word not in _SCALE_WORDS and word != "meter":
            try:
                float(word)
            except ValueError:
                raise Refusal(lineno, "scale", f"unknown factor '{word}' (expected a "
                              "number, deg, rad or meter)") from None
        self.result.scales.append((words[2] if len(words) == 3 else None, word))
        self.result.inexact.append((lineno, "scale"))
        return []

    def detector(self, lineno: int, words: list[str]) -> list[str]:
        """Finesse 2's default direction at a lens or isolator; ``max`` phases; ``bp``."""
        if words[0] == "bp":
            words = self.beam_parameter(lineno, words)
        if words[0] == "beam":
            self.beam_detector = self.beam_detector or lineno
        node = words[-1]
        if node.rstrip("*") in self.inward:
            words = [*words[:-1], node[:-1] if node.endswith("*") else node + "*"]
        if words[0].startswith("pd") and "max" in words:
            return self.demod_max(lineno, words)
        return words

    def beam_parameter(self, lineno: int, words: list[str]) -> list[str]:
        """``bp NAME x|y PARAM NODE``: ``PARAM`` as Finesse 2 reads it (``g``, ``r``)."""
        self.beam_parameters = self.beam_parameters or lineno
        if len(words) != 5:
            return words
        param = words[3].lower()
        if param not in _BEAM_PARAMETERS:
            raise Refusal(lineno, "bp", f"no beam parameter '{words[3]}' (Finesse 2 "
                          "refuses it too): possible are w, w0, z, zr, g, r, q")
        return [*words[:3], _BEAM_PARAMETERS[param], words[4]]

    def dummy_gauss(self) -> None:
        """Finesse 2's beam at each laser when no cav or gauss gives one: w0 = 2 mm.

        A squeezer (``sq``) gets its own too (measured: a squeezer 1 m from a beam
        splitter, the laser 1.1 m: Finesse 2's noise is that of a 2 mm waist at each,
        as with two ``gauss`` commands, 8e-4 away from the laser's beam traced to the
        squeezer; ``sq_dummy_beam``), and the beams then meet as two ``gauss``
        commands' do (:mod:`katparallel.finesse2.trace`).
        """
        squeezers = [(lineno, words[1], words[-1])
                     for lineno, line in enumerate(self.lines, start=1)
                     for words in [_code(line)[0]] if words[:1] == ["sq"]
                     and len(words) > 2]
        for name, node in self.lasers:
            self.extra.append(f"gauss {name}__dummy {name} {node} 2m 0")
        for lineno, name, node in squeezers:
            self.extra.append(f"gauss {name}__dummy {name} {node} 2m 0")
            self.result.trace_sources.append((lineno, f"{name}__dummy"))
        if squeezers:
            declared = {words[1]: lineno
                        for lineno, line in reversed(list(enumerate(self.lines, 1)))
                        for words in [_code(line)[0]] if len(words) > 1}
            self.result.trace_sources[:0] = [(declared[name], f"{name}__dummy")
                                             for name, _ in self.lasers]
        self.extra.append("retrace off")
        self.result.notes.append(
            "no cavity nor gauss: Finesse 2 gives each laser a beam of waist 2 mm at "
            "the laser and switches retrace off; katparallel follows it")

    def set_output(self, lineno: int, words: list[str]) -> list[str]:
        """``set NAME DET re``: a detector's output, for functions to use."""
        if len(words) == 4 and words[2] in self.variables:
            # A var's value (Finesse 2 calls it 're', as 'xaxis VAR re' sweeps it) is
            # its stand-in laser's phase: a parameter, not a detector's output.
            return [*words[:3], "phase"]
        if len(words) != 4 or words[3] not in _OUTPUT_PARTS:
            return words  # a component parameter: the legacy parser reads it
        if words[3] != "re":
            raise Refusal(lineno, "set", f"only the real part ('re') of a detector "
                          f"output can be used here, not '{words[3]}'")
        self.result.sets[words[1]] = (lineno, words[2])
        return []

    def func(self, lineno: int, words: list[str]) -> list[str]:
        """``func NAME = EXPR``: computed after parsing (see :func:`apply`)."""
        if len(words) < 4 or words[2] != "=":
            raise Refusal(lineno, "func", "expected 'func name = expression'")
        self.result.funcs.append((lineno, words[1], " ".join(words[3:])))
        return []

    def lock(self, lineno: int, words: list[str]) -> list[str]:
        """``lock[*] NAME $INPUT GAIN ACCURACY [OFFSET]``: iterated around the model."""
        cmd = words[0]
        if len(words) not in (5, 6) or not words[2].startswith("$"):
            raise Refusal(lineno, cmd, "expected 'lock name $input gain accuracy "
                          "[offset]'")
        name, source = words[1], words[2][1:]
        declared = set(self.result.sets) | {n for _, n, _ in self.result.funcs}
        if source not in declared:
            raise Refusal(lineno, cmd, f"'${source}' is no 'set' or 'func' declared "
                          "before the lock (Finesse 2: lock input signal not found)")
        if any(lock.name == name for lock in self.result.locks):
            raise Refusal(lineno, cmd, f"name '{name}' already used for a lock")
        numbers = []
        for word in words[3:]:
            text = self.result.consts.get(word[1:], word) if word.startswith("$") \
                else word
            try:
                numbers.append(_number(text))
            except ValueError:
                raise Refusal(lineno, cmd, f"'{word}' is not a number") from None
        gain, accuracy, offset = (numbers + [0.0])[:3]
        if accuracy == 0:
            raise Refusal(lineno, cmd, "the accuracy must not be 0")
        self.result.locks.append(Lock(lineno, name, source, gain, accuracy, offset,
                                      once=cmd == "lock*"))
        self.result.inexact.append((lineno, cmd))
        return []

    def first_demod_max(self, lineno: int, words: list[str]) -> list[str]:
        """``pd2 NAME f1 max f2 [PHASE2] NODE``: Finesse 2's first phase ``max``.

        Measured against Finesse 2.3.1 (``pd2_first_max*``, to 1e-13): Finesse 2 takes
        the first phase phi that maximises the modulus of the signal after the first
        demodulation, Z(phi) = (P e^(-i phi) + Q e^(i phi)) / 2, that is
        phi = (arg P - arg Q) / 2 with each argument in (-180, 180] degrees (of the
        two maxima, phi and phi + 180, the one this formula gives), then demodulates
        Z(phi) as written. With Z(0) and Z(90) (two ``pd2`` without a last phase),
        P = Z(0) + i Z(90) and Q = Z(0) - i Z(90); the kat program computes the rest.
        """
        phase = words[5] if len(words) == 7 else None
        if phase == "max":  # both 'max': the modulus of Z(phi) (measured too)
            self.result.moduli.add(words[1])
            phase = None
        if phase is not None and not _is_number(phase):
            raise Refusal(lineno, words[0], f"the second phase '{phase}' must be a "
                          "number when the first is 'max'")
        name, node = words[1], words[-1]
        other = f"{name}__90"
        self.extra.append(" ".join(["pd2", other, words[2], "90", words[4], node]))
        self.result.first_max[name] = (other, None if phase is None else _number(phase))
        self.result.inexact.append((lineno, "pd2 ... max"))
        return ["pd2", name, words[2], "0", words[4], node]

    def component(self, words: list[str], n_nodes: int) -> list[str]:
        """Join a node two components share with a space of length 0."""
        words = list(words)
        for i in range(len(words) - n_nodes, len(words)):
            node = words[i]
            if node == "dump":
                self.dumped.append((words[1], i - len(words) + n_nodes + 1))
                if self.vacuum_noise:  # see _dump_sources
                    self.result.dumps.append(self.dumped[-1])
                continue
            if node in self.owner:
                joined = f"{node}__{words[1]}"
                self.extra.append(f"s {node}__join_{words[1]} 0 {node} {joined}")
                words[i] = joined
            else:
                self.owner[node] = words[1]
        return words

    def axis(self, lineno: int, words: list[str]) -> list[str]:
        """Read steps such as ``10_000`` as Finesse 2 does: the leading digits."""
        words = list(words)
        if len(words) > 2 and words[1] in self.variables:
            words[2] = "phase"  # the stand-in laser's parameter holding the value
        elif len(words) > 2 and words[2] == "r_ap" and not words[0].endswith("*"):
            # An aperture changes no plane wave (refused with higher-order modes, as
            # for 'attr'): the sweep only writes its values, held by a stand-in 'var'.
            self.apertures.append((lineno, words[1]))
            stand_in = f"{words[1]}__r_ap"
            if stand_in not in self.variables:
                self.variables.add(stand_in)
                self.extra.append(f"l {stand_in} 0 0 {stand_in}__var")
            words[1:3] = [stand_in, "phase"]
        self.beam_axis(lineno, words)
        steps = words[-1]
        if not re.fullmatch(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?", steps):
            digits = re.match(r"\d*", steps)[0]
            if not digits:
                raise Refusal(lineno, words[0], f"steps '{steps}' is not a number")
            words[-1] = digits
            self.result.notes.append(
                f"line {lineno}: Finesse 2 reads the steps '{steps}' as {digits} "
                f"(its leading digits); katparallel follows it")
        return words

    def beam_axis(self, lineno: int, words: list[str]) -> None:
        """Record a sweep of a ``beam`` detector's own x or y; refuse what differs."""
        on_beam = len(words) > 6 and words[1] in self.beams and words[2] in ("x", "y")
        if words[0].startswith("xaxis"):
            self.beam_steps = words[-1] if on_beam else None
            if on_beam:
                self.result.beam_axes.append(words[2])
            return
        if self.result.beam_axes and not on_beam:
            raise Refusal(lineno, words[0], "a beam detector swept over its x or y "
                          "can only be combined with a sweep of its other coordinate")
        if on_beam and self.result.beam_axes and words[-1] != self.beam_steps:
            raise Refusal(lineno, words[0], f"a beam detector's x and y need the same "
                          f"number of steps here ({self.beam_steps} and {words[-1]})")
        if on_beam:
            if not self.result.beam_axes:
                raise Refusal(lineno, words[0], "sweep the beam detector with xaxis "
                              "first, then x2axis")
            self.result.beam_axes.append(words[2])

    def attr(self, lineno: int, words: list[str]) -> list[str]:
        """Handle ``Rc 0`` (flat) and ``r_ap`` (aperture); pass the rest on."""
        name, pairs = words[1], words[2:]
        kept = [name]
        for written, value in zip(pairs[::2], pairs[1::2]):
            key = _attribute(lineno, written)
            if key in ("Rc", "Rcx", "Rcy") and _is_zero(value):
                self.result.flat.append((name, key, lineno))
            elif key == "r_ap":
                self.apertures.append((lineno, name))
            elif key == "mass" and _is_number(value) and _number(value) <= 0:
                raise Refusal(lineno, "attr", f"mass {value}: a mass must be > 0 "
                              "(Finesse 2 refuses it too)")
            elif key in ("zmech", "rxmech", "rymech") and not self.fsig_line:
                self.mechanics = self.mechanics or lineno  # no signal: no effect
            elif key in ("zmech", "rxmech", "rymech"):
                raise Refusal(lineno, f"attr {key}", f"'{value}' names a 'tf' transfer "
                              "function (a suspension), which Finesse 3's legacy parser "
                              "does not implement")
            else:
                kept += [key, value]
        return ["attr", *kept] if len(kept) > 1 else []

    def transfer(self, lineno: int, words: list[str]) -> list[str]:
        """``tf``/``tf2``: used only for signal sidebands, so dropped without fsig."""
        if self.fsig_line:
            return words  # the legacy parser reports it as not implemented
        self.mechanics = self.mechanics or lineno
        return []

    def demod_max(self, lineno: int, words: list[str]) -> list[str]:
        """``pdN ... max``: drop the last phase and keep the modulus."""
        index = max(i for i, w in enumerate(words) if w == "max")
        if words[0] == "pd2" and words[3:4] == ["max"] and len(words) in (6, 7):
            return self.first_demod_max(lineno, words)
        if index != len(words) - 2:
            raise Refusal(lineno, words[0], "only the last demodulation phase can be "
                          "'max' in this kat")
        self.result.moduli.add(words[1])
        self.result.inexact.append((lineno, f"{words[0]} ... max"))
        return words[:index] + words[index + 1:]


def _attribute(lineno: int, written: str) -> str:
    """The legacy parser's spelling of the ``attr`` name ``written``.

    Raises
    ------
    Refusal
        If Finesse 2's ``attr`` sets no such thing, or it sets a mirror map.
    """
    if written.lower() in _MAP_ATTRIBUTES:
        raise Refusal(lineno, "attr", f"'{written}' sets a mirror map, which the legacy "
                      "parser does not implement")
    if written.lower() not in _ATTRIBUTES:
        raise Refusal(lineno, "attr", f"no attribute named '{written}' (Finesse 2 "
                      "refuses it too; its attr sets Rc, Rcx, Rcy, xbeta, ybeta, mass, "
                      "r_ap, zmech, rxmech, rymech, g, gx, gy)")
    return _ATTRIBUTES[written.lower()]


def _component_kinds(lines: list[str]) -> dict[str, str]:
    """Map each component's name to its kind (a key of ``_KINDS``)."""
    kind_of = {cmd: kind for kind, cmds in _KINDS.items() for cmd in cmds}
    kinds = {}
    for line in lines:
        words = _code(line)[0]
        if len(words) > 1 and words[0] in kind_of:
            kinds.setdefault(words[1], kind_of[words[0]])
    return kinds


def _dark_lasers(lines: list[str]) -> set[str]:
    """Lasers whose every ``tem`` power factor is 0: Finesse 2 lets them emit nothing."""
    factors: dict[str, list[float]] = {}
    for line in lines:
        words = _code(line)[0]
        if words[:1] == ["tem"] and len(words) == 6:
            try:
                factors.setdefault(words[1], []).append(_number(words[4]))
            except ValueError:
                factors.setdefault(words[1], []).append(1.0)
    return {name for name, values in factors.items() if not any(values)}


def _is_number_or_off(value: str) -> bool:
    try:
        return value == "off" or _number(value) >= 0
    except ValueError:
        return False


def _is_number(value: str) -> bool:
    try:
        _number(value)
    except ValueError:
        return False
    return True


def _is_zero(value: str) -> bool:
    try:
        return float(value) == 0.0
    except ValueError:
        return False


def translate(text: str) -> Translation:
    """Translate a Finesse 2 kat file for Finesse 3's legacy parser.

    Parameters
    ----------
    text : str
        The kat file's contents.

    Returns
    -------
    Translation

    Raises
    ------
    Refusal
        On the first construct Finesse 3 cannot reproduce.
    """
    return _Translator(text).run()


_SI = {"p": 1e-12, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9,
       "T": 1e12}
_NAME = re.compile(r"\$?([A-Za-z_][A-Za-z0-9_]*)")
_FUNCTIONS = ("abs", "exp", "log", "log10", "sin", "cos", "tan", "sqrt", "arcsin",
              "arccos", "arctan")


def _number(text: str) -> float:
    """A Finesse 2 number, SI suffix allowed (``30u``, ``9M``)."""
    if text and text[-1] in _SI:
        return float(text[:-1]) * _SI[text[-1]]
    return float(text)


def _quadrature_detectors(model: finesse.Model, translation: Translation) -> None:
    """Three hidden homodyne detectors at each ``qd``'s node (see
    :meth:`_Translator.quadrature`), refused with modes on (never measured)."""
    from finesse.detectors import QuantumBHD

    for name, (lineno, _) in translation.quadratures.items():
        if model.is_modal:
            raise Refusal(lineno, "qd", "quadrature noise with higher-order modes on "
                          "is not reproduced (never measured against Finesse 2)")
        for phase in (0, 45, 90):
            model.add(QuantumBHD(f"{name}__q{phase}", model.elements[name].node,
                                 P_lo=1, phase=phase))


def apply(model: finesse.Model, translation: Translation, run: bool = False) -> None:
    """Do to a parsed model what the legacy parser cannot: modes, Rc 0, func, put.

    Each ``func`` becomes a symbolic expression, output by a math detector (Finesse 2
    writes every function's value, ``noplot`` or not), and put onto parameters by
    ``put``/``put*``.

    Parameters
    ----------
    model : finesse.Model
        The legacy parser's model of ``translation.text``.
    translation : Translation
        What :func:`translate` made of the kat file.
    run : bool
        True for the kat program's own run of the file, whose sweeps, puts and
        locks may take R + T past 1 (:func:`allow_sums_past_one`); an ensemble's
        jobs keep Finesse 3's check, which stands for Finesse 2's of the values
        PyKat writes into the file.

    Raises
    ------
    Refusal
        Naming the line of a component, name or expression that cannot be built.
    """
    _modes(model, translation)
    _quadrature_detectors(model, translation)
    for name in translation.flipped:  # see _Translator.flip_motion_with_mass
        model.elements[name].phase = model.elements[name].phase.value + 180.0
    _motion_coupling(model, translation)
    _refill_signals(model)
    if run:
        allow_sums_past_one(model)
    _beam_parameter_directions(model, translation)
    for name, key, lineno in translation.flat:
        if name not in model.elements:
            raise Refusal(lineno, "attr", f"no component named '{name}'")
        for axis in ("x", "y") if key == "Rc" else (key[-1],):
            setattr(model.elements[name], f"Rc{axis}", math.inf)
    parameters = _lock_parameters(model, translation)
    values = _func_values(model, translation, parameters)
    _add_func_outputs(model, translation, values)
    _add_noise_signals(model, translation)
    _dump_sources(model, translation)
    for name in translation.opaque:  # see _Translator.check_dumps
        mirror = model.elements[name]  # T becomes loss, R + T + L stays 1
        mirror.L = float(mirror.L.value) + float(mirror.T.value)
        mirror.T = 0
    for lineno, component, param, func, add in translation.puts:
        _put(model, lineno, component, param, values[func], add)
    _beam_trace(model, translation)
    _laser_gouy_phases(model, translation)
    _install_locks(model, translation)
    _mode_fields(model, translation)
    if run:  # the kat program's columns (an exact model refuses these: model.py)
        frequencies.install(model, translation)


_SAME_SIDE = {1: 2, 2: 1, 3: 4, 4: 3}  # a beam splitter's ports on one side


def _dump_sources(model: finesse.Model, translation: Translation) -> None:
    """Let no vacuum noise in at Finesse 2's ``dump`` ports (without modes).

    Finesse 2's ``dump`` absorbs the light leaving the port and, without Hermite-Gauss
    modes, lets no vacuum noise in (measured against Finesse 2.3.1, references
    ``qnoise_dump``, ``qhd_dump``, ``qd_dump``: behind the dump port of a 50/50 beam
    splitter ``qnoised`` is 3.06e-10 where an open port gives 4.32e-10, sqrt(1/2) of
    it, that port's vacuum missing; at a lossy mirror's dump the loss's vacuum stays;
    ``qshot``, the DC power's shot noise, is the same; with RF demodulations,
    modulator sidebands, radiation pressure elsewhere, squeezing, ``qhd`` and ``qd``
    this agrees to 1e-9). With modes on (``maxtem``, or a ``cav``/``gauss`` alone) its
    dump is an open port like any other (measured: HG00 light alone, ``maxtem 0``,
    gives the open port's noise; ``qnoise_dump_modes``), which is what the legacy
    parser makes of it. So, without modes, each dump port is joined by a space of
    length 0 to a ``Nothing`` (lossless: light leaves through its open port as through
    the dump, and no classical output changes), whose open port lets the same vacuum
    in, and every quantum-noise detector gets these ``Nothing`` as
    ``exclude_sources``. Derivation: a detector's noise is ``s^H M^-1 N D M^-H s``
    (``s`` its selection vector, ``M`` the signal matrix, ``N`` the noise injected at
    each node, ``D`` Finesse 3's diagonal source selection, 0 at the nodes of
    excluded components); the vacuum of an open port is injected at that port's
    input node, which is the ``Nothing``'s, and a lossless ``Nothing`` injects
    nothing else, so ``D`` removes exactly the dump's vacuum. The space takes the
    refractive index of the space at the port on the same side of a beam splitter
    (Finesse 3 checks they agree).
    """
    from finesse.components import Beamsplitter, Nothing

    if not translation.dumps or model.is_modal:
        return
    dumps = []
    for name, index in translation.dumps:
        component = model.elements[name]
        nr = 1.0
        if isinstance(component, Beamsplitter):
            partner = getattr(component, f"p{_SAME_SIDE[index]}")
            nr = partner.space.nr.ref if partner.space is not None else 1.0
        dump = model.add(Nothing(f"{name}__dump{index}"))
        model.connect(getattr(component, f"p{index}"), dump.p1, L=0, nr=nr,
                      name=f"{name}__dump{index}__space")
        dumps.append(dump)
    for detector in model.detectors:
        if hasattr(detector, "exclude_sources"):
            detector.exclude_sources = dumps


def _mode_fields(model: finesse.Model, translation: Translation) -> None:
    """Hidden field detectors for Finesse 2's RF-demodulated noise with modes on.

    Finesse 3's ``QuantumNoiseDetectorDemod1/2`` and ``QuantumShotNoise...`` do not
    reset their sum over carriers from one mode to the next, so mode k's vacuum noise
    counts the carriers of modes 0..k: measured exactly sqrt(6) times Finesse 2's
    noise for HG00 light alone with ``maxtem 2`` (6 modes); 1.4% (``qnoised``) and
    60% (``qshot``) above it in a misaligned cavity. The kat program replaces that
    vacuum term by Finesse 2's (the modes' sums apart), from the fields of every
    carrier and mode at the detector's node, which these detectors give
    (``qnoise_rf_modes``); ``maxtem 0`` (one mode) needs none.
    """
    if translation.maxtem in (None, "off", "0") or not translation.rf_noise:
        return
    from finesse.detectors import FieldDetector
    from finesse.frequency import generate_frequency_list

    carriers = [float(f.eval()) for f in generate_frequency_list(model)]
    for name in translation.rf_noise:
        node = model.elements[name].node
        translation.mode_fields[name] = [f"{name}__carrier{k}"
                                         for k in range(len(carriers))]
        for field, f in zip(translation.mode_fields[name], carriers):
            model.add(FieldDetector(field, node, f))


# Parameters that change beam parameters (a lens's f too; a laser's f is a frequency).
_GEOMETRY = {"Rc", "Rcx", "Rcy", "L", "n", "alpha", "w0", "z", "w0x", "w0y", "zx", "zy",
             "zr", "q", "qx", "qy", "lambda"}


def _geometry_varies(model: finesse.Model, translation: Translation) -> str | None:
    """The first sweep or ``put`` that changes beam parameters during the run, if any."""
    from finesse.components import Lens

    for lineno, cmd, component, param in translation.targets:
        element = model.elements.get(component)
        if param in _GEOMETRY or (param == "f" and isinstance(element, Lens)):
            return f"'{cmd} {component} {param}' (line {lineno})"
    return None


def _beam_trace(model: finesse.Model, translation: Translation) -> None:
    """Several ``cav``/``gauss`` with modes: trace the beam as Finesse 2 does."""
    from katparallel.finesse2 import trace

    if translation.maxtem in (None, "off") or len(translation.trace_sources) < 2:
        return
    try:
        trace.reproduce(model, [name for _, name in translation.trace_sources],
                        _geometry_varies(model, translation))
    except trace.TraceDiffers as exc:
        lines = {name: lineno for lineno, name in translation.trace_sources}
        lineno = lines.get(exc.source, translation.trace_sources[0][0])
        construct = "gauss" if exc.source in {g.name for g in model.gausses.values()} \
            else "cav"
        raise Refusal(lineno, construct, f"Finesse 2's beam trace cannot be reproduced: "
                      f"{exc}") from None


def _laser_gouy_phases(model: finesse.Model, translation: Translation) -> None:
    """Give each laser's modes the Gouy phase Finesse 2 gives them.

    Both programs multiply a laser's HG(n, m) field by exp(i G), where (Finesse 3's
    ``set_tem_gouy_phases``; ``phase`` levels 2 and 3 take the 00 mode's part away)

        G = (n + 1/2) psi_x + (m + 1/2) psi_y [- (psi_x + psi_y) / 2],

    psi = arctan(z / z_R) of the beam parameter q = z + i z_R at the laser's node.
    Finesse 3 takes the q of the beam leaving the laser. Finesse 2 keeps one q per
    node, for the beam travelling the way its trace reached the node (see
    :mod:`katparallel.finesse2.trace`), and uses that one: when the trace comes to
    the laser from the rest of the network (a ``cav``, or a ``gauss`` elsewhere), it
    is the beam going into the laser, q' = -conj(q), so z and psi change sign and
    Finesse 2's factor is exp(-i G). Measured against Finesse 2.3.1 (``laser_gouy_*``
    references: HG10, HG01, HG21 and HG00 at ``phase`` 0 to 3, before a cavity and
    before a ``gauss`` set downstream): the phases differ by exactly 2 G.

    So such a laser (one with light in a mode whose G is not always 0) gets
    ``add_gouy_phase`` off and its Finesse 2 factor, exp(-i G)
    for the beam parameters of the model as it stands, written into its modes' phases.
    A sweep or ``put`` of the geometry would leave those phases stale: refused.

    Raises
    ------
    Refusal
        If such a laser's beam parameters change during the run.
    """
    from finesse.components import Laser

    from katparallel.finesse2 import trace

    if translation.maxtem in (None, "off") or not translation.trace_sources:
        return
    zero00 = model._settings.phase_config.zero_tem00_gouy
    lasers = [laser for laser in model.elements.values() if isinstance(laser, Laser)
              and any(factor and ((n, m) != (0, 0) or not zero00)  # G not always 0
                      for (n, m), (factor, _) in laser.power_coeffs.items())]
    if not lasers:
        return
    stored = trace.reported_nodes(model, [name for _, name in translation.trace_sources])
    lasers = [laser for laser in lasers if stored.get(laser.p1.o) is laser.p1.i]
    if not lasers:
        return
    varies = _geometry_varies(model, translation)
    if varies:
        lineno, name = translation.trace_sources[0]
        raise Refusal(lineno, "cav" if name in model.cavities else "gauss",
                      f"Finesse 2 gives laser '{lasers[0].name}' the Gouy phase of the "
                      "beam going into it, which katparallel can only fix for a geometry "
                      f"that does not change, and {varies} changes it")
    try:
        beams = model.beam_trace(store=False)
    except Exception:  # noqa: BLE001 - an unstable cavity: the run reports it
        return
    for laser in lasers:
        qx, qy = beams[laser.p1.o]
        psi_x, psi_y = float(qx.psi), float(qy.psi)
        for (n, m), (factor, phase) in laser.power_coeffs.items():
            gouy = (n + 0.5) * psi_x + (m + 0.5) * psi_y
            if zero00:
                gouy -= 0.5 * (psi_x + psi_y)
            laser.tem(n, m, factor, phase - math.degrees(gouy))
        laser.add_gouy_phase = False


def _beam_parameter_directions(model: finesse.Model, translation: Translation) -> None:
    """Point each ``bp`` at the direction whose beam parameter Finesse 2 reports.

    Finesse 2 keeps one beam parameter per node, for the beam travelling the way its
    beam trace reached the node, and reports it with or without ``*`` (measured
    against Finesse 2.3.1: the sign of ``z``, ``q``, ``rc`` and ``gouy`` depends on
    it). The legacy parser picks a direction from the ``*`` alone.
    """
    from finesse.detectors import BeamPropertyDetector

    from katparallel.finesse2 import trace

    detectors = [d for d in model.detectors if isinstance(d, BeamPropertyDetector)]
    if not detectors:
        return
    sources = ([name for _, name in translation.trace_sources]
               or [g.name for g in model.gausses.values()])  # else: beams at lasers
    stored = trace.reported_nodes(model, sources)
    for detector in detectors:
        node = stored.get(detector.node, detector.node)
        if node is not detector.node:
            model.remove(detector)
            model.add(BeamPropertyDetector(detector.name, node, detector.detecting,
                                           detector.direction, detector.q_as_bp))


def _motion_coupling(model: finesse.Model, translation: Translation) -> None:
    """Finesse 2's motion coupling where Finesse 3's differs (``translation.motion``).

    Raises
    ------
    Refusal
        If this Finesse 3 is not one the rescaling was checked on.
    """
    from katparallel.finesse2 import signals

    strains = translation.strains if translation.maxtem not in (None, "off") else []
    if not translation.motion and not translation.modulators and not strains:
        return
    why = signals.check()
    if why and strains:
        lineno, component = strains[0]
        raise Refusal(lineno, "fsig", f"a strain at space '{component}' with "
                      "Hermite-Gauss modes on: Finesse 3 gives only HG00 light strain "
                      "sidebands, Finesse 2 every mode; " + why)
    if why and translation.modulators:
        lineno, component = translation.modulators[0]
        raise Refusal(lineno, "fsig", f"a signal at modulator '{component}': Finesse 2 "
                      "leaves out the Bessel order beyond the modulator's; " + why)
    if why:
        lineno, component, injection = translation.motion[0]
        raise Refusal(lineno, "fsig" if injection else "attr", f"the motion of "
                      f"'{component}': Finesse 2 couples "
                      "it to each carrier with the carrier's own wavenumber (and an "
                      f"fsig at a beam splitter without cos(alpha) on its back); {why}")
    modes = translation.maxtem not in (None, "off")
    for _, component, injection in translation.motion:
        signals.install(model.elements[component], injection, modes)
    for _, component in translation.modulators:
        signals.install_modulator(model.elements[component])
    for _, component in strains:
        signals.install_strain(model.elements[component])


def _refill_signals(model: finesse.Model) -> None:
    """Refill the whole signal matrix at every step of a run with a signal injected.

    Finesse 3 refills a mirror's or beam splitter's motion and force blocks, which
    hold the light reaching it, only when that component or the signal frequency
    changes, not when the light does: with radiation pressure and a laser's power
    swept, a transfer function was 21% off Finesse 2.3.1 at the second step, with or
    without modes (``fsig_mass_sweep``). Finesse 3's own ``force_refill`` refills
    every block at every step, in the kat program's sweeps and in stepped jobs alike.
    """
    from finesse.components import SignalGenerator

    if any(isinstance(element, SignalGenerator) for element in model.elements.values()):
        model.force_refill = True


def allow_sums_past_one(model: finesse.Model) -> None:
    """Let a run take a mirror's or beam splitter's R + T past 1, as Finesse 2 does.

    Finesse 2 refuses such a component where the file gives it, but computes a sweep,
    ``put`` or lock that takes it there (``xaxis M R lin 0.9 1`` with T = 0.003).
    Finesse 3 checks every change, through a flag of its surfaces (which has no public
    setter) and through the loss the legacy parser writes as ``1-(R+T)``: that loss,
    which no Finesse 2 file can refer to and which enters no output, keeps its value.
    """
    for element in model.elements.values():
        if hasattr(element, "_check_rtl"):
            element._check_rtl = False
            if element.L.is_symbolic:
                element.L.value = float(element.L.value.eval())


def _modes(model: finesse.Model, translation: Translation) -> None:
    """``maxtem`` and ``phase``, set once for the whole file.

    Also Finesse 2's phases at a mirror or beam splitter between two refractive
    indices, which ignore the indices (reflection 2*phi and -2*phi, transmission i):
    Finesse 3 scales them by the indices unless its ``v2_transmission_phase`` setting,
    which has no public setter, is on.
    """
    level = int(_number(translation.phase))
    model.phase_config(zero_k00=bool(level & 1), zero_tem00_gouy=bool(level & 2))
    model._settings.phase_config.v2_transmission_phase = True
    if translation.maxtem in (None, "off"):
        model.switch_off_homs()
    else:
        model.modes(maxtem=int(_number(translation.maxtem)))


def _namespace(model: finesse.Model, translation: Translation) -> dict[str, object]:
    """The names a Finesse 2 ``func`` expression can use, as Finesse 3 symbols."""
    from finesse import symbols
    from finesse.parameter import Parameter

    names: dict[str, object] = {n: symbols.FUNCTIONS[n] for n in _FUNCTIONS}
    names["pi"] = math.pi
    # x1, mx1, x2, mx2 (symbols) and 'set NAME COMP PARAM' (a parameter, which a
    # func must follow as it is swept or put, not take its value once).
    names.update({name: value.ref if isinstance(value, Parameter) else value
                  for name, value in model.alternate_name_map.items()})
    if "fs" in names:  # the legacy parser reads Finesse 2's $mfs as $fs
        names["mfs"] = -names["fs"]
    for name, value in translation.consts.items():
        try:
            names[name] = _number(value)
        except ValueError:
            names[name] = value
    for name, (lineno, detector) in translation.sets.items():
        if detector not in model.elements:
            raise Refusal(lineno, "set", f"no detector named '{detector}'")
        names[name] = symbols.FUNCTIONS["real"](symbols.Constant(model.elements[detector]))
    return names


def _lock_parameters(model: finesse.Model, translation: Translation) -> dict:
    """A model parameter ``NAME__lock`` holding each lock's value, 0 at first."""
    parameters = {}
    for lock in translation.locks:
        if lock.name in model.elements:
            raise Refusal(lock.lineno, "lock", f"name '{lock.name}' is already used")
        parameters[lock.name] = model.add_parameter(f"{lock.name}__lock", 0.0)
    return parameters


def _program(translation: Translation) -> list[tuple[str, int, str, str | None]]:
    """``func`` and ``lock`` lines in file order: Finesse 2's order of evaluation."""
    return sorted([("func", lineno, name, expr) for lineno, name, expr in translation.funcs]
                  + [("lock", lock.lineno, lock.name, None) for lock in translation.locks],
                  key=lambda item: item[1])


def _code_of(expr: str) -> str:
    """A func expression as Python code (``$`` dropped, ``^`` a power)."""
    return _NAME.sub(r"\1", expr.replace("^", "**"))


def _func_values(model: finesse.Model, translation: Translation,
                 parameters: dict) -> dict[str, object]:
    """Evaluate each ``func`` in file order into a Finesse 3 symbolic expression.

    A lock's name means its parameter from the lock's line on.
    """
    names = _namespace(model, translation)
    values: dict[str, object] = {}
    for kind, lineno, name, expr in _program(translation):
        if kind == "lock":
            names[name] = values[name] = parameters[name].ref
            continue
        code = _code_of(expr)
        unknown = [n for n in _NAME.findall(code) if n not in names]
        if unknown:
            raise Refusal(lineno, "func", f"unknown name '{unknown[0]}' in '{expr}'")
        try:
            value = eval(code, {"__builtins__": {}}, names)  # noqa: S307 - names only
        except Exception as exc:  # noqa: BLE001 - any failure is the user's expression
            raise Refusal(lineno, "func", f"cannot evaluate '{expr}': {exc}") from None
        names[name] = values[name] = value
    return values


def _add_func_outputs(model: finesse.Model, translation: Translation,
                      values: dict[str, object]) -> None:
    """A math detector per ``func``, as Finesse 2 outputs each function's value."""
    from finesse.detectors import MathDetector

    for _, name, _ in translation.funcs:
        model.add(MathDetector(name, values[name]))
    for lock in translation.locks:
        model.add(MathDetector(lock.name, values[lock.name]))


def _add_noise_signals(model: finesse.Model, translation: Translation) -> None:
    """Add the ``[q]hd`` detectors, and the signals ``S`` and ``N`` forms divide by.

    See :meth:`_Translator.homodyne` and :meth:`_Translator.noise`.
    """
    import numpy as np
    from finesse.detectors import MathDetector
    from finesse.symbols import FUNCTIONS, Constant

    from katparallel.finesse2.homodyne import QuantumHomodyne

    for name in sorted(translation.dc_signals):
        model.add(MathDetector(f"{name}__signal",
                               2 * Constant(model.elements[f"{name}__dc"])))
    for name, (_, cmd) in translation.homodynes.items():
        first, second = (model.elements[f"{name}__{i}"] for i in (1, 2))
        phase = model.elements[f"{name}__qhd"].phase.ref
        turn = FUNCTIONS["exp"](1j * math.pi / 180 * phase)
        signal = Constant(first) + turn * Constant(second)
        if cmd == "hd":
            model.add(MathDetector(name, signal, dtype=np.complex128))
            continue
        model.add(QuantumHomodyne(name, first.node, second.node, phase))
        if cmd != "qhd":
            model.add(MathDetector(f"{name}__signal", FUNCTIONS["real"](signal)
                                   if cmd == "qhdN" else signal))


def _install_locks(model: finesse.Model, translation: Translation) -> None:
    """Run Finesse 2's lock iterations before each point of the model's sweep."""
    if not translation.locks:
        return
    from katparallel.finesse2 import lock

    analysis = model.analysis
    if not hasattr(analysis, "pre_step") or analysis.pre_step is not None:
        return  # no sweep to lock at: the program refuses the file
    program = [(kind, name, None if kind == "lock" else
                compile(_code_of(expr), f"<func {name}>", "eval"))
               for kind, _, name, expr in _program(translation)]
    consts = {}
    for name, value in translation.consts.items():
        try:
            consts[name] = _number(value)
        except ValueError:
            pass
    sets = {name: detector for name, (_, detector) in translation.sets.items()}
    analysis.pre_step = lock.Locking(translation.locks, program, sets,
                                     lock.constants(consts))


def _put(model: finesse.Model, lineno: int, component: str, param: str, value: object,
         add: bool) -> None:
    """``put[*] COMPONENT PARAM $FUNC``: the parameter follows the function."""
    from finesse.detectors.general import Detector
    from finesse.exceptions import FinesseException
    from finesse.script.legacy import attribute_map
    from finesse.symbols import Constant, Symbol

    if isinstance(value, Symbol) and value.all(
            lambda a: isinstance(a, Constant) and isinstance(a.value, Detector)):
        raise Refusal(lineno, "put", "the function depends on a detector output, and a "
                      "Finesse 3 parameter cannot follow a simulation output")
    if component not in model.elements:
        raise Refusal(lineno, "put", f"no component named '{component}'")
    element = model.elements[component]
    name = attribute_map.get(param, param)
    if not isinstance(name, str) or not hasattr(element, name):
        raise Refusal(lineno, "put", f"'{component}' has no parameter '{param}'")
    try:
        setattr(element, name, getattr(element, name).value + value if add else value)
    except FinesseException as exc:  # e.g. a parameter put onto itself
        raise Refusal(lineno, "put", str(exc).strip()) from None
