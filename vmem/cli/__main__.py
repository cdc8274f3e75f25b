"""`python -m vmem.cli`: the `vmem` command."""

import sys

from vmem.cli.main import main

sys.exit(main())
