"""`nqs-engine evaluate`: the accuracy of fitted models on a runs CSV, per split and type."""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np

from .._io import InputError, atomic_output
from ._common import EXIT_OK, PROG, RunsTable, check_out, load_model


DESCRIPTION = f"""\
Print the accuracy of fitted parameters on the runs of RUNS.csv, per group
of the `split` and `type` columns (when present) and over all rows: mean
Huber (delta 1e-3) of the log error in units of 1e-5 (as the NQS paper
reports it), mean squared log error, mean absolute percentage error and the
largest absolute log error. --params may be given several times (e.g. an
NQS fit and a Chinchilla fit) to compare them side by side. Rows marked
filtered are skipped. RUNS.csv and PARAMS.json: see '{PROG} fit --help'.
"""

EPILOG = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv", help="runs with observed losses")
    parser.add_argument("--params", action="append", required=True, metavar="PARAMS",
                        help="a PARAMS.json (any model) or a preset; repeatable")
    parser.add_argument("--variant", choices=("plain", "weight-norm"), default=None,
                        help="NQS predictor (default: the one in PARAMS.json, else plain)")
    parser.add_argument("--out", metavar="METRICS.csv", default=None,
                        help="also write the table as CSV (atomically)")


def run(args: argparse.Namespace) -> int:
    from .._metrics import format_table, grouped_metrics
    from .._model import AbstractNQS

    if args.out is not None:
        check_out(args.out)
    loaded = []
    for source in args.params:
        item = load_model(source)
        if args.variant is not None and isinstance(item.model, AbstractNQS):
            item.model = item.model.as_variant(args.variant)
        loaded.append(item)
    inputs = tuple(dict.fromkeys(name for item in loaded for name in item.model.inputs))
    table = RunsTable(args.runs, inputs=inputs)
    keep = table.unfiltered()
    if not keep.any():
        raise InputError(f"{table.path}: every row is filtered")
    y = table.values["loss"][keep]
    predictions = {}
    for source, item in zip(args.params, loaded):
        name = f"{item.model.kind}:{os.path.basename(source)}"
        try:
            pred = item.model.predict(table.runs(keep, item.seq_len))
        except ValueError as exc:
            raise InputError(f"{table.path}: {exc}") from None
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
    return EXIT_OK


__all__ = ["DESCRIPTION", "EPILOG", "add_arguments", "run"]
