"""``python -m lazymask``: the command line (see :mod:`lazymask.cli`)."""

import sys

from lazymask.cli import main

sys.exit(main())
