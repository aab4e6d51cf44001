"""`nqs-engine predict`: stream a runs CSV through a loss model."""

from __future__ import annotations

import argparse
import csv
import os
import time

import numpy as np

from .._columnar import ColumnarRuns, ColumnarWriter, table_format
from .._io import Column, InputError, atomic_output
from .._presets import DEFAULT_LR, PRESETS
from .._schedule import SPEC_HELP
from ._common import (
    EXIT_OK,
    finished,
    PROG,
    Progress,
    RunsTable,
    add_curve_options,
    add_params_options,
    add_progress_option,
    add_schedule_options,
    check_peak,
    load_model,
    positive_int,
    progress_enabled,
    runtime_message,
    schedule_spec,
)

DESCRIPTION = f"""\
Predict the loss of each training run listed in RUNS.csv with a loss model
(the Noisy Quadratic System, NQS, by default), and write the prediction and
its terms to PRED.csv.

RUNS.csv (input)
  A CSV file (UTF-8, comma-separated) with a header row. Required columns,
  in any order:
    N   model size: non-embedding parameter count (directions), >= 1
    B   batch size, sequences per step, > 0 (with a schedule: the base
        batch size that batch multipliers scale)
    K   number of optimizer steps, >= 0
  (For Chinchilla parameters a column D, tokens, may replace B and K.)
  Values are decimal numbers (1e9, 256, 2000.5); non-integers are allowed.
  Optional column, read only with --variant weight-norm:
    init_sq_norm   E||w0||^2, the expected squared initial weight norm, > 0
                   (default N * 0.02^2)
  Any other columns are copied to PRED.csv unchanged and in order. Blank
  lines are skipped. In messages, row 1 is the first line after the header.

PARAMS (--params)
  A preset name ({", ".join(sorted(PRESETS))}), or a JSON file from '{PROG} fit'
  or written by hand, holding one object with the seven NQS parameters and,
  optionally, the step size:
    {{"p": 1.113, "q": 0.5842, "P": 3.393, "Q": 0.8853,
     "e_irr": 0.3545, "R": 8.41, "r": 2.583, "lr": 1.999}}
  Domain: p > 1, q > 0, P > 0, Q > 0, R > 0, e_irr >= 0, r finite. "lr" is
  the peak step size gamma0 (default {DEFAULT_LR}); --lr overrides it; lr * Q
  (times the schedule's largest multiplier) must be < 2, else SGD diverges.
  A key "model" names another loss model ("chinchilla": E, A, B, alpha,
  beta and seq_len); an unknown key is an error that names it. A preset name
  wins over a file of the same name (write ./NAME for the file).

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
Variants (--variant, NQS parameters only)
  plain        the NQS risk of the schedule (default)
  weight-norm  the weight-norm variant: growth of the weight norm lowers the
               step size in stairs of max(K/100, min(1000, K/10)) steps, to
               min(previous, scheduled, lr * s / (s + W2)), W2 the expected
               squared weight growth and s = init_sq_norm
  The prediction column holds the chosen variant's loss; the four terms
  are that variant's too.

PRED.csv (output)
  The input columns, then
    prediction     the predicted loss: the sum of the model's terms
  and one column per term; for the NQS
    irreducible    e_irr
    approximation  (1/2) P zeta(p, N+1): directions n > N the model lacks
    bias           initial excess risk not yet optimised away after K steps
    variance       excess risk due to gradient noise at batch size B
  and for Chinchilla E, param_term (A / N^alpha), data_term (B / D^beta).
  Floats are written in full precision (the shortest text that reads back
  to the same float64).

Loss curves (--lr-column NAME)
  The rows are checkpoints of runs logged with their learning rate, as real
  training logs are: columns N, step, run and the rate in column NAME (B
  and K optional, loss ignored); each run's schedule is the logged rate
  interpolated linearly between its rows, after a linear warmup from 0 over
  --warmup steps, divided by --peak-lr (default: the run's largest rate),
  as for '{PROG} fit --lr-column'. The whole table is read at once and each
  run's checkpoints are predicted in one pass over its schedule; PRED.csv
  gets the input columns and `prediction` (no term columns in this mode).
  This is how a fit to some schedules predicts the curves of others:
    {PROG} fit train.csv --model nqs-sizes --lr-column lr --warmup 2160 --out fit.json
    {PROG} predict all.csv --params fit.json --lr-column lr --warmup 2160 --out pred.csv

Behaviour
  The whole of RUNS.csv, PARAMS and the schedules are checked before
  anything is computed; RUNS.csv is then streamed in chunks of --chunk-rows
  rows, so memory stays bounded however long it is. Computation is in
  float64. PRED.csv is written to a temporary file beside it and moved into
  place at the end: it appears complete or not at all, and after any error
  (or Ctrl-C) an existing PRED.csv is left untouched. A one-line summary
  goes to stderr.
"""

