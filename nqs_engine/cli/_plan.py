"""`nqs-engine plan`: the best N, B, K for a compute budget, under optional limits."""

from __future__ import annotations

import argparse
import math
import re
import sys
import time

import numpy as np

from .._io import InputError, atomic_output, json_text
from .._model._chinchilla import CHINCHILLA_PRESETS
from .._presets import PRESETS
from .._plan._budgets import Hardware
from .._plan._plan import BATCH_MODES, METHODS
from ._common import (
    EXIT_OK,
    finished,
    PROG,
    Progress,
    add_progress_option,
    check_out,
    load_chinchilla,
    load_model,
    nonneg,
    positive,
    positive_list,
    progress_enabled,
)


DESCRIPTION = """\
Plan the run of least predicted loss for each compute budget: the model
size N (non-embedding parameters), batch size B (sequences) and number of
steps K with 6 N B K seq_len <= C (K is the most steps that compute,
--max-tokens and --max-time allow), searched over millions of candidates by
a vectorised grid and refined by L-BFGS through the model (optax).

Limits (each optional, combinable):
  --max-tokens D     tokens B K seq_len <= D (a data budget)
  --max-memory M     N (bytes-per-param + activation-bytes B seq_len) <= M
                     bytes (suffixes KB MB GB TB, KiB MiB GiB TiB)
  --max-time T       6 N K min(B seq_len, tokens-per-device) / device-flops
                     <= T seconds (suffixes s m h d): each accelerator runs
                     tokens-per-device tokens per step at device-flops
                     FLOP/s; larger batches use more accelerators
  --min-steps, --n-range, --b-range   bounds on K, N and B

Several --compute values (or a comma list) plan every budget at once: the
compute-optimal frontier. --chinchilla CH (a file or preset) adds Chinchilla's allocation
(N_opt, D_opt; it has no batch size) and the NQS loss of that allocation.
--schedule-search then optimises a batch-size ramp and learning-rate decay
for the chosen run and reports the gain over the best constant schedule.
"""

EPILOG = f"""\
output:
  A table on stdout: per budget the chosen run, the limits it meets
  ('binding'), and the next-best power-of-two batch sizes. With --out
  FILE.json, for one budget a JSON object with the keys N, B, K, loss,
  tokens, compute, memory, time, tokens_per_parameter, binding,
  alternatives (and N_exact, B_exact, K_exact, loss_exact: the continuous
  optimum, which meets its binding limits exactly; K is rounded down to whole
  steps); for several budgets {{"plans": [...]}} of such objects. Written
  atomically.

PARAMS (--params): a preset ({', '.join(sorted(PRESETS))}) or a PARAMS.json
from '{PROG} fit' (any loss model: the NQS, its weight-norm variant, Chinchilla,
...); --seq-len defaults to the file's seq_len (128 for the preset).

examples:
  {PROG} plan --params pythia-owt2 --compute 1e21
  {PROG} plan --params fit.json --compute 1e20 --max-tokens 5e10 --max-time 2d
  {PROG} plan --params pythia-owt2 --compute 1e18,1e19,1e20 --chinchilla ch.json
"""

_UNITS = {
    "memory": {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40},
    "time": {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400},
}


def _quantity(kind: str):
    def parse(text: str) -> float:
        match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-z]*)\s*", text)
        unit = match and match.group(2).lower()
        if not match or unit not in _UNITS[kind]:
            units = ", ".join(u for u in _UNITS[kind] if u)
            raise argparse.ArgumentTypeError(f"expected a number with an optional unit ({units}), got {text!r}")
        try:
            value = float(match.group(1)) * _UNITS[kind][unit]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"expected a positive value, got {text!r}")
        return value

    return parse


