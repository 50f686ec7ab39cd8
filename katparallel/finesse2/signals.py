"""Finesse 2's motion-to-light coupling at mirrors and beam splitters, on Finesse 3.

A mirror or beam splitter moving by z phase-modulates the light it reflects.
Finesse 3 (``c_mirror_signal_mech_fill`` in ``finesse/components/modal/mirror.pyx``,
``c_beamsplitter_signal_fill`` in ``beamsplitter.pyx``) writes the sideband at
f_c + f_s that a carrier at f_c (an offset from the reference frequency f_0) gets on
reflection from the front surface as

    a_3 = i k_0 x_s C exp(i phi (f_c + f_s) / f_0) (R E_c)

into the signal-matrix block from the motion node to the port's output (``Z_P1o``...),
where R E_c is the reflected carrier (its tuning phase 2 phi C (1 + f_c / f_0)
included), k_0 = 2 pi f_0 / c, x_s the ``x_scale``, phi the tuning in radians, C =
cos(alpha) at a beam splitter and 1 at a mirror; the back surface has -i, the
conjugate phase and C_2 = cos(alpha_2), the angle in the substrate. Measured against
Finesse 2.3.1 (the ``fsig_mirror_*``, ``fsig_bs_*`` and ``fsig_mass_rf*`` references
of ``tests/data/finesse2/``, to 1e-12), Finesse 2 has two conventions:

* the motion of a mirror with a mass (radiation pressure; an ``fsig`` there too):
  a_3 times (1 + f_c / f_0), each carrier with its own wavenumber; at a beam
  splitter with a mass (``fsig_bs_mass*``) also its tuning phase times cos(alpha),
  phi C (f_c + f_s) / f_0 on both surfaces (the back's conjugate), C = cos(alpha)
  in size on both surfaces where Finesse 3 has C_2 = cos(alpha_2) on the back, and
  no opposite sign for an ``fsig`` there (at a mirror with a mass the front end
  turns it by 180 degrees):

      a_2 / a_3 = (1 + f_c/f_0) exp(-i phi (1 - C)(f_c + f_s) / f_0)    (front)
      a_2 / a_3 = (1 + f_c/f_0) C / C_2 exp(i phi (1 - C)(f_c + f_s) / f_0)  (back)

  Its force is Finesse 3's on the front, cos(alpha) / c times the power of the
  fields going in and out, and on the back cos(alpha) / c, not cos(alpha_2) / c,
  times theirs (light on the front, the back or both, at 0, 30 and 45 degrees, a
  refractive index on either side; the force blocks ``P3i_Fz``... are rescaled too);
* an ``fsig`` at a mirror or beam splitter without a mass: each carrier's own
  wavenumber, and the tuning phase taken at the signal frequency alone, times
  cos(alpha) at a beam splitter's front, phi C f_s / f_0 instead of
  phi (f_c + f_s) / f_0; on a beam splitter's back surface neither cos(alpha_2) in
  size nor in the reflection phase (-2 phi (1 + f_c / f_0), not -2 phi C (...)):

      a_2 / a_3 = (1 + f_c/f_0) exp(-i phi (f_c + (1 - C) f_s) / f_0)  (front)
      a_2 / a_3 = (1 + f_c/f_0) / C_2 exp(i phi f_c / f_0
                  - 2 i phi (1 - C)(1 + f_c / f_0))                    (back)

  (the back's phase for the upper sideband, the block's conjugate phase.)

So the ratio is a factor per carrier, sideband and surface that no model parameter
carries: with RF sidebands (45 MHz: f_c / f_0 = 1.6e-7) or an offset laser transfer
functions move by about 1e-7, and a beam splitter's back surface by 1 / cos(alpha).

With higher-order modes on (measured with light in single modes, aligned and yawed:
``fsig_mirror_odd``, ``fsig_mass_odd``, ``fsig_mass_yaw*``, ``fsig_bs_modes*``,
``fsig_bs_odd``), Finesse 2 differs again: its motion sidebands of light arriving in
a mode odd in x (HG n0 with n odd) have the other sign (an ``fsig`` without a mass:
a C P E where Finesse 3 writes a C E, C the carrier's reflection, P = diag((-1)^n);
the motion of a mirror or beam splitter with a mass: a P C P E; :func:`_odd_modes`),
and a beam splitter's back surface keeps cos(alpha_2), in size and in its tuning
phase -2 phi cos(alpha_2) (Finesse 3: -2 phi cos(alpha)). A strain at a space and a
modulator's signal have rules of their own (:func:`install_strain`,
:func:`install_modulator`).

:func:`install` makes a component's workspace apply it: after Finesse 3's own fill
functions (run in the order they were added, on the first fill and on every refill,
``finesse/simulations/sparse/solver.pyx``), a Python fill function multiplies each
motion block by the factor. A refill can run that function without rerunning
Finesse 3's (their ``refill`` flags differ), so it rescales only blocks whose values
are no longer the ones it wrote last. The blocks are numpy views into the matrix
(``SubCCSView.view``); a block Finesse 3 fills conjugated (``conjugate_fill``, the
lower sidebands) gets the conjugate factor.

That leans on Finesse 3's internals, so it is done only on the Finesse 3 versions it
was checked on (:data:`CHECKED_FINESSE`); with another version, or internals not as
expected, :func:`check` says why and the front end refuses the file instead.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import finesse

__all__ = ("CHECKED_FINESSE", "check", "install", "install_modulator", "install_strain")

LOGGER = logging.getLogger(__name__)

#: Finesse 3 versions whose signal fill functions this module was checked against.
CHECKED_FINESSE = ("3.0.2",)


def check() -> str | None:
    """Return why Finesse 3's signal blocks cannot be rescaled here (None: they can)."""
    version = importlib.metadata.version("finesse")
    if version not in CHECKED_FINESSE:
        return (f"Finesse {version}: katparallel reproduces Finesse 2's signal "
                f"conventions there only on Finesse {', '.join(CHECKED_FINESSE)}, "
                "whose signal matrix it was checked against")
    from finesse.components.modal.beamsplitter import BeamsplitterSignalConnections
    from finesse.components.modal.mirror import MirrorSignalConnections
    from finesse.components.modal.modulator import (
        ModulatorSignalConnections,
        ModulatorWorkspace,
    )
    from finesse.components.modal.space import (
        SpaceSignalConnections,
        SpaceValues,
        SpaceWorkspace,
    )
    from finesse.components.workspace import ConnectionSetting
    from finesse.cymath.cmatrix import SubCCSView
    from finesse.frequency import Frequency
    from finesse.simulations.homsolver import HOMSolver

    needed = [(MirrorSignalConnections, ("Z_P1o", "Z_P2o")),
              (BeamsplitterSignalConnections, ("Z_P1o", "Z_P2o", "Z_P3o", "Z_P4o",
                                               "P3i_Fz", "P3o_Fz", "P4i_Fz", "P4o_Fz")),
              (ModulatorSignalConnections, ("amp_P1o", "amp_P2o", "P1i_P2o",
                                            "P2i_P1o")),
              (ModulatorWorkspace, ("carrier_frequency_couplings",
                                    "amp_signal_enabled")),
              (SubCCSView, ("view", "conjugate_fill", "from_rhs_view", "size1")),
              (Frequency, ("audio_carrier", "f")),
              (SpaceSignalConnections, ("H_P1o", "H_P2o")),
              (SpaceWorkspace, ("update_parameter_values",)),
              (SpaceValues, ("L", "nr")),
              (HOMSolver, ("node_field_vector",)),
              (ConnectionSetting, ("MATRIX",))]
    for cls, names in needed:
        missing = [name for name in names if not hasattr(cls, name)]
        if missing:
            return (f"Finesse 3's {cls.__name__} has no {', '.join(missing)}, which "
                    "katparallel's Finesse 2 signal conventions need")
    return None


