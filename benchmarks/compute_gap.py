"""Error against the compute gap (issue #3): fit below C0, predict every run above it.

    python benchmarks/compute_gap.py      # writes benchmarks/results/compute_gap.json

All non-filtered Pythia runs (train and test splits) are pooled; for each
threshold C0 the NQS (default fit, plain predictor; predictions with both
predictors) and Chinchilla are fitted on the runs with C = 6 N B K 128 <= C0
and scored on the rest. `gap` is the largest test compute over C0.
"""

from __future__ import annotations

import csv
import pathlib
import sys

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import save  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
THRESHOLDS = (3e15, 1e16, 3e16)


def main() -> None:
    jax.config.update("jax_enable_x64", True)
    import nqs_engine as nqs

    with open(DATA / "pythia_owt2_runs.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["filtered"] != "True"]
    N, B, K, y = (np.array([float(r[k]) for r in rows]) for k in ("N", "B", "K", "loss"))
    C = 6 * N * B * K * 128
    _, lr = nqs.preset("pythia-owt2")

    def fit_and_predict(train, test):
        runs = nqs.Runs.from_arrays(N[train], B[train], K[train], y[train])
        held = nqs.Runs.from_arrays(N[test], B[test], K[test], y[test])
        result = nqs.fit(runs)
        print(f"  C0 fit on {train.sum()} runs: objective {result.objective:.5f}, "
              f"{result.wall_time:.0f} s", flush=True)
        chin = nqs.fit_chinchilla(N[train], B[train] * K[train] * 128, y[train])
        return {
            "nqs/plain": np.asarray(nqs.predict_runs(result.params, held, lr=lr)),
            "nqs/weight-norm": np.asarray(
                nqs.predict_runs(result.params, held, lr=lr, variant="weight-norm")),
            "chinchilla": np.asarray(
                nqs.chinchilla_loss(chin.params, N[test], B[test] * K[test] * 128)),
        }

    table = nqs.compute_gap(C, y, THRESHOLDS, fit_and_predict)
    print(nqs.format_table(table, ["C0", "gap", "n_train", "n_test", "model", "huber_e5",
                                   "msle", "mape"]))
    print("saved", save("compute_gap", {"thresholds": list(THRESHOLDS), "rows": table}))


if __name__ == "__main__":
    main()
