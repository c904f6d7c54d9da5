"""`python -m mdmonitor.cli`: the `mdmonitor` command."""

import sys

from . import main

sys.exit(main())