def install(component: finesse.components.Connector, injection: bool,
            modes: bool = False) -> None:
    """Give a mirror's or beam splitter's motion Finesse 2's coupling to the light.

    Parameters
    ----------
    component : finesse.components.Mirror or finesse.components.Beamsplitter
        A component of a model from the Finesse 2 front end. Its workspace, in every
        simulation built from this model or a copy of it, rescales the motion blocks
        (see the module's docstring).
    injection : bool
        True for an ``fsig`` at a component without a mass (Finesse 2's injection),
        False for the motion of a mirror with a mass.
    modes : bool
        Whether higher-order modes are on: the motion then also gets Finesse 2's
        signs of the modes odd in x (see :func:`_odd_modes`).
    """
    component._get_workspace = _Finesse2Motion(component, injection, modes)


class _Finesse2Motion:
    """A component's ``_get_workspace``: Finesse 3's, then the rescaling fill."""

    def __init__(self, component: finesse.components.Connector, injection: bool,
                 modes: bool = False):
        self.component = component  # copies of the model copy this reference along
        self.injection = injection
        self.modes = modes

    def __call__(self, sim: object) -> object:
        workspace = type(self.component)._get_workspace(self.component, sim)
        if workspace is None or not getattr(sim, "signal", None):
            return workspace
        connections = workspace.signal.connections
        names = _BLOCKS[type(self.component).__name__]
        if not self.injection and hasattr(workspace, "cos_alpha"):
            names = names + _FORCE_BACK  # a beam splitter with a mass
        blocks = [(getattr(connections, name), sign, back, reflection)
                  for name, sign, back, reflection in names]
        if any(array.shape[sign == 0] != 1 for array, sign, _, _ in blocks):
            raise NotImplementedError(  # several mechanical frequencies per carrier
                f"{self.component.name}: motion at several frequencies is not "
                "reproduced")
        parity = None
        if self.modes:
            parity = "input" if self.injection else "both"
        workspace.signal.add_fill_function(
            _Rescale(blocks, self.injection, parity, self.modes), True)
        return workspace


