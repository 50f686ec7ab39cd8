"""``python -m katparallel``: the command line (see :mod:`katparallel.cli`)."""

import sys

from katparallel.cli import main

if __name__ == "__main__":
    sys.exit(main())
