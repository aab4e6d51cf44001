"""`nqs-engine plot`: the figures of `nqs_engine.plot` from a runs CSV and parameters."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np

from .._io import InputError, atomic_output
from .._presets import PRESETS
from ._common import (
    EXIT_OK,
    finished,
    PROG,
    Progress,
    RunsTable,
    add_progress_option,
    load_chinchilla,
    load_model,
    note,
    positive,
    progress_enabled,
)


#: The figures `plot` can make, in the order it makes them, with their file stems.
PLOTS = ("actual", "isoflop", "isotoken", "decomposition", "trajectories", "frontier")
FORMATS = ("png", "pdf", "svg")
_FILES = {"actual": "actual_vs_predicted", "isoflop": "isoflop", "isotoken": "isotoken",
          "decomposition": "decomposition", "trajectories": "trajectories",
          "frontier": "frontier"}

DESCRIPTION = """\
Draw the model against a ladder of runs: one image per figure into the
folder --out (created if missing).

figures (--plots, comma list; default: all):
  actual         predicted against measured loss, and the relative error
  isoflop        loss against N at fixed compute, runs and model lines
                 (the rows with type=isoflop, else runs grouped by compute)
  isotoken       loss against B at fixed N and tokens (type=isotoken rows,
                 else runs grouped by N and tokens)
  decomposition  irreducible, approximation, bias and variance against steps
  trajectories   the loss curve under constant, cosine, warmup-stable-decay,
                 step-decay and batch-ramp schedules of equal steps and tokens
  frontier       the compute-optimal N, tokens per parameter and loss against
                 compute, NQS beside Chinchilla

The decomposition and trajectories are drawn at the run of largest compute
(or --at N,B,K). The frontier spans --compute (default: 4 budgets from the
largest run's compute to 1000 times it) and compares with --chinchilla (a
preset or PARAMS.json; default: Chinchilla fitted to the runs' training
rows). Rows marked filtered are left out. With the default list, a figure
the runs cannot make (no isoflop group, say) is skipped with a note; one
asked for by name is an error. Every figure is computed before any file is
written, and each file is written whole.
"""

EPILOG = f"""\
RUNS.csv: a header and one row per run with the columns N (parameters), B
(batch size in sequences), K (steps) and loss; optional columns split
(train/test), type (isoflop/isotoken) and filtered (true/false) group and
select rows, as in '{PROG} fit --help'. Other columns are ignored.

PARAMS (--params): a preset ({', '.join(sorted(PRESETS))}) or a PARAMS.json
from '{PROG} fit' (any loss model; the trajectories figure needs the plain NQS).

examples:
  {PROG} plot runs.csv --params fit.json --out figures
  {PROG} plot runs.csv --params pythia-owt2 --plots isoflop,isotoken --format pdf
