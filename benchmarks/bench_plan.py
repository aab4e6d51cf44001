"""Planning benchmark: regret on the Pythia test isoflop groups, grid vs gradient, throughput.

    python benchmarks/bench_plan.py            # writes benchmarks/results/plan.json

1. Regret. For every test isoflop group of ../shared/data/pythia_owt2_runs.csv
   (runs at one compute level C, N varying) the planner chooses N with the
   parameters fitted on the training runs (benchmarks/results/fit.json, from
   bench_fit.py; refitted here if that file is absent); the regret is the
   observed loss of the run nearest the chosen N (in log N) minus the best
   observed loss of the group. The group's runs tie B to N (B shrinks as N
   grows), so the planner searches along that batch rule (a power law fitted
   to the group's (N, B)); a free power-of-two batch plan is reported beside.
   Chinchilla's N_opt(C) (fitted on the same training runs) gets the same table.
2. Grid and gradient search agree on several budgets and limits.
3. Throughput: one plan over 1e6 candidates (free batch size, grid only).
4. Schedule search at one budget: gain over the best constant schedule.
"""

from __future__ import annotations

import csv
import json
import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import nqs_engine as nqs  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import RESULTS, save  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "pythia_owt2_runs.csv"
SEQ = 128.0


def load_runs():
    with open(DATA) as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("N", "B", "K", "C", "loss"):
            r[k] = float(r[k])
        r["C"] *= 1e9  # the CSV's C is in GFLOPs
        r["filtered"] = r["filtered"].strip().lower() == "true"
    return rows


def fitted_params(rows):
    fit_json = RESULTS / "fit.json"
    if fit_json.exists():
        data = json.loads(fit_json.read_text())
        nqs_p = nqs.NQSParams.from_dict(data["nqs_fit"]["params"])
        lr = float(data["nqs_fit"]["lr"])
        ch = nqs.ChinchillaParams.from_dict(data["chinchilla_pythia"]["params"])
        return nqs_p, lr, ch, "benchmarks/results/fit.json"
    train = [r for r in rows if r["split"] == "train" and not r["filtered"]]
    arr = lambda k: np.array([r[k] for r in train])  # noqa: E731
    result = nqs.fit(nqs.Runs.from_arrays(arr("N"), arr("B"), arr("K"), arr("loss")))
    D = arr("B") * arr("K") * SEQ
    ch = nqs.fit_chinchilla(arr("N"), D, arr("loss")).params
    return result.params, result.lr, ch, "refitted"


def regret_table(rows, params, lr, ch):
    groups = {}
    for r in rows:
        if r["split"] == "test" and r["type"] == "isoflop":
            groups.setdefault(r["C"], []).append(r)
    out = []
    for C in sorted(groups):
        g = sorted(groups[C], key=lambda r: r["N"])
        if len(g) < 2:
            continue
        N = np.array([r["N"] for r in g])
        B = np.array([r["B"] for r in g])
        L = np.array([r["loss"] for r in g])
        e, log_c = np.polyfit(np.log(N), np.log(B), 1)
        C_run = float(np.median(6 * N * B * np.array([r["K"] for r in g]) * SEQ))
        n_range = (N.min() / 4, N.max() * 4)

        def nearest(n):
            i = int(np.argmin(np.abs(np.log(N) - np.log(n))))
            return float(N[i]), float(L[i] - L.min())

        row = {"C": C_run, "runs": len(g), "best_N": float(N[np.argmin(L)]),
               "best_loss": float(L.min()), "batch_rule": [float(np.exp(log_c)), float(e)]}
        for name, kwargs in (
            ("nqs_rule_plain", dict(batch_rule=(np.exp(log_c), e), variant="plain")),
            ("nqs_rule_weight_norm", dict(batch_rule=(np.exp(log_c), e), variant="weight-norm",
                                          grid=(512, 1))),
            ("nqs_free_pow2", dict(variant="plain")),
        ):
            p = nqs.plan(params, C_run, seq_len=SEQ, lr=lr, n_range=n_range, **kwargs)
            n_run, regret = nearest(float(p.N_exact))
            row[name] = {"N": float(p.N_exact), "B": float(p.B_exact), "nearest_N": n_run,
                         "regret": regret}
        n_opt, _ = nqs.chinchilla_compute_optimal(ch, C_run)
        n_run, regret = nearest(float(n_opt))
        row["chinchilla"] = {"N": float(n_opt), "nearest_N": n_run, "regret": regret}
        out.append(row)
    return out


