"""`nqs-engine backtest`: fit loss models on a ladder's small budgets, score them on the big ones."""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import numpy as np

from .._io import InputError, atomic_output, json_text
from ._common import (
    EXIT_OK,
    finished,
    LOG_HELP,
    PROG,
    Progress,
    RunsTable,
    add_log_options,
    add_progress_option,
    check_out,
    positive,
    positive_int,
    positive_list,
    progress_enabled,
)

DESCRIPTION = f"""\
Backtest loss models on a ladder of real runs: fit each model (--models) on
the runs whose budget is at most each --cutoff (or on the rows whose `split`
is train, --split) and score it on the rest, per held-out budget and over
all of them:

  msle            mean squared log error, mean (log y - log yhat)^2
  mae, mape       mean absolute error (nats) and percentage error
  best_run_error  yhat / y - 1 at the budget's lowest-loss run (what a
                  planner picks), per budget; at the lowest-loss held-out
                  run over all
  gap             held-out budget / cutoff (the compute extrapolated)
  coverage        with --bootstrap M: the share of held-out runs inside the
                  prediction interval at --level (M bootstrap refits of the
                  fit, each prediction times resampled residuals)

A run's budget is read from its name with --budget COLUMN:REGEX, else it is
its compute 6 N B K seq_len, grouped into levels (a new level where sorted
compute jumps by more than 1.5x). Rows marked filtered are skipped.

Models: nqs (one step size for every run), nqs-lr (each run's peak learning
rate `lr` and width `width` mapped to NQS time: map them with --columns),
nqs-weight-norm, chinchilla, or any registered kind. Default: nqs-lr when
the runs have an lr or width column, else nqs; and chinchilla.

{LOG_HELP}
OUT.json: "rows" (one per cutoff, model and held-out budget, and budget
"all"), "fits" (each fit's parameters, objective and wall time), the
command line, the date and the machine.
"""

