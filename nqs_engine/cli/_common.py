"""What the commands share: errors and exit codes, progress bars, option types,
parameter loading, and the runs table of `fit`, `evaluate` and `plot`."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import IO, Any

import numpy as np

from .._columnar import ColumnarRuns
from .._io import Column, InputError, read_json
from ._interrupts import EXIT_INTERRUPTED, PROG, closing_line

#: Exit statuses (and `EXIT_INTERRUPTED`, 130, from `_interrupts`).
EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2


# ---------------------------------------------------------------------------
# Terminal output
# ---------------------------------------------------------------------------


def error(message: str, stream: IO[str] | None = None) -> None:
    """Print `nqs-engine: error: MESSAGE` on stderr (one line)."""
    stream = sys.stderr if stream is None else stream
    print(f"{PROG}: error: {message}", file=stream, flush=True)


def note(text: str) -> None:
    """Print `nqs-engine: TEXT` on stderr."""
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def finished(text: str) -> None:
    """Print the command's closing line `nqs-engine: TEXT` on stderr, as the process's
    last word (held back to the very end of a whole `nqs-engine` process, so that a
    late interrupt never follows it: `_interrupts.closing_line`)."""
    closing_line(text)


def duration(seconds: float) -> str:
    """`m:ss` or `h:mm:ss`."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class Progress:
    """A one-line progress bar on stderr, redrawn at most every 0.2 s.

    Does nothing when disabled; always ends its line on [`Progress.close`][]
    so that a following message starts on a fresh line.
    """

    #: Whether a bar's line is unfinished (an interrupt's message then starts a new one).
    line_open = False

    def __init__(self, label: str, enabled: bool, stream: IO[str] | None = None):
        self.label = label
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.start = time.monotonic()
        self._last = -1.0
        self._drawn = False

    def show(self, fraction: float, detail: str, force: bool = False) -> None:
        """Redraw with `fraction` (0..1) done and a `detail` text after the bar."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        fraction = min(max(fraction, 0.0), 1.0)
        width = 28
        filled = int(fraction * width)
        bar = "#" * filled + "." * (width - filled)
        elapsed = now - self.start
        eta = duration(elapsed * (1 - fraction) / fraction) if fraction > 0 else "?"
        line = f"{self.label} [{bar}] {100 * fraction:5.1f}% {detail} ETA {eta}"
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._drawn = Progress.line_open = True

    def close(self) -> None:
        """End the bar's line (if one was drawn)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = Progress.line_open = False


def progress_enabled(args: argparse.Namespace) -> bool:
    """Whether to draw bars: stderr is a terminal and --no-progress was not given."""
    return not args.no_progress and sys.stderr.isatty()


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """The --no-progress flag every long-running command takes."""
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on stderr (it is shown only when stderr is a terminal); "
        "the one-line summary at the end is still printed",
    )


# ---------------------------------------------------------------------------
# Option types
# ---------------------------------------------------------------------------


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive(text: str) -> float:
    """A finite number > 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def nonneg(text: str) -> float:
    """A finite number >= 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def positive_list(text: str) -> list[float]:
    """A comma list of finite numbers > 0, with no empty item (argparse type)."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(not p for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected a comma list of positive numbers such as 1e18,1e19, got {text!r} "
            "(an empty item?)")
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma list of positive numbers, {p!r} is not a number") from None
        if not (math.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(
                f"expected a comma list of positive numbers, got {p!r} (must be > 0 and finite)")
        values.append(v)
    return values


# ---------------------------------------------------------------------------
# Parameters: a preset name or a PARAMS.json, as a loss model
# ---------------------------------------------------------------------------


def add_params_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--params (a PARAMS.json or a preset) and --lr (the NQS step size)."""
    from .._presets import DEFAULT_LR, PRESETS

    presets = ", ".join(sorted(PRESETS))
    parser.add_argument(
        "--params",
        required=required,
        metavar="PARAMS",
        help=f"parameters: a JSON file (format below) or a preset name ({presets})",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        metavar="LR",
        help=f"NQS peak step size gamma0; overrides 'lr' in PARAMS (default: PARAMS' lr, "
        f"else {DEFAULT_LR})",
    )


