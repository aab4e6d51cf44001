"""The `nqs-engine` command line (`nqs_engine.cli.main`); the library never imports it."""

from ._main import main as main
