"""`nqs-engine sweep`: the predicted loss over a grid of N x B x K (or compute), on all devices.

The grid is computed in blocks of at most `BLOCK_CELLS` cells (whole N rows when
they fit) and each block is streamed to the output as soon as it is done, so
memory stays bounded whatever the grid; before any work the command prints an
estimate (cells, bytes, time) and refuses grids over `--max-cells` unless told
`--yes`. With `--coordinator`/`--num-processes`/`--process-id` (or
`--distributed`) it runs on several processes under `jax.distributed`: every
process computes the cells of its devices, each block is all-gathered, and
process 0 alone writes the file.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import time
import zipfile
from collections.abc import Iterator

import numpy as np

from .._io import InputError, atomic_output, json_text
from ._common import (
    EXIT_OK,
    finished,
    PROG,
    Progress,
    add_params_options,
    add_progress_option,
    duration,
    load_model,
    note,
    progress_enabled,
)


#: Cells computed per call (whole N rows when they fit, else parts of one row):
#: bounds the memory of one call (about 100 MB) and paces progress. Blocks share
#: one shape, so one compilation.
BLOCK_CELLS = 2**22

#: Default of --max-cells: larger grids need --yes (or a larger --max-cells).
DEFAULT_MAX_CELLS = 100_000_000

#: Most points of one axis (an axis of 2**24 float64 values is 128 MB).
MAX_AXIS = 2**24

#: Seconds between progress lines when stderr is not a terminal (none for a
#: run that ends sooner).
PROGRESS_INTERVAL = 10.0

#: Calibrated throughput of one CPU core in cells/s (PLAN_RULE, float64: about
#: 9e5 cells/s measured on the project's 2-core CPU, 2026-11, so 4.5e5 per core;
#: taken lower since the cores are often shared). Other platforms have no
#: calibration: their rate is measured on the first block.
CPU_CELLS_PER_CORE_S = 3e5

#: Columns of the CSV output, one row per cell.
CSV_COLUMNS = ("N", "B", "K", "C", "tokens", "loss")

#: Environment variables read for the distributed flags left out.
ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
       "process_id": "JAX_PROCESS_ID"}

# flag -> (test on finite values, requirement in words)
_RANGES = {
    "--N": (lambda v: v >= 1, ">= 1"),
    "--B": (lambda v: v > 0, "> 0"),
    "--K": (lambda v: v >= 0, ">= 0"),
    "--compute": (lambda v: v > 0, "> 0"),
}

DESCRIPTION = f"""\
Write the predicted loss of a loss model (the plain NQS by default; any
PARAMS.json's model) for constant-schedule runs over every cell of the grid
N x B x K, or N x B x C at fixed compute, to FILE.npz or FILE.csv. The grid
is split evenly over the local devices (all of them by default, --devices),
or over the devices of several processes (below), and each device evaluates
its own cells; the program is compiled once per grid shape.

Axes (--N, --B, and one of --K, --compute)
  START:STOP:NUM  NUM points spaced geometrically from START to STOP, both
                  included (NUM = 1 needs START == STOP): 1e6:1e10:41
  V1,V2,...       the listed values, in order: 64,128,256
  N model sizes (>= 1), B batch sizes in sequences (> 0), K steps (>= 0),
  C compute budgets in FLOPs (> 0); at most {MAX_AXIS:,} points per axis.
  --pow2-B rounds every B to the nearest power of two and drops repeats.

At fixed compute (--compute) each cell runs K = C / (6 N B seq_len) steps
(not rounded); a cell with K < 1 cannot take one step within its budget:
it is infeasible and its loss is inf. tokens = B K seq_len in both modes,
and C = 6 N tokens.

PARAMS (--params): a preset or a JSON file, as for '{PROG} predict'.

Outputs (written whole or not at all; the extension picks the format)
  FILE.npz  arrays N, B, K (or C), loss of shape (len N, len B, len K or C),
            and metadata: a JSON string with the model and its parameters,
            seq_len, the axes' names, devices, processes and timings
  FILE.csv  one row per cell, N slowest and K (or C) fastest, columns
            {", ".join(CSV_COLUMNS)}
  Both are streamed: blocks of up to {BLOCK_CELLS:,} cells are computed and
  written one after another, so memory stays bounded (a few hundred MB)
  whatever the grid. 8 bytes per cell in FILE.npz, about 100 in FILE.csv.

Size guard. Before any work one line on stderr gives the cells, the bytes of
the output and the time at a calibrated rate (CPU; other platforms report the
rate measured on the first block). A grid of more than --max-cells cells
(default {DEFAULT_MAX_CELLS:,}) is refused with exit status 2 unless --yes is
given; an output larger than the free space of its folder is always refused.
Progress: a bar when stderr is a terminal, else a line every
{PROGRESS_INTERVAL:g} s once the run is longer than that (--no-progress: neither).

Several processes (jax.distributed, e.g. one process per host). Run the same
command in every process with --coordinator HOST:PORT (process 0's address
and a free port), --num-processes M and --process-id K (0..M-1); flags left
out are read from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID, and --distributed alone lets JAX detect them (SLURM's srun,
Open MPI's mpirun). Every process computes the cells of its devices; each
block is gathered and process 0 writes --out (the others write nothing). The
grid is the same bit for bit as on one process. See the README, "Sweeps
across hosts", for srun and ssh launch lines.

Losses use the model's search quadrature (for the NQS, relative error below
1e-8), in float64.
A one-line summary (cells, devices, wall time, cells/s) goes to stderr.
"""

EPILOG = f"""\
examples:
  {PROG} sweep --params pythia-owt2 --N 1e7:1e10:100 --B 32:4096:8 --pow2-B \\
      --K 1e3:1e6:100 --out grid.npz
  {PROG} sweep --params fit.json --N 1e7:1e10:61 --B 64,256,1024 \\
      --compute 1e18,1e19,1e20 --seq-len 2048 --out isoflop.csv
  {PROG} sweep --params pythia-owt2 --N 1e6:1e11:1000 --B 16:65536:1000 \\
      --K 100:1e6:400 --yes --out big.npz          # 4e8 cells, 3.2 GB, streamed
  # two hosts; on host A (10.0.0.1) and on host B:
  {PROG} sweep ... --coordinator 10.0.0.1:29500 --num-processes 2 --process-id 0
  {PROG} sweep ... --coordinator 10.0.0.1:29500 --num-processes 2 --process-id 1
  srun -N 4 --ntasks-per-node 1 {PROG} sweep ... --distributed --out grid.npz
"""


def _cell_count(text: str) -> int:
    """--max-cells: an integer >= 1, also written as 1e9 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1 and value == int(value)):
        raise argparse.ArgumentTypeError(f"expected a whole number of cells >= 1 such as "
                                         f"1e9, got {text!r}")
    return int(value)


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_options(parser)
    parser.add_argument("--N", required=True, metavar="AXIS",
                        help="model sizes: START:STOP:NUM (geometric) or V1,V2,...")
    parser.add_argument("--B", required=True, metavar="AXIS",
                        help="batch sizes in sequences: START:STOP:NUM or V1,V2,...")
    steps = parser.add_mutually_exclusive_group(required=True)
    steps.add_argument("--K", metavar="AXIS", help="step counts: START:STOP:NUM or V1,V2,...")
    steps.add_argument("--compute", metavar="AXIS",
                       help="compute budgets in FLOPs (K = C / (6 N B seq_len) per cell)")
    parser.add_argument("--seq-len", type=float, default=128.0, metavar="L",
                        help="tokens per sequence (default: 128)")
    parser.add_argument("--pow2-B", action="store_true",
                        help="round batch sizes to the nearest power of two (repeats dropped)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="output, FILE.npz or FILE.csv (written atomically, streamed)")
    parser.add_argument("--devices", default="all", metavar="all|N",
                        help="use all local devices (default) or the first N (of each "
                        "process)")
    parser.add_argument("--max-cells", type=_cell_count, default=DEFAULT_MAX_CELLS,
                        metavar="CELLS", help="refuse grids of more cells unless --yes "
                        f"(default: {DEFAULT_MAX_CELLS:,})")
    parser.add_argument("--yes", action="store_true",
                        help="sweep a grid of more than --max-cells cells anyway")
    add_progress_option(parser)
    group = parser.add_argument_group(
        "several processes (jax.distributed; run the same command in each)")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help=f"address of process 0 and a free port (default: ${ENV['coordinator']})")
    group.add_argument("--num-processes", type=_count(1), metavar="M",
                       help=f"number of processes (default: ${ENV['num_processes']})")
    group.add_argument("--process-id", type=_count(0), metavar="K",
                       help=f"this process, 0..M-1 (default: ${ENV['process_id']})")
    group.add_argument("--distributed", action="store_true",
                       help="start jax.distributed, taking what the three flags above do not "
                       "give from the environment or JAX's cluster detection (SLURM, Open MPI)")
    group.add_argument("--init-timeout", type=_count(1), default=300, metavar="S",
                       help="seconds to wait for every process to join (default: 300)")


