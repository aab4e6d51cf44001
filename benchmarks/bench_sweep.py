"""Throughput of a sharded sweep over a grid of ~1e6 cells: 1 device, 4, and 2 processes.

    python benchmarks/bench_sweep.py [--size 100] [--repeats 3] [--devices 4] [--processes 2]

Sweeps the plain NQS loss (preset pythia-owt2, planning quadrature, float64)
over an N x B x K grid of --size points per axis: once in this process on one
device, then in a subprocess on --devices virtual CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count, which must be set before
JAX starts), then on --processes local CPU processes of one device each that
join through `jax.distributed` (coordinator on 127.0.0.1; 0 skips it), each
computing its share and all-gathering the grid. Each: compilation plus first
call, then the best of --repeats calls ending in `block_until_ready`; the
grids are compared cell by cell (they should be equal bit for bit). Virtual
devices and local processes share the host's cores: they measure the
sharding's overhead and scaling, not extra hardware. Saves
results/sweep_<backend>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from _common import device_info, save


def measure(size: int, repeats: int, chunk: int, devices=None) -> tuple[dict, np.ndarray]:
    """Time `sweep` over a size^3 grid on `devices` (default: the local devices)."""
    import nqs_engine as nqs
    from nqs_engine import sweep

    params, lr = nqs.preset("pythia-owt2")
    # Pythia-like ranges: N 1e6..1e11, B 1..1e4, K 10..1e6.
    N, B, K = (np.geomspace(lo, hi, size) for lo, hi in ((1e6, 1e11), (1, 1e4), (10, 1e6)))

    def run():
        return sweep(params, N, B, K, lr=lr, chunk=chunk, devices=devices).block_until_ready()

    t0 = time.perf_counter()
    out = run()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    loss = np.asarray(out)
    assert np.all(np.isfinite(loss))
    best = min(times)
    return {
        "devices": jax.device_count(),
        "cells": int(loss.size),
        "compile_plus_first_run_s": first,
        "compile_s_estimate": max(first - best, 0.0),
        "run_s": times,
        "cells_per_s": loss.size / best,
    }, loss


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100, help="points per axis (default 100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--devices", type=int, default=4, help="virtual devices (default 4)")
    parser.add_argument("--processes", type=int, default=2,
                        help="local jax.distributed processes (default 2; 0: skip)")
    parser.add_argument("--worker", metavar="DUMP", help=argparse.SUPPRESS)
    parser.add_argument("--join", nargs=3, metavar=("PORT", "K", "M"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    if args.join:  # process K of M: join, measure on every process's devices
        port, k, m = (int(v) for v in args.join)
        jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=m, process_id=k,
                                   initialization_timeout=120)
        result, loss = measure(args.size, args.repeats, args.chunk, devices=jax.devices())
        result["processes"] = jax.process_count()
        if k == 0:
            np.save(args.worker, loss)
            print(json.dumps(result))
        jax.distributed.shutdown()
        return
    if args.worker:  # the subprocess: measure on its virtual devices, report as JSON
        result, loss = measure(args.size, args.repeats, args.chunk)
        np.save(args.worker, loss)
        print(json.dumps(result))
        return

    one_dev, loss_one = measure(args.size, args.repeats, args.chunk)
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "loss.npy")
        env = {**os.environ, "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices}"}
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", dump,
               "--size", str(args.size), "--repeats", str(args.repeats),
               "--chunk", str(args.chunk)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        many = json.loads(done.stdout.strip().splitlines()[-1])
        loss_many = np.load(dump)
        procs = _processes(args, cmd[:2] + cmd[4:], tmp) if args.processes else None
    max_rel = float(np.max(np.abs(loss_many / loss_one - 1)))

    info = device_info()
    result = {
        "benchmark": "sweep: plain NQS loss over an N x B x K grid, sharded over devices",
        "dtype": "float64",
        "grid": [args.size] * 3,
        "rule": "PLAN_RULE",
        "chunk": args.chunk,
        "one_device": one_dev,
        "virtual_devices": many,
        "speedup": many["cells_per_s"] / one_dev["cells_per_s"],
        "max_rel_diff_virtual_vs_one": max_rel,
        "bit_for_bit_virtual_vs_one": bool(np.array_equal(loss_many, loss_one)),
        "note": f"{args.devices} virtual CPU devices share the host's {os.cpu_count()} cores",
    }
    if procs is not None:
        result["processes"], loss_procs = procs
        result["bit_for_bit_processes_vs_one"] = bool(np.array_equal(loss_procs, loss_one))
    path = save(f"sweep_{info['backend']}", result)
    print(f"device: {info['backend']} ({info['device']}), {os.cpu_count()} cores, {info['date']}")
    for label, r in (("1 device ", one_dev), (f"{many['devices']} devices", many)):
        print(f"{label}: {r['cells']:,} cells, "
              f"compile+first {r['compile_plus_first_run_s']:.2f} s, best run {min(r['run_s']):.3f} s, {r['cells_per_s']:,.0f} cells/s")
    if procs is not None:
        r = result["processes"]
        print(f"{r['processes']} processes: {r['cells']:,} cells, "
              f"compile+first {r['compile_plus_first_run_s']:.2f} s, best run "
              f"{min(r['run_s']):.3f} s, {r['cells_per_s']:,.0f} cells/s, bit for bit: "
              f"{result['bit_for_bit_processes_vs_one']}")
    print(f"speedup {result['speedup']:.2f}x; max relative difference {max_rel:.1e}; "
          f"bit for bit: {result['bit_for_bit_virtual_vs_one']}")
    print(f"saved {path}")


def _processes(args, cmd: list, tmp: str) -> tuple[dict, np.ndarray]:
    """Measure on `args.processes` local processes joined by jax.distributed."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    dump = os.path.join(tmp, "loss_processes.npy")
    procs = [subprocess.Popen([*cmd, "--worker", dump, "--join", str(port), str(k),
                               str(args.processes)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for k in range(args.processes)]
    outs = [p.communicate(timeout=1800) for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"process failed ({p.returncode}): {err[-2000:]}")
    return json.loads(outs[0][0].strip().splitlines()[-1]), np.load(dump)


if __name__ == "__main__":
    main()
