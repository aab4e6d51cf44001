"""`nqs-engine fit`: fit a loss model (the NQS, Chinchilla, ...) to a runs CSV."""

from __future__ import annotations

import argparse
import sys
import time

from .._io import InputError, atomic_output, json_text
from .._presets import DEFAULT_LR
from .._schedule import SPEC_HELP
from ._common import (
    EXIT_OK,
    finished,
    PROG,
    Progress,
    LOG_HELP,
    RunsTable,
    add_curve_options,
    add_log_options,
    add_progress_option,
    add_schedule_options,
    check_out,
    positive,
    positive_int,
    progress_enabled,
    schedule_spec,
)


DESCRIPTION = f"""\
Fit a loss model to the runs in RUNS.csv and write its parameters to
PARAMS.json, which '{PROG} predict', 'evaluate', 'plan' and 'plot' accept.

--model nqs (default): the NQS of SPEC section 5. Latin-hypercube starts
(--starts) are scored at once; the best --refine are optimised together by
L-BFGS (optax, vmapped) in an unconstrained parametrisation; squared error
(--loss mse) or Huber (--loss huber, --delta) on log loss; the plain or the
weight-norm predictor (--variant, or --model nqs-weight-norm).
Deterministic for a given --seed.

--model chinchilla: L = E + A/N^alpha + B/D^beta by L-BFGS from the grid of
starts of Hoffmann et al. (approach 3), Huber on log loss by default.

Any other registered loss model is fitted the same way (--model KIND).

RUNS.csv (a header row; other columns are ignored)
    N        model size (non-embedding parameters), >= 1
    B, K     batch size (sequences) and number of steps; a column D (tokens)
             may replace them for models of N and D alone (Chinchilla)
    loss     observed loss, > 0
    step     optional: the step at which `loss` was measured (a checkpoint,
             <= K); rows of one run share a `run` label (optional column)
    split    optional: only rows whose split is 'train' are fitted
    filtered optional: rows marked True are skipped

Schedules (as for '{PROG} predict'; default: every run constant)
  --schedule SPEC, --schedule-column NAME or --schedule-file FILE.json: each
  row's run is K steps of that schedule at base batch B, observed at `step`.
  Or --lr-column NAME: the rows are checkpoints of loss curves logged with
  their learning rate, as real training logs are (columns N, step, run, the
  rate, loss; B and K optional): each run's schedule is the logged rate
  interpolated linearly between its rows, after a linear warmup from 0 over
  --warmup steps, divided by --peak-lr (default: the run's largest rate). It
  is compressed with every checkpoint on a segment edge and pieces that grow
  geometrically away from each checkpoint (within 1e-4 relative of the
  per-step run), and a run's checkpoints are predicted in one pass.

Schedule SPECs
{SPEC_HELP}
{LOG_HELP}
PARAMS.json: "model" (its kind), its parameters (p, q, P, Q, e_irr, R, r and
lr for the NQS; E, A, B, alpha, beta for Chinchilla), "seq_len", and
"diagnostics" (objective, convergence, starts, wall time, and notes on
what sits on a bound of the search or cannot be identified).
"""

EPILOG = f"""\
examples:
  {PROG} fit runs.csv --out fit.json
  {PROG} fit runs.csv --model chinchilla --out chinchilla.json
  {PROG} fit runs.csv --loss huber --variant weight-norm --seed 1 --out fit.json
  {PROG} fit runs.csv --schedule cosine:pieces=32,warmup=0.01 --out fit.json
  {PROG} fit curves.csv --lr-column lr --warmup 2160 --loss huber --out fit.json
"""