EPILOG = f"""\
examples:
  {PROG} backtest ladder.csv --cutoff 1e19 --out backtest.json
  {PROG} backtest marin.csv --budget 'Name:isoflop-([0-9.]+e[+-]?[0-9]+)-' \\
      --columns 'N=16*model.num_layers*model.hidden_dim^2,B=trainer.train_batch_size,\\
K=trainer.num_train_steps,loss=`eval/paloma/macro_loss`,\\
lr=0.33*sqrt(trainer.train_batch_size)/model.hidden_dim,width=model.hidden_dim' \\
      --seq-len 4096 --cutoff 1e19 --models nqs-lr,chinchilla --bootstrap 100 \\
      --out backtest.json --figure backtest.png
  {PROG} backtest pythia_owt2_runs.csv --split --models nqs,nqs-weight-norm,chinchilla \\
      --out backtest.json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv", help="the ladder: runs with observed losses")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--cutoff", type=positive_list, default=None, metavar="C[,C...]",
                       help="the largest budget fitted (FLOPs); several, comma-separated, "
                       "give one backtest each")
    where.add_argument("--split", action="store_true",
                       help="fit the rows whose split column is train, score the others")
    parser.add_argument("--models", default=None, metavar="KIND[,KIND...]",
                        help="loss models to compare (default: nqs-lr or nqs, and chinchilla)")
    parser.add_argument("--out", required=True, metavar="OUT.json",
                        help="output JSON (written atomically)")
    parser.add_argument("--figure", default=None, metavar="FIG.png",
                        help="also draw held-out error against the compute gap")
    parser.add_argument("--seq-len", type=positive, default=128.0,
                        help="tokens per sequence (default: 128)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="M",
                        help="bootstrap refits per fit for prediction intervals (default 0: "
                        "none)")
    parser.add_argument("--level", type=float, default=0.9,
                        help="prediction-interval level (default 0.9)")
    parser.add_argument("--starts", type=positive_int, default=None, metavar="M",
                        help="candidates screened per fit (default: each model's)")
    parser.add_argument("--refine", type=positive_int, default=None, metavar="R",
                        help="starts optimised per fit (default: each model's)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    add_log_options(parser, budget=True)
    add_progress_option(parser)


def _kinds(text: str | None) -> list[str] | None:
    """The model kinds of --models, checked (None: the default, chosen from the columns)."""
    from .._misc import suggest
    from .._model import MODEL_KINDS

    if text is None:
        return None
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if not kinds:
        raise InputError("--models: give at least one model kind")
    known = sorted(MODEL_KINDS)
    for kind in kinds:
        if kind not in MODEL_KINDS:
            raise InputError(f"--models: unknown model {kind!r}{suggest(kind, known)}; known "
                             f"models: {', '.join(known)}")
    if len(set(kinds)) != len(kinds):
        raise InputError(f"--models: {text!r} names a model twice")
    return kinds


def _templates(kinds: list[str] | None, table: RunsTable) -> dict:
    from .._model import MODEL_KINDS

    if kinds is None:
        has_lr = "lr" in table.values or "width" in table.values
        kinds = ["nqs-lr" if has_lr else "nqs", "chinchilla"]
    return {kind: MODEL_KINDS[kind]() for kind in kinds}


def _inputs(kinds: list[str] | None) -> tuple[str, ...]:
    from .._model import MODEL_KINDS

    return tuple(dict.fromkeys(n for k in (MODEL_KINDS if kinds is None else kinds)
                               for n in MODEL_KINDS[k].inputs))


def run(args: argparse.Namespace) -> int:
    from .._backtest import backtest

    started = time.monotonic()
    if args.bootstrap < 0:
        raise InputError(f"--bootstrap: must be >= 0, got {args.bootstrap}")
    if not 0.0 < args.level < 1.0:
        raise InputError(f"--level: must be in (0, 1), got {args.level}")
    if args.starts is not None and args.refine is not None and args.refine > args.starts:
        raise InputError(f"--refine {args.refine} is larger than --starts {args.starts}")
    kinds = _kinds(args.models)
    check_out(args.out)
    if args.figure is not None:
        check_out(args.figure)
    table = RunsTable(args.runs, inputs=_inputs(kinds), columns=args.columns,
                      budget=args.budget, drop_bad=args.drop_bad)
    for text in table.notes:
        print(f"{PROG}: note: {text}", file=sys.stderr, flush=True)
    models = _templates(kinds, table)
    keep = table.unfiltered()
    if args.split:
        if "split" not in table.texts:
            raise InputError(f"{table.path}: --split needs a split column (train / test)")
        train = np.char.lower(table.texts["split"][keep]) == "train"
    else:
        train = None
    runs = table.runs(keep, args.seq_len)
    budget = None if table.budget is None else table.budget[keep]
    options = {k: v for k, v in dict(starts=args.starts, refine=args.refine,
                                     seed=args.seed).items() if v is not None}
    bar = Progress("backtest", progress_enabled(args))
    try:
        result = backtest(runs, models, cutoffs=args.cutoff, budget=budget, train=train,
                          bootstrap_samples=args.bootstrap, level=args.level,
                          fit_options=options, progress=lambda text: bar.show(0.0, text))
    except ValueError as exc:
        raise InputError(f"{table.path}: {exc}") from None
    finally:
        bar.close()
    fits = []
    for (cutoff, name), item in result.fits.items():
        fit = item["result"]
        fits.append({"cutoff": cutoff, "model": name, "wall_time": round(item["wall_time"], 3),
                     "objective": fit.objective, "params": fit.model.to_dict()})
    out = {"command": "backtest", "argv": sys.argv[1:], "runs": table.path,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": platform.platform(), "rows": result.rows, "fits": fits,
           "wall_time": round(result.wall_time, 3)}
    text = json_text(out)
    figure = result.figure() if args.figure is not None else None
    with atomic_output(args.out) as f:
        f.write(text)
    if figure is not None:
        with atomic_output(args.figure, binary=True) as f:
            figure.savefig(f, format=args.figure.rsplit(".", 1)[-1] if "." in args.figure
                           else "png")
    print(result.table())
    finished(f"backtested {', '.join(models)} on {runs.size} run(s) in "
             f"{time.monotonic() - started:.1f} s -> {args.out}")
    return EXIT_OK


__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "run"]