EPILOG = f"""\
examples:
  {PROG} predict runs.csv --params pythia-owt2 --out pred.csv
  {PROG} predict runs.csv --params fit.json --lr 1.5 --out pred.csv --no-progress
  {PROG} predict runs.csv --params pythia-owt2 --out pred.csv \\
      --schedule cosine:pieces=32,warmup=0.01,final=0.1 --variant weight-norm
  {PROG} predict runs.csv --params pythia-owt2 --out pred.csv --schedule-column sched
  {PROG} predict curves.csv --params fit.json --lr-column lr --warmup 2160 --out pred.csv
"""


#: The input columns of a RUNS.csv: model size, batch size, steps (or tokens).
RUN_COLUMNS = (
    Column("N", lambda v: v >= 1, "must be >= 1", "model size"),
    Column("B", lambda v: v > 0, "must be > 0", "batch size"),
    Column("K", lambda v: v >= 0, "must be >= 0", "number of steps"),
)
D_COLUMN = Column("D", lambda v: v > 0, "must be > 0", "tokens")

#: Variants of the NQS (--variant).
VARIANTS = ("plain", "weight-norm")

# Chunks are padded up to a multiple of this (capped at --chunk-rows), so that
# small files share one compiled shape.
PAD_MULTIPLE = 64

# Rows x segments per chunk array stays below this (bounds memory for long schedules).
MAX_CHUNK_CELLS = 2**23


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv", help="runs to predict: columns N, B, K, ...")
    add_params_options(parser)
    parser.add_argument(
        "--out", required=True, metavar="PRED.csv", help="output CSV (written atomically)"
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default=None,
        help="NQS predictor: the plain risk or the weight-norm variant (default: PARAMS' "
        "variant, else plain)",
    )
    add_schedule_options(parser, column=True)
    add_curve_options(parser)
    parser.add_argument(
        "--prediction-interval", action="store_true",
        help="with a PARAMS.json from 'fit --bootstrap': lower/upper bound a run's measured "
        "loss (the refits' predictions times resampled residuals), not the model's prediction",
    )
    parser.add_argument(
        "--level", type=float, default=None,
        help="interval level with a bootstrapped PARAMS.json (default: the fit's --level)",
    )
    parser.add_argument(
        "--chunk-rows",
        type=positive_int,
        default=200_000,
        metavar="ROWS",
        help="rows read, computed and written at a time; bounds memory (default: 200000)",
    )
    add_progress_option(parser)


