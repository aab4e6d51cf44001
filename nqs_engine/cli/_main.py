"""The `nqs-engine` command line: a thin shell over the library.

Each subcommand is a module of this package with a `DESCRIPTION`
and `EPILOG` for its help, `add_arguments(parser)` and `run(args)`; [`COMMANDS`][]
lists them. [`run`][] (behind `nqs_engine.cli.main`) imports only the module of the
command it runs (so that `nqs-engine --help` and each command start quickly), builds
the parser, turns on float64, runs the command and turns every expected failure into
one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence

# `_common` (and numpy with it) is imported only after the interrupt handling is in place
# (see `nqs_engine.cli.main` and `_interrupts`).
from ._interrupts import EXIT_INTERRUPTED, PROG

#: The subcommands, in the order `nqs-engine --help` lists them, with their modules
#: and one-line summaries (the summaries are here so that `--help` imports nothing).
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("._predict", "predict the loss of each run (N, B, K) in a CSV file"),
    "trajectory": ("._trajectory", "write the predicted loss curve of one run (N, B, K, "
                   "schedule)"),
    "fit": ("._fit", "fit NQS (or Chinchilla, or another loss model) parameters to the runs "
            "in a CSV file"),
    "prefix": ("._prefix", "predict runs' final losses from their first steps (NQS vs forms)"),
    "evaluate": ("._evaluate", "print the accuracy of fitted parameters per split and type"),
    "backtest": ("._backtest", "fit loss models on a ladder's small budgets and score them on "
                 "the big ones (held-out error, best-run error, interval coverage)"),
    "plan": ("._plan", "plan the best N, B, K (and schedule) for a compute budget under "
             "limits"),
    "sweep": ("._sweep", "write the predicted loss over a grid of N x B x K (or compute), "
              "sharded over all local devices"),
    "plot": ("._plot", "draw the model against a runs CSV: fits, isoflop/isotoken curves, "
             "terms, schedules, frontier"),
    "demo": ("._demo", "predict and plan on the built-in pythia-owt2 preset (no data needed)"),
}

_MAIN_DESCRIPTION = """\
Predict large language model pre-training losses with the Noisy Quadratic
System (NQS): a quadratic model of SGD whose loss after K steps at batch
size B on a model of N parameters splits into irreducible, approximation,
bias and variance terms. Fit it to small runs, then predict big ones.
"""

_MAIN_EPILOG = f"""\
Run '{PROG} COMMAND --help' for a command's options and file formats.

exit status:
  0    success
  2    bad input, parameters or usage: one line on stderr starting
       '{PROG}: error:', and no output file
  1    internal error (set NQS_ENGINE_DEBUG=1 to see the traceback)
  130  interrupted (Ctrl-C, SIGINT or SIGTERM, at any moment); no output file

environment:
  NQS_ENGINE_CACHE_DIR  where compiled programs are kept between runs
                        (default: ~/.cache/nqs-engine/xla)
  NQS_ENGINE_NO_CACHE   set to 1 to keep no compiled programs on disk
  NQS_ENGINE_DEBUG      set to 1 to see tracebacks of internal errors
"""


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose usage errors are one line on stderr, exit status 2.

    `commands` maps each subcommand to its parser, so that arguments left over
    after a subcommand are reported by (and point at the help of) that command.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}
        # Anything starting '-' and a digit (-1e20, -.5, -1,2) is a value, never an
        # option: its type then rejects it with its range (argparse's own pattern
        # misses exponents and lists, and reports "expected one argument").
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str) -> None:  # type: ignore[override]
        from ._common import EXIT_INPUT, error

        where = self.prog[len(PROG):].strip()
        hint = f"{PROG} {where} --help" if where else f"{PROG} --help"
        error(f"{where + ': ' if where else ''}{message} (see '{hint}')")
        raise SystemExit(EXIT_INPUT)


def command_module(name: str):
    """The module of subcommand `name` (imported on first use)."""
    return importlib.import_module(COMMANDS[name][0], __package__)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nqs-engine")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `argparse` parser of `nqs-engine` and its subcommands.

    With `only`, only that subcommand's module is imported and its arguments
    defined (the others get their summary, enough for `nqs-engine --help`).
    """
    parser = _Parser(
        prog=PROG,
        description=_MAIN_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", required=True,
        parser_class=_Parser,
    )
    for name, (_, summary) in COMMANDS.items():
        if only is not None and name != only:
            subparsers.add_parser(name, help=summary, add_help=False)
            continue
        module = command_module(name)
        sub = subparsers.add_parser(
            name,
            help=summary,
            description=module.DESCRIPTION,
            epilog=module.EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
        parser.commands[name] = sub
    return parser


def _cache_dir() -> str | None:
    """Where compiled XLA programs persist between runs (None: disabled)."""
    if os.environ.get("NQS_ENGINE_NO_CACHE"):
        return None
    if os.environ.get("NQS_ENGINE_CACHE_DIR"):
        return os.environ["NQS_ENGINE_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nqs-engine", "xla")


def _enable_compilation_cache() -> Callable[[], None]:
    """Point JAX's persistent compilation cache at `_cache_dir()` for this call.

    Compiling the engine's programs takes seconds to tens of seconds on a CPU
    (a plan's L-BFGS refinement about 15 s); the cache makes every later run
    of the same command start at once. Returns a function that restores the
    caller's setting. Nothing changes when NQS_ENGINE_NO_CACHE=1 or when the
    caller configured a cache already.
    """
    import jax

    path = _cache_dir()
    if path is None:
        return lambda: None
    previous = jax.config.jax_compilation_cache_dir
    if previous:
        return lambda: None
    # Keep every program, not only those that took over a second to compile (JAX's
    # default): a command compiles a dozen small ones, 1 s together on a CPU.
    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

    def restore() -> None:
        jax.config.update("jax_compilation_cache_dir", previous)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)

    return restore


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv` (the first argument that is one), if any."""
    for arg in argv:
        if arg in COMMANDS:
            return arg
        if not arg.startswith("-"):
            return None
    return None


def run(argv: Sequence[str]) -> int:
    """Run the command in `argv` and return its exit status (see `nqs_engine.cli.main`)."""
    from ._common import EXIT_INPUT, EXIT_INTERNAL, InputError, error

    argv = list(argv)
    try:
        parser = build_parser(only=_command_of(argv) or "")  # '': summaries only
        args, extra = parser.parse_known_args(argv)
        if extra:
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    import jax

    previous_x64 = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    restore_cache = _enable_compilation_cache()
    try:
        return args.run(args)
    except InputError as exc:
        error(str(exc))
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no output written", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        error(f"{where}{exc.strerror or exc}")
        return EXIT_INPUT
    except Exception as exc:
        if os.environ.get("NQS_ENGINE_DEBUG"):
            raise
        message = " ".join(str(exc).split())
        error(f"internal error: {type(exc).__name__}: {message}")
        return EXIT_INTERNAL
    finally:
        jax.config.update("jax_enable_x64", previous_x64)
        restore_cache()
