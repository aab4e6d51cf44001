"""`nqs-engine demo`: predict, plan against Chinchilla and draw, on the built-in preset."""

from __future__ import annotations

import argparse
import csv
import os
import time

import numpy as np

from .._io import atomic_output
from ._common import EXIT_OK, PROG, add_progress_option, finished, note
from ._plot import FORMATS, check_folder, drawing_bar, make_figures, save_figures

SEQ_LEN = 128
BUDGETS = (1e18, 1e19, 1e20, 1e21, 1e22)
LADDER = (1e7, 3e7, 1e8, 3e8, 1e9, 3e9, 1e10)

DESCRIPTION = f"""\
Run the engine on its built-in default, with no data of your own: the
published NQS fit to the Pythia / OpenWebText2 ladder (preset pythia-owt2,
sequences of {SEQ_LEN} tokens), and beside it Chinchilla fitted to the same
ladder's training runs (Chinchilla preset pythia-owt2). It

  1. predicts the loss and its terms (irreducible, approximation, bias,
     variance) for a ladder of model sizes at 20 tokens per parameter;
  2. plans the compute-optimal N, B, K for budgets of 1e18 to 1e22 FLOPs
     and sets Chinchilla's choice beside it, with the loss the NQS predicts
     for that choice (Chinchilla's regret under the NQS);
  3. draws the isoflop and isotoken curves, the loss decomposition, loss
     curves under five schedules and the frontier against Chinchilla.

It writes ladder.csv, frontier.csv and the figures into the folder --out.
About half a minute on a 2-core laptop CPU, most of it compiling and
running the planner.
"""


EPILOG = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="nqs-demo", metavar="DIR",
                        help="folder for the tables and figures (created if missing; "
                        "default: nqs-demo)")
    parser.add_argument("--format", choices=FORMATS, default="png",
                        help="image format (default: png)")
    parser.add_argument("--no-plots", action="store_true",
                        help="tables only (no matplotlib needed)")
    add_progress_option(parser)


def _write_csv(path: str, header: list[str], rows: list[list[float]]) -> None:
    with atomic_output(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([[repr(float(v)) for v in row] for row in rows])


def run(args: argparse.Namespace) -> int:
    from .._model import Chinchilla, NQS
    from .._plan import frontier

    started = time.monotonic()
    check_folder(args.out)
    plots = not args.no_plots
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            note("matplotlib is not installed: tables only "
                  "(pip install 'nqs-engine[plot]' for the figures)")
            plots = False
    model = NQS.preset("pythia-owt2")
    lr = float(model.lr)
    chinchilla = Chinchilla.preset("pythia-owt2", seq_len=SEQ_LEN)

    # 1. The ladder: 20 tokens per parameter at batch 512.
    N = np.array(LADDER)
    B = 512.0
    K = np.ceil(20 * N / (B * SEQ_LEN))
    out = model(N, B, K)
    terms = {f: np.asarray(getattr(out, f)) for f in
             ("total", "irreducible", "approximation", "bias", "variance")}
    print(f"1. NQS preset pythia-owt2 (lr {lr}): a ladder at 20 tokens/parameter, "
          f"batch {B:g} x {SEQ_LEN} tokens")
    print(f"{'N':>9} {'K':>8} {'FLOPs':>9} {'loss':>7} {'approx':>7} {'bias':>7} {'variance':>8}")
    ladder = []
    for i, n in enumerate(N):
        c = 6 * n * B * K[i] * SEQ_LEN
        row = [n, B, K[i], c, *(terms[f][i] for f in terms)]
        ladder.append(row)
        print(f"{n:9.2e} {K[i]:8.0f} {c:9.2e} {terms['total'][i]:7.4f} "
              f"{terms['approximation'][i]:7.4f} {terms['bias'][i]:7.4f} "
              f"{terms['variance'][i]:8.4f}")

    # 2. The compute-optimal frontier against Chinchilla's allocation.
    budgets = np.array(BUDGETS)
    front = frontier(model, budgets, seq_len=SEQ_LEN, chinchilla=chinchilla, method="grid")
    p = front.plan
    regret = front.nqs_loss_at_chinchilla - p.loss
    print("\n2. compute-optimal runs (NQS plan, power-of-two batch) beside Chinchilla's "
          "choice (no batch size)")
    print(f"{'FLOPs':>8} | {'N':>8} {'B':>6} {'K':>8} {'D/N':>6} {'loss':>7} | "
          f"{'Chin. N':>8} {'D/N':>6} {'NQS loss':>8} {'regret':>7}")
    table = []
    for i, c in enumerate(budgets):
        row = [c, p.N[i], p.B[i], p.K[i], p.tokens[i], p.loss[i], front.chinchilla_N[i],
               front.chinchilla_D[i], front.chinchilla_loss[i], front.nqs_loss_at_chinchilla[i],
               regret[i]]
        table.append(row)
        print(f"{c:8.0e} | {p.N[i]:8.2e} {p.B[i]:6.0f} {p.K[i]:8.0f} "
              f"{p.tokens[i] / p.N[i]:6.1f} {p.loss[i]:7.4f} | {front.chinchilla_N[i]:8.2e} "
              f"{front.chinchilla_D[i] / front.chinchilla_N[i]:6.1f} "
              f"{front.nqs_loss_at_chinchilla[i]:8.4f} {regret[i]:+7.4f}")

    figures = {}
    if plots:
        # 3. Figures. Isoflop lines at each budget's planned batch size, around its N.
        iso_C = budgets[:4]
        iso_N = np.concatenate([p.N[:4, None] * np.array([[0.05, 20.0]])]).ravel()
        iso_B = np.repeat(p.B[:4], 2)
        iso_K = np.repeat(iso_C, 2) / (6 * iso_N * iso_B * SEQ_LEN)
        tok_D = np.repeat([1e9, 1e10, 1e11], 2)
        tok_B = np.tile([32.0, 8192.0], 3)
        runs = {"N": np.concatenate([iso_N, np.full(6, 1e8)]),
                "B": np.concatenate([iso_B, tok_B]),
                "K": np.concatenate([iso_K, tok_D / (tok_B * SEQ_LEN)]),
                "loss": None, "groups": None,
                "isoflop": np.arange(14) < 8, "isotoken": np.arange(14) >= 8}
        at = (float(p.N[1]), float(p.B[1]), float(p.K[1]))  # the 1e19 plan
        names = ["isoflop", "isotoken", "decomposition", "trajectories", "frontier"]
        callback, close = drawing_bar(args)
        try:
            figures = make_figures(names, set(names), model, SEQ_LEN, runs, at, budgets,
                                   chinchilla, lambda text: (close(), note(text)),
                                   front=front, progress=callback)
        finally:
            close()

    os.makedirs(args.out, exist_ok=True)
    written = [os.path.join(args.out, "ladder.csv"), os.path.join(args.out, "frontier.csv")]
    _write_csv(written[0], ["N", "B", "K", "C", "prediction", "irreducible", "approximation",
                            "bias", "variance"], ladder)
    _write_csv(written[1], ["C", "N", "B", "K", "tokens", "loss", "chinchilla_N",
                            "chinchilla_D", "chinchilla_loss", "nqs_loss_at_chinchilla",
                            "regret"], table)
    if figures:
        written += save_figures(figures, args.out, args.format, 120.0)
    print(f"\n3. wrote to {args.out}/: " + ", ".join(os.path.basename(w) for w in written),
          flush=True)
    finished(f"demo done in {time.monotonic() - started:.1f} s. Next: '{PROG} plan --help', "
             f"'{PROG} plot --help', or the notebooks in notebooks/")
    return EXIT_OK