def _pair(text: str) -> tuple[float, float]:
    parts = text.split(":")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH, got {text!r}")
    lo, hi = (positive(p) for p in parts)
    if lo > hi:
        raise argparse.ArgumentTypeError(f"expected LOW <= HIGH, got {text!r}")
    return lo, hi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", required=True, metavar="PARAMS",
                        help="a PARAMS.json (any loss model) or a preset name")
    parser.add_argument("--lr", type=positive, default=None, metavar="LR",
                        help="NQS peak step size gamma0 (default: PARAMS' lr, else 1.999)")
    parser.add_argument("--compute", type=positive_list, action="append", required=True,
                        metavar="FLOPS", help="compute budget C in FLOPs; repeatable or a comma list")
    parser.add_argument("--seq-len", type=positive, default=None, metavar="L",
                        help="tokens per sequence (default: PARAMS' seq_len, else 128)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-tokens", type=positive, default=None, metavar="D",
                        help="at most D training tokens")
    limits.add_argument("--max-memory", type=_quantity("memory"), default=None,
                        metavar="BYTES", help="at most this much accelerator memory, e.g. 640GB")
    limits.add_argument("--max-time", type=_quantity("time"), default=None,
                        metavar="SECONDS", help="at most this wall-clock time, e.g. 36h")
    limits.add_argument("--min-steps", type=positive, default=1.0, metavar="K",
                        help="at least K steps (default 1)")
    limits.add_argument("--n-range", type=_pair, default=(1e5, 1e12), metavar="LOW:HIGH",
                        help="model sizes searched (default 1e5:1e12)")
    limits.add_argument("--b-range", type=_pair, default=(1.0, 2.0**24), metavar="LOW:HIGH",
                        help="batch sizes searched, in sequences (default 1:16777216)")
    hw = parser.add_argument_group("hardware model (for --max-memory and --max-time)")
    defaults = Hardware()
    hw.add_argument("--bytes-per-param", type=positive, default=defaults.bytes_per_param,
                    help=f"training-state bytes per parameter (default {defaults.bytes_per_param:g})")
    hw.add_argument("--activation-bytes", type=nonneg, default=defaults.activation_bytes,
                    help="activation bytes per parameter per token in a batch "
                    f"(default {defaults.activation_bytes:g}; 0 = unlimited accumulation)")
    hw.add_argument("--device-flops", type=positive, default=defaults.device_flops,
                    help=f"sustained FLOP/s per accelerator (default {defaults.device_flops:g})")
    hw.add_argument("--tokens-per-device", type=positive, default=defaults.tokens_per_device,
                    help=f"tokens per accelerator per step (default {defaults.tokens_per_device:g})")
    search = parser.add_argument_group("search")
    search.add_argument("--batch", choices=BATCH_MODES, default="pow2",
                        help="batch sizes: powers of two (default) or any whole number")
    search.add_argument("--batch-size", type=positive, default=None, metavar="B",
                        help="fix the batch size instead of searching it")
    search.add_argument("--method", choices=METHODS, default="grid+gradient",
                        help="search method (default grid+gradient)")
    search.add_argument("--variant", choices=("plain", "weight-norm"), default=None,
                        help="NQS predictor (default: PARAMS' variant, else plain; weight-norm: "
                        "grid search only)")
    search.add_argument("--alternatives", type=int, default=3, metavar="K",
                        help="next-best batch sizes shown (default 3)")
    parser.add_argument("--chinchilla", metavar="CH", default=None,
                        help="Chinchilla parameters to compare: a PARAMS.json from 'fit --model "
                        f"chinchilla' or a preset ({', '.join(sorted(CHINCHILLA_PRESETS))})")
    parser.add_argument("--schedule-search", action="store_true",
                        help="also optimise a batch ramp and lr decay for each chosen run")
    parser.add_argument("--segments", type=int, default=8, metavar="S",
                        help="segments of the searched schedule (default 8, at most 16)")
    parser.add_argument("--max-ramp", type=positive, default=8.0, metavar="R",
                        help="largest batch growth in the searched schedule (default 8)")
    parser.add_argument("--out", metavar="FILE.json", default=None, help="write the plans as JSON")
    add_progress_option(parser)


def _fmt(v: float, width: int = 9) -> str:
    return f"{v:{width}.3e}" if np.isfinite(v) else f"{'-':>{width}}"


