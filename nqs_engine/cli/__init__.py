"""The `nqs-engine` command line (`nqs_engine.cli.main`); the library never imports it.

This file imports nothing beyond what Python has loaded at start-up: the command's
interrupt handling (`_interrupts`) is in place before argparse, numpy or JAX load.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run `nqs-engine` with the arguments `argv` (default: `sys.argv[1:]`).

    Returns the exit status: 0 on success, 2 for bad input or usage (one line
    on stderr starting `nqs-engine: error:`), 1 for an internal error, 130 if
    interrupted. Computation runs in float64: `jax_enable_x64` is switched on
    for the duration of the call and restored afterwards.

    Without `argv` (the `nqs-engine` command, `python -m nqs_engine.cli`), `main`
    runs the command as the whole process: SIGINT and SIGTERM at any moment end
    it with status 130, the one-line message and no output file, and `main`
    ends the process itself (`os._exit`) rather than return. The handling is
    installed first, before the command's modules are imported.

    **Example:**

    >>> from nqs_engine.cli import main
    >>> main(["predict", "missing.csv", "--params", "pythia-owt2", "--out", "x.csv"])
    2
    """
    if argv is None:
        from ._interrupts import Interrupts

        interrupts = Interrupts()
        from ._main import run

        interrupts.finish(run(sys.argv[1:]))
    from ._main import run

    return run(argv)
