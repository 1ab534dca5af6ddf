"""``python -m skysort`` runs the command-line tool."""

import sys

from skysort.cli import main

sys.exit(main())