def run(args: argparse.Namespace) -> int:
    from .._plan import frontier

    started = time.monotonic()
    if args.alternatives < 0:
        raise InputError(f"--alternatives must be >= 0, got {args.alternatives}")
    if not 1 <= args.segments <= 16:
        raise InputError(f"--segments must be in [1, 16], got {args.segments}")
    if args.out is not None:
        check_out(args.out)
    loaded = load_model(args.params, lr=args.lr, variant=args.variant)
    model = loaded.model
    seq_len = args.seq_len if args.seq_len is not None else loaded.seq_len
    computes = np.array([c for group in args.compute for c in group], dtype=float)
    chinchilla = None
    if args.chinchilla is not None:
        chinchilla = load_chinchilla(args.chinchilla)
    if args.schedule_search:
        from .._model import NQS

        if not isinstance(model, NQS):
            raise InputError(f"{loaded.source}: --schedule-search runs through the plain NQS's "
                             f"risk, but this is a {type(model).__name__} model")
    show = progress_enabled(args)
    try:
        hardware = Hardware(args.bytes_per_param, args.activation_bytes, args.device_flops,
                            args.tokens_per_device)
        if show:
            print(f"{PROG}: planning {computes.size} budget(s); the first run compiles "
                  "(~20 s), later runs reuse the cache", file=sys.stderr, flush=True)
        result = frontier(
            model, computes, seq_len=seq_len, chinchilla=chinchilla,
            max_tokens=args.max_tokens, max_memory=args.max_memory, max_time=args.max_time,
            hardware=hardware, batch=args.batch, batch_size=args.batch_size,
            min_steps=args.min_steps, n_range=args.n_range, b_range=args.b_range,
            method=args.method, alternatives=args.alternatives,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    rows = result.plan.rows()
    schedules = []
    if args.schedule_search:
        from .._plan import optimize_schedule

        bar = Progress("searching schedules", show)
        try:
            for i, row in enumerate(rows):
                bar.show(i / len(rows), f"budget {i + 1}/{len(rows)} (the first compiles, ~40 s)",
                         force=True)
                found = optimize_schedule(model, row["N"], row["tokens"], row["K"],
                                          seq_len=seq_len, segments=args.segments,
                                          max_ramp=args.max_ramp)
                row["schedule_search"] = {
                    "constant_loss": found.constant_loss, "loss": found.loss, "gain": found.gain,
                    "constant_lr_multiplier": float(np.asarray(found.constant.lr)[0]),
                    "segments": found.table(), "converged": found.converged,
                }
                schedules.append(found)
            bar.show(1.0, "done", force=True)
        finally:
            bar.close()
    if chinchilla is not None:
        for i, row in enumerate(rows):
            row["chinchilla"] = {"N": float(result.chinchilla_N[i]), "tokens": float(result.chinchilla_D[i]),
                                 "loss": float(result.chinchilla_loss[i]),
                                 "nqs_loss": float(result.nqs_loss_at_chinchilla[i])}

    print(f"plan ({result.plan.variant} model, {result.plan.method}, batch {result.plan.batch}, "
          f"seq_len {seq_len:g})")
    head = f"{'C':>9} {'N':>9} {'B':>8} {'K':>9} {'tokens':>9} {'D/N':>6} {'loss':>7}  binding"
    print(head)
    for row in rows:
        print(f"{row['compute']:9.2e} {row['N']:9.3e} {row['B']:8d} {row['K']:9d} "
              f"{row['tokens']:9.2e} {row['tokens_per_parameter']:6.1f} {row['loss']:7.4f}  "
              f"{', '.join(row['binding']) or '-'}")
        for alt in row["alternatives"]:
            print(f"{'':9} {alt['N']:9.3e} {alt['B']:8d} {alt['K']:9d} {'':9} {'':6} "
                  f"{alt['loss']:7.4f}  (alternative)")
    if chinchilla is not None:
        print("\nChinchilla's allocation (no batch size) and what NQS predicts for it")
        print(f"{'C':>9} {'N_opt':>9} {'D_opt':>9} {'D/N':>6} {'ch loss':>8} {'NQS loss':>8} {'NQS best':>8}")
        for row in rows:
            ch = row["chinchilla"]
            print(f"{row['compute']:9.2e} {ch['N']:9.3e} {ch['tokens']:9.2e} {ch['tokens'] / ch['N']:6.1f} "
                  f"{ch['loss']:8.4f} {ch['nqs_loss']:8.4f} {row['loss_exact']:8.4f}")
    if schedules:
        for row, found in zip(rows, schedules):
            print(f"\nschedule search at C={row['compute']:.2e} (N={row['N']:.3e}, K={row['K']}): "
                  f"loss {found.loss:.4f} vs best constant {found.constant_loss:.4f} "
                  f"(lr x{float(np.asarray(found.constant.lr)[0]):.3f}): gain {found.gain:.4f}")
            print(f"  {'steps':>9} {'B':>9} {'lr x':>8}")
            for seg in found.table():
                print(f"  {seg['steps']:9.1f} {seg['B']:9.1f} {seg['lr_multiplier']:8.4f}")
    if args.out:
        payload = rows[0] if len(rows) == 1 else {"plans": rows}
        with atomic_output(args.out) as fh:
            fh.write(json_text(payload))
    wall = time.monotonic() - started
    dest = f" -> {args.out}" if args.out else ""
    finished(f"planned {len(rows)} budget(s) in {wall:.1f} s{dest}")
    return EXIT_OK


__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "run"]
