"""The `nqs-engine` command line: a thin shell over the library.

Each subcommand is a [`_Command`][]: a name, its help texts, a function that
adds its arguments to an `argparse` parser and a function that runs it. Add a
subcommand by writing those two functions and appending a `_Command` to
`COMMANDS`; [`main`][] builds the parser, turns on float64, runs the command and
turns every expected failure into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO

import equinox as eqx
import jax
import numpy as np

from ._io import (
    RUN_COLUMNS,
    SPEC_HELP,
    Chunk,
    Column,
    CsvColumns,
    InputError,
    ScheduleSpec,
    atomic_output,
    load_params,
    load_schedule_file,
    parse_schedule,
)
from ._cli_fit import (
    _EVALUATE_DESCRIPTION,
    _FIT_DESCRIPTION,
    _FIT_EPILOG,
    add_evaluate_arguments,
    add_fit_arguments,
    load_any_params,
    run_evaluate,
    run_fit,
    run_predict_chinchilla,
)
from ._cli_demo import DEMO_DESCRIPTION, add_demo_arguments, run_demo
from ._cli_plan import PLAN_DESCRIPTION, PLAN_EPILOG, add_plan_arguments, run_plan
from ._cli_plot import PLOT_DESCRIPTION, PLOT_EPILOG, add_plot_arguments, run_plot
from ._cli_sweep import SWEEP_DESCRIPTION, SWEEP_EPILOG, add_sweep_arguments, run_sweep
from ._evaluator import check_rule
from ._params import DEFAULT_LR, PRESETS, NQSParams
from ._quadrature import SumRule
from ._risk import risk, schedule_risk
from ._schedule import Schedule
from ._trajectory import trajectory, weight_norm_risk

PROG = "nqs-engine"

#: Exit statuses.
EXIT_OK, EXIT_INTERNAL, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

#: Columns `predict` appends, in order, and the `RiskBreakdown` field each holds.
PREDICT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("prediction", "total"),
    ("irreducible", "irreducible"),
    ("approximation", "approximation"),
    ("bias", "bias"),
    ("variance", "variance"),
)

# Chunks are padded up to a multiple of this (capped at --chunk-rows), so that
# small files share one compiled shape.
_PAD_MULTIPLE = 64


# ---------------------------------------------------------------------------
# Terminal output
# ---------------------------------------------------------------------------


def _error(message: str, stream: IO[str] | None = None) -> None:
    stream = sys.stderr if stream is None else stream
    print(f"{PROG}: error: {message}", file=stream, flush=True)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class _Progress:
    """A one-line progress bar on stderr, redrawn at most every 0.2 s.

    Does nothing when disabled; always ends its line on [`_Progress.close`][]
    so that a following message starts on a fresh line.
    """

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
        eta = _duration(elapsed * (1 - fraction) / fraction) if fraction > 0 else "?"
        line = f"{self.label} [{bar}] {100 * fraction:5.1f}% {detail} ETA {eta}"
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the bar's line (if one was drawn)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _progress_enabled(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


# ---------------------------------------------------------------------------
# Options shared by several commands
# ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_params_options(parser: argparse.ArgumentParser) -> None:
    presets = ", ".join(sorted(PRESETS))
    parser.add_argument(
        "--params",
        required=True,
        metavar="PARAMS",
        help=f"parameters: a JSON file (format below) or a preset name ({presets})",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=None,
        metavar="LR",
        help=f"peak step size gamma0; overrides 'lr' in PARAMS (default: PARAMS' lr, "
        f"else {DEFAULT_LR})",
    )


def _add_progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on stderr (it is shown only when stderr is a terminal); "
        "the one-line summary at the end is still printed",
    )


def _resolve_params(args: argparse.Namespace) -> tuple[NQSParams, float]:
    """Load `--params`, apply `--lr`, and check the domain eagerly (InputError if bad)."""
    params, file_lr, source = load_params(args.params)
    if args.lr is not None:
        lr, where = args.lr, f"{source} with --lr {args.lr:g}"
    else:
        lr, where = (DEFAULT_LR if file_lr is None else file_lr), source
    # check_rule also refuses (as risk() would, inside jit) a q so small that the kink
    # at lr * lambda_n = 1 falls in the quadrature tail of the default SumRule.
    try:
        check_rule(params, lr, SumRule())
    except ValueError as exc:
        raise InputError(f"{where}: {exc}") from None
    return params, lr


def _runtime_message(exc: BaseException) -> str:
    """The message of an `eqx.error_if` failure, without JAX's debugging advice."""
    text = str(exc)
    for line in text.splitlines():
        if "EquinoxRuntimeError:" in line:
            return line.split("EquinoxRuntimeError:", 1)[1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# ---------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------

_PREDICT_DESCRIPTION = f"""\
Predict the loss of each training run listed in RUNS.csv with the Noisy
Quadratic System (NQS) model, and write the prediction and its four terms
to PRED.csv.

RUNS.csv (input)
  A CSV file (UTF-8, comma-separated) with a header row. Required columns,
  in any order:
    N   model size: non-embedding parameter count (directions), >= 1
    B   batch size, sequences per step, > 0 (with a schedule: the base
        batch size that batch multipliers scale)
    K   number of optimizer steps, >= 0
  Values are decimal numbers (1e9, 256, 2000.5); non-integers are allowed.
  Optional column, read only with --variant weight-norm:
    init_sq_norm   E||w0||^2, the expected squared initial weight norm, > 0
                   (default N * 0.02^2)
  Any other columns are copied to PRED.csv unchanged and in order. Blank
  lines are skipped. In messages, row 1 is the first line after the header.

PARAMS (--params)
  A preset name ({", ".join(sorted(PRESETS))}), or a JSON file holding one
  object with the seven NQS parameters and, optionally, the step size:
    {{"p": 1.113, "q": 0.5842, "P": 3.393, "Q": 0.8853,
     "e_irr": 0.3545, "R": 8.41, "r": 2.583, "lr": 1.999}}
  Domain: p > 1, q > 0, P > 0, Q > 0, R > 0, e_irr >= 0, r finite. "lr" is
  the peak step size gamma0 (default {DEFAULT_LR}); --lr overrides it; lr * Q
  (times the schedule's largest multiplier) must be < 2, else SGD diverges.
  Other keys are ignored. A preset name wins over a file of the same name
  (write ./NAME for the file).

Schedules (at most one of --schedule, --schedule-column, --schedule-file)
  Without one, every run is constant: K steps at step size lr and batch B.
  --schedule SPEC applies one schedule to every run (scaled to its K and B);
  --schedule-column NAME reads a SPEC per row from column NAME of RUNS.csv
  (rows may differ; each chunk is computed in one call, shorter schedules
  padded with empty segments); --schedule-file FILE.json gives segments:
    {{"lr": [1, 0.3, 0.1], "batch": [1, 1, 2], "steps": [0.5, 0.3, 0.2]}}
  one entry per segment: "lr" multipliers of the peak step size (>= 0),
  "batch" multipliers of each row's B (> 0; optional, default 1), "steps"
  relative lengths (>= 0): segment i of a run of K steps ends at step
  floor(K * (steps[0] + ... + steps[i]) / sum(steps)). Steps that add up to
  a run's K give that run exactly those segments; fractions fit any K.

Schedule SPECs (--schedule, --schedule-column)
{SPEC_HELP}
Variants (--variant)
  plain        the NQS risk of the schedule (default)
  weight-norm  the weight-norm variant: growth of the weight norm lowers the
               step size in stairs of max(K/100, min(1000, K/10)) steps, to
               min(previous, scheduled, lr * s / (s + W2)), W2 the expected
               squared weight growth and s = init_sq_norm
  The prediction column holds the chosen variant's loss; the four terms
  are that variant's too.

PRED.csv (output)
  The input columns, then
    prediction     the predicted loss L = irreducible + approximation
                   + bias + variance
    irreducible    e_irr
    approximation  (1/2) P zeta(p, N+1): directions n > N the model lacks
    bias           initial excess risk not yet optimised away after K steps
    variance       excess risk due to gradient noise at batch size B
  Floats are written in full precision (the shortest text that reads back
  to the same float64).

Behaviour
  The whole of RUNS.csv, PARAMS and the schedules are checked before
  anything is computed; RUNS.csv is then streamed in chunks of --chunk-rows
  rows, so memory stays bounded however long it is. Computation is in
  float64. PRED.csv is written to a temporary file beside it and moved into
  place at the end: it appears complete or not at all, and after any error
  (or Ctrl-C) an existing PRED.csv is left untouched. A one-line summary
  goes to stderr.
"""

_PREDICT_EPILOG = f"""\
examples:
  {PROG} predict runs.csv --params pythia-owt2 --out pred.csv
  {PROG} predict runs.csv --params fit.json --lr 1.5 --out pred.csv --no-progress
  {PROG} predict runs.csv --params pythia-owt2 --out pred.csv \\
      --schedule cosine:pieces=32,warmup=0.01,final=0.1 --variant weight-norm
  {PROG} predict runs.csv --params pythia-owt2 --out pred.csv --schedule-column sched
"""

#: The optional RUNS.csv column of --variant weight-norm.
INIT_SQ_NORM = Column("init_sq_norm", lambda v: v > 0, "must be > 0", "E||w0||^2")

VARIANTS = ("plain", "weight-norm")

# Rows x segments per chunk array stays below this (bounds memory for long schedules).
_MAX_CHUNK_CELLS = 2**23


def _add_schedule_options(parser: argparse.ArgumentParser, column: bool) -> None:
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


def _add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv", help="runs to predict: columns N, B, K, ...")
    _add_params_options(parser)
    parser.add_argument(
        "--out", required=True, metavar="PRED.csv", help="output CSV (written atomically)"
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="plain",
        help="plain NQS risk, or the weight-norm variant (default: plain)",
    )
    _add_schedule_options(parser, column=True)
    parser.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=200_000,
        metavar="ROWS",
        help="rows read, computed and written at a time; bounds memory (default: 200000)",
    )
    _add_progress_option(parser)