def agreement(params, lr):
    cases = [
        (1e18, {}), (1e19, {}), (1e20, {"max_tokens": 2e9}), (1e21, {"max_memory": 5e12}),
        (1e19, {"max_time": 3600.0 * 6}), (3e20, {"max_tokens": 1e10, "max_memory": 2e12}),
    ]
    out = []
    for batch in ("pow2", "free"):
        for C, limits in cases:
            g = nqs.plan(params, C, seq_len=SEQ, lr=lr, batch=batch, method="grid", **limits)
            d = nqs.plan(params, C, seq_len=SEQ, lr=lr, batch=batch, method="gradient", **limits)
            out.append({
                "batch": batch, "C": C, "limits": limits, "binding": list(g.binding),
                "grid_N": float(g.N_exact), "gradient_N": float(d.N_exact),
                "grid_B": float(g.B_exact), "gradient_B": float(d.B_exact),
                "rel_diff_N": abs(float(d.N_exact / g.N_exact) - 1),
                "rel_diff_B": abs(float(d.B_exact / g.B_exact) - 1),
                "loss_diff": float(d.loss_exact - g.loss_exact),
            })
    return out


def throughput(params, lr):
    # batch="free", grid (1000, 500): two passes of 500,000 candidates = 1e6 evaluations.
    times = []
    for _ in range(3):
        t = time.perf_counter()
        p = nqs.plan(params, 1e20, seq_len=SEQ, lr=lr, batch="free", method="grid", grid=(1000, 500))
        times.append(time.perf_counter() - t)
    return {"candidates": 1_000_000, "first_call_s": times[0], "warm_s": min(times[1:]),
            "evaluations_reported": p.evaluations}


def main():
    t0 = time.perf_counter()
    params, lr = nqs.preset("pythia-owt2")
    tp = throughput(params, lr)
    print(f"1e6 candidates: first call {tp['first_call_s']:.2f} s (compilation included), "
          f"warm {tp['warm_s']:.2f} s")
    agree = agreement(params, lr)
    print("\ngrid vs gradient (pythia-owt2 preset)")
    for a in agree:
        print(f"  {a['batch']:5} C={a['C']:.0e} {str(a['limits']):45} N {a['rel_diff_N']:.1e} "
              f"B {a['rel_diff_B']:.1e}  binding {a['binding']}")
    schedule = nqs.plan(params, 1e19, seq_len=SEQ, lr=lr)
    found = nqs.optimize_schedule(params, float(schedule.N), float(schedule.tokens), float(schedule.K),
                                  seq_len=SEQ, lr=lr, segments=8)
    print(f"\nschedule search at 1e19 FLOPs (N={float(schedule.N):.3g}, B={int(schedule.B)}, "
          f"K={int(schedule.K)}): {found.loss:.4f} vs best constant {found.constant_loss:.4f}: "
          f"gain {found.gain:.4f} nats")
    payload = {"throughput_1e6": tp, "grid_vs_gradient": agree,
               "schedule_search": {"C": 1e19, "N": float(schedule.N), "B": float(schedule.B),
                                   "K": float(schedule.K), "loss": found.loss,
                                   "constant_loss": found.constant_loss, "gain": found.gain,
                                   "segments": found.table()}}
    if DATA.exists():
        rows = load_runs()
        fitted, flr, ch, source = fitted_params(rows)
        table = regret_table(rows, fitted, flr, ch)
        print(f"\nregret on the test isoflop groups (params fitted on the training runs: {source})")
        print(f"{'C':>9} {'best N':>9} | {'rule/plain':>17} | {'rule/wn':>17} | {'free pow2':>17} | "
              f"{'Chinchilla':>17}")
        for r in table:
            cells = [f"{r[k]['N']:9.2e} {r[k]['regret']:7.4f}" for k in
                     ("nqs_rule_plain", "nqs_rule_weight_norm", "nqs_free_pow2", "chinchilla")]
            print(f"{r['C']:9.2e} {r['best_N']:9.2e} | " + " | ".join(cells))
        payload["regret"] = {"params_source": source, "groups": table}
    else:
        print(f"\n{DATA} is absent: regret table skipped")
    path = save("plan", payload)
    print(f"\nwrote {path} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
