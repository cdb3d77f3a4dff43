"""``python -m jaxnets``: the ``jaxnets`` command line (see :mod:`jaxnets.cli`)."""

import sys

from jaxnets.cli import main

if __name__ == "__main__":
    sys.exit(main())
