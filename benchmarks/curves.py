"""Loss curves (issue #15): schedule transfer across sizes, prefix -> endpoint, compute laws.

    python benchmarks/curves.py [--data ../shared/data] [--fractions 0.1,...,0.9] [--baseline]

On the Multi-Power Law curves (`../shared/data/mpl/{25,100}/*.csv`, 9 schedules x
2 model sizes, read here and never copied):

1. **Schedule transfer.** One sized NQS with norm growth (`nqs.NormSizedNQS`;
   `--baseline` adds `nqs.SizedNQS`, without it) fitted jointly to the
   curves of cosine_24000, constant_24000 and wsdcon_9 at both sizes, from the
   logged learning rates (`Runs.from_curves`, warmup 0 -> 3e-4 over 2160 steps),
   predicts the whole curve of the six other schedules. Per (size, schedule):
   mean and worst absolute error over the checkpoints (all after the warmup)
   and the final-loss error; targets MAE <= 0.005 and |final| <= 0.006. The
   Multi-Power Law's published held-out MAE (one fit per size) is beside it.
2. **Prefix -> endpoint** (`nqs_engine._prefix.prefix_endpoints`): every run's
   final loss from its checkpoints up to p of its steps, p = 0.1..0.9, the NQS
   (jointly on every run's prefix, never past the cutoff) against four
   parametric forms x {MAE, Huber} fitted to each run's own prefix.
3. **Endpoint compute law** per schedule family (constant, cosine: the families
   with 4 budgets), fitted on the 3 smaller budgets, the largest predicted; the
   transfer fit's prediction beside it (it never saw those runs).

Writes `results/curves.json`; the whole script takes a few minutes on the
2-core CPU (its wall time is recorded).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import nqs_engine as nqs  # noqa: E402
from nqs_engine._prefix import (  # noqa: E402
    FRACTIONS,
    CurveLog,
    compute_law_backtest,
    prefix_endpoints,
)

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import save  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
SCHEDULES = ("constant_24000", "constant_72000", "cosine_24000", "cosine_72000",
             "wsd_20000_24000", "wsdld_20000_24000", "wsdcon_3", "wsdcon_9", "wsdcon_18")
TRAIN = ("cosine_24000", "constant_24000", "wsdcon_9")
SIZES = (25, 100)
WARMUP = 2160
#: The Multi-Power Law's published held-out MAE (one fit per size; data/README.md).
MPL_MAE = {25: 0.0038, 100: 0.0044}
MPL_MAE_TEXT = {25: "0.0038", 100: "0.0044-0.0048"}
TARGET_MAE, TARGET_FINAL = 0.005, 0.006


def load(folder: pathlib.Path) -> dict[str, np.ndarray]:
    """The 18 MPL curves as columns run, size, schedule, N, step, lr, loss."""
    cols = {k: [] for k in ("run", "size", "schedule", "N", "step", "lr", "loss")}
    for size in SIZES:
        for name in SCHEDULES:
            d = np.loadtxt(folder / "mpl" / str(size) / f"{name}.csv", delimiter=",",
                           skiprows=1)
            n = d.shape[0]
            cols["run"] += [f"{size}M/{name}"] * n
            cols["size"] += [size] * n
            cols["schedule"] += [name] * n
            cols["N"] += [size * 1e6] * n
            for j, k in enumerate(("step", "lr", "loss")):
                cols[k] += d[:, j].tolist()
    return {k: np.asarray(v) for k, v in cols.items()}


def curves_runs(c, mask, loss=True):
    return nqs.Runs.from_curves(c["N"][mask], c["step"][mask], c["lr"][mask],
                                c["loss"][mask] if loss else None, run=c["run"][mask],
                                warmup=WARMUP)


def transfer(c, model) -> dict:
    """One fit of `model` across sizes on the training schedules; every curve predicted."""
    train = np.isin(c["schedule"], TRAIN)
    t0 = time.perf_counter()
    result = nqs.fit(curves_runs(c, train), model, seed=0)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = np.asarray(result.model.predict(curves_runs(c, np.ones(train.size, bool), False)))
    predict_s = time.perf_counter() - t0
    rows = []
    for size in SIZES:
        for name in SCHEDULES:
            m = (c["size"] == size) & (c["schedule"] == name) & (c["step"] > WARMUP)
            err = pred[m] - c["loss"][m]
            rows.append({"size": size, "schedule": name, "train": name in TRAIN,
                         "checkpoints": int(m.sum()), "mae": float(np.mean(np.abs(err))),
                         "worst": float(np.max(np.abs(err))), "final": float(err[-1]),
                         "mae_ok": bool(np.mean(np.abs(err)) <= TARGET_MAE),
                         "final_ok": bool(abs(err[-1]) <= TARGET_FINAL)})
    summary = {}
    for size in SIZES:
        held = [r for r in rows if r["size"] == size and not r["train"]]
        summary[str(size)] = {
            "held_out_mae_mean": float(np.mean([r["mae"] for r in held])),
            "held_out_mae_max": float(np.max([r["mae"] for r in held])),
            "held_out_final_abs_mean": float(np.mean([abs(r["final"]) for r in held])),
            "mae_ok": sum(r["mae_ok"] for r in held), "final_ok": sum(r["final_ok"] for r in held),
            "held_out": len(held), "mpl_published_mae": MPL_MAE[size],
            "mpl_published_mae_text": MPL_MAE_TEXT[size]}
    return {"fit": {**result.summary(), "wall_time_s": fit_s, "predict_s": predict_s,
                    "params": result.model.to_dict()},
            "rows": rows, "summary": summary, "model": result.model, "pred": pred}


def run_to_run(c, min_shared: int = 50) -> list[dict]:
    """How far apart the data's own runs are where they follow the same schedule.

    For every pair of curves of one size, the checkpoints (after the warmup) they share
    up to the first step where their logged learning rates differ; pairs that share at
    least `min_shared` such checkpoints report the mean and worst absolute difference of
    their losses there. A difference of exactly 0 means one run was branched off the
    other (the WSD runs of a constant run); otherwise it is the disagreement of two runs
    of one schedule: were the runs' deviations from their mean independent, a model of
    that mean would still miss each curve by about $1/\\sqrt{2}$ of it.
    """
    out = []
    for size in SIZES:
        for i, a in enumerate(SCHEDULES):
            for b in SCHEDULES[i + 1:]:
                ma = (c["size"] == size) & (c["schedule"] == a) & (c["step"] > WARMUP)
                mb = (c["size"] == size) & (c["schedule"] == b) & (c["step"] > WARMUP)
                steps, ia, ib = np.intersect1d(c["step"][ma], c["step"][mb],
                                               return_indices=True)
                same = np.isclose(c["lr"][ma][ia], c["lr"][mb][ib], rtol=1e-9, atol=0)
                n = int(np.argmin(same)) if not same.all() else same.size
                if n < min_shared:
                    continue
                diff = c["loss"][ma][ia[:n]] - c["loss"][mb][ib[:n]]
                out.append({"size": size, "runs": [a, b], "checkpoints": n,
                            "to_step": float(steps[n - 1]),
                            "mae": float(np.mean(np.abs(diff))),
                            "worst": float(np.max(np.abs(diff))),
                            "branched": bool(np.all(diff == 0))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path, default=DATA)
    parser.add_argument("--fractions", default=",".join(str(p) for p in FRACTIONS))
    parser.add_argument("--baseline", action="store_true",
                        help="also fit the sized NQS without norm growth (about a minute more)")
    args = parser.parse_args()
    if not (args.data / "mpl").is_dir():
        raise SystemExit(f"{args.data / 'mpl'}: no such folder (the MPL curves)")
    started = time.perf_counter()
    c = load(args.data)

    models = [nqs.NormSizedNQS()] + ([nqs.SizedNQS()] if args.baseline else [])
    done = {}
    for model in models:
        print(f"1. schedule transfer ({model.kind}): one fit on", ", ".join(TRAIN),
              "at both sizes", flush=True)
        done[model.kind] = tr = transfer(c, model)
        print(f"   fit {tr['fit']['wall_time_s']:.0f} s, objective {tr['fit']['objective']:.4g}")
        print(f"   {'size':>4} {'schedule':18} {'role':5} {'MAE':>7} {'worst':>7} {'final':>8}")
        for r in tr["rows"]:
            flag = "" if r["train"] else ("  MAE ok" if r["mae_ok"] else "  MAE miss") + (
                ", final ok" if r["final_ok"] else ", final miss")
            print(f"   {r['size']:>3}M {r['schedule']:18} {'train' if r['train'] else 'held':5} "
                  f"{r['mae']:7.4f} {r['worst']:7.4f} {r['final']:+8.4f}{flag}")
        for size, s in tr["summary"].items():
            print(f"   {size}M held-out: MAE mean {s['held_out_mae_mean']:.4f} (MPL published "
                  f"{s['mpl_published_mae_text']}), max {s['held_out_mae_max']:.4f}; MAE <= "
                  f"0.005 on {s['mae_ok']}/{s['held_out']}, |final| <= 0.006 on "
                  f"{s['final_ok']}/{s['held_out']}")
    tr = done[models[0].kind]
    repro = run_to_run(c)
    for r in repro:
        if not r["branched"]:
            print(f"   the data's own runs: {r['size']}M {r['runs'][0]} and {r['runs'][1]} "
                  f"follow one schedule to step {r['to_step']:.0f} and differ there by MAE "
                  f"{r['mae']:.4f} (worst {r['worst']:.4f})")

    print("2. prefix -> endpoint", flush=True)
    log = CurveLog.from_arrays(c["run"], c["N"], c["step"], c["lr"], c["loss"], warmup=WARMUP)
    t0 = time.perf_counter()
    fractions = [float(p) for p in args.fractions.split(",")]
    pre = prefix_endpoints(log, fractions)
    prefix_s = time.perf_counter() - t0
    table = pre.table()
    for r in table:
        if r["runs"]:
            print(f"   p={r['p']:.1f} {r['N'] / 1e6:4.0f}M runs {r['runs']}: NQS "
                  f"{r['model mae']:.4f} (worst {r['model worst']:.4f}), best form "
                  f"{r['best form']} {r['best form mae']:.4f} (worst "
                  f"{r[r['best form'] + ' worst']:.4f}) {'NQS wins' if r['model wins'] else ''}")
    at_half = {str(int(r["N"] / 1e6)): r for r in table if abs(r["p"] - 0.5) < 1e-9}
    per_run = []
    f = int(np.argmin(np.abs(pre.fractions - 0.5)))
    for i, label in enumerate(pre.labels):
        per_run.append({"run": str(label), "final": float(pre.final_loss[i]),
                        "nqs_error": float(pre.model[f, i] - pre.final_loss[i]),
                        **{k: float(v[f, i] - pre.final_loss[i]) for k, v in pre.forms.items()}})

    print("3. endpoint compute law per family (largest budget held out)", flush=True)
    idx = log.run_index()
    last = np.array([np.flatnonzero(idx == r)[-1] for r in range(pre.labels.size)])
    C = np.asarray(log.runs(with_loss=False).C)[last]
    family = np.array([lab.split("/")[1].split("_")[0] if "wsdcon" not in lab
                       else lab.split("/")[1] for lab in pre.labels])
    by_label = {}
    for lab, p in zip(c["run"], tr["pred"]):
        by_label[lab] = p  # the files list steps in order: the last row is the final loss
    model_final = np.array([by_label[lab] for lab in pre.labels])
    laws = {law: compute_law_backtest(C, pre.final_loss, family, law=law, labels=pre.labels,
                                      model_predictions=model_final)
            for law in ("power", "loglog")}
    for law, rows in laws.items():
        for r in rows:
            print(f"   {law:6} {r['family']:9} {r['run']:20} observed {r['observed']:.4f} law "
                  f"{r['law error']:+.4f} NQS (transfer fit) {r['model error']:+.4f}")

    wall = time.perf_counter() - started
    print(f"total {wall:.0f} s")
    payload = {
        "wall_time_s": wall,
        "transfer": {k: v for k, v in tr.items() if k not in ("model", "pred")},
        "transfer_baseline": ({k: v for k, v in done["nqs-sizes"].items()
                               if k not in ("model", "pred")} if "nqs-sizes" in done else None),
        "prefix": {"fractions": pre.fractions.tolist(), "table": table, "at_half": at_half,
                   "per_run_at_half": per_run, "wall_time_s": prefix_s,
                   "fits": [{k: v for k, v in fit.items() if k != "params"} for fit in pre.fits]},
        "compute_law": laws,
        "run_to_run": repro,
        "targets": {"transfer_mae": TARGET_MAE, "transfer_final": TARGET_FINAL,
                    "benchmark_s": 600},
    }
    print("saved", save("curves", payload))


if __name__ == "__main__":
    main()
