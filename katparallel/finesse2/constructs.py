"""What the Finesse 2 front end and its lock iteration share.

:mod:`katparallel.finesse2.frontend` reads ``lock`` lines into :class:`Lock` and
refuses constructs with :class:`Refusal`; :mod:`katparallel.finesse2.lock` iterates
the locks with Finesse 2's standard settings (:data:`STANDARD_INI`) and refuses a lock
Finesse 2 gives up on. Kept apart so that neither module imports the other.
"""

from __future__ import annotations

import dataclasses

__all__ = ("Lock", "Refusal", "STANDARD_INI")

#: The settings of Finesse 2.3.1's standard kat.ini (also its built-in defaults)
#: that change results: katparallel's kat follows these and reads no kat.ini.
STANDARD_INI = {
    "clight": 299792458.0, "lambda": 1.064e-6, "qeff": 1.0, "x_scale": 1e-9,
    "quantum_scaling": 3, "amplitude_scaling": 2, "locksteps": 10000, "autostop": 1,
    "sequential": 5, "autogain": 2, "lockthresholdlow": 0.01, "lockthresholdhigh": 1.5,
    "locktest1": 5, "locktest2": 40, "gainfactor": 3.0,
}


class Refusal(Exception):
    """A construct of the kat file that cannot be reproduced with Finesse 3.

    Parameters
    ----------
    lineno : int
        The construct's (1-based) line in the kat file.
    construct : str
        The command or attribute, e.g. ``"lock"``.
    why : str
        Why it cannot be reproduced.
    """

    def __init__(self, lineno: int, construct: str, why: str):
        super().__init__(f"line {lineno}: '{construct}': {why}")
        self.lineno = lineno
        self.construct = construct
        self.why = why

    @property
    def problem(self) -> tuple[int, str]:
        """``(line, "'construct': why")``, as the kat program's errors list them."""
        return self.lineno, f"'{self.construct}': {self.why}"


@dataclasses.dataclass
class Lock:
    """One ``lock[*] NAME $INPUT GAIN ACCURACY [OFFSET]`` line.

    Attributes
    ----------
    lineno : int
        Its line in the kat file.
    name : str
        The lock's variable, ``$NAME`` in ``put`` and ``func``.
    input : str
        The ``set`` or ``func`` it drives to ``-offset``.
    gain, accuracy, offset : float
        As written.
    once : bool
        ``lock*``: Finesse 2 locks it in its first run (the first point) only.
    """

    lineno: int
    name: str
    input: str
    gain: float
    accuracy: float
    offset: float = 0.0
    once: bool = False
