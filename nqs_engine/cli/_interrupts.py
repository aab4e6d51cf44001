"""SIGINT and SIGTERM at any moment of the `nqs-engine` process: exit 130, one line, no output.

This module imports only what Python has loaded at start-up (`os`, `sys`), so that
`nqs_engine.cli.main` installs the handling a few milliseconds into the process,
before argparse, numpy, JAX or the command are imported.
"""

from __future__ import annotations

import os
import sys

#: The command's name, and its exit status when interrupted.
PROG, EXIT_INTERRUPTED = "nqs-engine", 130

#: While [`Interrupts`][] runs the process: the command's closing lines
#: ([`closing_line`][]), which [`Interrupts.finish`][] prints after its last check
#: for a signal. `None` otherwise (a library call of `main(argv)`): printed at once.
HELD_LINES: list[str] | None = None


def closing_line(text: str) -> None:
    """Print the command's closing line `nqs-engine: TEXT` (what it wrote, in how long).

    In a process that [`Interrupts`][] ends, the line waits until the process ends
    with its status: a signal that comes after the outputs are written, but before
    the process ends, still wins and removes them, and then the run must not have
    said that it wrote them. In a library call it is printed at once.
    """
    if HELD_LINES is None:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)
    else:
        HELD_LINES.append(f"{PROG}: {text}\n")


def _signal_module():
    """CPython's `_signal` (what `signal` wraps in enums; `signal` imports `enum`, 4 ms at
    start-up), else `signal`."""
    try:
        import _signal

        return _signal
    except ImportError:  # not CPython
        import signal

        return signal


class Interrupts:
    """SIGINT and SIGTERM end the process at once: exit 130, one line, no output file.

    The signals' Python handler does nothing; Python's own C handler writes each
    signal's number to a pipe (`signal.set_wakeup_fd`) the moment it arrives, and
    a watcher thread waiting on that pipe deletes the outputs in flight (see
    `_io.abandon_outputs`), prints the message and calls `os._exit(130)`. So no
    interrupt is lost in a callback that swallows exceptions (JAX's garbage
    collection callback), none waits for a long compilation or computation to
    return to Python, and none prints a traceback (during the imports of numpy,
    JAX and the command either: `main` installs this before them; only a signal
    in the first milliseconds, while Python itself starts, comes first).
    [`Interrupts.finish`][] ends a run that was not interrupted the same way, with
    its status, so that a signal up to the very end still wins.
    """

    def __init__(self):
        signal = _signal_module()
        self.read, write = os.pipe()
        os.set_blocking(write, False)
        # A signal the parent set to be ignored (SIGINT of a background job) stays so.
        self.signals = {number for number in (signal.SIGINT, signal.SIGTERM)
                        if signal.getsignal(number) != signal.SIG_IGN}
        for number in self.signals:
            signal.signal(number, lambda number, frame: None)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        global HELD_LINES
        HELD_LINES = []
        import threading

        from .. import _io  # numpy: after the handler, so a signal now waits in the pipe

        self.io = _io
        _io.track_outputs()
        threading.Thread(target=self._watch, name="nqs-engine-interrupts", daemon=True).start()

    def _pending(self, timeout: float | None) -> bool:
        import select

        return bool(select.select([self.read], [], [], timeout)[0])

    def _watch(self) -> None:
        self._pending(None)
        self._die()

    def _die(self) -> None:
        self.io.abandon_outputs()  # keeps the lock: no output is written from now on
        common = sys.modules.get(f"{__package__}._common")
        fresh = "\n" if getattr(getattr(common, "Progress", None), "line_open", False) else ""
        os.write(2, f"{fresh}{PROG}: interrupted; no output written\n".encode())
        os._exit(EXIT_INTERRUPTED)

    def finish(self, status: int) -> None:
        """End the process with `status`, unless a signal came first (then as `_die`).

        The closing lines held back ([`closing_line`][]) are printed after the last
        check for a signal, with the signals blocked, when `status` is 0.
        """
        import atexit

        signal = _signal_module()

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        atexit._run_exitfuncs()
        with self.io.OUTPUTS_LOCK:
            signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)
            if self._pending(0):
                self._die()
            if status == 0 and HELD_LINES:
                try:
                    sys.stderr.write("".join(HELD_LINES))
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
            os._exit(status)