def parse_axis(text: str, flag: str) -> np.ndarray:
    """An axis from `START:STOP:NUM` (geometric) or `V1,V2,...`, checked for `flag`'s range.

    **Example:**

    >>> from nqs_engine.cli._sweep import parse_axis
    >>> parse_axis("1e6:1e8:3", "--N").tolist()
    [1000000.0, 10000000.0, 100000000.0]
    >>> parse_axis("64,256", "--B").tolist()
    [64.0, 256.0]
    """
    form = "expected START:STOP:NUM or a comma list of numbers"
    text = text.strip()
    test, requirement = _RANGES[flag]
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise InputError(f"{flag} {text!r}: {form}")
        start, stop = (_number(p, flag, text) for p in parts[:2])
        try:
            num = int(parts[2])
        except ValueError:
            num = 0
        if num < 1:
            raise InputError(f"{flag} {text!r}: NUM must be an integer >= 1, got {parts[2]!r}")
        if num > MAX_AXIS:
            raise InputError(f"{flag} {text!r}: NUM must be at most {MAX_AXIS:,} points, "
                             f"got {num:,}")
        for name, v in (("START", start), ("STOP", stop)):
            if not v > 0:
                raise InputError(f"{flag} {text!r}: {name} must be > 0 (geometric spacing)")
        if num == 1 and start != stop:
            raise InputError(f"{flag} {text!r}: NUM = 1 needs START == STOP")
        values = np.geomspace(start, stop, num)
    else:
        values = np.array([_number(p, flag, text) for p in text.split(",")])
    bad = ~test(values)
    if bad.any():
        raise InputError(f"{flag} {text!r}: values must be {requirement}, "
                         f"got {values[np.argmax(bad)]:g}")
    return values


