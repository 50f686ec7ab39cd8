"""A Finesse-2-compatible ``kat`` program backed by Finesse 3, for PyKat.

PyKat drives the Finesse 2 ``kat`` binary, which cannot be installed from PyPI or
Debian. ``python -m katparallel.finesse2`` is a stand-in that runs Finesse 2 kat files
through Finesse 3's legacy parser and answers PyKat the way Finesse 2 does
(see :mod:`katparallel.finesse2.program`). Runs go through a warm background server
that has imported Finesse once (see :mod:`katparallel.finesse2.client`).

:func:`ensure_kat` makes PyKat find it when, and only when, no real Finesse 2 is
installed; :func:`which_kat` tells which ``kat`` PyKat will run; :func:`stop_server`
stops the warm server::

    from katparallel.finesse2 import ensure_kat, which_kat
    ensure_kat()            # before `import pykat`
    from pykat import finesse
    print(which_kat())

Names are imported on first use, so the ``kat`` client stays cheap to start.
"""

from katparallel._lazy import lazy_exports

# public name -> module that defines it
_EXPORTS = {
    "KatInfo": ".locate",
    "ensure_kat": ".locate",
    "which_kat": ".locate",
    "stop_server": ".client",
}

__all__ = tuple(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
del lazy_exports