def _chunk_size(n_rows: int, chunk_rows: int, num_segments: int = 1) -> int:
    """Rows per computation: every chunk is padded to this size (one compilation)."""
    padded = -(-n_rows // _PAD_MULTIPLE) * _PAD_MULTIPLE
    cap = max(_PAD_MULTIPLE, _MAX_CHUNK_CELLS // max(1, num_segments))
    return max(1, min(chunk_rows, padded, cap))


def _check_peak(params: NQSParams, lr: float, peak: float, where: str) -> None:
    """Refuse a schedule whose largest multiplier `peak` makes lr * peak diverge (InputError)."""
    if peak <= 1:
        return  # lr itself was checked by _resolve_params
    gamma = lr * peak
    Q, q = float(params.Q), float(params.q)
    if gamma * Q >= 2:
        raise InputError(
            f"{where}: step size diverges: the schedule's largest multiplier {peak:g} gives "
            f"lr * {peak:g} * Q = {gamma * Q:g} >= 2; lower lr or the multiplier"
        )
    rule = SumRule()
    if rule.kink_ratio(gamma, Q, q) >= 1:
        raise InputError(
            f"{where}: parameter q = {q:g} is too small for the engine's quadrature rule at "
            f"the schedule's largest step size lr * {peak:g}; raise q, or lower lr or Q"
        )


def _schedule_spec(args: argparse.Namespace) -> ScheduleSpec | None:
    """The schedule of --schedule or --schedule-file (None for neither); InputError if bad."""
    if args.schedule is not None:
        try:
            return parse_schedule(args.schedule)
        except InputError as exc:
            raise InputError(f"--schedule: {exc}") from None
    if args.schedule_file is not None:
        return load_schedule_file(args.schedule_file)
    return None


@dataclasses.dataclass
class _Predictor:
    """What `predict` computes for each chunk: the model, the variant and the schedules."""

    params: NQSParams
    lr: float
    variant: str
    path: str
    schedule: ScheduleSpec | None = None  # one schedule for every row
    column: str | None = None  # or a SPEC per row, from this column
    num_segments: int = 1  # with `column`: the most segments of any row's schedule

    def check(self, chunk: Chunk) -> None:
        """Pass 1 with --schedule-column: parse each distinct SPEC, note the longest."""
        if self.column is None:
            return
        first: dict[str, int] = {}
        for i, text in enumerate(chunk.texts[self.column]):
            first.setdefault(text, i)
        for text, i in first.items():
            where = f"{self.path}, row {chunk.start + i + 1}, column {self.column!r}"
            try:
                spec = parse_schedule(text)
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
            _check_peak(self.params, self.lr, spec.peak, f"{where}: schedule {text!r}")
            self.num_segments = max(self.num_segments, spec.num_segments)

    def schedules(self, chunk: Chunk, K: np.ndarray, B: np.ndarray) -> Schedule | None:
        """The chunk's schedules (rows padded like K and B), or None for constant runs."""
        if self.schedule is not None:
            return self.schedule.build(K, B)
        if self.column is None:
            return None
        m, S = len(chunk), self.num_segments
        texts = np.asarray(chunk.texts[self.column])
        distinct, group = np.unique(texts, return_inverse=True)
        order = np.argsort(group, kind="stable")
        bounds = np.cumsum(np.bincount(group, minlength=distinct.size))[:-1]
        fields = np.empty((3, m, S))
        # One vectorized build per distinct SPEC (not per row), padded to S segments.
        # Its rows are padded to a power of two (>= 64), so that builds share
        # compiled shapes across chunks.
        for text, rows in zip(distinct.tolist(), np.split(order, bounds)):
            n = rows.size
            bucket = min(K.size, max(_PAD_MULTIPLE, 1 << (n - 1).bit_length()))
            take = np.pad(rows, (0, max(0, bucket - n)), mode="edge")
            sched = parse_schedule(text).build(K[take], B[take], S)
            for j, name in enumerate(("lr", "batch", "steps")):
                fields[j, rows] = np.asarray(getattr(sched, name))[:n]
        fields = np.pad(fields, ((0, 0), (0, K.size - m), (0, 0)), mode="edge")
        return Schedule(*fields)

    def __call__(self, chunk: Chunk, size: int) -> np.ndarray:
        """The (rows, 5) table of prediction and terms for one chunk, padded to `size`."""
        m = len(chunk)
        pad = lambda v: np.pad(v, (0, size - m), mode="edge")  # noqa: E731
        N, B, K = (pad(chunk.values[c.name]) for c in RUN_COLUMNS)
        try:
            sched = self.schedules(chunk, K, B)
            if self.variant == "weight-norm":
                init = chunk.values.get(INIT_SQ_NORM.name)
                out = weight_norm_risk(
                    self.params,
                    N,
                    parse_schedule("constant").build(K, B) if sched is None else sched,
                    lr=self.lr,
                    init_sq_norm=None if init is None else pad(init),
                )
            elif sched is None:
                out = risk(self.params, N, B, K, lr=self.lr)
            else:
                out = schedule_risk(self.params, N, sched, lr=self.lr)
        except eqx.EquinoxRuntimeError as exc:
            raise InputError(
                f"{self.path}, rows {chunk.start + 1}-{chunk.start + m}: {_runtime_message(exc)}"
            ) from None
        table = np.stack([np.asarray(getattr(out, field)) for _, field in PREDICT_COLUMNS], axis=1)
        table = table[:m]
        finite = np.isfinite(table).all(axis=1)
        if not finite.all():
            i = int(np.argmin(finite))
            n, b, k = (chunk.values[c.name][i] for c in RUN_COLUMNS)
            raise InputError(
                f"{self.path}, row {chunk.start + i + 1}: the model's prediction is not finite "
                f"(N={n:g}, B={b:g}, K={k:g})"
            )
        return table


def _run_predict(args: argparse.Namespace) -> int:
    """`nqs-engine predict`: check everything, then stream RUNS.csv through the model."""
    started = time.monotonic()
    if os.path.exists(args.params):
        kind, cparams, _, seq_len, _ = load_any_params(args.params)
        if kind == "chinchilla":
            return run_predict_chinchilla(args, cparams, seq_len)
    params, lr = _resolve_params(args)
    spec = _schedule_spec(args)
    if spec is not None:
        where = f"--schedule {spec.text!r}" if args.schedule is not None else spec.text
        _check_peak(params, lr, spec.peak, where)
    weight_norm = args.variant == "weight-norm"
    column = args.schedule_column
    runs = CsvColumns(
        args.runs,
        RUN_COLUMNS,
        reserved=[name for name, _ in PREDICT_COLUMNS],
        optional=[INIT_SQ_NORM] if weight_norm else [],
        text=[] if column is None else [(column.strip(), "schedule SPECs, --schedule-column")],
    )
    if os.path.exists(args.out) and os.path.samefile(args.runs, args.out):
        raise InputError(f"{args.out}: --out must not be the input file")
    predictor = _Predictor(
        params, lr, args.variant, runs.path, schedule=spec,
        column=None if column is None else column.strip(),
        num_segments=1 if spec is None else spec.num_segments,
    )
    show = _progress_enabled(args)
    file_size = max(1, os.path.getsize(runs.path))

    with atomic_output(args.out) as f:
        # Pass 1: check every row (and every row's schedule) before computing anything.
        bar = _Progress("checking  ", show)
        try:
            n_rows = runs.count_rows(
                lambda n: bar.show(runs.chars_read / file_size, f"{n:,} rows"),
                check=predictor.check,
            )
            bar.show(1.0, f"{n_rows:,} rows", force=True)
        finally:
            bar.close()

        # Pass 2: compute chunk by chunk, appending to the temporary output.
        size = _chunk_size(n_rows, args.chunk_rows, predictor.num_segments)
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*runs.header, *(name for name, _ in PREDICT_COLUMNS)])
        bar = _Progress("predicting", show)
        done = 0
        try:
            for chunk in runs.chunks(size):
                table = predictor(chunk, size)
                # csv writes Python floats with repr: the shortest round-tripping text.
                writer.writerows(row + values for row, values in zip(chunk.rows, table.tolist()))
                done += len(chunk)
                rate = done / max(time.monotonic() - bar.start, 1e-9)
                detail = f"{done:,}/{n_rows:,} rows {rate:,.0f} rows/s"
                bar.show(done / n_rows, detail, force=done == n_rows)
        finally:
            bar.close()
        if done != n_rows:
            raise InputError(
                f"{runs.path}: changed while being read ({n_rows} rows when checked, "
                f"{done} when computed)"
            )

    elapsed = time.monotonic() - started
    rate = n_rows / max(elapsed, 1e-9)
    print(
        f"{PROG}: predicted {n_rows:,} row(s) in {elapsed:.1f} s "
        f"({rate:,.0f} rows/s) -> {args.out}",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_OK


# ---------------------------------------------------------------------------
# trajectory
# ---------------------------------------------------------------------------

_TRAJECTORY_DESCRIPTION = f"""\
Write the loss curve of one training run, predicted by the NQS model: the
loss and its four terms after each checkpoint's number of steps, computed
in one pass over the schedule.

The run: model size --N (>= 1), base batch size --B (> 0) and --K steps
(> 0), under a schedule: --schedule SPEC (below) or --schedule-file
FILE.json (default: constant). PARAMS, --lr and the schedule file are as
for predict: see '{PROG} predict --help'.

Checkpoints: --checkpoints M (default 200) evenly spaced ones, at steps
i * K / M for i = 1..M (fractional when M does not divide K), or --at with
a comma-separated list of step counts in [0, K], written in the order given.

CURVE.csv (output, written atomically like predict's)
    step           the checkpoint (steps taken)
    loss           the predicted loss after that many steps
    irreducible, approximation, bias, variance
                   its four terms, as in predict

Schedule SPECs (--schedule)
{SPEC_HELP}"""

_TRAJECTORY_EPILOG = f"""\
examples:
  {PROG} trajectory --params pythia-owt2 --N 1e8 --B 256 --K 20000 --out curve.csv
  {PROG} trajectory --params fit.json --N 1e9 --B 512 --K 50000 \\
      --schedule cosine:pieces=64,warmup=0.01 --at 1000,10000,50000 --out curve.csv
"""

TRAJECTORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("loss", "total"),
    ("irreducible", "irreducible"),
    ("approximation", "approximation"),
    ("bias", "bias"),
    ("variance", "variance"),
)