# Motion blocks, by component class: (name, +1 front / -1 the conjugate tuning phase,
# whether on a beam splitter's back surface, the carrier's reflection into that port).
_BLOCKS = {
    "Mirror": [("Z_P1o", 1, False, "P1i_P1o"), ("Z_P2o", -1, False, "P2i_P2o")],
    "Beamsplitter": [("Z_P1o", 1, False, "P2i_P1o"), ("Z_P2o", 1, False, "P1i_P2o"),
                     ("Z_P3o", -1, True, "P4i_P3o"), ("Z_P4o", -1, True, "P3i_P4o")],
}
# A beam splitter's blocks from its back surface's fields to the force (sign 0).
_FORCE_BACK = [("P3i_Fz", 0, True, None), ("P3o_Fz", 0, True, None),
               ("P4i_Fz", 0, True, None), ("P4o_Fz", 0, True, None)]


class _Rescale:
    """The fill function multiplying Finesse 3's motion blocks into Finesse 2's."""

    def __init__(self, blocks: list[tuple[object, int, bool, str]], injection: bool,
                 parity: str | None = None, modes: bool = False):
        self.blocks = blocks
        self.injection = injection
        self.parity = parity
        self.modes = modes
        self.written: dict[tuple[int, int], np.ndarray] = {}

    def __call__(self, workspace: object) -> None:
        sim = workspace.sim
        f0 = sim.model_settings.f0
        for frequency in sim.signal.optical_frequencies.frequencies:
            index = frequency.index
            f_c = frequency.audio_carrier.f
            for number, (array, sign, back, reflection) in enumerate(self.blocks):
                view = array[index, 0] if sign == 0 else array[0, index]
                if view is None:
                    continue
                values = view.view
                if values.flags.owndata or not values.flags.writeable:
                    raise RuntimeError("Finesse 3's motion block is not a writable "
                                       "view into its signal matrix any more: "
                                       "katparallel cannot give it Finesse 2's coupling")
                key = (number, index)
                last = self.written.get(key)
                if last is not None and np.array_equal(values, last):
                    continue  # Finesse 3 did not refill this block: already rescaled
                if sign == 0:  # the back's force: cos(alpha), not cos(alpha_2)
                    values *= workspace.cos_alpha / workspace.cos_alpha_2
                    self.written[key] = values.copy()
                    continue
                if self.parity:
                    _odd_modes(workspace, frequency, (sign, back, reflection), view,
                               self.parity)
                factor = 1 + f_c / f0
                if self.injection:
                    factor *= _injection(workspace, frequency.f - f_c, f_c / f0, sign,
                                         back, self.modes)
                elif hasattr(workspace, "cos_alpha"):  # a beam splitter with a mass
                    factor *= _mass_bs(workspace, frequency.f / f0, sign, back)
                values *= factor.conjugate() if view.conjugate_fill else factor
                self.written[key] = values.copy()