def _number(part: str, flag: str, text: str) -> float:
    try:
        value = float(part)
    except ValueError:
        raise InputError(f"{flag} {text!r}: {part.strip()!r} is not a number; expected "
                         "START:STOP:NUM or a comma list of numbers") from None
    if not math.isfinite(value):
        raise InputError(f"{flag} {text!r}: {part.strip()!r} is not finite")
    return value


def _devices(text: str, distributed: bool) -> list:
    """The devices to sweep on: the first N (or all) local devices, of every process
    when `distributed` (in the global order, the same on every process)."""
    import jax

    local = jax.local_devices()
    if text.strip().lower() == "all":
        n = len(local)
    else:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if not 1 <= n <= len(local):
            raise InputError(f"--devices must be 'all' or an integer from 1 to {len(local)} "
                             f"(the local devices), got {text!r}")
    if not distributed:
        return local[:n]
    kept, seen = [], {}
    for d in jax.devices():  # each process's devices in the global order: its first n
        seen[d.process_index] = seen.get(d.process_index, 0) + 1
        if seen[d.process_index] <= n:
            kept.append(d)
    return kept


def _out_format(path: str) -> str:
    """'npz' or 'csv' from --out's extension."""
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in ("npz", "csv"):
        raise InputError(f"--out {path!r}: the extension must be .npz or .csv")
    return fmt


