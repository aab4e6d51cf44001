"""Throughput of the plain NQS risk over a large batch of random configurations.

    python benchmarks/bench_risk.py [--configs 1000000] [--float32] [--no-old-rule]

Compile time is measured separately (first call), then the best of --repeats
timed calls. The rule of versions up to 0.1 (`SumRule(64, 32, 12, 6,
crossover_panels=0)`, 461 evaluations) is timed in the same run, its repeats
interleaved with the default rule's, so that the ratio holds on a loaded machine.
Runs unchanged on a GPU. Saves results/risk_<backend>_<dtype>.json.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from _common import device_info, save

OLD_RULE = dict(head=64, panels=32, nodes=12, order=6, crossover_panels=0)
REFERENCE_CONFIGS_PER_S = 780.0  # published implementation, one config at a time, 2-core CPU: the fast end of SPEC's ~550-780


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--float32", action="store_true", help="float32 instead of float64")
    parser.add_argument("--no-old-rule", action="store_true",
                        help="skip timing the old rule (461 evaluations) in the same run")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", not args.float32)
    import nqs_engine as nqs

    dtype = np.float32 if args.float32 else np.float64
    rng = np.random.default_rng(0)
    C = args.configs
    # Pythia-like ranges: N 1e6..1e12, B 1..1e4, K 10..1e6, published parameters.
    N = (10 ** rng.uniform(6, 12, C)).astype(dtype)
    B = (10 ** rng.uniform(0, 4, C)).astype(dtype)
    K = np.floor(10 ** rng.uniform(1, 6, C)).astype(dtype)
    params, lr = nqs.preset("pythia-owt2")

    rules = {"default": nqs.SumRule()}
    if not args.no_old_rule:
        rules["old"] = nqs.SumRule(**OLD_RULE)

    def run(rule, n, b, k):
        return nqs.risk(params, n, b, k, lr=lr, chunk=args.chunk, rule=rule).total.block_until_ready()

    first = {}
    for name, rule in rules.items():
        t0 = time.perf_counter()
        run(rule, N, B, K)
        first[name] = time.perf_counter() - t0
    times = {name: [] for name in rules}
    for _ in range(args.repeats):  # interleaved: both rules see the same load
        for name, rule in rules.items():
            t0 = time.perf_counter()
            out = run(rule, N, B, K)
            times[name].append(time.perf_counter() - t0)
            assert np.all(np.isfinite(np.asarray(out)))
    best = min(times["default"])
    rate = C / best
    result = {
        "benchmark": "plain risk, constant schedule, one call over all configurations",
        "dtype": np.dtype(dtype).name,
        "configs": C,
        "chunk": args.chunk,
        "compile_plus_first_run_s": first["default"],
        "compile_s_estimate": max(first["default"] - best, 0.0),
        "run_s": times["default"],
        "configs_per_s": rate,
        "reference_configs_per_s": REFERENCE_CONFIGS_PER_S,
        "ratio_vs_reference": rate / REFERENCE_CONFIGS_PER_S,
        "evaluations_per_config": nqs.SumRule().num_evaluations,
    }
    if "old" in rules:
        old_rate = C / min(times["old"])
        result["old_rule"] = {
            "rule": OLD_RULE,
            "evaluations_per_config": rules["old"].num_evaluations,
            "compile_plus_first_run_s": first["old"],
            "run_s": times["old"],
            "configs_per_s": old_rate,
        }
        result["ratio_vs_old_rule"] = rate / old_rate
    info = device_info()
    path = save(f"risk_{info['backend']}_{result['dtype']}", result)
    print(f"device: {info['backend']} ({info['device']}), {info['date']}")
    print(f"{C} configs, {result['dtype']}: compile+first {first['default']:.2f} s, best run {best:.3f} s")
    print(f"throughput: {rate:,.0f} configs/s ({rate / REFERENCE_CONFIGS_PER_S:,.0f}x the reference's ~780/s)")
    if "old" in rules:
        print(f"old rule ({rules['old'].num_evaluations} evaluations): "
              f"{result['old_rule']['configs_per_s']:,.0f} configs/s in the same run; "
              f"new/old = {result['ratio_vs_old_rule']:.2f}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