def _add_trajectory_arguments(parser: argparse.ArgumentParser) -> None:
    _add_params_options(parser)
    for flag, meaning in (("N", "model size (directions), >= 1"),
                          ("B", "base batch size, > 0"),
                          ("K", "number of steps of the run, > 0")):
        parser.add_argument(f"--{flag}", required=True, type=float, metavar=flag, help=meaning)
    _add_schedule_options(parser, column=False)
    points = parser.add_mutually_exclusive_group()
    points.add_argument(
        "--checkpoints", type=_positive_int, default=200, metavar="M",
        help="number of evenly spaced checkpoints, i * K / M for i = 1..M (default: 200)",
    )
    points.add_argument(
        "--at", metavar="STEPS", help="comma-separated checkpoints in [0, K], e.g. 100,1000,1e4"
    )
    parser.add_argument(
        "--out", required=True, metavar="CURVE.csv", help="output CSV (written atomically)"
    )


def _checkpoints(args: argparse.Namespace) -> np.ndarray:
    K = args.K
    if args.at is None:
        return K * np.arange(1, args.checkpoints + 1, dtype=np.float64) / args.checkpoints
    steps = []
    for text in args.at.split(","):
        text = text.strip()
        try:
            value = float(text)
        except ValueError:
            raise InputError(
                f"--at: {text!r} is not a number (expected steps like 100,1000)"
            ) from None
        if not (np.isfinite(value) and 0 <= value <= K):
            raise InputError(f"--at: step {text!r} is outside [0, K] = [0, {K:g}]")
        steps.append(value)
    return np.array(steps)


