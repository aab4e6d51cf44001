"""One-off accuracy check of the risk against brute-force sums over every direction.

    python benchmarks/accuracy.py [--max-n 1e8] [--configs 12] [--pythia-rows]
    python benchmarks/accuracy.py --rules [--rule-configs 3000]

Draws random parameters over the domain of issue #2 (p 1.05..3, q 0.3..3,
P, Q, R, e_irr log-uniform, a stable step size), sums every direction n <= N in
numpy (chunked) and compares float64 and float32 engine results. With
--pythia-rows also checks the reference CSV rows (N <= --pythia-max-n) that disagree
with the published predictions by more than 1e-7 (minutes each). Saves
results/accuracy.json.

With --rules, instead sweeps the default sum rule over many random constant runs
and schedules (1 to 20 segments, step sizes over four decades, idle and empty
segments, K to 1e7): against brute force for N <= 1e5, and for N in 1e6..1e12
against a uniform rule of 512 panels x 20 nodes (~10,300 evaluations, no
crossover; it agrees with 1024 x 24 to ~3e-16); also the old rule of 0.1 on
the same draws. Saves results/accuracy_rules.json.
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import sys
import time

import jax
import numpy as np

from _common import save

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from helpers import DATA, brute_force_schedule, brute_force_terms  # noqa: E402


def _draw(rng, C, n_lo, n_hi, S, rule):
    """Random configurations over the domain (as tests/test_sum_rule.py draws them)."""
    th = dict(p=rng.uniform(1.05, 3, C), q=rng.uniform(0.3, 3, C), P=10 ** rng.uniform(-2, 2, C),
              Q=10 ** rng.uniform(-2, 2, C), e_irr=10 ** rng.uniform(-3, 1, C),
              R=10 ** rng.uniform(-3, 3, C), r=rng.uniform(0.3, 3, C))
    edge = np.where(rng.random(C) < 1 / 3, 1.999, 10 ** rng.uniform(-3, np.log10(1.999), C))
    lr = edge / th["Q"]
    mult = 10 ** rng.uniform(-4, 0, (C, S))
    mult[np.arange(C), rng.integers(0, S, C)] = 1.0
    batch = 10 ** rng.uniform(0, 4, (C, S))
    steps = np.floor(10 ** rng.uniform(0, np.log10(1e7 / S), (C, S)))
    if S > 1:
        mult = np.where(rng.random((C, S)) < 0.1, 0.0, mult)
        steps = np.where(rng.random((C, S)) < 0.1, 0.0, steps)
    N = np.floor(10 ** rng.uniform(n_lo, n_hi, C))
    ok = rule.kink_ratio(lr, th["Q"], th["q"]) < 1
    return {k: v[ok] for k, v in th.items()}, lr[ok], N[ok], mult[ok], batch[ok], steps[ok]


def rule_sweep(args):
    """Worst relative error of the default and the old rule over random runs and schedules."""
    import nqs_engine as nqs

    rules = {"default": nqs.SumRule(), "old": nqs.SumRule(64, 32, 12, 6, crossover_panels=0)}
    finer = nqs.SumRule(panels=512, nodes=20, crossover_panels=0)
    rng = np.random.default_rng(args.seed)
    rows = []
    for S in (1, 2, 3, 5, 8, 20):
        for exact in (True, False):
            C = max(20, args.rule_configs // 30) if exact else args.rule_configs
            th, lr, N, mult, batch, steps = _draw(rng, C, 0 if exact else 6, 5 if exact else 12,
                                                  S, rules["default"])
            params, sched = nqs.NQSParams(**th), nqs.Schedule(mult, batch, steps)
            if exact:
                ref = np.array([brute_force_schedule(N[i], {k: v[i] for k, v in th.items()},
                                                     list(zip(mult[i], batch[i], steps[i])), lr[i])
                                for i in range(len(N))]).T
            else:
                fine = nqs.schedule_risk(params, N, sched, lr=lr, rule=finer)
                ref = np.asarray(fine.bias), np.asarray(fine.variance)
            row = dict(segments=S, reference="brute force" if exact else "512x20 uniform rule",
                       n_range=[float(N.min()), float(N.max())], configs=len(N))
            for name, rule in rules.items():
                out = nqs.schedule_risk(params, N, sched, lr=lr, rule=rule)
                total = np.asarray(out.irreducible) + np.asarray(out.approximation) + ref[0] + ref[1]
                err = np.maximum(np.abs(np.asarray(out.bias) - ref[0]),
                                 np.abs(np.asarray(out.variance) - ref[1])) / total
                row[f"max_rel_err_{name}"] = float(err.max())
                row[f"p99_rel_err_{name}"] = float(np.quantile(err, 0.99))
            rows.append(row)
            print(f"S={S:2d} {row['reference']:20s} {len(N):5d} configs, N {N.min():.3g}..{N.max():.3g}: "
                  f"default max {row['max_rel_err_default']:.2e}, old max {row['max_rel_err_old']:.2e}",
                  flush=True)
    worst = max(r["max_rel_err_default"] for r in rows)
    path = save("accuracy_rules", dict(rows=rows, worst_rel_err_default=worst,
                                       worst_rel_err_old=max(r["max_rel_err_old"] for r in rows),
                                       configs=sum(r["configs"] for r in rows),
                                       evaluations=dict(default=rules["default"].num_evaluations,
                                                        old=rules["old"].num_evaluations)))
    print(f"worst relative error of the default rule: {worst:.2e} (target 1e-10); saved {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=float, default=1e8)
    parser.add_argument("--configs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pythia-rows", action="store_true")
    parser.add_argument("--pythia-max-n", type=float, default=2.6e8,
                        help="largest N of the Pythia rows checked by brute force")
    parser.add_argument("--rules", action="store_true",
                        help="sweep the sum rule over random runs and schedules instead")
    parser.add_argument("--rule-configs", type=int, default=3000)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    if args.rules:
        return rule_sweep(args)
    import nqs_engine as nqs

    rng = np.random.default_rng(args.seed)
    rows = []
    for i in range(args.configs):
        theta = dict(
            p=rng.uniform(1.05, 3), q=rng.uniform(0.3, 3), P=10 ** rng.uniform(-2, 2),
            Q=10 ** rng.uniform(-2, 2), e_irr=10 ** rng.uniform(-3, 1),
            R=10 ** rng.uniform(-3, 3), r=rng.uniform(0.3, 3),
        )
        lr = rng.choice([rng.uniform(1e-3, 1.9999), 1.999]) / theta["Q"]
        # Half the draws at the largest N, the rest log-uniform below it.
        N = float(args.max_n if i % 2 == 0 else np.floor(10 ** rng.uniform(2, np.log10(args.max_n))))
        K = float(np.floor(10 ** rng.uniform(0, 6)))
        B = float(10 ** rng.uniform(0, 4))
        t0 = time.perf_counter()
        ref = brute_force_terms(N, theta, K, B, lr)
        brute_s = time.perf_counter() - t0
        out64 = nqs.risk(nqs.NQSParams(**theta), N, B, K, lr=lr)
        f32 = lambda v: float(np.float32(v))  # noqa: E731
        theta32 = {k: f32(v) for k, v in theta.items()}
        ref32 = brute_force_terms(f32(N), theta32, f32(K), f32(B), f32(lr)) if f32(lr) * theta32["Q"] < 2 else None
        with jax.enable_x64(False):
            p32 = nqs.NQSParams(**{k: np.float32(v) for k, v in theta32.items()})
            out32 = nqs.risk(p32, np.float32(N), np.float32(B), np.float32(K), lr=np.float32(lr))
            tot32 = float(out32.total)
        row = dict(
            theta=theta, lr=lr, N=N, B=B, K=K, brute_total=ref[4], brute_s=brute_s,
            rel_err_float64=abs(float(out64.total) - ref[4]) / ref[4],
            rel_err_float32=None if ref32 is None else abs(tot32 - ref32[4]) / ref32[4],
        )
        rows.append(row)
        print(f"N={N:10.3g} K={K:9.3g} B={B:8.3g} p={theta['p']:.2f} q={theta['q']:.2f} "
              f"lr*Q={lr * theta['Q']:.3f}  float64 {row['rel_err_float64']:.1e}  "
              f"float32 {row['rel_err_float32'] if row['rel_err_float32'] is None else format(row['rel_err_float32'], '.1e')}"
              f"  (brute {brute_s:.1f} s)", flush=True)

    pythia = []
    if args.pythia_rows and DATA.exists():
        with open(DATA / "pythia_owt2_reference_predictions.csv") as fh:
            data = list(csv.DictReader(fh))
        params, lr = nqs.preset("pythia-owt2")
        theta = params.to_dict()
        for r in data:
            N, B, K, refv = (float(r[c]) for c in ("N", "B", "K", "nqs_plain"))
            ours = float(nqs.risk(params, N, B, K, lr=lr).total)
            if abs(ours - refv) / refv > 1e-7 and N <= args.pythia_max_n:
                exact = brute_force_terms(N, theta, K, B, lr)[4]
                pythia.append(dict(N=N, B=B, K=K, ours_vs_exact=(ours - exact) / exact,
                                   reference_vs_exact=(refv - exact) / exact))
                print(f"pythia N={N:.3g} B={B:g} K={K:g}: ours vs exact {pythia[-1]['ours_vs_exact']:.1e}, "
                      f"reference vs exact {pythia[-1]['reference_vs_exact']:.1e}", flush=True)

    worst64 = max(r["rel_err_float64"] for r in rows)
    worst32 = max(r["rel_err_float32"] for r in rows if r["rel_err_float32"] is not None)
    path = save("accuracy", dict(max_n=args.max_n, rows=rows, pythia_rows=pythia,
                                 worst_rel_err_float64=worst64, worst_rel_err_float32=worst32))
    print(f"worst relative error: float64 {worst64:.2e} (target 1e-10), "
          f"float32 {worst32:.2e} (target 1e-5); saved {path}")


if __name__ == "__main__":
    main()