class Loaded:
    """A loss model read from a preset or a PARAMS.json, with what the file says beside it.

    `model`; `seq_len` (tokens per sequence of the runs it was fitted to: the
    file's `seq_len`, else 128); `source` (how messages name it); `data` (the
    file's whole mapping, `{}` for a preset).
    """

    def __init__(self, model, seq_len: float, source: str, data: dict):
        self.model, self.seq_len, self.source, self.data = model, seq_len, source, data


def load_model(source: str, *, lr: float | None = None, variant: str | None = None,
               flag: str = "--params") -> Loaded:
    """The model of a preset name or a PARAMS.json (`InputError` naming the problem).

    A name in the NQS presets selects it (write `./NAME` for a file of that
    name); anything else is read as JSON and turned into its model by its
    `"model"` key, every key checked. `lr` replaces an NQS model's step size and
    `variant` its variant; the model's domain is checked before returning.
    """
    from .._model import AbstractNQS, NQS, model_from_dict
    from .._presets import PRESETS
    from .._misc import suggest

    if source in PRESETS:
        model, data, where = NQS.preset(source), {}, f"preset {source!r}"
    else:
        if not os.path.exists(source):
            hint = suggest(source, PRESETS)
            raise InputError(f"{source}: no such file, nor a preset name{hint} (presets: "
                             f"{', '.join(sorted(PRESETS))})")
        data = read_json(source)
        where = source
        try:
            model = model_from_dict(data, source)
        except ValueError as exc:
            raise InputError(str(exc)) from None
    seq_len = data.get("seq_len", 128.0) if isinstance(data, dict) else 128.0
    if isinstance(seq_len, bool) or not isinstance(seq_len, (int, float)) or not seq_len > 0:
        raise InputError(f"{where}: seq_len must be a number > 0, got {seq_len!r}")
    if variant is not None or lr is not None:
        if not isinstance(model, AbstractNQS):
            what = "--lr" if lr is not None else "--variant"
            raise InputError(f"{where}: {what} applies to NQS parameters, but this is a "
                             f"{type(model).__name__} model")
        if variant is not None:
            model = model.as_variant(variant)
        if lr is not None:
            import jax.numpy as jnp
            import equinox as eqx

            model = eqx.tree_at(lambda m: m.lr, model, jnp.asarray(lr))
            where = f"{where} with --lr {lr:g}"
    try:
        model.check()
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None
    return Loaded(model, float(seq_len), where, data if isinstance(data, dict) else {})


def load_chinchilla(text: str, flag: str = "--chinchilla"):
    """A Chinchilla model from a Chinchilla preset or PARAMS.json (InputError if not)."""
    from .._model import Chinchilla
    from .._model._chinchilla import CHINCHILLA_PRESETS
    from .._misc import suggest

    if text in CHINCHILLA_PRESETS and not os.path.exists(text):
        return Chinchilla.preset(text)
    if not os.path.exists(text):
        raise InputError(f"{flag} {text}: no such file, nor a Chinchilla preset"
                         f"{suggest(text, CHINCHILLA_PRESETS)} "
                         f"({', '.join(sorted(CHINCHILLA_PRESETS))})")
    loaded = load_model(text, flag=flag)
    if not isinstance(loaded.model, Chinchilla):
        raise InputError(f"{text}: {flag} needs a Chinchilla PARAMS.json (from "
                         f"'{PROG} fit --model chinchilla') or a preset "
                         f"({', '.join(sorted(CHINCHILLA_PRESETS))}), got a "
                         f"{type(loaded.model).__name__} model")
    return loaded.model