def _injection(workspace: object, f_s: float, ratio: float, sign: int,
               back: bool, modes: bool = False) -> complex:
    """Finesse 2's ``fsig`` injection over Finesse 3's motion, but (1 + f_c / f0).

    ``f_s`` is the sideband's offset from its carrier (negative: lower), ``ratio``
    f_c / f_0; see the module's docstring. With higher-order modes on (``modes``),
    Finesse 2's back surface keeps cos(alpha_2) in size, as Finesse 3's does, and
    takes the tuning phase -2 phi cos(alpha_2) where Finesse 3 takes -2 phi
    cos(alpha) (measured with ``maxtem 0`` and 2, ``fsig_bs_modes*``, ``fsig_bs_odd``).
    """
    f0 = workspace.sim.model_settings.f0
    phi = math.radians(workspace.values.phi)
    cos_alpha = getattr(workspace, "cos_alpha", 1.0)  # a mirror: 1
    if back and modes:  # cos(alpha_2) in size and in the tuning phase
        size = 1.0
        turn = phi * ratio - 2 * phi * (workspace.cos_alpha_2 - cos_alpha) * (1 + ratio)
    elif back:  # a beam splitter's back: no cos(alpha), its tuning 2 phi, not 2 phi cos
        size = 1 / workspace.cos_alpha_2
        turn = phi * ratio - 2 * phi * (1 - cos_alpha) * (1 + ratio)
    else:  # the tuning phase at the signal frequency, times cos(alpha)
        size = 1.0
        turn = -sign * (phi * ratio + phi * (1 - cos_alpha) * f_s / f0)
    return size * complex(math.cos(turn), math.sin(turn))


def _mass_bs(workspace: object, ratio: float, sign: int, back: bool) -> complex:
    """Finesse 2's motion of a beam splitter with a mass over Finesse 3's, but
    (1 + f_c / f0).

    ``ratio`` is the sideband's frequency over f_0 (f_c + f_s, its carrier's offset
    plus the signal's); ``sign`` +1 on the front, -1 on the back (the conjugate
    phase). Finesse 2 takes the tuning phase phi cos(alpha) (f_c + f_s) / f_0,
    Finesse 3 phi (f_c + f_s) / f_0, and cos(alpha), not cos(alpha_2), on the back;
    see the module's docstring.
    """
    phi = math.radians(workspace.values.phi)
    turn = -sign * phi * (1 - workspace.cos_alpha) * ratio
    size = workspace.cos_alpha / workspace.cos_alpha_2 if back else 1.0
    return size * complex(math.cos(turn), math.sin(turn))


def install_modulator(modulator: finesse.components.Modulator) -> None:
    """Give an ``fsig`` at a phase modulator's ``amp`` Finesse 2's sidebands.

    Both programs modulate the modulation index m by a relative amount, the sideband
    of order k getting ``d/dm J_k(m (1 + delta cos(w_s t)))``; Finesse 3
    (``fill_phase_mod_amp_2_optical_signals`` in ``modulator.pyx``) writes, per
    coupling from a carrier into the order-k carrier, the factor
    ``m/4 (J_(k-1)(m) - J_(k+1)(m)) / J_k(m)`` times that propagated carrier into the
    block from the ``amp`` node to the output (``amp_P2o``, ``amp_P1o``); the
    propagated carrier carries the modulator's phase, exp(i k phi_m). Finesse 2
    (measured against 2.3.1, ``fsig_mod_amp*``: orders 1 and 3, phi_m 0 and 40
    degrees, light going either way through the modulator) differs twice: its signal
    sidebands do not carry exp(i k phi_m) (its carrier sidebands do), and it leaves
    out the Bessel orders beyond the modulator's order N (at k = N the factor is
    ``m/4 J_(N-1) / J_N``). So a fill function after Finesse 3's adds, for every
    coupling of order k != 0, ``(F2_k exp(-i k phi_m) - F3_k)`` times the propagated
    carrier, computed as Finesse 3's ``fill_prop_za`` does (the carrier block times
    the carrier solution at its input node). With higher-order modes on, Finesse 2's
    signal sidebands leave out the mode scattering between the modulator's ports
    (measured with two ``gauss`` at the modulator, ``fsig_mod_amp_modes*``: each
    mode's sideband is the light entering the modulator, in its own basis, where
    Finesse 3 projects it on the output's; the carrier sidebands agree), so the
    propagated carrier is taken without the knm matrix (:func:`_unscattered`). Finesse
    3 refills these blocks only
    when m or the modulator's phase changes, not when the light entering the
    modulator does, so the front end has the whole signal matrix refilled at every
    step (``frontend._refill_signals``; a laser's power swept, ``fsig_mod_amp_sweep``).

    Parameters
    ----------
    modulator : finesse.components.Modulator
        A phase modulator of a model from the Finesse 2 front end.
    """
    modulator._get_workspace = _Finesse2Modulation(modulator)


