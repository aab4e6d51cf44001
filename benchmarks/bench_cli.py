"""The command line as a user times it: whole processes of `nqs-engine`.

    python benchmarks/bench_cli.py [--rows 1000000] [--big-rows 10000000] [--repeats 3]

Each figure is a fresh process (`python -m nqs_engine.cli ...`), timed from
start to exit, with the compilation cache warm (one untimed run first, into a
scratch cache folder): `nqs-engine --help`, `predict --help`, `predict` on 10
rows, `predict` on --rows rows (CSV in, CSV out; and Parquet in, Parquet out),
the best of --repeats each; then one `predict` on --big-rows rows (0 skips it)
with its peak resident memory (the process's own `ru_maxrss`, from `os.wait4`),
beside the 1M-row run's, to show that memory stays bounded. The inputs are random Pythia-like N, B, K written to a scratch
folder. Saves results/cli.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from _common import save


def _write_inputs(folder: str, rows: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    path = os.path.join(folder, f"runs_{rows}.csv")
    with open(path, "w") as f:
        f.write("N,B,K\n")
        step = 1_000_000
        for start in range(0, rows, step):
            n = min(step, rows - start)
            block = np.c_[10 ** rng.uniform(7, 10, n), 2 ** rng.integers(5, 12, n),
                          np.floor(10 ** rng.uniform(3, 5, n))]
            np.savetxt(f, block, fmt=["%.6g", "%d", "%d"], delimiter=",")
    return path


def _run(args: list[str], env: dict) -> tuple[float, int]:
    """Wall seconds of one process, and its own peak RSS in MB (Linux: ru_maxrss in kB)."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "nqs_engine.cli", *args], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"nqs-engine {' '.join(args)} failed: {stderr.strip()}")
    return wall, usage.ru_maxrss // 1024


def _best(args: list[str], env: dict, repeats: int) -> tuple[float, int]:
    """The best wall time of `repeats` warm runs, and the largest peak RSS (MB) of them."""
    _run(args, env)  # warm the compilation cache (and the page cache)
    runs = [_run(args, env) for _ in range(repeats)]
    return min(w for w, _ in runs), max(r for _, r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "NQS_ENGINE_CACHE_DIR": os.path.join(folder, "xla")}
        env.pop("NQS_ENGINE_NO_CACHE", None)
        params = ["--params", "pythia-owt2", "--no-progress"]
        small = _write_inputs(folder, 10)
        runs = _write_inputs(folder, args.rows, seed=1)
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        parquet = os.path.join(folder, "runs.parquet")
        pq.write_table(pacsv.read_csv(runs), parquet)
        out = os.path.join(folder, "out")
        figures = {
            "help_s": _best(["--help"], env, args.repeats)[0],
            "predict_help_s": _best(["predict", "--help"], env, args.repeats)[0],
            "predict_10_rows_s": _best(["predict", small, *params, "--out", out + ".csv"], env,
                                       args.repeats)[0],
        }
        t, rss = _best(["predict", runs, *params, "--out", out + ".csv"], env, args.repeats)
        figures |= {"rows": args.rows, "predict_csv_s": t, "predict_csv_rows_per_s": args.rows / t,
                    "predict_csv_peak_rss_mb": rss}
        t, _ = _best(["predict", parquet, *params, "--out", out + ".parquet"], env, args.repeats)
        figures |= {"predict_parquet_s": t, "predict_parquet_rows_per_s": args.rows / t}
        for name, value in figures.items():
            print(f"{name:28s} {value:,.3f}" if isinstance(value, float) else f"{name:28s} {value:,}")
        if args.big_rows:
            os.unlink(runs)
            big = _write_inputs(folder, args.big_rows, seed=2)
            wall, rss = _run(["predict", big, *params, "--out", out + ".csv"], env)
            figures |= {"big_rows": args.big_rows, "predict_big_s": wall,
                        "predict_big_rows_per_s": args.big_rows / wall, "predict_big_peak_rss_mb": rss}
            print(f"{'predict_big_s':28s} {wall:,.1f}  ({args.big_rows / wall:,.0f} rows/s, "
                  f"peak RSS {rss:,} MB)")
    path = save("cli", {"figures": figures,
                        "targets": {"predict_csv_rows_per_s": ">= 100000",
                                    "predict_help_s": "< 1", "predict_10_rows_s": "< 3"}})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
