"""`nqs-engine sweep`: the predicted loss over a grid of N x B x K (or compute), on all devices."""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time

import numpy as np

from .._io import InputError, atomic_output, json_text
from ._common import (
    EXIT_OK,
    PROG,
    Progress,
    add_params_options,
    add_progress_option,
    load_model,
    progress_enabled,
)


#: Cells computed per call (blocks of whole N rows): bounds the memory of one call
#: and paces the progress bar. Blocks share one shape, so one compilation.
BLOCK_CELLS = 2**22

#: Columns of the CSV output, one row per cell.
CSV_COLUMNS = ("N", "B", "K", "C", "tokens", "loss")

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
N x B x K, or N x B x C at fixed compute, to FILE.npz or FILE.csv. The grid is split evenly over the local devices (all of them by
default, --devices) and each device evaluates its own cells; the program
is compiled once per grid shape.

Axes (--N, --B, and one of --K, --compute)
  START:STOP:NUM  NUM points spaced geometrically from START to STOP, both
                  included (NUM = 1 needs START == STOP): 1e6:1e10:41
  V1,V2,...       the listed values, in order: 64,128,256
  N model sizes (>= 1), B batch sizes in sequences (> 0), K steps (>= 0),
  C compute budgets in FLOPs (> 0). --pow2-B rounds every B to the nearest
  power of two and drops repeats.

At fixed compute (--compute) each cell runs K = C / (6 N B seq_len) steps
(not rounded); a cell with K < 1 cannot take one step within its budget:
it is infeasible and its loss is inf. tokens = B K seq_len in both modes,
and C = 6 N tokens.

PARAMS (--params): a preset or a JSON file, as for '{PROG} predict'.

Outputs (written whole or not at all; the extension picks the format)
  FILE.npz  arrays N, B, K (or C), loss of shape (len N, len B, len K or C),
            and metadata: a JSON string with the model and its parameters,
            seq_len, the axes' names, devices and timings
  FILE.csv  one row per cell, N slowest and K (or C) fastest, columns
            {", ".join(CSV_COLUMNS)}

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
"""


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
                        help="output, FILE.npz or FILE.csv (written atomically)")
    parser.add_argument("--devices", default="all", metavar="all|N",
                        help="use all local devices (default) or the first N")
    add_progress_option(parser)


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


def _devices(text: str) -> list:
    import jax

    local = jax.local_devices()
    if text.strip().lower() == "all":
        return local
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= len(local):
        raise InputError(f"--devices must be 'all' or an integer from 1 to {len(local)} "
                         f"(the local devices), got {text!r}")
    return local[:n]


def _out_format(path: str) -> str:
    """'npz' or 'csv' from --out's extension; refuses an unwritable place before any work."""
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in ("npz", "csv"):
        raise InputError(f"--out {path!r}: the extension must be .npz or .csv")
    full = os.path.abspath(path)
    if os.path.isdir(full):
        raise InputError(f"{full}: is a directory, expected a file name for the output")
    if not os.path.isdir(os.path.dirname(full)):
        raise InputError(f"{full}: output folder {os.path.dirname(full)} does not exist")
    return fmt


def _compute_grid(model, N, B, X, by_compute, seq_len, devices, bar) -> np.ndarray:
    """The loss grid, computed in blocks of whole N rows of one shape (one compilation)."""
    from .._sweep import sweep

    rows = max(1, min(N.size, BLOCK_CELLS // (B.size * X.size)))
    out = np.empty((N.size, B.size, X.size))
    kwargs = dict(compute=X, seq_len=seq_len) if by_compute else dict(K=X)
    for start in range(0, N.size, rows):
        block = N[start:start + rows]
        padded = np.concatenate([block, np.full(rows - block.size, block[-1])])
        loss = sweep(model, padded, B, devices=devices, **kwargs)
        out[start:start + block.size] = np.asarray(loss)[:block.size]
        done = start + block.size
        rate = done * B.size * X.size / max(time.monotonic() - bar.start, 1e-9)
        bar.show(done / N.size, f"{done:,}/{N.size:,} N rows {rate:,.0f} cells/s",
                 force=done == N.size)
    return out


def _write_csv(f, N, B, X, loss, by_compute, seq_len, bar) -> None:
    """One row per cell, N slowest; written in slabs of whole N rows (bounded memory)."""
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows = max(1, 100_000 // (B.size * X.size))
    try:
        for start in range(0, N.size, rows):
            Ng, Bg, Xg = np.meshgrid(N[start:start + rows], B, X, indexing="ij")
            if by_compute:
                C, K = Xg, Xg / (6 * Ng * Bg * seq_len)
            else:
                K, C = Xg, 6 * Ng * Bg * Xg * seq_len
            cols = (Ng, Bg, K, C, Bg * K * seq_len, loss[start:start + rows])
            writer.writerows(np.stack([c.ravel() for c in cols], 1).tolist())  # floats by repr
            done = min(start + rows, N.size)
            bar.show(done / N.size, f"{done:,}/{N.size:,} N rows", force=done == N.size)
    finally:
        bar.close()


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
    cells = N.size * B.size * X.size
    if cells >= 2**31 - 1:
        raise InputError(f"the grid has {cells:,} cells ({N.size} x {B.size} x {X.size}); "
                         f"at most {2**31 - 2:,} are supported")
    devices = _devices(args.devices)
    fmt = _out_format(args.out)
    model = load_model(args.params, lr=args.lr).model

    show = progress_enabled(args)
    bar = Progress("sweeping", show)
    try:
        loss = _compute_grid(model, N, B, X, by_compute, args.seq_len, devices, bar)
    except ValueError as exc:  # the planning rule's domain, stricter than predict's
        raise InputError(f"{args.params}: {exc}") from None
    finally:
        bar.close()
    seconds = time.monotonic() - bar.start
    infeasible = int(np.isinf(loss).sum())
    meta = {
        **model.to_dict(), "seq_len": args.seq_len,
        "axes": ["N", "B", "C" if by_compute else "K"], "shape": list(loss.shape),
        "infeasible_cells": infeasible,
        "devices": len(devices), "device_kind": devices[0].device_kind,
        "compute_s": seconds,
    }
    if fmt == "npz":
        arrays = {"N": N, "B": B, ("C" if by_compute else "K"): X, "loss": loss,
                  "metadata": np.array(json_text(meta))}
        with atomic_output(args.out, binary=True) as f:
            np.savez(f, **arrays)
    else:
        with atomic_output(args.out) as f:
            _write_csv(f, N, B, X, loss, by_compute, args.seq_len, Progress("writing ", show))
    rate = cells / max(seconds, 1e-9)
    note = f", {infeasible:,} infeasible" if by_compute else ""
    print(f"{PROG}: swept {cells:,} cells ({N.size} x {B.size} x {X.size}{note}) on "
          f"{len(devices)} device(s) in {seconds:.1f} s ({rate:,.0f} cells/s), "
          f"{time.monotonic() - started:.1f} s in all -> {args.out}", file=sys.stderr, flush=True)
    return EXIT_OK


__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "parse_axis", "run"]