class _Finesse2Modulation:
    """A modulator's ``_get_workspace``: Finesse 3's, then the top-order fill."""

    def __init__(self, modulator: finesse.components.Modulator):
        self.modulator = modulator

    def __call__(self, sim: object) -> object:
        workspace = type(self.modulator)._get_workspace(self.modulator, sim)
        if getattr(sim, "signal", None) and workspace.amp_signal_enabled:
            workspace.signal.add_fill_function(_TopOrder(), True)
        return workspace


class _TopOrder:
    """The fill function turning Finesse 3's ``amp`` sidebands into Finesse 2's."""

    def __init__(self) -> None:
        self.written: dict[int, np.ndarray] = {}

    def __call__(self, workspace: object) -> None:
        from scipy.special import jv

        modulator = workspace.owner
        order = int(modulator.order.eval())
        midx = float(modulator.midx.eval())
        carrier = workspace.carrier.connections
        signal = workspace.signal.connections
        sidebands = [f for f in workspace.sim.signal.optical_frequencies.frequencies
                     if f.audio_carrier is not None]
        additions = []
        phase = math.radians(float(modulator.phase.eval()))
        for (f_in, f_out), k in workspace.carrier_frequency_couplings.items():
            finesse3 = midx / 4 * (jv(k - 1, midx) - jv(k + 1, midx)) / jv(k, midx)
            finesse2 = midx / 4 * (jv(k - 1, midx) * (abs(k - 1) <= order)
                                   - jv(k + 1, midx) * (abs(k + 1) <= order)
                                   ) / jv(k, midx)
            turn = complex(math.cos(k * phase), -math.sin(k * phase))
            for coupling, block, knm in (("P1i_P2o", "amp_P2o", "K12"),
                                         ("P2i_P1o", "amp_P1o", "K21")):
                view = getattr(carrier, coupling)[f_in.index, f_out.index]
                if view is None:
                    continue
                matrix = np.asarray(view.view).reshape(view.size1, -1)
                light = np.asarray(view.from_rhs_view[0])
                propagated = matrix @ light
                unscattered = _unscattered(getattr(workspace, knm, None), matrix,
                                           light, propagated)
                for sideband in sidebands:
                    target = getattr(signal, block)[0, sideband.index]
                    if (sideband.audio_carrier.index == f_out.index
                            and target is not None):
                        add = (finesse2 * turn * unscattered
                               - finesse3 * propagated)
                        additions.append((target, add.conj() if target.conjugate_fill
                                          else add))
        if all(np.array_equal(target.view.reshape(-1), self.written.get(id(target)))
               for target, _ in additions):
            return  # Finesse 3 did not refill these blocks: already added
        for target, add in additions:
            values = target.view.reshape(-1)
            if values.base is None or not values.flags.writeable:
                raise RuntimeError("Finesse 3's modulation block is not a writable "
                                   "view into its signal matrix any more")
            values += add
        self.written = {id(target): target.view.reshape(-1).copy()
                        for target, _ in additions}


