"""`python -m nqs_engine.cli`: the `nqs-engine` command."""

import sys

from ._main import main

sys.exit(main())