"""


def _plot_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if names == ["all"]:
        return None  # as the default: every figure the runs can make
    unknown = [n for n in names if n not in PLOTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown figure {', '.join(map(repr, unknown)) or repr(text)}; "
            f"choose from {', '.join(PLOTS)} (or all)")
    return names


def _triple(text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected N,B,K (three positive numbers), got {text!r}")
    return values  # type: ignore[return-value]


def _computes(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        values = []
    if not values or not all(np.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive FLOP counts, e.g. 1e20,1e21; "
                                         f"got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUNS.csv", help="the runs (format below)")
    parser.add_argument("--params", required=True, metavar="PARAMS",
                        help=f"parameters: a PARAMS.json or a preset "
                        f"({', '.join(sorted(PRESETS))})")
    parser.add_argument("--lr", type=positive, default=None, metavar="LR",
                        help="NQS peak step size; overrides the lr of PARAMS")
    parser.add_argument("--out", default="nqs-plots", metavar="DIR",
                        help="folder for the images (created if missing; default: nqs-plots)")
    parser.add_argument("--plots", type=_plot_list, default=None, metavar="LIST",
                        help=f"figures to draw, comma list of {', '.join(PLOTS)} "
                        "(default: all, skipping those the runs cannot make)")
    parser.add_argument("--seq-len", type=positive, default=None, metavar="L",
                        help="tokens per sequence (default: PARAMS' seq_len, else 128)")
    parser.add_argument("--variant", choices=("plain", "weight-norm"), default=None,
                        help="predictor for the runs (default: PARAMS' variant, else plain)")
    parser.add_argument("--at", type=_triple, default=None, metavar="N,B,K",
                        help="run of the decomposition and trajectory figures "
                        "(default: the run of largest compute)")
    parser.add_argument("--compute", type=_computes, default=None, metavar="C[,C...]",
                        help="budgets of the frontier in FLOPs (default: 4 from the largest "
                        "run's compute to 1000x)")
    parser.add_argument("--chinchilla", default=None, metavar="CH",
                        help="Chinchilla parameters for the frontier: a PARAMS.json or a preset "
                        "(default: fitted to the runs' training rows)")
    parser.add_argument("--format", choices=FORMATS, default="png", help="image format "
                        "(default: png)")
    parser.add_argument("--dpi", type=positive, default=120.0, help="resolution of png "
                        "images (default: 120)")
    add_progress_option(parser)


def _groups(table, mask: np.ndarray) -> np.ndarray | None:
    parts = [table.texts[c][mask] for c in ("split", "type") if c in table.texts]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = np.char.add(np.char.add(out, "/"), p)
    return out


def _of_type(table, mask: np.ndarray, kind: str) -> np.ndarray:
    if "type" not in table.texts:
        return mask
    return mask & (np.char.lower(table.texts["type"]) == kind)


def _schedules(K: float, B: float) -> dict:
    from .._schedule import Schedule

    K = float(np.floor(K))
    B = float(B)
    return {
        "constant": Schedule.constant(K, B),
        "cosine (1% warmup)": Schedule.cosine(K, B, pieces=32, warmup=0.01),
        "warmup-stable-decay": Schedule.wsd(K, B),
        "step decay x0.3, x0.1": Schedule.step_decay(K, B, (0.5, 0.8), (0.3, 0.1)),
        "batch ramp B/2, B, 3B/2": Schedule.batch_ramp(K, (B / 2, B, 1.5 * B)),
    }


def make_figures(
    names: list[str],
    required: set[str],
    model,
    seq_len: float,
    runs: dict | None,
    at: tuple[float, float, float],
    compute: np.ndarray,
    chinchilla,
    note: Callable[[str], None],
    front=None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """The figures in `names`; a figure in `required` that cannot be made is an InputError.

    `runs` holds the arrays N, B, K, loss, the masks isoflop / isotoken and the
    labels groups (or None when there are no runs: the demo). `front`, a
    precomputed [`nqs_engine.Frontier`][], replaces planning `compute` anew.
    `progress(i, n, name)` is called before figure i of n, and with i = n at the end.
    """
    from .. import plot
    from .._plan import frontier
    from .._runs import Runs

    figures = {}
    for i, name in enumerate(names):
        if progress is not None:
            progress(i, len(names), name)
        try:
            if name == "actual":
                if runs is None:
                    raise ValueError("needs measured runs")
                data = Runs.from_arrays(runs["N"], runs["B"], runs["K"], runs["loss"],
                                        seq_len=seq_len)
                predicted = np.asarray(model.predict(data))
                figures[name] = plot.actual_vs_predicted(runs["loss"], predicted,
                                                         groups=runs["groups"])
            elif name in ("isoflop", "isotoken"):
                m = runs[name]
                draw = plot.isoflop_curves if name == "isoflop" else plot.isotoken_curves
                loss = None if runs.get("loss") is None else runs["loss"][m]
                figures[name] = draw(model, runs["N"][m], runs["B"][m], runs["K"][m], loss,
                                     seq_len=seq_len)
            elif name == "decomposition":
                figures[name] = plot.loss_decomposition(model, *at)
            elif name == "trajectories":
                N, B, K = at
                figures[name] = plot.trajectories(model, N, _schedules(K, B))
            elif name == "frontier":
                if front is None:
                    front = frontier(model, compute, seq_len=seq_len, chinchilla=chinchilla,
                                     method="grid")
                figures[name] = plot.frontier_plot(front, seq_len=seq_len)
        except ValueError as exc:
            if name in required:
                raise InputError(f"{name}: {exc}") from None
            note(f"{name}: skipped ({exc})")
    if progress is not None:
        progress(len(names), len(names), "done")
    return figures


def drawing_bar(args: argparse.Namespace):
    """A progress bar over the figures, on a terminal unless --no-progress: `(callback, close)`."""
    bar = Progress("drawing", progress_enabled(args))

    def callback(i: int, n: int, name: str) -> None:
        bar.show(i / n, name if i == n else f"{name} ({i + 1}/{n})", force=True)

    return callback, bar.close


def save_figures(figures: dict, folder: str, fmt: str, dpi: float) -> list[str]:
    """Write each figure to FOLDER/<stem>.<fmt>, each file whole; return the paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = os.path.join(folder, f"{_FILES[name]}.{fmt}")
        with atomic_output(path, binary=True) as fh:
            fig.savefig(fh, format=fmt, dpi=dpi)
        paths.append(path)
    return paths


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("plot needs matplotlib: pip install 'nqs-engine[plot]'") from None
    check_folder(args.out)
    loaded = load_model(args.params, lr=args.lr, variant=args.variant)
    model = loaded.model
    seq_len = args.seq_len if args.seq_len is not None else loaded.seq_len

    table = RunsTable(args.runs, inputs=model.inputs)
    if table.use_d:
        raise InputError(f"{table.path}: plot needs the columns B and K (batch size and steps), "
                         "not only D")
    keep = table.unfiltered()
    if not keep.any():
        raise InputError(f"{table.path}: every row is marked filtered")
    v = {k: a[keep] for k, a in table.values.items()}
    runs = {"N": v["N"], "B": v["B"], "K": v["K"], "loss": v["loss"],
            "groups": _groups(table, keep),
            "isoflop": _of_type(table, keep, "isoflop")[keep],
            "isotoken": _of_type(table, keep, "isotoken")[keep]}
    short = keep & (table.values["K"] < 1)
    if short.any():
        i = int(np.argmax(short))
        raise InputError(f"{table.path}, row {i + 1}, column 'K': {table.values['K'][i]:g} "
                         "steps; plot needs K >= 1 (final losses, not checkpoints)")
    compute = 6.0 * runs["N"] * runs["B"] * runs["K"] * seq_len
    j = int(np.argmax(compute))
    at = args.at or (float(runs["N"][j]), float(runs["B"][j]), float(runs["K"][j]))
    budgets = (np.asarray(args.compute, float) if args.compute is not None
               else np.geomspace(compute[j], 1000 * compute[j], 4))
    names = args.plots or list(PLOTS)
    chinchilla = None
    if "frontier" in names:
        if args.chinchilla is not None:
            chinchilla = load_chinchilla(args.chinchilla)
        else:
            from .._fit import fit_chinchilla

            train = table.train_mask()[keep]
            if train.sum() >= 5:
                tokens = runs["B"] * runs["K"] * seq_len
                chinchilla = fit_chinchilla(runs["N"][train], tokens[train],
                                            runs["loss"][train]).params
            elif args.plots:
                raise InputError(f"frontier: fitting Chinchilla needs at least 5 training rows "
                                 f"in {table.path}, got {int(train.sum())}; pass --chinchilla")
            else:
                note(f"frontier: skipped (fitting Chinchilla needs at least 5 training rows, "
                      f"got {int(train.sum())}; pass --chinchilla)")
                names.remove("frontier")
    callback, close = drawing_bar(args)
    try:
        figures = make_figures(names, set(args.plots or ()), model, seq_len, runs, at, budgets,
                               chinchilla, lambda text: (close(), note(text)),
                               progress=callback)
    finally:
        close()
    if not figures:
        raise InputError("no figure could be made from these runs")
    paths = save_figures(figures, args.out, args.format, args.dpi)
    for path in paths:
        print(path)
    finished(f"wrote {len(paths)} figure(s) to {args.out} in {time.monotonic() - started:.1f} s")
    return EXIT_OK


def check_folder(path: str) -> None:
    """Refuse an --out folder that cannot be made or written, before any work."""
    full = os.path.abspath(path)
    if os.path.exists(full) and not os.path.isdir(full):
        raise InputError(f"--out {path}: exists and is not a folder")
    parent = full
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(f"--out {path}: cannot create the folder: {parent} is a file, not a "
                         "folder")
    if not os.access(parent, os.W_OK):
        raise InputError(f"--out {path}: cannot create or write to {parent}")


__all__ = ["DESCRIPTION", "EPILOG", "FORMATS", "PLOTS", "add_arguments",
           "check_folder", "drawing_bar", "make_figures", "run", "save_figures"]