def require_nqs(loaded: Loaded, command: str):
    """The loaded model if it is an NQS model, else the one-line error naming the command."""
    from .._model import AbstractNQS

    if not isinstance(loaded.model, AbstractNQS):
        raise InputError(f"{loaded.source}: {command} needs NQS parameters, but this file holds "
                         f"a {type(loaded.model).__name__} model ('model': "
                         f"{loaded.model.kind!r})")
    return loaded.model


# ---------------------------------------------------------------------------
# Schedules of the runs: a SPEC, a SPEC per row, a file of segments, or logged rates
# ---------------------------------------------------------------------------


def add_schedule_options(parser: argparse.ArgumentParser, column: bool) -> None:
    """--schedule, --schedule-file (and with `column`, --schedule-column)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--schedule",
        metavar="SPEC",
        help=f"schedule of {'every run' if column else 'the run'}, e.g. "
        "cosine:pieces=32,warmup=0.01,final=0.1, "
        "step:0.5=0.1,0.75=0.01, wsd:decay=0.2, batch:0.5=2, warmup:0.01 "
        "(language above; default: constant)",
    )
    if column:
        group.add_argument(
            "--schedule-column",
            metavar="NAME",
            help="read each row's schedule SPEC from column NAME of RUNS.csv",
        )
    group.add_argument(
        "--schedule-file",
        metavar="FILE.json",
        help='segments {"lr": [...], "batch": [...], "steps": [...]} '
        + ("(format above)" if column else f"(format: see '{PROG} predict --help')"),
    )


def schedule_spec(args: argparse.Namespace):
    """The ScheduleSpec of --schedule or --schedule-file (None for neither); InputError if bad."""
    from .._schedule import ScheduleSpec, parse_schedule

    if args.schedule is not None:
        try:
            return parse_schedule(args.schedule)
        except ValueError as exc:
            raise InputError(f"--schedule: {exc}") from None
    if args.schedule_file is not None:
        try:
            return ScheduleSpec.from_segments(read_json(args.schedule_file), args.schedule_file)
        except InputError:
            raise
        except ValueError as exc:
            raise InputError(str(exc)) from None
    return None


def check_peak(model, peak: float, where: str) -> None:
    """The model's refusal of a schedule's largest multiplier, as a one-line InputError."""
    try:
        model.check_peak(peak)
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None


LOG_HELP = """\
Real training logs (--columns, --budget, --drop-bad)
  --columns 'N=16*model.num_layers*model.hidden_dim^2,B=trainer.train_batch_size,
             K=trainer.num_train_steps,loss=`eval/paloma/macro_loss`,
             lr=0.33*sqrt(trainer.train_batch_size)/model.hidden_dim,width=model.hidden_dim'
  maps each column the command reads to a column of the file or a formula of
  them (numbers, + - * / ^, parentheses, sqrt, log, exp; a column whose name
  has characters other than letters, digits, _ and . goes in backticks).
  Columns not mapped are read under their own names. The text columns run,
  split, type and filtered may be mapped to another column (run=Name).
  --budget 'Name:isoflop-([0-9.]+e[+-]?[0-9]+)-' reads each run's compute
  budget from a text column by a regular expression with one group.
  --drop-bad skips rows with an empty or non-numeric cell the mapping needs
  (and says how many); without it such a row is an error naming it.