def _step_text(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _run_trajectory(args: argparse.Namespace) -> int:
    """`nqs-engine trajectory`: the loss curve of one run, written as CSV."""
    started = time.monotonic()
    params, lr = _resolve_params(args)
    for flag, ok, rule in (("N", args.N >= 1, ">= 1"), ("B", args.B > 0, "> 0"),
                           ("K", args.K > 0, "> 0")):
        value = getattr(args, flag)
        if not (np.isfinite(value) and ok):
            raise InputError(f"--{flag} must be a finite number {rule}, got {value:g}")
    spec = _schedule_spec(args) or parse_schedule("constant")
    where = f"--schedule {spec.text!r}" if args.schedule is not None else spec.text
    _check_peak(params, lr, spec.peak, where)
    steps = _checkpoints(args)
    with atomic_output(args.out) as f:  # refuses a bad --out before any work
        sched = spec.build(args.K, args.B)
        try:
            out = trajectory(params, args.N, sched, steps, lr=lr)
        except eqx.EquinoxRuntimeError as exc:
            raise InputError(_runtime_message(exc)) from None
        table = np.stack([np.asarray(getattr(out, fld)) for _, fld in TRAJECTORY_COLUMNS], axis=1)
        finite = np.isfinite(table).all(axis=1)
        if not finite.all():
            i = int(np.argmin(finite))
            raise InputError(f"the predicted loss at step {steps[i]:g} is not finite")
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["step", *(name for name, _ in TRAJECTORY_COLUMNS)])
        writer.writerows(
            [_step_text(k), *row] for k, row in zip(steps.tolist(), table.tolist())
        )
    elapsed = time.monotonic() - started
    print(
        f"{PROG}: wrote {steps.size:,} checkpoint(s) of N={args.N:g}, B={args.B:g}, "
        f"K={args.K:g} in {elapsed:.1f} s -> {args.out}",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_OK


# ---------------------------------------------------------------------------
# The command table and the entry point
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Command:
    """A subcommand: its name, help texts, argument definitions and implementation.

    `run(args)` returns the exit status and raises `InputError` for problems
    with the user's input (reported by [`main`][] as one line, status 2).
    """

    name: str
    summary: str
    description: str
    epilog: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: The subcommands, in the order `nqs-engine --help` lists them.
COMMANDS: list[_Command] = [
    _Command(
        name="predict",
        summary="predict the loss of each run (N, B, K) in a CSV file",
        description=_PREDICT_DESCRIPTION,
        epilog=_PREDICT_EPILOG,
        add_arguments=_add_predict_arguments,
        run=_run_predict,
    ),
    _Command(
        name="trajectory",
        summary="write the predicted loss curve of one run (N, B, K, schedule)",
        description=_TRAJECTORY_DESCRIPTION,
        epilog=_TRAJECTORY_EPILOG,
        add_arguments=_add_trajectory_arguments,
        run=_run_trajectory,
    ),
    _Command(
        name="fit",
        summary="fit NQS (or Chinchilla) parameters to the runs in a CSV file",
        description=_FIT_DESCRIPTION,
        epilog=_FIT_EPILOG,
        add_arguments=add_fit_arguments,
        run=run_fit,
    ),
    _Command(
        name="evaluate",
        summary="print the accuracy of fitted parameters per split and type",
        description=_EVALUATE_DESCRIPTION,
        epilog="",
        add_arguments=add_evaluate_arguments,
        run=run_evaluate,
    ),
    _Command(
        name="plan",
        summary="plan the best N, B, K (and schedule) for a compute budget under limits",
        description=PLAN_DESCRIPTION,
        epilog=PLAN_EPILOG,
        add_arguments=add_plan_arguments,
        run=run_plan,
    ),
    _Command(
        name="sweep",
        summary="write the predicted loss over a grid of N x B x K (or compute), "
        "sharded over all local devices",
        description=SWEEP_DESCRIPTION,
        epilog=SWEEP_EPILOG,
        add_arguments=add_sweep_arguments,
        run=run_sweep,
    ),
    _Command(
        name="plot",
        summary="draw the model against a runs CSV: fits, isoflop/isotoken curves, "
        "terms, schedules, frontier",
        description=PLOT_DESCRIPTION,
        epilog=PLOT_EPILOG,
        add_arguments=add_plot_arguments,
        run=run_plot,
    ),
    _Command(
        name="demo",
        summary="predict and plan on the built-in pythia-owt2 preset (no data needed)",
        description=DEMO_DESCRIPTION,
        epilog="",
        add_arguments=add_demo_arguments,
        run=run_demo,
    ),
]

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
  130  interrupted (Ctrl-C); no output file

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

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog[len(PROG):].strip()
        hint = f"{PROG} {where} --help" if where else f"{PROG} --help"
        _error(f"{where + ': ' if where else ''}{message} (see '{hint}')")
        raise SystemExit(EXIT_INPUT)


def build_parser() -> argparse.ArgumentParser:
    """The `argparse` parser of `nqs-engine` and all its subcommands."""
    from . import __version__

    parser = _Parser(
        prog=PROG,
        description=_MAIN_DESCRIPTION,
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", required=True,
        parser_class=_Parser,
    )
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name,
            help=command.summary,
            description=command.description,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
        parser.commands[command.name] = sub
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
    path = _cache_dir()
    if path is None:
        return lambda: None
    previous = jax.config.jax_compilation_cache_dir
    if previous:
        return lambda: None
    jax.config.update("jax_compilation_cache_dir", path)
    return lambda: jax.config.update("jax_compilation_cache_dir", previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `nqs-engine` with the arguments `argv` (default: `sys.argv[1:]`).

    Returns the exit status: 0 on success, 2 for bad input or usage (one line
    on stderr starting `nqs-engine: error:`), 1 for an internal error, 130 if
    interrupted. Computation runs in float64: `jax_enable_x64` is switched on
    for the duration of the call and restored afterwards.

    **Example:**

    >>> from nqs_engine._cli import main
    >>> main(["predict", "missing.csv", "--params", "pythia-owt2", "--out", "x.csv"])
    2
    """
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_INPUT
    previous_x64 = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    restore_cache = _enable_compilation_cache()
    try:
        return args.run(args)
    except InputError as exc:
        _error(str(exc))
        return EXIT_INPUT
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no output written", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc}")
        return EXIT_INPUT
    except Exception as exc:
        if os.environ.get("NQS_ENGINE_DEBUG"):
            raise
        message = " ".join(str(exc).split())
        _error(f"internal error: {type(exc).__name__}: {message}")
        return EXIT_INTERNAL
    finally:
        jax.config.update("jax_enable_x64", previous_x64)
        restore_cache()


if __name__ == "__main__":
    sys.exit(main())
