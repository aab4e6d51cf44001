"""Fitting benchmark (issue #3): NQS and Chinchilla on the Pythia ladder and the Epoch data.

Run from a fresh process (the NQS fit's wall time includes compilation):

    python benchmarks/bench_fit.py            # writes benchmarks/results/fit.json

1. The default NQS fit (plain predictor, squared log error) on the 64 training
   runs: wall time and objective (the reference reaches 0.02208 in 80 s on a GPU).
2. Held-out mean squared log error and mean Huber x 1e-5 on the test groups,
   for our fit and for the reference's published parameters, both predictors.
3. Chinchilla fitted on the same 64 runs, on the same test groups.
4. Chinchilla on the Epoch AI extraction of Hoffmann et al. (without the 5
   highest-loss outliers, as Epoch AI's fit), against the 95% intervals of
   Epoch's refit; and on all 245 points for comparison.
5. Optionally (--bootstrap S) bootstrap intervals of the NQS parameters.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import save  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
EPOCH_CI = {"E": (1.769, 1.871), "A": (285, 744), "B": (1042, 5810),
            "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=0, metavar="S")
    parser.add_argument("--data", type=pathlib.Path, default=DATA)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    import nqs_engine as nqs
    from nqs_engine import chinchilla_loss, fit_chinchilla
    from nqs_engine import format_table, grouped_metrics

    with open(args.data / "pythia_owt2_runs.csv") as f:
        rows = list(csv.DictReader(f))
    col = lambda rs, k: np.array([float(r[k]) for r in rs])  # noqa: E731
    train = [r for r in rows if r["split"] == "train" and r["filtered"] != "True"]
    test = [r for r in rows if r["split"] == "test"]
    runs = nqs.Runs.from_arrays(col(train, "N"), col(train, "B"), col(train, "K"),
                                col(train, "loss"))

    t0 = time.perf_counter()
    result = nqs.fit(runs)
    wall = time.perf_counter() - t0
    print(f"NQS fit: objective {result.objective:.6f} (reference 0.02208) in {wall:.1f} s "
          f"(compilation included); {result.num_converged}/{result.num_refined} refined "
          f"starts converged")
    print("  params:", {k: round(v, 6) for k, v in result.params.to_dict().items()})

    test_runs = nqs.Runs.from_arrays(col(test, "N"), col(test, "B"), col(test, "K"),
                                     col(test, "loss"))
    reference, lr = nqs.preset("pythia-owt2")
    y = col(test, "loss")
    predictions = {}
    for name, params in (("nqs-ours", result.params), ("nqs-reference", reference)):
        for variant in ("plain", "weight-norm"):
            pred = nqs.predict_runs(params, test_runs, lr=lr, variant=variant)
            predictions[f"{name}/{variant}"] = np.asarray(pred)

    t1 = time.perf_counter()
    chin = fit_chinchilla(col(train, "N"), col(train, "B") * col(train, "K") * 128,
                          col(train, "loss"))
    chin_wall = time.perf_counter() - t1
    predictions["chinchilla"] = np.asarray(
        chinchilla_loss(chin.params, col(test, "N"), col(test, "B") * col(test, "K") * 128))
    table = grouped_metrics(y, predictions, {"type": np.array([r["type"] for r in test])})
    print("\nheld-out (test split) accuracy:")
    print(format_table(table))

    with open(args.data / "chinchilla_hoffmann_epoch.csv") as f:
        epoch = list(csv.DictReader(f))
    N_e = col(epoch, "Model Size")
    D_e = col(epoch, "Training FLOP") / (6 * N_e)
    # Epoch AI's protocol drops the 5 highest-loss points (outliers); weight 0 does it.
    loss_e = col(epoch, "loss")
    keep = np.ones(loss_e.size)
    keep[np.argsort(-loss_e, kind="stable")[:5]] = 0.0
    t2 = time.perf_counter()
    ep = fit_chinchilla(N_e, D_e, loss_e, weights=keep)
    ep_wall = time.perf_counter() - t2
    ep_all = fit_chinchilla(N_e, D_e, loss_e)
    ep_params = ep.params.to_dict()
    inside = {k: bool(EPOCH_CI[k][0] <= ep_params[k] <= EPOCH_CI[k][1]) for k in EPOCH_CI}
    print(f"\nChinchilla on the Epoch data, 240 points ({ep_wall:.1f} s): "
          + ", ".join(f"{k}={v:.4g} {'in' if inside[k] else 'OUTSIDE'} {EPOCH_CI[k]}"
                      for k, v in ep_params.items()))
    print("  all 245 points (outliers kept): "
          + ", ".join(f"{k}={v:.4g}" for k, v in ep_all.params.to_dict().items()))

    payload = {
        "nqs_fit": {"wall_time_s": wall, **result.summary(),
                    "params": result.params.to_dict(), "reference_objective": 0.02208,
                    "start_objectives": np.asarray(result.start_objectives).tolist()},
        "held_out": table,
        "reference_held_out_msle": {"weight-norm": {"isoflop": 0.00147, "isotoken": 0.00305},
                                    "plain": {"isoflop": 0.00143, "isotoken": 0.00444}},
        "paper_huber_e5": {"nqs": {"isoflop": 2.54, "isotoken": 5.58},
                           "chinchilla": {"isoflop": 9.03, "isotoken": 9.83}},
        "chinchilla_pythia": {"params": chin.params.to_dict(), "objective": chin.objective,
                              "wall_time_s": chin_wall},
        "chinchilla_epoch": {"params": ep_params, "inside_95ci": inside, "ci": EPOCH_CI,
                             "objective": ep.objective, "wall_time_s": ep_wall,
                             "dropped": "the 5 highest-loss points (Epoch AI's protocol)",
                             "params_all_245_points": ep_all.params.to_dict()},
    }
    if args.bootstrap:
        t3 = time.perf_counter()
        boot = nqs.bootstrap(runs, result, num_samples=args.bootstrap)
        payload["nqs_bootstrap"] = {"num_samples": args.bootstrap, "failed": boot.num_failed,
                                    "intervals_95": boot.intervals(),
                                    "wall_time_s": time.perf_counter() - t3}
        print("\nbootstrap 95% intervals:", payload["nqs_bootstrap"]["intervals_95"])
    print("\nsaved", save("fit", payload))


if __name__ == "__main__":
    main()
