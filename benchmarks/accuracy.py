"""One-off accuracy check of the risk against brute-force sums over every direction.

    python benchmarks/accuracy.py [--max-n 1e8] [--configs 12] [--pythia-rows]

Draws random parameters over the domain of issue #2 (p 1.05..3, q 0.3..3,
P, Q, R, e_irr log-uniform, a stable step size), sums every direction n <= N in
numpy (chunked) and compares float64 and float32 engine results. With
--pythia-rows also checks the reference CSV rows (N <= --pythia-max-n) that disagree
with the published predictions by more than 1e-7 (minutes each). Saves
results/accuracy.json.
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
from helpers import DATA, brute_force_terms  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=float, default=1e8)
    parser.add_argument("--configs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pythia-rows", action="store_true")
    parser.add_argument("--pythia-max-n", type=float, default=2.6e8,
                        help="largest N of the Pythia rows checked by brute force")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
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