def _out_place(path: str, size: int) -> None:
    """Refuse an --out that cannot be written, or that would not fit, before any work."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise InputError(f"{full}: is a directory, expected a file name for the output")
    folder = os.path.dirname(full)
    if not os.path.isdir(folder):
        raise InputError(f"{full}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{full}: output folder {folder} is not writable")
    free = shutil.disk_usage(folder).free
    old = os.path.getsize(full) if os.path.isfile(full) else 0
    if size > free:  # the old file is replaced only at the end: it still takes its space
        raise InputError(f"--out {path}: the output would take about {_bytes(size)} and "
                         f"{folder} has {_bytes(free)} free"
                         + (f" (the existing {_bytes(old)} file is replaced only at the end)"
                            if old else ""))


def _bytes(n: float) -> str:
    """`8.0 GB (8,000,001,234 bytes)`, decimal units."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({int(n):,} bytes)"
    return f"{int(n):,} bytes"


def _seconds(t: float) -> str:
    """`45 s`, `28 min`, `2.3 h`, `4.1 days`."""
    if t < 90:
        return f"{t:.0f} s"
    if t < 5400:
        return f"{t / 60:.0f} min"
    if t < 172800:
        return f"{t / 3600:.1f} h"
    return f"{t / 86400:.1f} days"


def _output_bytes(fmt: str, N, B, X, by_compute: bool, seq_len: float) -> int:
    """Bytes of the output file: exact for npz (up to the metadata), estimated for csv
    from sample rows (the loss written with 18 characters, as most are)."""
    cells = N.size * B.size * X.size
    if fmt == "npz":
        return 8 * cells + 8 * (N.size + B.size + X.size) + 4 * 4096 + 600
    pick = np.unique(np.linspace(0, cells - 1, min(cells, 1000)).astype(np.int64))
    i, j, k = np.unravel_index(pick, (N.size, B.size, X.size))
    text = _csv_text(_csv_columns(N[i], B[j], X[k], np.full(pick.size, 2.4126345678901234),
                                  by_compute, seq_len))
    return int(len(",".join(CSV_COLUMNS)) + 1 + len(text) / pick.size * cells)


def _rate(devices, processes: int) -> float | None:
    """Calibrated cells/s of the whole sweep (None where there is no calibration)."""
    if devices[0].platform != "cpu":
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return CPU_CELLS_PER_CORE_S * cores * processes


def _estimate(size: int, path: str, cells: int, rate: float | None) -> str:
    """`8.0 GB (... bytes) to PATH, about H:MM:SS at ~R cells/s (calibrated)`."""
    if rate is None:
        when = "time unknown until the first block (no calibration for this platform)"
    else:
        when = f"about {_seconds(cells / rate)} at ~{rate:,.0f} cells/s (calibrated)"
    return f"{_bytes(size)} to {path}, {when}"


# ---------------------------------------------------------------------------
# Several processes
# ---------------------------------------------------------------------------


def _distributed_settings(args: argparse.Namespace) -> dict | None:
    """`jax.distributed.initialize` arguments from the flags and the environment (None:
    one process). InputError naming the flag or variable for a malformed value."""
    given = {name: getattr(args, name) for name in ENV}
    if not args.distributed and all(v is None for v in given.values()):
        return None
    settings = {}
    for name, var in ENV.items():
        value, where = given[name], f"--{name.replace('_', '-')}"
        if value is None and os.environ.get(var, "").strip():
            value, where = os.environ[var].strip(), var
            if name != "coordinator":
                try:
                    value = int(value)
                except ValueError:
                    raise InputError(f"{var}={os.environ[var]!r}: expected an integer") from None
        if value is None:
            continue
        if name == "coordinator":
            host, _, port = str(value).rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise InputError(f"{where} {value!r}: expected HOST:PORT, e.g. 10.0.0.1:29500 "
                                 "(process 0's address and a free port)")
            settings["coordinator_address"] = str(value)
        elif name == "num_processes":
            if value < 1:
                raise InputError(f"{where} {value}: expected an integer >= 1")
            settings["num_processes"] = value
        else:
            if value < 0:
                raise InputError(f"{where} {value}: expected an integer >= 0")
            settings["process_id"] = value
    m, k = settings.get("num_processes"), settings.get("process_id")
    if m is not None and k is not None and k >= m:
        raise InputError(f"--process-id {k}: must be below --num-processes {m} (0..{m - 1})")
    settings["initialization_timeout"] = args.init_timeout
    return settings