"""


def add_log_options(parser: argparse.ArgumentParser, budget: bool = False) -> None:
    """--columns MAP, --drop-bad (and --budget COL:REGEX): read real training logs."""
    group = parser.add_argument_group("real training logs (see below)")
    group.add_argument("--columns", metavar="MAP", default=None,
                       help="map the columns read to columns or formulas of the file: "
                       "'N=16*L*d^2,B=batch,loss=`eval/loss`' (see below)")
    if budget:
        group.add_argument("--budget", metavar="COLUMN:REGEX", default=None,
                           help="each run's compute budget, the first group of REGEX in "
                           "COLUMN (default: compute 6ND grouped into levels)")
    group.add_argument("--drop-bad", action="store_true",
                       help="skip rows with an empty or non-numeric cell the mapping needs")


def add_curve_options(parser: argparse.ArgumentParser) -> None:
    """--lr-column, --warmup and --peak-lr: runs given as loss curves logged with their rate."""
    group = parser.add_argument_group(
        "loss curves logged with their learning rate (rows: checkpoints of runs)")
    group.add_argument("--lr-column", metavar="NAME", default=None,
                       help="column holding the learning rate at each row's step: each run's "
                       "schedule is that rate interpolated linearly between its rows (rows "
                       "need the columns step and run; B defaults to 1, K to the run's last "
                       "step); the schedule is compressed with every checkpoint on a segment "
                       "edge (within 1e-4 relative of the per-step run)")
    group.add_argument("--warmup", type=nonneg, default=0.0, metavar="STEPS",
                       help="a linear warmup from 0 over the first STEPS steps, before the "
                       "first logged step (default: 0, the first logged rate from step 0)")
    group.add_argument("--peak-lr", type=positive, default=None, metavar="LR",
                       help="the learning rate that step size lr (gamma0) stands for "
                       "(default: each run's largest logged rate)")


def runtime_message(exc: BaseException) -> str:
    """The message of an `eqx.error_if` failure, without JAX's debugging advice."""
    text = str(exc)
    for line in text.splitlines():
        if "EquinoxRuntimeError:" in line:
            return line.split("EquinoxRuntimeError:", 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def check_out(path: str) -> None:
    """Refuse an --out that cannot be written (folder missing, a directory) before any work."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise InputError(f"--out {path}: is a directory, expected a file name for the output")
    if os.path.exists(os.path.dirname(full)) and not os.path.isdir(os.path.dirname(full)):
        raise InputError(f"--out {path}: {os.path.dirname(full)} is a file, not a folder")
    if not os.path.isdir(os.path.dirname(full)):
        raise InputError(f"--out {path}: the folder {os.path.dirname(full)} does not exist")
    if not os.access(os.path.dirname(full), os.W_OK):
        raise InputError(f"--out {path}: the folder {os.path.dirname(full)} is not writable")


# ---------------------------------------------------------------------------
# The runs table of fit, evaluate and plot
# ---------------------------------------------------------------------------

_TRUE = {"true", "1", "yes", "y", "t"}
N_COLUMN = Column("N", lambda v: v >= 1, "must be >= 1", "model size")
B_COLUMN = Column("B", lambda v: v > 0, "must be > 0", "batch size")
K_COLUMN = Column("K", lambda v: v >= 0, "must be >= 0", "number of steps")
D_COLUMN = Column("D", lambda v: v > 0, "must be > 0", "tokens")
LOSS_COLUMN = Column("loss", lambda v: v > 0, "must be > 0", "observed loss")
STEP_COLUMN = Column("step", lambda v: v >= 0, "must be >= 0", "checkpoint step")
TEXT_COLUMNS = ("split", "type", "filtered", "run")


class RunsTable:
    """A runs CSV read whole (fits use at most thousands of rows), validated row by row.

    Columns: `N`; `B` and `K`, or `D` (tokens) alone; `loss` (unless
    `need_loss=False`); optional `step`, `run`, `split`, `type`, `filtered`, and
    the model's own per-run inputs `inputs` (e.g. `init_sq_norm`). With
    `lr_column`, the rows are checkpoints of loss curves: `N`, `step`, `run` and
    the learning rate in that column are required, `B` (default 1) and `K`
    (default: the run's last step) optional. With `schedule_column`, a SPEC per row.
    """

    def __init__(self, path: str, need_loss: bool = True, inputs: tuple[str, ...] = (),
                 lr_column: str | None = None, schedule_column: str | None = None,
                 columns: str | None = None, budget: str | None = None,
                 drop_bad: bool = False):
        self.budget = None
        self.notes: list[str] = []
        if columns is not None or budget is not None or drop_bad:
            self._read_mapped(path, need_loss, inputs, lr_column, schedule_column, columns,
                              budget, drop_bad)
            return
        header = ColumnarRuns(path, (), expected="N, B, K" + (", loss" if need_loss else "")).header
        names = {h.strip() for h in header}
        self.lr_column = lr_column
        self.use_d = lr_column is None and "D" in names and not ({"B", "K"} <= names)
        if lr_column is not None:
            required = [N_COLUMN, Column("step", lambda v: v >= 1, "must be >= 1",
                                         "checkpoint step"),
                        Column(lr_column, lambda v: v >= 0, "must be >= 0", "learning rate")]
            optional = [B_COLUMN, Column("K", lambda v: v >= 1, "must be >= 1", "steps of the run")]
        else:
            required = [N_COLUMN] + ([D_COLUMN] if self.use_d else [B_COLUMN, K_COLUMN])
            optional = [] if self.use_d else [STEP_COLUMN]
        required += [LOSS_COLUMN] if need_loss else []
        optional += [Column(name, lambda v: np.isfinite(v), "must be finite", "model input")
                     for name in inputs]
        text = [(t, t) for t in TEXT_COLUMNS if t in names and t != "run"]
        if lr_column is not None or "run" in names:
            text.append(("run", "the run each checkpoint belongs to"))
        if schedule_column is not None:
            text.append((schedule_column, "schedule SPECs, --schedule-column"))
        table = ColumnarRuns(path, required, optional=optional, text=text)  # CSV or Parquet
        chunks = list(table.chunks(1_000_000))
        if not chunks:
            raise InputError(f"{table.path}: no data rows (only a header); expected one row per "
                             f"run with columns {', '.join(c.name for c in required)}")
        self.path = table.path
        self.header = table.header
        self.rows = [row for c in chunks for row in c.rows]
        self.values = {c.name: np.concatenate([ch.values[c.name] for ch in chunks])
                       for c in table.columns}
        self.texts = {t: np.array([x for ch in chunks for x in ch.texts[t]]) for t, _ in text}
        self.inputs = tuple(name for name in inputs if name in self.values)
        self.schedule_column = schedule_column

    def _read_mapped(self, path, need_loss, inputs, lr_column, schedule_column, columns,
                     budget, drop_bad):
        """Read through a column mapping (--columns), a --budget and --drop-bad."""
        from .._logs import parse_mapping, read_table
        from .._misc import suggest

        mapping = parse_mapping(columns) if columns else {}
        header = ColumnarRuns(path, (), expected="N, B, K" + (", loss" if need_loss else "")).header
        names = [h.strip() for h in header]
        text_names = [t for t in TEXT_COLUMNS if t != "run"] + ["run"]
        text_names += [schedule_column] if schedule_column is not None else []
        renamed = {}
        for t in text_names:  # a text column may be mapped to a column of another name
            if t in mapping:
                source = mapping.pop(t).strip().strip("`")
                if source not in names:
                    raise InputError(f"{path}: --columns {t}={source}: no column {source!r} "
                                     f"(a text column maps to a column itself){suggest(source, names)}")
                renamed[t] = source
            elif t in names:
                renamed[t] = t
        use_d = (lr_column is None and "B" not in mapping and "K" not in mapping
                 and ("D" in mapping or "D" in names) and not ({"B", "K"} <= set(names)))
        if lr_column is not None:
            required = [N_COLUMN, Column("step", lambda v: v >= 1, "must be >= 1",
                                         "checkpoint step"),
                        Column(lr_column, lambda v: v >= 0, "must be >= 0", "learning rate")]
            optional = [B_COLUMN, Column("K", lambda v: v >= 1, "must be >= 1", "steps of the run")]
        else:
            required = [N_COLUMN] + ([D_COLUMN] if use_d else [B_COLUMN, K_COLUMN])
            optional = [] if use_d else [STEP_COLUMN]
        required += [LOSS_COLUMN] if need_loss else []
        optional += [Column(name, lambda v: np.isfinite(v), "must be finite", "model input")
                     for name in inputs]
        known = {c.name for c in required + optional}
        unknown = sorted(set(mapping) - known)
        if unknown:
            from .._model import MODEL_KINDS

            takers = sorted(k for k, m in MODEL_KINDS.items() if unknown[0] in m.inputs)
            if takers:
                raise InputError(f"--columns: {unknown[0]!r} is an input of the model(s) "
                                 f"{', '.join(takers)}, not of this one (--model)")
            raise InputError(f"--columns: {unknown[0]!r} is not a column this command reads"
                             f"{suggest(unknown[0], sorted(known | set(text_names)))}; it reads "
                             f"{', '.join(c.name for c in required + optional)} and the text "
                             f"columns {', '.join(text_names)}")
        for c in required + optional:
            if c.name not in mapping and c.name in names:
                mapping[c.name] = f"`{c.name}`"
        for c in required:
            if c.name not in mapping:
                raise InputError(f"{path}: missing column {c.name!r} ({c.meaning}); columns "
                                 f"found: {', '.join(names)}; or map it, e.g. --columns "
                                 f"'{c.name}=...'")
        table = read_table(path, mapping, text=list(dict.fromkeys(renamed.values())),
                           budget=budget, drop_bad=drop_bad)
        for c in required + optional:
            if c.name not in table.values:
                continue
            v = table.values[c.name]
            bad = ~c.valid(v)
            if bad.any():
                i = int(np.argmax(bad))
                how = "" if mapping[c.name] == f"`{c.name}`" else f" = {mapping[c.name]}"
                raise InputError(f"{path}, row {int(table.rows[i])}: {c.name}{how} "
                                 f"({c.meaning}) {c.requirement}, got {v[i]:.6g}")
        if table.dropped:
            self.notes.append(f"dropped {table.dropped} of {table.dropped + len(table)} rows "
                              "with an empty or non-numeric cell the mapping needs (--drop-bad)")
        self.lr_column = lr_column
        self.use_d = use_d
        self.path = path
        self.header = tuple(header)
        self.rows = table.rows.tolist()
        self.values = table.values
        self.texts = {t: table.texts[source] for t, source in renamed.items()}
        self.inputs = tuple(name for name in inputs if name in self.values)
        self.schedule_column = schedule_column
        self.budget = table.budget

    def __len__(self) -> int:
        return len(self.rows)

    def unfiltered(self) -> np.ndarray:
        """Rows whose `filtered` column (when present) is not true."""
        if "filtered" not in self.texts:
            return np.ones(len(self), bool)
        return ~np.isin(np.char.lower(self.texts["filtered"]), list(_TRUE))

    def train_mask(self) -> np.ndarray:
        """Rows to fit: unfiltered, and split == train when the column exists."""
        keep = self.unfiltered()
        if "split" in self.texts:
            keep &= np.char.lower(self.texts["split"]) == "train"
        return keep

    def tokens(self, seq_len: float) -> np.ndarray:
        """Tokens of every row: `D`, or B K seq_len."""
        if self.use_d:
            return self.values["D"]
        return self.values["B"] * self.values["K"] * seq_len

    def runs(self, mask: np.ndarray, seq_len: float, spec: Any = None, warmup: float = 0.0,
             peak: float | None = None):
        """The rows of `mask` as [`nqs_engine.Runs`][], under the schedule `spec` (a
        ScheduleSpec for every row), the per-row SPECs, or the logged learning rates."""
        from .._runs import Runs

        v = {k: a[mask] for k, a in self.values.items()}
        if self.lr_column is None and "step" in v and "K" in v:
            self._check_steps(mask)
        run = self.texts["run"][mask] if "run" in self.texts else None
        inputs = {name: v[name] for name in self.inputs}
        try:
            if self.lr_column is not None:
                return Runs.from_curves(v["N"], v["step"], v[self.lr_column], v.get("loss"),
                                        run=run, B=v.get("B", 1.0), K=v.get("K"),
                                        warmup=warmup, peak=peak, seq_len=seq_len,
                                        inputs=inputs)
            if self.use_d:
                return Runs.from_arrays(v["N"], D=v["D"], loss=v.get("loss"), run=run,
                                        seq_len=seq_len, inputs=inputs)
            if spec is not None or self.schedule_column is not None:
                texts = None if spec is not None else self.texts[self.schedule_column][mask]
                schedules = row_schedules(spec, texts, v["K"], v["B"], self.path)
                return Runs.from_arrays(v["N"], loss=v.get("loss"), schedule=schedules,
                                        step=v.get("step"), run=run, seq_len=seq_len,
                                        inputs=inputs)
            return Runs.from_arrays(v["N"], v["B"], v["K"], v.get("loss"), step=v.get("step"),
                                    run=run, seq_len=seq_len, inputs=inputs)
        except ValueError as exc:
            raise InputError(f"{self.path}: {exc}") from None

    def _check_steps(self, mask: np.ndarray) -> None:
        """Refuse (naming the row, 1-based, and the run's K) a checkpoint past its run's end."""
        step, K = self.values["step"], self.values["K"]
        over = np.flatnonzero(mask & (step > K * (1 + 1e-12)))
        if over.size:
            i = int(over[0])
            row = self.rows[i]
            number = i + 1 if isinstance(row, list) else int(row)
            raise InputError(f"{self.path}, row {number}: step = {step[i]:g} is past the end "
                             f"of its run (K = {K[i]:g} steps); column 'step' must lie in "
                             f"[0, K]")

    def peak(self, spec: Any, model) -> None:
        """Refuse (one line) a schedule whose largest multiplier the model cannot run."""
        if self.schedule_column is not None:
            from .._schedule import parse_schedule

            for text in dict.fromkeys(self.texts[self.schedule_column].tolist()):
                try:
                    found = parse_schedule(text)
                except ValueError as exc:
                    raise InputError(f"{self.path}, column {self.schedule_column!r}: {exc}") from None
                check_peak(model, found.peak, f"{self.path}: schedule {text!r}")
        elif spec is not None:
            check_peak(model, spec.peak, spec.text)


def row_schedules(spec, texts, K: np.ndarray, B: np.ndarray, path: str):
    """The schedule of every row: `spec` for all, or the SPEC of each row (padded to the most
    segments), for runs of K steps at base batch B."""
    from .._schedule import Schedule, parse_schedule

    if spec is not None:
        return spec.build(K, B)
    distinct, group = np.unique(texts, return_inverse=True)
    specs = []
    for text in distinct.tolist():
        try:
            specs.append(parse_schedule(text))
        except ValueError as exc:
            raise InputError(f"{path}: {exc}") from None
    S = max(s.num_segments for s in specs)
    fields = np.empty((3, K.size, S))
    for g, found in enumerate(specs):  # one vectorised build per distinct SPEC
        rows = np.flatnonzero(group == g)
        built = found.build(K[rows], B[rows], S)
        for j, name in enumerate(("lr", "batch", "steps")):
            fields[j, rows] = np.asarray(getattr(built, name))
    return Schedule(*fields)


__all__ = [
    "EXIT_INPUT", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "InputError", "Loaded", "PROG",
    "LOG_HELP", "Progress", "RunsTable", "add_curve_options", "add_log_options", "add_params_options", "add_progress_option",
    "add_schedule_options", "check_out", "check_peak", "duration", "row_schedules",
    "schedule_spec",
    "error", "load_chinchilla", "load_model", "nonneg", "note", "positive", "positive_int",
    "positive_list", "progress_enabled", "require_nqs", "runtime_message",
]
