"""Throughput and sum-rule error of the weight-norm variant (SPEC section 2).

    python benchmarks/bench_weight_norm.py [--configs 4000] [--accuracy-configs 300]

Times `weight_norm_risk` on Pythia-like constant runs (as bench_schedule.py (c))
with its default rule (`WEIGHT_NORM_RULE`, 4 panels of 12 nodes graded over the
crossover's window, 91 points), its former default (6 panels of 16 nodes, 139
points), that rule with uniform panels (as before the window), the full `SumRule()`
and `SumRule(window_panels=4)`, interleaved in one run, compile time separately;
then the relative error of each
against a much finer uniform rule (128 panels x 16 nodes) over random parameters,
N 1e6..1e12 (the target is 1e-10). Saves results/weight_norm_<backend>_<dtype>.json.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from _common import device_info, save


def _points(rule):
    """Points per direction sum: the weight-norm sums grade a window (see `_weight_norm`)."""
    if rule.crossover_panels == 0:
        return rule.uniform_evaluations
    panels = max(rule.crossover_panels, rule.window_panels)
    return rule.head - 1 + panels * rule.crossover_nodes + 2 * (rule.order + 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=4000)
    parser.add_argument("--accuracy-configs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    import nqs_engine as nqs
    from nqs_engine._risk._weight_norm import WEIGHT_NORM_RULE

    rules = {
        "weight_norm_rule": WEIGHT_NORM_RULE,
        "weight_norm_rule_before": nqs.SumRule(head=32, panels=16, nodes=8, order=5),
        "weight_norm_rule_uniform": nqs.SumRule(head=32, panels=16, nodes=8, order=5,
                                                crossover_panels=0),  # before the window
        "default_sum_rule": nqs.SumRule(),
        "default_sum_rule_window_4": nqs.SumRule(window_panels=4),
    }
    rng = np.random.default_rng(0)
    params, lr = nqs.preset("pythia-owt2")
    W = args.configs
    N = 10 ** rng.uniform(6, np.log10(2e9), W)
    B = 10 ** rng.uniform(np.log10(24), np.log10(4e5), W)
    K = np.floor(10 ** rng.uniform(np.log10(39), np.log10(3.2e5), W))
    sched = nqs.Schedule.constant(K, B)

    def run(rule):
        return nqs.weight_norm_risk(params, N, sched, lr=lr, rule=rule).total.block_until_ready()

    first, times = {}, {name: [] for name in rules}
    for name, rule in rules.items():
        t0 = time.perf_counter()
        run(rule)
        first[name] = time.perf_counter() - t0
    for _ in range(args.repeats):
        for name, rule in rules.items():
            t0 = time.perf_counter()
            out = run(rule)
            times[name].append(time.perf_counter() - t0)
            assert np.all(np.isfinite(np.asarray(out)))

    # Accuracy over random parameters against a much finer uniform rule.
    C = args.accuracy_configs
    th = dict(p=rng.uniform(1.05, 3, C), q=rng.uniform(0.3, 3, C), P=10 ** rng.uniform(-2, 2, C),
              Q=10 ** rng.uniform(-2, 2, C), e_irr=10 ** rng.uniform(-3, 1, C),
              R=10 ** rng.uniform(-3, 3, C), r=rng.uniform(0.3, 3, C))
    alr = 10 ** rng.uniform(-3, np.log10(1.999), C) / th["Q"]
    ok = WEIGHT_NORM_RULE.kink_ratio(alr, th["Q"], th["q"]) < 1
    th, alr = {k: v[ok] for k, v in th.items()}, alr[ok]
    aN = np.floor(10 ** rng.uniform(6, 12, ok.sum()))
    asched = nqs.Schedule.constant(np.floor(10 ** rng.uniform(1, 6, ok.sum())),
                                   10 ** rng.uniform(0, 4, ok.sum()))
    ap = nqs.NQSParams(**th)
    fine = nqs.weight_norm_risk(ap, aN, asched, lr=alr, rule=nqs.SumRule(panels=128, nodes=16, crossover_panels=0))
    errors = {}
    for name, rule in rules.items():
        out = nqs.weight_norm_risk(ap, aN, asched, lr=alr, rule=rule)
        err = np.abs(np.asarray(out.total) - np.asarray(fine.total)) / np.asarray(fine.total)
        errors[name] = dict(max=float(err.max()), p99=float(np.quantile(err, 0.99)))

    result = {
        "benchmark": "weight_norm_risk, constant schedule, one call over all configurations",
        "dtype": "float64",
        "configs": W,
        "ranges": "N 1e6..2e9, B 24..4e5, K 39..3.2e5 (log-uniform), preset pythia-owt2",
        "target_configs_per_s": 20000.0,
        "accuracy_configs": int(ok.sum()),
        "accuracy_reference": "SumRule(panels=128, nodes=16), uniform; random parameters, N 1e6..1e12",
    }
    for name, rule in rules.items():
        result[name] = {
            "rule": {f: getattr(rule, f) for f in ("head", "panels", "nodes", "order")},
            "evaluations_per_config": _points(rule),
            "compile_plus_first_run_s": first[name],
            "run_s": times[name],
            "configs_per_s": W / min(times[name]),
            "rel_err_vs_fine": errors[name],
        }
    info = device_info()
    path = save(f"weight_norm_{info['backend']}_float64", result)
    print(f"device: {info['backend']} ({info['device']}), {info['date']}")
    for name in rules:
        r = result[name]
        print(f"{name} ({r['evaluations_per_config']} points): {r['configs_per_s']:,.0f} configs/s, "
              f"compile+first {r['compile_plus_first_run_s']:.1f} s; rel. error max "
              f"{r['rel_err_vs_fine']['max']:.1e} (p99 {r['rel_err_vs_fine']['p99']:.1e}) "
              f"over {result['accuracy_configs']} configs")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