def install_strain(space: finesse.components.Space) -> None:
    """Give a strain signal at a space Finesse 2's sidebands in every mode.

    Both programs give a strain h of a space of length L and index n the sidebands
    (Bond, Brown and Freise, LIGO-T1300190) i m e^(-/+ i w_g n L / 2c) times the
    light, m = (w_0 / 2 w_g) sin(w_g n L / 2c) (Finesse 3's with the opposite sign,
    which the front end turns). Finesse 3 (``strain_signal_fill`` in
    ``finesse/components/modal/space.pyx``) multiplies the carrier leaving the space
    and fills a diagonal block from the one-mode strain node to the output: only its
    first element, HG00, so with higher-order modes on no other mode gets strain
    sidebands. Finesse 2 (measured against 2.3.1 on one space with light in six modes,
    ``fsig_space_modes*``) gives every mode the same sidebands of the light entering
    the space, propagated without the space's Gouy phase: the carrier leaving it times
    exp(-i (n psi_x + m psi_y)) (phase 3), i.e. the entering carrier times the
    propagation phase exp(-i 2 pi f_c n L / c) alone.

    So the strain blocks are declared as full columns (``ConnectionSetting.MATRIX``);
    before Finesse 3's first fill they are taken out of the space's connection arrays
    (Finesse 3's fill skips absent blocks; its diagonal fill cannot fill a column),
    and a fill function writes every mode's sideband from the carrier solution at each
    refill of the signal matrix.

    Parameters
    ----------
    space : finesse.components.Space
        A space of a model from the Finesse 2 front end, with a strain signal.
    """
    space._get_workspace = _Finesse2Strain(space)


class _Finesse2Strain:
    """A space's ``_get_workspace``: Finesse 3's with full strain columns."""

    def __init__(self, space: finesse.components.Space):
        self.space = space

    def __call__(self, sim: object) -> object:
        import finesse.components.modal.space as modal_space
        from finesse.components.workspace import ConnectionSetting

        original = modal_space.SpaceWorkspace
        modal_space.SpaceWorkspace = _strain_workspace_class()  # Space._get_workspace's
        try:
            workspace = type(self.space)._get_workspace(self.space, sim)
        finally:
            modal_space.SpaceWorkspace = original
        signal = getattr(sim, "signal", None)
        if signal and self.space.h.i.full_name in signal.nodes:
            for name in ("H_P1o", "H_P2o"):
                workspace.signal.connection_settings[name] = ConnectionSetting.MATRIX
            workspace.signal.add_fill_function(_fill_strain, True)
        return workspace


@functools.cache
def _strain_workspace_class() -> type:
    """A SpaceWorkspace taking its strain blocks away from Finesse 3's own fill."""
    from finesse.components.modal.space import SpaceWorkspace

    class StrainWorkspace(SpaceWorkspace):
        """Finesse 3 calls ``update_parameter_values`` before each fill; the first
        call after the signal matrix declared its blocks keeps them here."""

        strain_blocks: dict[tuple[str, int], object] | None = None

        def update_parameter_values(self) -> None:
            super().update_parameter_values()
            if self.strain_blocks or self.signal is None:
                return
            blocks = {}
            for name in ("H_P1o", "H_P2o"):
                array = getattr(self.signal.connections, name)
                for index in range(array.shape[1]):
                    if array[0, index] is not None:
                        blocks[name, index] = array[0, index]
                        array[0, index] = None
            self.strain_blocks = blocks

    return StrainWorkspace


def _fill_strain(workspace: object) -> None:
    """Write every mode's strain sidebands, Finesse 3's formula on Finesse 2's light."""
    sim = workspace.sim
    space = workspace.owner
    if not workspace.strain_blocks:
        raise RuntimeError(f"{space.name}: Finesse 3 declared no strain blocks before "
                           "filling them: katparallel cannot give the strain "
                           "Finesse 2's sidebands")
    speed = 299792458.0
    length = workspace.values.L * workspace.values.nr
    w_g = 2 * math.pi * sim.model_settings.fsig
    frequencies = {f.index: f for f in sim.signal.optical_frequencies.frequencies}
    for (name, index), block in workspace.strain_blocks.items():
        frequency = frequencies[index]
        carrier = frequency.audio_carrier
        order = 1 if frequency.f > carrier.f else -1
        w_0 = 2 * math.pi * (sim.model_settings.f0 + carrier.f)
        m_g = -0.5 * w_0 / w_g * math.sin(w_g * length / 2 / speed)
        z = 1j * m_g * complex(math.cos(w_g * length / 2 / speed),
                               -order * math.sin(w_g * length / 2 / speed))
        entering = space.p2.i if name == "H_P1o" else space.p1.i
        light = np.asarray(sim.carrier.node_field_vector(entering, carrier.index))
        turn = 2 * math.pi * carrier.f * length / speed
        values = -z * complex(math.cos(turn), -math.sin(turn)) * light
        view = block.view.reshape(-1)
        if view.base is None or not view.flags.writeable:
            raise RuntimeError("Finesse 3's strain block is not a writable view into "
                               "its signal matrix any more")
        view[:] = values.conj() if block.conjugate_fill else values


