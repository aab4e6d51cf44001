"""`nqs-engine prefix`: each run's final loss from the first part of its curve."""

from __future__ import annotations

import argparse
import time

import numpy as np

from .._io import CsvColumns, InputError, atomic_output, json_text
from ._common import (
    EXIT_OK,
    finished,
    PROG,
    Progress,
    RunsTable,
    add_curve_options,
    add_progress_option,
    check_out,
    positive_int,
    progress_enabled,
)

DESCRIPTION = f"""\
Predict each run's final loss from the checkpoints up to a fraction p of its
steps, for several p, with a loss model fitted jointly to all runs' prefixes
(the NQS across sizes by default) and, beside it, parametric forms fitted to
each run's own prefix: F + A g(tau), tau = step / final step, with
  log       g = -log(tau + c)        exp       g = exp(-tau / c)
  power     g = (tau + c)^-a         rational  g = 1 / (1 + tau / c)
each by bounded least absolute error (scipy minimize) and by Huber
(scipy least_squares, scale 1e-3 nats), from a small grid of shape starts.
Prints the endpoint MAE and worst absolute error per p and model size, the
best form of each cell and whether the model beats it.

The model never reads a loss past p of the run it predicts: runs whose final
steps agree within 2% are predicted together from one fit to every run's
checkpoints up to p times the smallest of their final steps (a run sharing
the target's prefix, e.g. the same run continued under another schedule,
is cut there too). It knows each target's planned schedule to the end.

CURVES.csv: one row per checkpoint, columns run, N, step, the learning rate
(--lr-column), loss; B optional (default 1). The schedule of each run is read
as for '{PROG} fit --lr-column' (--warmup, --peak-lr; the default peak is the
largest rate in the whole table, so that every prefix keeps its multipliers).

--compute-law power|loglog: per schedule family (--family-column), final
losses against compute C = 6 N D fitted on the smaller budgets by
L = E + A (C/1e18)^-alpha (E < min loss, A, alpha >= 0) or the log-log line
L = A (C/1e18)^-alpha, the --holdout largest budgets predicted, beside the
model fitted to the full curves of every run not held out.
"""

EPILOG = f"""\
examples:
  {PROG} prefix curves.csv --lr-column lr --warmup 2160 --out prefix.json
  {PROG} prefix curves.csv --lr-column lr --warmup 2160 --fractions 0.5 --figure p05.png
  {PROG} prefix curves.csv --lr-column lr --warmup 2160 --no-model --forms power,rational
  {PROG} prefix curves.csv --lr-column lr --warmup 2160 --fractions 0.5 \\
      --compute-law power --family-column family
"""


def _fractions(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of fractions such as "
                                         f"0.1,0.5,0.9, got {text!r}") from None
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"fractions must lie in (0, 1], got {text!r}")
    return values


def _names(known: tuple[str, ...], what: str):
    def parse(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",") if v.strip()]
        bad = [n for n in names if n not in known]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(bad) or text!r}; "
                                             f"known: {', '.join(known)}")
        return names
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .._prefix import CRITERIA, FORMS, FRACTIONS, LAWS

    parser.add_argument("curves", metavar="CURVES.csv", help="checkpoints of runs (format below)")
    parser.add_argument("--fractions", type=_fractions, default=list(FRACTIONS), metavar="P,...",
                        help="prefix fractions (default 0.1,0.2,...,0.9)")
    parser.add_argument("--forms", type=_names(tuple(FORMS), "form"), default=list(FORMS),
                        metavar="NAME,...", help=f"parametric forms (default {','.join(FORMS)})")
    parser.add_argument("--criteria", type=_names(CRITERIA, "criterion"), default=list(CRITERIA),
                        metavar="NAME,...", help="fitting criteria of the forms (default "
                        "mae,huber)")
    parser.add_argument("--model", default="nqs-sizes", metavar="KIND",
                        help="loss model fitted to the prefixes (default nqs-sizes)")
    parser.add_argument("--no-model", action="store_true",
                        help="parametric forms only (no loss-model fits)")
    parser.add_argument("--starts", type=positive_int, default=32, metavar="M",
                        help="candidates screened per model fit (default 32)")
    parser.add_argument("--refine", type=positive_int, default=3, metavar="R",
                        help="of them refined, beside the previous fit (default 3)")
    parser.add_argument("--max-steps", type=positive_int, default=60,
                        help="iterations per model fit (default 60)")
    parser.add_argument("--per-run", type=positive_int, default=96, metavar="M",
                        help="checkpoints per run a fit keeps at most, evenly spread (default 96)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--seq-len", type=float, default=128.0,
                        help="tokens per sequence (default 128)")
    parser.add_argument("--out", metavar="PREFIX.json", default=None,
                        help="write every prediction, the tables and the fits (atomically)")
    parser.add_argument("--figure", metavar="FIG.png", default=None,
                        help="draw curves, continuations and predicted finals at --figure-p")
    parser.add_argument("--figure-p", type=float, default=0.5, metavar="P",
                        help="the fraction the figure shows (default 0.5)")
    parser.add_argument("--compute-law", choices=LAWS, default=None,
                        help="also backtest an endpoint compute law per family: power "
                        "(E + A (C/1e18)^-alpha) or loglog (A (C/1e18)^-alpha)")
    parser.add_argument("--family-column", metavar="NAME", default=None,
                        help="column naming each run's schedule family (for --compute-law)")
    parser.add_argument("--holdout", type=positive_int, default=1, metavar="H",
                        help="largest budgets of each family held out (default 1)")
    add_curve_options(parser)
    add_progress_option(parser)