def chunk_size(n_rows: int, chunk_rows: int, num_segments: int = 1) -> int:
    """Rows per computation: every chunk is padded to this size (one compilation)."""
    padded = -(-n_rows // PAD_MULTIPLE) * PAD_MULTIPLE
    cap = max(PAD_MULTIPLE, MAX_CHUNK_CELLS // max(1, num_segments))
    return max(1, min(chunk_rows, padded, cap))


class Predictor:
    """What `predict` computes for each chunk: the model and the schedules."""

    def __init__(self, model, path: str, schedule=None, column: str | None = None,
                 num_segments: int = 1, use_d: bool = False, boot=None, seq_len: float = 128.0,
                 level: float = 0.9, prediction: bool = False):
        self.model = model
        self.boot = boot  # a BootstrapResult: lower and upper columns
        self.seq_len = seq_len
        self.level = level
        self.prediction = prediction
        self.path = path
        self.schedule = schedule  # one schedule for every row
        self.column = column  # or a SPEC per row, from this column
        self.num_segments = num_segments  # with `column`: the most segments of any row's schedule
        self.use_d = use_d

    def check(self, chunk) -> None:
        """Pass 1 with --schedule-column: parse each distinct SPEC, note the longest."""
        from .._schedule import parse_schedule

        if self.column is None:
            return
        first: dict[str, int] = {}
        for i, text in enumerate(chunk.texts[self.column]):
            first.setdefault(text, i)
        for text, i in first.items():
            where = f"{self.path}, row {chunk.start + i + 1}, column {self.column!r}"
            try:
                spec = parse_schedule(text)
            except ValueError as exc:
                raise InputError(f"{where}: {exc}") from None
            check_peak(self.model, spec.peak, f"{where}: schedule {text!r}")
            self.num_segments = max(self.num_segments, spec.num_segments)

    def schedules(self, chunk, K: np.ndarray, B: np.ndarray):
        """The chunk's schedules (rows padded like K and B), or None for constant runs."""
        from .._schedule import Schedule, parse_schedule

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
            bucket = min(K.size, max(PAD_MULTIPLE, 1 << (n - 1).bit_length()))
            take = np.pad(rows, (0, max(0, bucket - n)), mode="edge")
            sched = parse_schedule(text).build(K[take], B[take], S)
            for j, name in enumerate(("lr", "batch", "steps")):
                fields[j, rows] = np.asarray(getattr(sched, name))[:n]
        fields = np.pad(fields, ((0, 0), (0, K.size - m), (0, 0)), mode="edge")
        return Schedule(*fields)

    def __call__(self, chunk, size: int) -> tuple[tuple[str, ...], np.ndarray]:
        """The term names and the (rows, 1 + terms [+ 2]) table of one chunk (computed padded
        to `size` rows; the lower and upper bounds last with a bootstrap)."""
        import equinox as eqx

        m = len(chunk)
        pad = lambda v: np.pad(v, (0, size - m), mode="edge")  # noqa: E731
        N = pad(chunk.values["N"])
        inputs = {name: pad(chunk.values[name]) for name in self.model.inputs
                  if name in chunk.values}
        sched = None
        try:
            if self.use_d:
                out = self.model(N, D=pad(chunk.values["D"]), **inputs)
            else:
                B, K = pad(chunk.values["B"]), pad(chunk.values["K"])
                sched = self.schedules(chunk, K, B)
                if sched is None:
                    out = self.model(N, B, K, **inputs)
                else:
                    out = self.model(N, schedule=sched, **inputs)
        except eqx.EquinoxRuntimeError as exc:
            raise InputError(
                f"{self.path}, rows {chunk.start + 1}-{chunk.start + m}: {runtime_message(exc)}"
            ) from None
        except ValueError as exc:  # inputs the model does not take
            raise InputError(f"{self.path}: {exc}") from None
        terms = out.terms()
        columns = [np.asarray(out.total)] + [np.asarray(v) for v in terms.values()]
        if self.boot is not None:
            columns += list(self.interval(N, inputs, sched, chunk))
        table = np.stack(columns, axis=1)[:m]
        finite = np.isfinite(table).all(axis=1)
        if not finite.all():
            i = int(np.argmin(finite))
            raise InputError(
                f"{self.path}, row {chunk.start + i + 1}: the model's prediction is not finite "
                f"(N={chunk.values['N'][i]:g})"
            )
        return tuple(terms), table

    def interval(self, N, inputs, sched, chunk) -> tuple[np.ndarray, np.ndarray]:
        """The bootstrap interval (lower, upper) of each (padded) row."""
        from .._runs import Runs

        if self.use_d:
            runs = Runs.from_arrays(N, D=chunk_pad(chunk.values["D"], N.size),
                                    seq_len=self.seq_len, inputs=inputs or None)
        elif sched is not None:
            runs = Runs.from_arrays(N, schedule=sched, seq_len=self.seq_len, inputs=inputs or None)
        else:
            runs = Runs.from_arrays(N, chunk_pad(chunk.values["B"], N.size),
                                    chunk_pad(chunk.values["K"], N.size), seq_len=self.seq_len,
                                    inputs=inputs or None)
        try:
            lo, hi = self.boot.predict_interval(runs, self.level, prediction=self.prediction,
                                                seed=chunk.start)
        except ValueError as exc:
            raise InputError(f"{self.path}, rows {chunk.start + 1}-{chunk.start + len(chunk)}: "
                             f"bootstrap interval: {exc}") from None
        return np.asarray(lo, float), np.asarray(hi, float)


def chunk_pad(v: np.ndarray, size: int) -> np.ndarray:
    """`v` padded to `size` rows by repeating its last value."""
    return np.pad(v, (0, size - v.size), mode="edge")


def output_columns(model, intervals: bool = False) -> tuple[str, ...]:
    """The columns `predict` appends for `model`: prediction, the model's terms (and the
    interval's lower and upper bounds)."""
    return ("prediction", *model.terms, *(("lower", "upper") if intervals else ()))


def load_bootstrap(loaded, args: argparse.Namespace):
    """The `BootstrapResult` stored in a PARAMS.json by 'fit --bootstrap' (None if none)."""
    data = loaded.data.get("bootstrap") if loaded.data else None
    if data is None:
        if args.prediction_interval or args.level is not None:
            flag = "--prediction-interval" if args.prediction_interval else "--level"
            raise InputError(f"{flag} needs a PARAMS.json written by 'fit --bootstrap M'; "
                             f"{loaded.source} holds no bootstrap")
        return None
    if args.level is not None and not 0.0 < args.level < 1.0:
        raise InputError(f"--level: must be in (0, 1), got {args.level}")
    if args.variant is not None or args.lr is not None:
        raise InputError("--variant and --lr change the model, but the bootstrap samples of "
                         f"{loaded.source} were fitted without them; drop them")
    from .._fit import BootstrapResult

    try:
        return BootstrapResult.from_dict(loaded.model, data, f"{loaded.source}: bootstrap")
    except ValueError as exc:
        raise InputError(str(exc)) from None


def run_curves(args: argparse.Namespace, loaded) -> int:
    """`predict --lr-column`: the whole table as loss curves, each run in one pass."""
    started = time.monotonic()
    model = loaded.model
    if args.schedule is not None or args.schedule_file is not None or \
            args.schedule_column is not None:
        raise InputError("--lr-column gives each run's schedule already; drop --schedule, "
                         "--schedule-column and --schedule-file")
    if os.path.exists(args.out) and os.path.samefile(args.runs, args.out):
        raise InputError(f"{args.out}: --out must not be the input file")
    table = RunsTable(args.runs, need_loss=False, inputs=model.inputs, lr_column=args.lr_column)
    if "prediction" in {h.strip() for h in table.header}:
        raise InputError(f"{table.path}: has a column 'prediction' already, which the output "
                         "would repeat; rename it")
    with atomic_output(args.out) as f:
        runs = table.runs(np.ones(len(table), bool), loaded.seq_len, warmup=args.warmup,
                          peak=args.peak_lr)
        try:
            pred = np.asarray(model.predict(runs), dtype=float)
        except ValueError as exc:
            raise InputError(f"{table.path}: {exc}") from None
        finite = np.isfinite(pred)
        if not finite.all():
            i = int(np.argmin(finite))
            raise InputError(f"{table.path}, row {i + 1}: the model's prediction is not finite")
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*table.header, "prediction"])
        writer.writerows([*row, value] for row, value in zip(table.rows, pred.tolist()))
    finished(f"predicted {len(table):,} checkpoint(s) of {runs.num_runs} run(s) in "
             f"{time.monotonic() - started:.1f} s -> {args.out}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """`nqs-engine predict`: check everything, then stream RUNS.csv through the model."""
    started = time.monotonic()
    loaded = load_model(args.params, lr=args.lr, variant=args.variant)
    if args.lr_column is not None:
        return run_curves(args, loaded)
    model = loaded.model
    boot = load_bootstrap(loaded, args)
    spec = schedule_spec(args)
    if spec is not None:
        where = f"--schedule {spec.text!r}" if args.schedule is not None else spec.text
        check_peak(model, spec.peak, where)
    column = args.schedule_column
    header = {h.strip() for h in ColumnarRuns(args.runs, (), expected="N, B, K").header}
    use_d = "D" in header and not ({"B", "K"} <= header)
    if use_d and (spec is not None or column is not None):
        raise InputError(f"{args.runs}: a schedule needs the columns B and K, not D")
    inputs = [Column(name, lambda v: v > 0, "must be > 0", "model input")
              for name in model.inputs]
    runs = ColumnarRuns(
        args.runs,
        (RUN_COLUMNS[0], D_COLUMN) if use_d else RUN_COLUMNS,
        reserved=output_columns(model, boot is not None),
        optional=inputs,
        text=[] if column is None else [(column.strip(), "schedule SPECs, --schedule-column")],
    )
    if os.path.exists(args.out) and os.path.samefile(args.runs, args.out):
        raise InputError(f"{args.out}: --out must not be the input file")
    predictor = Predictor(model, runs.path, schedule=spec,
                          column=None if column is None else column.strip(),
                          num_segments=1 if spec is None else spec.num_segments, use_d=use_d,
                          boot=boot, seq_len=loaded.seq_len,
                          level=boot.level if boot is not None and args.level is None
                          else (args.level or 0.9),
                          prediction=args.prediction_interval)
    show = progress_enabled(args)

    with atomic_output(args.out, binary=True) as f:
        # Pass 1: check every row (and every row's schedule) before computing anything.
        bar = Progress("checking  ", show)
        try:
            n_rows = runs.count_rows(
                lambda n: bar.show(runs.fraction_read, f"{n:,} rows"),
                check=predictor.check,
            )
            bar.show(1.0, f"{n_rows:,} rows", force=True)
        finally:
            bar.close()

        # Pass 2: compute chunk by chunk, appending to the temporary output.
        size = chunk_size(n_rows, args.chunk_rows, predictor.num_segments)
        writer = ColumnarWriter(f, runs.header, output_columns(model, boot is not None),
                                table_format(args.out),
                                numeric=runs.index)
        bar = Progress("predicting", show)
        done = 0
        try:
            for chunk in runs.chunks(size):
                names, table = predictor(chunk, size)
                if names != model.terms:
                    raise AssertionError(f"the model returned terms {names}, not {model.terms}")
                # Floats as the shortest text that reads back to the same float64.
                writer.write(chunk, table)
                done += len(chunk)
                rate = done / max(time.monotonic() - bar.start, 1e-9)
                detail = f"{done:,}/{n_rows:,} rows {rate:,.0f} rows/s"
                bar.show(done / n_rows, detail, force=done == n_rows)
        finally:
            bar.close()
        writer.close()
        if done != n_rows:
            raise InputError(
                f"{runs.path}: changed while being read ({n_rows} rows when checked, "
                f"{done} when computed)"
            )

    elapsed = time.monotonic() - started
    rate = n_rows / max(elapsed, 1e-9)
    finished(f"predicted {n_rows:,} row(s) in {elapsed:.1f} s ({rate:,.0f} rows/s) -> {args.out}")
    return EXIT_OK
