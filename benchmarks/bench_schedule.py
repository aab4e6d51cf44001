"""Schedules: scheduled-risk throughput, trajectories, the weight-norm variant, discretisation.

    python benchmarks/bench_schedule.py [--configs 100000] [--wn-configs 20000] [--float32]

(a) `schedule_risk` throughput over random configurations under a 32-piece
    cosine and a 3-segment step decay;
(b) `trajectory`: one run's 200-checkpoint curve (time per call once compiled)
    and many runs' curves in one call;
(c) `weight_norm_risk` throughput on Pythia-like configurations (preset
    pythia-owt2, constant schedule);
(d) the discretisation error of `Schedule.cosine(pieces=S)` and of
    `Schedule.from_arrays(..., segments=S)` against the exact per-step run.

Compilation is timed separately (first call), then the best of --repeats timed
calls, each ending in `block_until_ready`. Saves results/schedule_<backend>_<dtype>.json.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import numpy as np

from _common import device_info, save

REFERENCE_WN_CONFIGS_PER_S = 36.0  # published implementation, weight-norm risk, 2-core CPU


def _timed(fn, repeats):
    """(first call incl. compilation, list of later call times, last output)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, times, out


def _load():
    try:
        return list(os.getloadavg())
    except OSError:  # not on every platform
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=100_000, help="configs for (a)")
    parser.add_argument("--wn-configs", type=int, default=20_000, help="configs for (c)")
    parser.add_argument("--trajectories", type=int, default=2_000, help="runs for (b), batched")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--float32", action="store_true", help="float32 instead of float64")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", not args.float32)
    import nqs_engine as nqs

    dtype = np.float32 if args.float32 else np.float64
    params, lr = nqs.preset("pythia-owt2")
    rng = np.random.default_rng(0)
    load_before = _load()
    results = {}

    # (a) Scheduled risk throughput.
    C = args.configs
    N = (10 ** rng.uniform(6, 12, C)).astype(dtype)
    B = (10 ** rng.uniform(0, 4, C)).astype(dtype)
    K = np.floor(10 ** rng.uniform(1, 6, C)).astype(dtype)
    step = nqs.Schedule.step_decay(K, 1.0, (0.5, 0.75), (0.1, 0.01))
    schedules = {
        "cosine, 32 pieces": nqs.Schedule.cosine(K, B, pieces=32),
        "step decay, 3 segments": nqs.Schedule(step.lr, step.batch * B[:, None], step.steps),
    }
    scheduled = {}
    for name, sched in schedules.items():
        first, times, out = _timed(
            lambda s=sched: nqs.schedule_risk(params, N, s, lr=lr).total, args.repeats
        )
        assert np.all(np.isfinite(np.asarray(out)))
        scheduled[name] = {
            "segments": sched.num_segments,
            "configs": C,
            "compile_plus_first_run_s": first,
            "run_s": times,
            "configs_per_s": C / min(times),
        }
    results["a_scheduled_risk"] = scheduled

    # (b) Trajectories: one run, then many in one call (vmapped inside `trajectory`).
    checkpoints = np.linspace(100.0, 20_000.0, 200).astype(dtype)
    one = nqs.Schedule.cosine(20_000.0, 256.0, pieces=32)
    first, _, out = _timed(
        lambda: nqs.trajectory(params, 1e8, one, checkpoints, lr=lr).total, 0
    )
    per_call = []
    for _ in range(50):
        t0 = time.perf_counter()
        jax.block_until_ready(nqs.trajectory(params, 1e8, one, checkpoints, lr=lr).total)
        per_call.append(time.perf_counter() - t0)
    assert np.all(np.isfinite(np.asarray(out))) and np.all(np.diff(np.asarray(out)) < 0)
    T = args.trajectories
    tN = (10 ** rng.uniform(6, 11, T)).astype(dtype)
    tB = (10 ** rng.uniform(1, 4, T)).astype(dtype)
    many = nqs.Schedule.cosine(np.full(T, 20_000.0, dtype), tB, pieces=32)
    mfirst, mtimes, mout = _timed(
        lambda: nqs.trajectory(params, tN, many, checkpoints, lr=lr).total, args.repeats
    )
    assert mout.shape == (T, 200) and np.all(np.isfinite(np.asarray(mout)))
    results["b_trajectory"] = {
        "run": "N=1e8, B=256, K=20000, cosine 32 pieces, 200 checkpoints",
        "compile_plus_first_call_s": first,
        "per_call_ms_median": 1e3 * float(np.median(per_call)),
        "per_call_ms_min": 1e3 * float(np.min(per_call)),
        "target_per_call_ms": 10.0,
        "batched_runs": T,
        "batched_compile_plus_first_s": mfirst,
        "batched_run_s": mtimes,
        "batched_trajectories_per_s": T / min(mtimes),
        "batched_checkpoints_per_s": T * 200 / min(mtimes),
    }

    # (c) Weight-norm variant on Pythia-like configurations.
    W = args.wn_configs
    wN = (10 ** rng.uniform(6, np.log10(2e9), W)).astype(dtype)
    wB = (10 ** rng.uniform(np.log10(24), np.log10(4e5), W)).astype(dtype)
    wK = np.floor(10 ** rng.uniform(np.log10(39), np.log10(3.2e5), W)).astype(dtype)
    wsched = nqs.Schedule.constant(wK, wB)
    wfirst, wtimes, wout = _timed(
        lambda: nqs.weight_norm_risk(params, wN, wsched, lr=lr).total, args.repeats
    )
    assert np.all(np.isfinite(np.asarray(wout)))
    wrate = W / min(wtimes)
    results["c_weight_norm"] = {
        "configs": W,
        "ranges": "N 1e6..2e9, B 24..4e5, K 39..3.2e5 (log-uniform), constant schedule",
        "compile_plus_first_run_s": wfirst,
        "run_s": wtimes,
        "configs_per_s": wrate,
        "target_configs_per_s": 5000.0,
        "reference_configs_per_s": REFERENCE_WN_CONFIGS_PER_S,
        "ratio_vs_reference": wrate / REFERENCE_WN_CONFIGS_PER_S,
    }

    # (d) Discretisation error of a K = 2000 cosine.
    Kd = 2000
    t = np.arange(Kd + 1) / Kd
    # Per-step multipliers: the mean of 0.5 (1 + cos(pi t)) over each step, so that
    # S = K pieces is exact and the error below is the discretisation alone.
    per_step = 0.5 + 0.5 * (np.sin(np.pi * t[1:]) - np.sin(np.pi * t[:-1])) / (np.pi / Kd)
    dN = np.array([1e6, 1e8, 1e10], dtype)[:, None]
    dB = np.array([32.0, 256.0, 2048.0], dtype)[None, :]
    exact_s = nqs.Schedule.from_arrays(per_step, 1.0)  # 2000 one-step segments (exact)

    def loss(sched):
        s = nqs.Schedule(sched.lr, sched.batch * dB[..., None], sched.steps)
        return np.asarray(nqs.schedule_risk(params, dN, s, lr=lr).total)

    exact = loss(exact_s)
    discret = {"K": Kd, "configs": "N in {1e6, 1e8, 1e10} x B in {32, 256, 2048}",
               "exact_segments": exact_s.num_segments, "pieces": {}}
    for S in (8, 16, 32, 64):
        errors = {}
        for name, sched in (("Schedule.cosine", nqs.Schedule.cosine(float(Kd), 1.0, pieces=S)),
                            ("from_arrays(segments=S)",
                             nqs.Schedule.from_arrays(per_step, 1.0, segments=S))):
            errors[name] = float(np.max(np.abs(loss(sched) / exact - 1)))
        discret["pieces"][str(S)] = errors
    results["d_discretisation_max_rel_error"] = discret

    load_after = _load()
    info = device_info()
    payload = {
        "benchmark": "schedules: scheduled risk, trajectories, weight-norm variant, discretisation",
        "dtype": np.dtype(dtype).name,
        "load_average_before": load_before,
        "load_average_after": load_after,
        **results,
    }
    path = save(f"schedule_{info['backend']}_{payload['dtype']}", payload)

    print(f"device: {info['backend']} ({info['device']}, {info['host_cpus']} cpus), "
          f"{info['date']}, {payload['dtype']}")
    if load_before is not None:
        print(f"load average (1, 5, 15 min): before {', '.join(f'{v:.2f}' for v in load_before)}; "
              f"after {', '.join(f'{v:.2f}' for v in load_after)}")
    print("\n(a) schedule_risk throughput")
    print(f"  {'schedule':<24} {'segments':>8} {'configs':>8} {'compile+1st':>11} {'best run':>9} "
          f"{'configs/s':>10}")
    for name, r in scheduled.items():
        print(f"  {name:<24} {r['segments']:>8} {r['configs']:>8} "
              f"{r['compile_plus_first_run_s']:>10.1f}s {min(r['run_s']):>8.2f}s "
              f"{r['configs_per_s']:>10,.0f}")
    b = results["b_trajectory"]
    print("\n(b) trajectory (200 checkpoints, cosine 32 pieces)")
    print(f"  one run: compile+first {b['compile_plus_first_call_s']:.1f} s, then "
          f"{b['per_call_ms_median']:.2f} ms per call (median of 50; min "
          f"{b['per_call_ms_min']:.2f} ms; target < 10 ms)")
    print(f"  {T} runs in one call: {b['batched_trajectories_per_s']:,.0f} trajectories/s "
          f"({b['batched_checkpoints_per_s']:,.0f} checkpoints/s); compile+first "
          f"{b['batched_compile_plus_first_s']:.1f} s")
    c = results["c_weight_norm"]
    print("\n(c) weight_norm_risk, Pythia-like configurations")
    print(f"  {W} configs: compile+first {wfirst:.1f} s, best run {min(wtimes):.2f} s -> "
          f"{wrate:,.0f} configs/s (target >= 5,000; reference ~36/s: "
          f"{c['ratio_vs_reference']:,.0f}x)")
    print(f"\n(d) max relative error of the loss vs the exact per-step cosine, K = {Kd}, "
          f"{discret['configs']}")
    print(f"  {'pieces S':>8} {'Schedule.cosine':>16} {'from_arrays(segments=S)':>24}")
    for S, errs in discret["pieces"].items():
        print(f"  {S:>8} {errs['Schedule.cosine']:>16.2e} {errs['from_arrays(segments=S)']:>24.2e}")
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
