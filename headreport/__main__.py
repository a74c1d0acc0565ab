"""``python -m headreport`` = the ``headreport`` command."""

import sys

from .cli import main

sys.exit(main())