def _start(settings: dict) -> None:
    """Join the other processes (`jax.distributed.initialize`); one line if it fails.

    JAX ends the process (a fatal log, exit 134) when it cannot reach the
    coordinator, so the address is checked first: process 0 must be able to
    bind its port, the others to connect to it within the timeout.
    """
    import jax

    address, pid = settings.get("coordinator_address"), settings.get("process_id")
    if address is not None and pid is not None:
        _reach(address, pid, settings["initialization_timeout"])
    try:
        jax.distributed.initialize(**settings)
    except Exception as exc:  # RuntimeError (too late, timeout), ValueError (missing values)
        what = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "initialization_timeout")
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InputError(f"could not start jax.distributed ({what or 'auto-detected'}): "
                         f"{lines[0] if lines else type(exc).__name__}") from None


def _reach(address: str, process_id: int, timeout: float) -> None:
    """InputError unless process 0 can bind `address`'s port, or another process can
    connect to it within `timeout` seconds."""
    import socket

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if process_id == 0:
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("", int(port)))
        except OSError as exc:
            raise InputError(f"could not start jax.distributed: --coordinator {address}: "
                             f"process 0 cannot listen on port {port} ({exc.strerror}); "
                             "choose a free port") from None
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise InputError(f"could not start jax.distributed: --coordinator {address}: "
                                 f"no coordinator answered within {timeout:g} s "
                                 f"({exc.strerror or exc}); is process 0 running there, "
                                 "and the port reachable?") from None
            time.sleep(0.25)


def _agree(problem: InputError | None, distributed: bool) -> None:
    """Raise `problem` of process 0 (checks only it can make: the output place) on every
    process, so that none starts a sweep the others left."""
    if distributed:
        import jax
        from jax.experimental import multihost_utils

        flag = multihost_utils.broadcast_one_to_all(np.int32(problem is not None))
        if int(flag) and problem is None:
            raise InputError(f"process {jax.process_index()}: process 0 refused the sweep "
                             "(its error is on its stderr); nothing written")
    if problem is not None:
        raise problem


# ---------------------------------------------------------------------------
# Blocks, progress and the streamed writers
# ---------------------------------------------------------------------------


