"""`nqs-engine trajectory`: the predicted loss curve of one run, in one pass."""

from __future__ import annotations

import argparse
import csv
import time

import equinox as eqx
import numpy as np

from .._io import InputError, atomic_output
from .._model import NQS
from .._risk._trajectory import trajectory
from .._schedule import SPEC_HELP, parse_schedule
from ._common import (
    EXIT_OK,
    finished,
    PROG,
    add_params_options,
    add_schedule_options,
    check_peak,
    load_model,
    positive_int,
    runtime_message,
    schedule_spec,
)


DESCRIPTION = f"""\
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

EPILOG = f"""\
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_options(parser)
    for flag, meaning in (("N", "model size (directions), >= 1"),
                          ("B", "base batch size, > 0"),
                          ("K", "number of steps of the run, > 0")):
        parser.add_argument(f"--{flag}", required=True, type=float, metavar=flag, help=meaning)
    add_schedule_options(parser, column=False)
    points = parser.add_mutually_exclusive_group()
    points.add_argument(
        "--checkpoints", type=positive_int, default=200, metavar="M",
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


def run(args: argparse.Namespace) -> int:
    """`nqs-engine trajectory`: the loss curve of one run, written as CSV."""
    started = time.monotonic()
    loaded = load_model(args.params, lr=args.lr)
    model = loaded.model
    if not isinstance(model, NQS):
        raise InputError(f"{loaded.source}: trajectory needs the plain NQS's parameters, but "
                         f"this file holds a {type(model).__name__} model")
    for flag, ok, rule in (("N", args.N >= 1, ">= 1"), ("B", args.B > 0, "> 0"),
                           ("K", args.K > 0, "> 0")):
        value = getattr(args, flag)
        if not (np.isfinite(value) and ok):
            raise InputError(f"--{flag} must be a finite number {rule}, got {value:g}")
    spec = schedule_spec(args) or parse_schedule("constant")
    where = f"--schedule {spec.text!r}" if args.schedule is not None else spec.text
    check_peak(model, spec.peak, where)
    steps = _checkpoints(args)
    with atomic_output(args.out) as f:  # refuses a bad --out before any work
        sched = spec.build(args.K, args.B)
        try:
            out = trajectory(model.params, args.N, sched, steps, lr=model.lr, rule=model.rule)
        except eqx.EquinoxRuntimeError as exc:
            raise InputError(runtime_message(exc)) from None
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
    finished(f"wrote {steps.size:,} checkpoint(s) of N={args.N:g}, B={args.B:g}, "
             f"K={args.K:g} in {elapsed:.1f} s -> {args.out}")
    return EXIT_OK


