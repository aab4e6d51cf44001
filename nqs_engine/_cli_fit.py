"""`nqs-engine fit` and `nqs-engine evaluate`: fitting NQS or Chinchilla to a runs CSV.

Also the Chinchilla branch of `predict` (a PARAMS.json with `"model": "chinchilla"`).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import numpy as np

from ._chinchilla import (
    CHINCHILLA_PARAM_NAMES,
    CHINCHILLA_PRESETS,
    ChinchillaParams,
    chinchilla_loss,
    chinchilla_preset,
    fit_chinchilla,
)
from ._evaluate import format_table, grouped_metrics
from ._fit import LOSSES, VARIANTS, Runs, fit, predict_runs
from ._io import (
    Column,
    CsvColumns,
    InputError,
    atomic_output,
    json_text,
    load_params,
    params_from_mapping,
    read_json,
)
from ._params import PRESETS
from ._params import DEFAULT_LR

PROG = "nqs-engine"
MODELS = ("nqs", "chinchilla")
_TRUE = {"true", "1", "yes", "y", "t"}

_N = Column("N", lambda v: v >= 1, "must be >= 1", "model size")
_B = Column("B", lambda v: v > 0, "must be > 0", "batch size")
_K = Column("K", lambda v: v >= 0, "must be >= 0", "number of steps")
_D = Column("D", lambda v: v > 0, "must be > 0", "tokens")
_LOSS = Column("loss", lambda v: v > 0, "must be > 0", "observed loss")
_STEP = Column("step", lambda v: v >= 0, "must be >= 0", "checkpoint step")
_TEXT = ("split", "type", "filtered", "run")


class RunsTable:
    """A runs CSV read whole (fits use at most thousands of rows), validated row by row."""

    def __init__(self, path: str, model: str, need_loss: bool = True):
        header = CsvColumns(path, ()).header
        names = {h.strip() for h in header}
        use_d = model == "chinchilla" and "D" in names
        required = [_N] + ([] if use_d else [_B, _K]) + ([_LOSS] if need_loss else [])
        optional = [_D] if use_d else [_STEP]
        text = [(t, t) for t in _TEXT if t in names]
        table = CsvColumns(path, required, optional=optional, text=text)
        chunks = list(table.chunks(1_000_000))
        if not chunks:
            raise InputError(f"{table.path}: no data rows (only a header)")
        self.path = table.path
        self.header = table.header
        self.rows = [row for c in chunks for row in c.rows]
        self.values = {c.name: np.concatenate([ch.values[c.name] for ch in chunks])
                       for c in table.columns}
        self.texts = {t: np.array([x for ch in chunks for x in ch.texts[t]]) for t, _ in text}
        self.use_d = use_d

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
        if self.use_d:
            return self.values["D"]
        return self.values["B"] * self.values["K"] * seq_len

    def runs(self, mask: np.ndarray, seq_len: float) -> Runs:
        v = {k: a[mask] for k, a in self.values.items()}
        run = self.texts["run"][mask] if "run" in self.texts else None
        try:
            return Runs.from_arrays(v["N"], v["B"], v["K"], v["loss"], step=v.get("step"),
                                    run=run, seq_len=seq_len)
        except ValueError as exc:
            raise InputError(f"{self.path}: {exc}") from None


_FIT_DESCRIPTION = f"""\
Fit a loss model to the runs in RUNS.csv and write its parameters to
PARAMS.json, which '{PROG} predict' and '{PROG} evaluate' accept.

--model nqs (default): the NQS of SPEC section 5. Latin-hypercube starts
(--starts) are scored at once; the best --refine are optimised together by
L-BFGS (optax, vmapped) in an unconstrained parametrisation; squared error
(--loss mse) or Huber (--loss huber, --delta) on log loss; the plain or the
weight-norm predictor (--variant). Deterministic for a given --seed.

--model chinchilla: L = E + A/N^alpha + B/D^beta by L-BFGS from the grid of
starts of Hoffmann et al. (approach 3), Huber on log loss by default.

RUNS.csv (a header row; other columns are ignored)
    N        model size (non-embedding parameters), >= 1
    B, K     batch size (sequences) and number of steps; for chinchilla a
             column D (tokens) may replace them (else D = B * K * seq_len)
    loss     observed loss, > 0
    step     optional: the step at which `loss` was measured (a checkpoint,
             <= K); rows of one run share a `run` label (optional column)
    split    optional: only rows whose split is 'train' are fitted
    filtered optional: rows marked True are skipped

PARAMS.json: the parameters (p, q, P, Q, e_irr, R, r and lr for nqs; E, A,
B, alpha, beta for chinchilla), "model", "seq_len", "variant", and
"diagnostics" (objective, convergence, starts, wall time, ...).
"""

_FIT_EPILOG = f"""\
examples:
  {PROG} fit runs.csv --out fit.json
  {PROG} fit runs.csv --model chinchilla --out chinchilla.json
  {PROG} fit runs.csv --loss huber --variant weight-norm --seed 1 --out fit.json