def _blocks(N, B, X, block_cells: int) -> Iterator[tuple[tuple, tuple]]:
    """The grid in blocks of at most `block_cells` cells, in its flat order (N slowest).

    Yields `(padded, valid)`: the block's three axes, each padded by repeating
    its last value so that every block has one shape (one compilation), and
    the slices of the padded block's loss that are real cells. Blocks are whole
    N rows when a row fits, else parts of one N row (whole B rows of X when they
    fit, else parts of one X axis).
    """
    def padded(values, start, rows):
        part = values[start:start + rows]
        return np.concatenate([part, np.full(rows - part.size, part[-1])]), part.size

    if B.size * X.size <= block_cells:
        rows = max(1, min(N.size, block_cells // (B.size * X.size)))
        for s in range(0, N.size, rows):
            n, count = padded(N, s, rows)
            yield (n, B, X), (slice(0, count), slice(None), slice(None))
    elif X.size <= block_cells:
        rows = max(1, min(B.size, block_cells // X.size))
        for i in range(N.size):
            for s in range(0, B.size, rows):
                b, count = padded(B, s, rows)
                yield (N[i:i + 1], b, X), (slice(0, 1), slice(0, count), slice(None))
    else:
        for i in range(N.size):
            for j in range(B.size):
                for s in range(0, X.size, block_cells):
                    x, count = padded(X, s, block_cells)
                    yield (N[i:i + 1], B[j:j + 1], x), (slice(0, 1), slice(0, 1),
                                                        slice(0, count))


class _Report:
    """Progress of the sweep on stderr: the bar of `Progress` on a terminal; otherwise
    (`lines`) a line every `PROGRESS_INTERVAL` seconds, the first after as long."""

    def __init__(self, cells: int, bar: bool, lines: bool):
        self.cells, self.lines = cells, lines and not bar
        self.bar = Progress("sweeping", bar)
        self.start = self.bar.start
        self._next = self.start + PROGRESS_INTERVAL

    def update(self, done: int) -> None:
        now = time.monotonic()
        rate = done / max(now - self.start, 1e-9)
        left = duration((self.cells - done) / rate) if rate > 0 else "?"
        self.bar.show(done / self.cells, f"{done:,}/{self.cells:,} cells {rate:,.0f} cells/s",
                      force=done == self.cells)
        if self.lines and now >= self._next and done < self.cells:
            self._next = now + PROGRESS_INTERVAL
            note(f"sweep: {done:,} of {self.cells:,} cells ({100 * done / self.cells:.1f}%) "
                 f"in {duration(now - self.start)}, {rate:,.0f} cells/s, {left} left")

    def close(self) -> None:
        self.bar.close()


def _csv_columns(n, b, x, loss, by_compute: bool, seq_len: float) -> tuple:
    """Columns `N, B, K, C, tokens, loss` of cells given by flat arrays."""
    if by_compute:
        C, K = x, x / (6 * n * b * seq_len)
    else:
        K, C = x, 6 * n * b * x * seq_len
    return n, b, K, C, b * K * seq_len, loss


def _csv_text(columns) -> str:
    """The CSV lines of `columns` (floats by `repr`, as `csv.writer` writes them; about
    1.6 times as fast)."""
    return "".join(line + "\n" for line in
                   map(",".join, zip(*(map(repr, c.tolist()) for c in columns))))


class _CsvWriter:
    """One row per cell, N slowest, written block by block (in slabs of bounded memory)."""

    SLAB = 65_536

    def __init__(self, f, by_compute: bool, seq_len: float):
        self.f = f
        self.f.write(",".join(CSV_COLUMNS) + "\n")
        self.by_compute, self.seq_len = by_compute, seq_len

    def block(self, axes, loss: np.ndarray, advance) -> None:
        shape = loss.shape
        flat = loss.reshape(-1)
        for s in range(0, flat.size, self.SLAB):
            index = np.arange(s, min(s + self.SLAB, flat.size))
            i, j, k = np.unravel_index(index, shape)
            self.f.write(_csv_text(_csv_columns(axes[0][i], axes[1][j], axes[2][k],
                                                flat[index], self.by_compute, self.seq_len)))
            advance(index.size)

    def close(self, meta: dict) -> None:
        pass


class _NpzWriter:
    """The arrays of `np.savez` (uncompressed zip of .npy files), `loss` streamed block
    by block into its entry (the blocks come in its C order); `metadata` last."""

    def __init__(self, f, axes: dict, shape: tuple[int, ...]):
        self.zip = zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        for name, values in axes.items():
            self._array(name, values)
        self.entry = self.zip.open("loss.npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f8")),
                  "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.entry, header)
        self.expected, self.written = math.prod(shape), 0

    def _array(self, name: str, values) -> None:
        with self.zip.open(f"{name}.npy", "w", force_zip64=True) as entry:
            np.lib.format.write_array(entry, np.asanyarray(values))

    def block(self, axes, loss: np.ndarray, advance) -> None:
        data = np.ascontiguousarray(loss, dtype="<f8")
        self.entry.write(memoryview(data).cast("B"))
        self.written += data.size
        advance(data.size)

    def close(self, meta: dict) -> None:
        assert self.written == self.expected, (self.written, self.expected)
        self.entry.close()
        self._array("metadata", np.array(json_text(meta)))
        self.zip.close()

    def abandon(self) -> None:
        """Close the zip on an error, while its file is open (the file is then deleted)."""
        try:
            self.entry.close()
            self.zip.close()
        except Exception:
            pass


def _sweep_blocks(model, source: str, N, B, X, by_compute: bool, seq_len: float, devices,
                  writer, report: _Report) -> int:
    """Compute the grid block by block, hand each block to `writer` (None: discard, on
    processes other than 0); the number of infeasible (inf) cells.

    One block is computed while the one before is written (JAX dispatches
    asynchronously), so writing a CSV overlaps the computation.
    """
    from .._sweep import sweep

    def launch(axes):
        n, b, x = axes
        given = dict(compute=x, seq_len=seq_len) if by_compute else dict(K=x)
        try:
            return sweep(model, n, b, devices=devices, **given)
        except ValueError as exc:  # the planning rule's domain, stricter than predict's
            raise InputError(f"{source}: {exc}") from None

    done = 0

    def advance(count):
        nonlocal done
        done += count
        report.update(done)

    def finish(result, axes, valid) -> int:
        loss = np.asarray(result)[valid]
        if writer is None:
            advance(loss.size)
        else:
            writer.block(tuple(a[s] for a, s in zip(axes, valid)), loss, advance)
        return int(np.isinf(loss).sum())

    infeasible, pending = 0, None
    for axes, valid in _blocks(N, B, X, BLOCK_CELLS):
        started = (launch(axes), axes, valid)
        if pending is not None:
            infeasible += finish(*pending)
        pending = started
    return infeasible + finish(*pending)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    by_compute = args.compute is not None
    N = parse_axis(args.N, "--N")
    B = parse_axis(args.B, "--B")
    X = parse_axis(args.compute, "--compute") if by_compute else parse_axis(args.K, "--K")
    if args.pow2_B:
        B = np.array(list(dict.fromkeys(np.exp2(np.round(np.log2(B))).tolist())))
    if not (math.isfinite(args.seq_len) and args.seq_len > 0):
        raise InputError(f"--seq-len must be a finite number > 0, got {args.seq_len:g}")
    fmt = _out_format(args.out)
    shape = (N.size, B.size, X.size)
    cells = math.prod(shape)
    size = _output_bytes(fmt, N, B, X, by_compute, args.seq_len)
    settings = _distributed_settings(args)
    if settings is not None:
        _start(settings)
    try:
        return _run(args, started, by_compute, N, B, X, fmt, shape, cells, size,
                    settings is not None)
    finally:
        if settings is not None:
            import jax

            jax.distributed.shutdown()


def _run(args, started, by_compute, N, B, X, fmt, shape, cells, size, distributed) -> int:
    import jax

    devices = _devices(args.devices, distributed)
    processes, me = jax.process_count(), jax.process_index()
    rate = _rate(devices, processes)
    dims = " x ".join(map(str, shape))
    estimate = _estimate(size, args.out, cells, rate)
    if cells > args.max_cells and not args.yes:
        raise InputError(f"the grid has {cells:,} cells ({dims}), more than --max-cells "
                         f"{args.max_cells:,}: {estimate}; pass --yes to sweep it (streamed, "
                         "in bounded memory) or a larger --max-cells")
    model = load_model(args.params, lr=args.lr).model
    problem = None
    if me == 0:
        try:
            _out_place(args.out, size)
        except InputError as exc:
            problem = exc
    _agree(problem, distributed)
    where = f" in {processes} processes" if distributed else ""
    if me == 0:
        note(f"sweep: {cells:,} cells ({dims}) on {len(devices)} device(s){where}, {estimate}")

    report = _Report(cells, progress_enabled(args) and me == 0,
                     not args.no_progress and me == 0)
    meta = {
        **model.to_dict(), "seq_len": args.seq_len,
        "axes": ["N", "B", "C" if by_compute else "K"], "shape": list(shape),
        "devices": len(devices), "device_kind": devices[0].device_kind,
        "processes": processes,
    }
    work = (model, args.params, N, B, X, by_compute, args.seq_len, devices)
    try:
        if me != 0:
            infeasible = _sweep_blocks(*work, None, report)
        elif fmt == "npz":
            with atomic_output(args.out, binary=True) as f:
                writer = _NpzWriter(f, {"N": N, "B": B, ("C" if by_compute else "K"): X},
                                    shape)
                try:
                    infeasible = _sweep_blocks(*work, writer, report)
                except BaseException:
                    writer.abandon()
                    raise
                writer.close({**meta, "infeasible_cells": infeasible,
                              "compute_s": time.monotonic() - report.start})
        else:
            with atomic_output(args.out) as f:
                infeasible = _sweep_blocks(*work, _CsvWriter(f, by_compute, args.seq_len),
                                           report)
    finally:
        report.close()
    seconds = time.monotonic() - report.start
    note_inf = f", {infeasible:,} infeasible" if by_compute else ""
    target = (f" -> {args.out}" if me == 0
              else f" (process {me} of {processes}; process 0 writes {args.out})")
    finished(f"swept {cells:,} cells ({dims}{note_inf}) on "
             f"{len(devices)} device(s){where} in {seconds:.1f} s "
             f"({cells / max(seconds, 1e-9):,.0f} cells/s), "
             f"{time.monotonic() - started:.1f} s in all{target}")
    return EXIT_OK


__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "parse_axis", "run"]
