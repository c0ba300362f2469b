"""`python -m vgtune ...`: the same command line as `vgtune ...` (vgtune.cli)."""

import sys

from vgtune.cli import main

sys.exit(main())