"""


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv", help="the runs to fit (format below)")
    parser.add_argument("--out", required=True, metavar="PARAMS.json",
                        help="output JSON (written atomically)")
    parser.add_argument("--model", choices=MODELS, default="nqs",
                        help="model to fit (default: nqs)")
    parser.add_argument("--variant", choices=VARIANTS, default="plain",
                        help="NQS predictor fitted (default: plain)")
    parser.add_argument("--loss", choices=LOSSES, default=None,
                        help="per-run loss on log loss (default: mse for nqs, huber for "
                             "chinchilla)")
    parser.add_argument("--delta", type=float, default=1e-3, help="Huber delta (default 1e-3)")
    parser.add_argument("--seq-len", type=float, default=128.0,
                        help="tokens per sequence (default: 128)")
    parser.add_argument("--lr", type=float, default=DEFAULT_LR,
                        help=f"NQS peak step size gamma0 (default: {DEFAULT_LR})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--starts", type=int, default=4096, metavar="M",
                        help="NQS Latin-hypercube starts scored (default: 4096)")
    parser.add_argument("--refine", type=int, default=16, metavar="R",
                        help="NQS starts optimised by L-BFGS (default: 16)")
    parser.add_argument("--max-steps", type=int, default=500,
                        help="L-BFGS iterations per start at most (default: 500)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar on stderr")


def _progress(args):
    show = not args.no_progress and sys.stderr.isatty()
    started = time.monotonic()

    def report(stage, done, total):
        if show:
            print(f"\r{PROG}: {stage} {done}/{total} ({time.monotonic() - started:.0f} s)",
                  end="", file=sys.stderr, flush=True)

    return report, show


def run_fit(args: argparse.Namespace) -> int:
    started = time.monotonic()
    for flag, value, ok in (("--delta", args.delta, args.delta > 0),
                            ("--seq-len", args.seq_len, args.seq_len > 0),
                            ("--lr", args.lr, args.lr > 0),
                            ("--starts", args.starts, args.starts >= 1),
                            ("--refine", args.refine, args.refine >= 1),
                            ("--max-steps", args.max_steps, args.max_steps >= 1)):
        if not (np.isfinite(value) and ok):
            raise InputError(f"{flag} must be a positive number, got {value:g}")
    table = RunsTable(args.runs, args.model)
    mask = table.train_mask()
    if not mask.any():
        raise InputError(f"{table.path}: no rows left to fit (split != train or filtered)")
    loss = args.loss or ("mse" if args.model == "nqs" else "huber")
    report, show = _progress(args)
    with atomic_output(args.out) as f:  # refuses a bad --out before any work
        try:
            if args.model == "nqs":
                runs = table.runs(mask, args.seq_len)
                result = fit(runs, variant=args.variant, loss=loss, delta=args.delta, lr=args.lr,
                             starts=args.starts, refine=args.refine, seed=args.seed,
                             max_steps=args.max_steps, progress=report)
                out = {"model": "nqs", **result.params.to_dict(), "lr": result.lr,
                       "seq_len": args.seq_len, "variant": args.variant,
                       "diagnostics": result.summary()}
                objective = result.objective
            else:
                N, y = table.values["N"][mask], table.values["loss"][mask]
                res = fit_chinchilla(N, table.tokens(args.seq_len)[mask], y, objective=loss,
                                     delta=args.delta, max_steps=args.max_steps,
                                     progress=lambda d, t, v: report("l-bfgs", d, t))
                out = {"model": "chinchilla", **res.params.to_dict(), "seq_len": args.seq_len,
                       "diagnostics": {"objective": float(res.objective),
                                       "loss": loss, "delta": args.delta,
                                       "converged": bool(res.converged),
                                       "num_converged": int(res.num_converged),
                                       "num_starts": int(res.num_starts),
                                       "wall_time_s": float(res.wall_time),
                                       "num_rows": int(mask.sum())}}
                objective = res.objective
        except ValueError as exc:
            raise InputError(f"{table.path}: {exc}") from None
        finally:
            if show:
                print(file=sys.stderr)
        f.write(json_text(out))
    print(f"{PROG}: fitted {args.model} to {int(mask.sum())} row(s), objective "
          f"{objective:.6g}, in {time.monotonic() - started:.1f} s -> {args.out}",
          file=sys.stderr, flush=True)
    return 0


def load_any_params(path: str):
    """A PARAMS.json or preset, read once: `(model, params, lr, seq_len, variant)`.

    `model` is "nqs" (NQSParams; `lr` and `variant` from the file, or the
    defaults / None) or "chinchilla" (ChinchillaParams; `lr` and `variant` None).
    """
    if path in PRESETS or not os.path.exists(path):
        params, lr, _ = load_params(path)  # a preset, or its one-line error
        return "nqs", params, lr, 128.0, None
    data = read_json(path)
    if isinstance(data, dict) and data.get("model") == "chinchilla":
        try:
            params = ChinchillaParams.from_dict(data)
        except ValueError as exc:
            raise InputError(f"{path}: {exc}") from None
        return "chinchilla", params, None, float(data.get("seq_len", 128)), None
    params, lr = params_from_mapping(data, path)
    lr = DEFAULT_LR if lr is None else lr
    return "nqs", params, lr, float(data.get("seq_len", 128)), data.get("variant")


def load_chinchilla(text: str, flag: str = "--chinchilla") -> ChinchillaParams:
    """Chinchilla parameters from a preset name or a Chinchilla PARAMS.json (InputError if not)."""
    if text in CHINCHILLA_PRESETS and not os.path.exists(text):
        return chinchilla_preset(text)
    if not os.path.exists(text):
        raise InputError(f"{flag} {text}: no such file, nor a Chinchilla preset "
                         f"({', '.join(sorted(CHINCHILLA_PRESETS))})")
    model, params, *_ = load_any_params(text)
    if model != "chinchilla":
        raise InputError(f"{text}: {flag} needs a Chinchilla PARAMS.json (from "
                         f"'{PROG} fit --model chinchilla') or a preset "
                         f"({', '.join(sorted(CHINCHILLA_PRESETS))}), got NQS parameters")
    return params


_EVALUATE_DESCRIPTION = f"""\
Print the accuracy of fitted parameters on the runs of RUNS.csv, per group
of the `split` and `type` columns (when present) and over all rows: mean
Huber (delta 1e-3) of the log error in units of 1e-5 (as the NQS paper
reports it), mean squared log error, mean absolute percentage error and the
largest absolute log error. --params may be given several times (e.g. an
NQS fit and a Chinchilla fit) to compare them side by side. Rows marked
filtered are skipped. RUNS.csv and PARAMS.json: see '{PROG} fit --help'.
"""


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv", help="runs with observed losses")
    parser.add_argument("--params", action="append", required=True, metavar="PARAMS",
                        help="a PARAMS.json (nqs or chinchilla) or a preset; repeatable")
    parser.add_argument("--variant", choices=VARIANTS, default=None,
                        help="NQS predictor (default: the one in PARAMS.json, else plain)")
    parser.add_argument("--out", metavar="METRICS.csv", default=None,
                        help="also write the table as CSV (atomically)")


def run_evaluate(args: argparse.Namespace) -> int:
    models = [load_any_params(p) for p in args.params]
    needs_bk = any(kind == "nqs" for kind, *_ in models)
    table = RunsTable(args.runs, "nqs" if needs_bk else "chinchilla")
    keep = table.unfiltered()
    if not keep.any():
        raise InputError(f"{table.path}: every row is filtered")
    y = table.values["loss"][keep]
    predictions = {}
    for source, (kind, params, lr, seq_len, variant) in zip(args.params, models):
        name = f"{kind}:{os.path.basename(source)}"
        if kind == "chinchilla":
            pred = chinchilla_loss(params, table.values["N"][keep], table.tokens(seq_len)[keep])
        else:
            runs = table.runs(keep, seq_len)
            pred = predict_runs(params, runs, lr=lr, variant=args.variant or variant or "plain")
        predictions[name] = np.asarray(pred, dtype=float)
    groups = {t: table.texts[t][keep] for t in ("split", "type") if t in table.texts}
    try:
        rows = grouped_metrics(y, predictions, groups or None)
    except ValueError as exc:
        raise InputError(f"{table.path}: {exc}") from None
    print(format_table(rows))
    if args.out:
        with atomic_output(args.out) as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return 0





CHINCHILLA_COLUMNS = ("prediction", "E", "param_term", "data_term")


def run_predict_chinchilla(args: argparse.Namespace, params: ChinchillaParams,
                           seq_len: float) -> int:
    """`predict` with Chinchilla parameters: streams RUNS.csv, D = B * K * seq_len."""
    started = time.monotonic()
    names = {h.strip() for h in CsvColumns(args.runs, ()).header}
    use_d = "D" in names
    table = CsvColumns(args.runs, [_N] + ([_D] if use_d else [_B, _K]),
                       reserved=CHINCHILLA_COLUMNS)
    table.count_rows()  # validate every row before writing anything
    E, A, B, alpha, beta = (float(getattr(params, n)) for n in CHINCHILLA_PARAM_NAMES)
    n_rows = 0
    with atomic_output(args.out) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*table.header, *CHINCHILLA_COLUMNS])
        for chunk in table.chunks(200_000):
            v = chunk.values
            D = v["D"] if use_d else v["B"] * v["K"] * seq_len
            param_term, data_term = A / v["N"] ** alpha, B / D**beta
            cols = np.stack([E + param_term + data_term, np.full_like(D, E), param_term,
                             data_term], axis=1)
            writer.writerows(row + vals for row, vals in zip(chunk.rows, cols.tolist()))
            n_rows += len(chunk)
    print(f"{PROG}: predicted {n_rows:,} row(s) with Chinchilla in "
          f"{time.monotonic() - started:.1f} s -> {args.out}", file=sys.stderr, flush=True)
    return 0
