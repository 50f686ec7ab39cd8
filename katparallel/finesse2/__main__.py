"""``python -m katparallel.finesse2``: the Finesse-2-compatible ``kat`` program.

Runs through the warm server when it can (see :mod:`katparallel.finesse2.client`);
``python -m katparallel.finesse2 --stop-server`` stops that server.
"""

from katparallel.finesse2.client import main

raise SystemExit(main())
