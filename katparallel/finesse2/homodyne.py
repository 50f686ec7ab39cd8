"""Finesse 2's ``qhd``: the quantum noise of two photodiodes' summed photocurrents.

Finesse 2.3.1's ``qhd NAME PHASE NODE1 NODE2`` is a balanced homodyne detector whose
beam splitter is part of the user's network: it writes the amplitude spectral density,
at the signal frequency, of the photocurrent of ``NODE1`` plus that of ``NODE2`` with
``NODE2``'s light (the local oscillator) turned by ``PHASE`` (180 degrees: the
difference of the two photocurrents). Finesse 3 has no such detector (its
``QuantumBHD`` takes an ideal local oscillator at one node), but its quantum-noise
machinery computes the noise of any linear combination of fields, correlations
included: :class:`QuantumHomodyne` fills one selection vector with both nodes.

Derivation. Finesse 3's ``QuantumNoiseDetector`` (``qnoised``) at node ``n`` fills the
signal matrix's selection vector with ``s = sqrt(2) A_n`` at the upper signal sideband
of each carrier ``A_n`` (and of each mode) and ``sqrt(2) conj(A_n)`` at the lower
one, so that its photocurrent is ``s^H x`` for the signal sidebands ``x``; the solver
returns ``c = K s`` with ``K`` the sidebands' covariance, and the detector writes
``sqrt(2 Re(s^H c) h f0 / 4)`` (in units of the vacuum). The photocurrent of
``NODE1`` plus that of ``NODE2`` with its carriers turned by ``e^{i PHASE}`` is
``(s1 + s2(PHASE))^H x``, where ``s2(PHASE)`` is ``NODE2``'s vector with ``A_2 ->
A_2 e^{i PHASE}``; its noise is the same quadratic form with ``s = s1 + s2(PHASE)``,
which includes the correlation between the two nodes' photocurrents.

Measured against Finesse 2.3.1 (``tests/data/finesse2/qhd_*``: squeezed light,
radiation pressure, a detuned cavity, modulator sidebands, higher-order modes): this
equals Finesse 2's ``qhd`` times ``sqrt(h3 / h2)`` (the two programs' Planck constants,
divided out by the kat program as for ``qnoised``) to 1e-11, for phases from 0 to 360
degrees and the nodes in either order (in a detuned cavity the order matters: the
turn is ``NODE2``'s). Other readings of the phase differ: the whole second
photocurrent times ``e^{i PHASE}`` gives 44% less than Finesse 2 at 90 degrees on
``qhd_squeezed.kat``, a turn by ``-PHASE`` 49% less.
"""

from __future__ import annotations

import cmath
import logging
import math

import numpy as np
from finesse.components.general import NoiseType
from finesse.detectors.general import Detector, NoiseDetector
from finesse.detectors.workspace import DetectorWorkspace
from finesse.parameter import float_parameter

__all__ = ("QuantumHomodyne",)

LOGGER = logging.getLogger(__name__)


@float_parameter("phase", "Phase of the second node's light", units="degrees")
class QuantumHomodyne(Detector, NoiseDetector):
    """Quantum noise of ``node1``'s photocurrent plus ``node2``'s, ``node2`` turned.

    Parameters
    ----------
    name : str
        The detector's name.
    node1, node2 : finesse.components.node.OpticalNode
        The two photodiodes' nodes.
    phase : float or symbol
        The turn of ``node2``'s light, in degrees (180: the difference).
    """

    def __init__(self, name: str, node1, node2, phase: float = 180.0):
        Detector.__init__(self, name, node1, dtype=np.float64, unit="1/sqrt(Hz)",
                          label="ASD")
        NoiseDetector.__init__(self, NoiseType.QUANTUM)
        self.node2 = node2
        self.phase = phase
        self._request_selection_vector(name)

    exclude_sources: list | None = None  # components whose noise is left out

    def _has_sources(self) -> bool:
        return bool(self.exclude_sources)

    def _get_workspace(self, sims):
        if sims.signal is None:
            return None
        return _HomodyneWorkspace(self, sims)


class _HomodyneWorkspace(DetectorWorkspace):
    """Fills the selection vector of both nodes; the solver calls these methods."""

    def __init__(self, owner: QuantumHomodyne, sim):
        super().__init__(owner, sim, needs_noise=True)
        signal, carrier = sim.signal, sim.carrier
        self.size = signal._M.num_equations
        self.s = np.zeros(self.size, dtype=np.complex128)
        self.cov = np.zeros(self.size, dtype=np.complex128)
        self.rhs_index = owner._requested_selection_vectors[owner.name]
        # Per node: where each signal sideband sits, which carrier field beats with it,
        # and whether it is an upper sideband (the lower one takes the conjugate).
        self.nodes = []
        for node in (owner.node, owner.node2):
            rows, fields, upper = [], [], []
            for f in signal.optical_frequencies.frequencies:
                for hom in range(max(signal.nhoms, 1)):
                    rows.append(signal.field(node, f.index, hom))
                    fields.append(carrier.field(node, f.audio_carrier_index, hom))
                    upper.append(f.audio_order > 0)
            self.nodes.append((np.array(rows), np.array(fields), np.array(upper)))
        self.set_output_fn(_output)

    def fill_selection_vector(self) -> None:
        self.update_parameter_values()
        turns = (1.0, cmath.exp(1j * math.radians(self.values.phase)))
        carrier = np.asarray(self.sim.carrier.out_view)
        self.s[:] = 0
        for (rows, fields, upper), turn in zip(self.nodes, turns):
            amplitude = math.sqrt(2) * turn * carrier[fields]
            self.s[rows] += np.where(upper, amplitude, np.conj(amplitude))
        np.asarray(self.sim.signal._M.get_rhs_view(self.rhs_index))[:] = self.s

    def get_source_selection_vector(self) -> np.ndarray:
        """1 where a noise source counts, 0 at the nodes of ``exclude_sources``."""
        signal = self.sim.signal
        keep = np.ones(self.size, dtype=np.complex128)
        for component in self.owner.exclude_sources or ():
            for node in component.optical_nodes:
                for f in signal.optical_frequencies.frequencies:
                    for hom in range(max(signal.nhoms, 1)):
                        keep[signal.field(node, f.index, hom)] = 0
        return keep

    def set_covariance_matrix(self, values, name: str) -> None:
        self.cov[:] = values


def _output(ws: _HomodyneWorkspace) -> float:
    """The noise, as Finesse 3's ``qnoised`` writes a single node's (see above)."""
    from finesse.constants import values

    settings = ws.sim.model_settings
    weight = 2 * float(np.sum((ws.cov * np.conj(ws.s)).real))  # a demodulation's 1/2
    return math.sqrt(settings.UNIT_VACUUM * weight * float(values.H_PLANCK)
                     * settings.f0 * 0.25)
