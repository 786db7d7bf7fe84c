"""``python -m rnncore ...`` is the ``rnncore`` command line (rnncore/cli.py)."""
import sys

from .cli import main

sys.exit(main())