def _model_kinds() -> list[str]:
    from .._model import MODEL_KINDS

    return sorted(MODEL_KINDS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv", help="the runs to fit (format below)")
    parser.add_argument("--out", required=True, metavar="PARAMS.json",
                        help="output JSON (written atomically)")
    parser.add_argument("--model", default="nqs", metavar="KIND",
                        help="loss model to fit: nqs (default), nqs-weight-norm, chinchilla, "
                        "or another registered kind")
    parser.add_argument("--variant", choices=("plain", "weight-norm"), default=None,
                        help="NQS predictor fitted (default: plain)")
    parser.add_argument("--loss", choices=("mse", "huber"), default=None,
                        help="per-run loss on log loss (default: the model's; mse for nqs, "
                        "huber for chinchilla)")
    parser.add_argument("--delta", type=positive, default=1e-3, help="Huber delta (default 1e-3)")
    parser.add_argument("--seq-len", type=positive, default=128.0,
                        help="tokens per sequence (default: 128)")
    parser.add_argument("--lr", type=positive, default=None,
                        help=f"NQS peak step size gamma0 (default: {DEFAULT_LR})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--starts", type=positive_int, default=None, metavar="M",
                        help="candidates screened (default: the model's; 4096 Latin-hypercube "
                        "points for the NQS, the 5400-point grid for Chinchilla)")
    parser.add_argument("--refine", type=positive_int, default=None, metavar="R",
                        help="starts optimised by L-BFGS (default: the model's; 16 for the NQS, "
                        "32 for Chinchilla); at most --starts")
    parser.add_argument("--max-steps", type=positive_int, default=None,
                        help="optimiser iterations per start at most (default: the model's; 400 "
                        "for the NQS)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="M",
                        help="also refit M resamples of the runs (whole runs resampled) and keep "
                        "them in OUT.json: 'predict' then adds lower and upper columns "
                        "(default 0: none)")
    parser.add_argument("--level", type=float, default=0.9,
                        help="level of the intervals --bootstrap gives (default 0.9)")
    add_schedule_options(parser, column=True)
    add_curve_options(parser)
    add_log_options(parser)
    add_progress_option(parser)


def template(args: argparse.Namespace):
    """The model family --model (and --variant, --lr) names, as a template instance."""
    import equinox as eqx
    import jax.numpy as jnp

    from .._misc import suggest
    from .._model import MODEL_KINDS, AbstractNQS

    kinds = _model_kinds()
    if args.model not in MODEL_KINDS:
        raise InputError(f"--model: unknown model {args.model!r}{suggest(args.model, kinds)}; "
                         f"known models: {', '.join(kinds)}")
    model = MODEL_KINDS[args.model]()
    if args.variant is not None or args.lr is not None:
        if not isinstance(model, AbstractNQS):
            flag = "--variant" if args.variant is not None else "--lr"
            raise InputError(f"{flag} applies to the NQS, not to --model {args.model}")
        if args.variant is not None:
            model = model.as_variant(args.variant)
        if args.lr is not None:
            model = eqx.tree_at(lambda m: m.lr, model, jnp.asarray(args.lr))
    return model


def run(args: argparse.Namespace) -> int:
    from .._fit import fit

    started = time.monotonic()
    if args.starts is not None and args.refine is not None and args.refine > args.starts:
        raise InputError(f"--refine {args.refine} is larger than --starts {args.starts}: at most "
                         "--starts candidates can be refined")
    if args.bootstrap < 0:
        raise InputError(f"--bootstrap: must be >= 0, got {args.bootstrap}")
    if not 0.0 < args.level < 1.0:
        raise InputError(f"--level: must be in (0, 1), got {args.level}")
    model = template(args)
    check_out(args.out)
    spec = schedule_spec(args)
    if args.lr_column is not None and (spec is not None or args.schedule_column is not None):
        raise InputError("--lr-column gives each run's schedule already; drop --schedule, "
                         "--schedule-column and --schedule-file")
    table = RunsTable(args.runs, inputs=model.inputs, lr_column=args.lr_column,
                      schedule_column=args.schedule_column, columns=args.columns,
                      drop_bad=args.drop_bad)
    for text in table.notes:
        print(f"{PROG}: note: {text}", file=sys.stderr, flush=True)
    mask = table.train_mask()
    if not mask.any():
        raise InputError(f"{table.path}: no rows left to fit (split != train or filtered)")
    bar = Progress("fitting", progress_enabled(args))

    def report(stage, done, total):
        bar.show(done / max(total, 1), f"{stage} {done}/{total}")

    with atomic_output(args.out) as f:  # refuses a bad --out before any work
        runs = table.runs(mask, args.seq_len, spec=spec, warmup=args.warmup, peak=args.peak_lr)
        try:
            result = fit(runs, model, loss=args.loss, delta=args.delta, starts=args.starts,
                         refine=args.refine, seed=args.seed, max_steps=args.max_steps,
                         progress=report)
        except ValueError as exc:
            raise InputError(f"{table.path}: {exc}") from None
        finally:
            bar.close()
        out = {**result.model.to_dict(), "seq_len": args.seq_len,
               "diagnostics": result.summary()}
        if args.bootstrap:
            from .._fit import bootstrap

            bar = Progress("bootstrap", progress_enabled(args))
            try:
                boot = bootstrap(runs, result, num_samples=args.bootstrap, level=args.level,
                                 seed=args.seed, progress=report)
            except ValueError as exc:
                raise InputError(f"{table.path}: bootstrap: {exc}") from None
            finally:
                bar.close()
            out["bootstrap"] = boot.to_dict()
            print(f"{PROG}: bootstrap: {boot.samples.shape[0]} of {args.bootstrap} refits "
                  f"succeeded in {boot.wall_time:.1f} s", file=sys.stderr, flush=True)
        f.write(json_text(out))
    for text in result.notes:
        print(f"{PROG}: note: {text}", file=sys.stderr, flush=True)
    finished(f"fitted {result.model.kind} to {int(mask.sum())} row(s), objective "
             f"{result.objective:.6g}, in {time.monotonic() - started:.1f} s -> {args.out}")
    return EXIT_OK


__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "run", "template"]
