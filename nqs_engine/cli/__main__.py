"""`python -m nqs_engine.cli`: the `nqs-engine` command."""

import sys

from . import main

sys.exit(main())