def _model(kind: str):
    """The template of --model: the prefix protocol's own sized NQS, or another kind's default."""
    from .._misc import suggest
    from .._model import MODEL_KINDS
    from .._prefix import default_model

    if kind not in MODEL_KINDS:
        kinds = sorted(MODEL_KINDS)
        raise InputError(f"--model: unknown model {kind!r}{suggest(kind, kinds)}; known models: "
                         f"{', '.join(kinds)}")
    default = default_model()
    if MODEL_KINDS[kind] is type(default):
        return default
    try:
        return MODEL_KINDS[kind]()
    except TypeError:
        raise InputError(f"--model {kind}: this model has no default template to fit from") from None


def run(args: argparse.Namespace) -> int:
    from .._metrics import format_table
    from .._prefix import CurveLog, compute_law_endpoints, prefix_endpoints, prefix_figure

    started = time.monotonic()
    if args.lr_column is None:
        raise InputError("prefix reads loss curves: give --lr-column NAME (the column of the "
                         "learning rate at each checkpoint)")
    if args.compute_law is not None and args.family_column is None:
        raise InputError("--compute-law needs --family-column NAME (each run's schedule family)")
    for path in (args.out, args.figure):
        if path is not None:
            check_out(path)
    model = None if args.no_model else _model(args.model)
    table = RunsTable(args.curves, lr_column=args.lr_column)
    v = table.values
    try:
        log = CurveLog.from_arrays(table.texts["run"], v["N"], v["step"], v[args.lr_column],
                                   v["loss"], B=v.get("B", 1.0), warmup=args.warmup,
                                   peak=args.peak_lr, seq_len=args.seq_len)
        log.runs()  # validates the schedules (one line on error) before any fit
    except ValueError as exc:
        raise InputError(f"{table.path}: {exc}") from None
    family = None
    if args.compute_law is not None:
        fam_table = CsvColumns(args.curves, (), text=[(args.family_column, "schedule family")])
        texts = [t for c in fam_table.chunks(1_000_000) for t in c.texts[args.family_column]]
        order = np.lexsort((v["step"], table.texts["run"]))  # CurveLog's row order
        family = np.asarray(texts)[order]
    bar = Progress("prefix", progress_enabled(args))

    def report(stage, done, total):
        bar.show(done / max(total, 1), f"{stage} {done}/{total}")

    try:
        result = prefix_endpoints(log, args.fractions, model=model, forms=args.forms,
                                  criteria=args.criteria, fit_model=model is not None,
                                  starts=args.starts, refine=args.refine,
                                  max_steps=args.max_steps, per_run=args.per_run,
                                  seed=args.seed, progress=report)
        law_rows = None
        if args.compute_law is not None:
            report("compute law", 0, 1)
            law_rows = compute_law_endpoints(log, family, law=args.compute_law,
                                             holdout=args.holdout, model=model,
                                             fit_model=model is not None, per_run=args.per_run,
                                             seed=args.seed)
    except ValueError as exc:
        raise InputError(f"{table.path}: {exc}") from None
    finally:
        bar.close()
    rows = result.table()
    columns = ["p", "N", "runs"]
    if model is not None:
        columns += ["model mae", "model worst"]
    columns += ["best form", "best form mae", *(["model wins"] if model is not None else [])]
    print(format_table([{k: r.get(k, "") for k in columns} for r in rows], columns))
    if law_rows:
        cols = ["family", "run", "C", "observed", "law", "law error",
                *(["model", "model error"] if model is not None else [])]
        print()
        print(format_table([{k: r[k] for k in cols} for r in law_rows], cols))
    if args.out is not None:
        data = {
            "fractions": result.fractions.tolist(),
            "runs": result.labels.tolist(),
            "N": result.N.tolist(),
            "final_step": result.final_step.tolist(),
            "final_loss": result.final_loss.tolist(),
            "cutoff": result.cutoff.tolist(),
            "model": np.where(np.isfinite(result.model), result.model, None).tolist(),
            "forms": {k: np.where(np.isfinite(p), p, None).tolist()
                      for k, p in result.forms.items()},
            "table": rows,
            "fits": result.fits,
            "compute_law": law_rows,
        }
        with atomic_output(args.out) as f:
            f.write(json_text(data))
    if args.figure is not None:
        fig = prefix_figure(result, args.figure_p)
        with atomic_output(args.figure, binary=True) as f:
            fig.savefig(f, format=args.figure.rsplit(".", 1)[-1] if "." in args.figure else "png",
                        dpi=120)
    finished(f"{result.labels.size} run(s), {len(result.fractions)} fraction(s), "
             f"{len(result.fits)} model fit(s) in {time.monotonic() - started:.1f} s"
             + (f" -> {args.out}" if args.out else ""))
    return EXIT_OK


__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "run"]