def _odd_modes(workspace: object, frequency: object, block: tuple[int, bool, str],
               view: object, parity: str) -> None:
    """Turn Finesse 3's motion block into Finesse 2's signs of modes odd in x.

    Finesse 3 (``single_z_mechanical_frequency_signal_calc`` in ``mirror.pyx``) fills
    the block from the motion to a port's output with a C E: the carrier's reflection
    block C (mode scattering included) times the carrier E arriving at that port, a =
    +/- i k_0 x_s exp(+/- i phi f / f_0) (front / back, f the sideband's frequency;
    at a beam splitter times cos(alpha), cos(alpha_2) on its back, ``mirror.pyx``
    and ``beamsplitter.pyx`` alike).
    Measured against Finesse 2.3.1 with light in single modes on one mirror, aligned
    and yawed (``fsig_mirror_odd*``, ``fsig_mass_odd*``), Finesse 2 gives a modes odd
    in x (n odd) the other sign: an ``fsig`` at a mirror without a mass a C P E,
    the motion of a mirror with a mass a P C P E, P = diag((-1)^n). Light even in x
    alone, or a mirror that keeps parity (aligned, mismatch, pitch) with a mass, sees
    no difference; a beam splitter's front and back follow the same two rules
    (``fsig_bs_odd``, ``fsig_mass_bs_odd``). ``parity`` is ``"input"`` for the
    first, ``"both"`` the second; ``block`` is (+1 front / -1 back, a beam
    splitter's back surface, the carrier's reflection block into the port).
    """
    sim = workspace.sim
    sign, back, reflection = block
    block = getattr(workspace.carrier.connections, reflection)[
        frequency.audio_carrier.index]
    if block is None:
        return
    size = workspace.cos_alpha_2 if back else getattr(workspace, "cos_alpha", 1.0)
    odd = np.where(np.asarray(sim.model_settings.homs_view)[:, 0] % 2, -1.0, 1.0)
    matrix = np.asarray(block.view).reshape(block.size1, -1)
    light = np.asarray(block.from_rhs_view[0])
    phi = math.radians(workspace.values.phi) * frequency.f / sim.model_settings.f0
    a = sign * 1j * size * sim.model_settings.k0 * sim.model_settings.x_scale * complex(
        math.cos(phi), sign * math.sin(phi))
    values = view.view.reshape(-1)
    finesse3 = values.conj() if view.conjugate_fill else values
    expected = a * (matrix @ light)
    if not np.allclose(finesse3, expected, rtol=1e-9,
                       atol=1e-12 * (np.abs(expected).max() + 1e-300)):
        raise RuntimeError("Finesse 3's motion block is not a k0 times its reflected "
                           "carrier any more: katparallel cannot give it Finesse 2's "
                           "signs of modes odd in x")
    finesse2 = a * (matrix @ (odd * light))
    if parity == "both":
        finesse2 *= odd
    values[:] = finesse2.conj() if view.conjugate_fill else finesse2


def _unscattered(knm: object, matrix: np.ndarray, light: np.ndarray,
                 propagated: np.ndarray) -> np.ndarray:
    """The light through a modulator's carrier block without its mode scattering.

    The block is a scalar (Bessel factor and phase) times the knm matrix of the
    modulator's ports (``ModulatorWorkspace.K12``/``K21``); the scalar is found by
    least squares and multiplies the light entering the modulator instead. Without
    modes (no knm matrix) the block is that scalar already.
    """
    if knm is None or matrix.size == 1:
        return propagated
    scattering = np.asarray(knm.data)
    norm = np.vdot(scattering, scattering)
    if norm == 0:
        return propagated
    scalar = np.vdot(scattering, matrix) / norm
    if not np.allclose(matrix, scalar * scattering, rtol=1e-9,
                       atol=1e-12 * np.abs(matrix).max()):
        raise RuntimeError("Finesse 3's modulator block is not a number times its "
                           "knm matrix any more: katparallel cannot give the signal "
                           "Finesse 2's sidebands")
    return scalar * light
