"""Interrupts always win (issue 17): 50 SIGINT/SIGTERM at random moments of
`nqs-engine predict` on a 1,000,000-row CSV, each checked for exit status 130,
the one-line message on stderr (no traceback, no "Exception ignored") and no
output or temporary file left.

    python benchmarks/interrupts.py [--trials 50] [--rows 1000000] [--seed 0]

The moments are uniform over [0, 1.05 x] the measured uninterrupted run, so they
cover the imports, the computation, the writing and (rarely) a finished run,
which is counted apart and replaced by another draw: `--trials` signals are
delivered (at most twice as many runs). Prints the tally and writes
results/interrupts.json.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from _common import save  # noqa: E402

MESSAGE = "nqs-engine: interrupted; no output written"


def default_sigint() -> None:
    """In the child: SIGINT as in a foreground command, even when this script runs in the
    background (which ignores SIGINT, and `nqs-engine` keeps an ignored SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    folder = pathlib.Path(tempfile.mkdtemp(prefix="nqs-interrupts-"))
    runs, out = folder / "runs.csv", folder / "out.csv"
    table = np.c_[10 ** rng.uniform(7, 10, args.rows), 2 ** rng.integers(5, 12, args.rows),
                  10 ** rng.uniform(2, 5, args.rows)]
    np.savetxt(runs, table, delimiter=",", header="N,B,K", comments="", fmt="%.6g")
    env = dict(os.environ, NQS_ENGINE_CACHE_DIR=str(folder / "cache"))
    command = [sys.executable, "-m", "nqs_engine.cli", "predict", str(runs), "--params",
               "pythia-owt2", "--out", str(out)]

    subprocess.run(command, env=env, check=True, capture_output=True)  # fills the XLA cache
    start = time.monotonic()
    subprocess.run(command, env=env, check=True, capture_output=True)
    baseline = time.monotonic() - start
    out.unlink()
    print(f"uninterrupted predict of {args.rows:,} rows: {baseline:.1f} s")

    tally: collections.Counter = collections.Counter()
    trials = []
    i = 0
    while tally["ok"] + tally["FAILED"] < args.trials and i < 2 * args.trials:
        i += 1
        delay = float(rng.uniform(0, 1.05 * baseline))
        number = signal.SIGINT if i % 2 == 1 else signal.SIGTERM
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
        time.sleep(delay)
        finished_first = process.poll() is not None
        if not finished_first:
            process.send_signal(number)
        _, stderr = process.communicate(timeout=600)
        left = sorted(p.name for p in folder.iterdir() if p.name.startswith((".out", "out")))
        if finished_first:
            outcome = "finished before the signal"
        elif (process.returncode == 130 and not left and "Traceback" not in stderr
              and "Exception ignored" not in stderr
              and stderr.strip().splitlines() == [MESSAGE]):
            outcome = "ok"
        else:
            outcome = "FAILED"
        tally[outcome] += 1
        trials.append(dict(signal=number.name, delay_s=round(delay, 3),
                           status=process.returncode, files_left=left,
                           stderr=stderr.strip()[-500:], outcome=outcome))
        print(f"{i:3d}  {number.name:7s} at {delay:6.2f} s: exit {process.returncode}, "
              f"files left {left}, {outcome}", flush=True)
        for name in left:
            (folder / name).unlink()

    delivered = tally["ok"] + tally["FAILED"]
    print(f"\n{tally['ok']} of {delivered} interrupted runs ended right (exit 130, one line, "
          f"no file); {tally['FAILED']} failed; {tally['finished before the signal']} "
          "finished before their signal")
    path = save("interrupts", dict(rows=args.rows, trials=args.trials, runs_started=i,
                                   delivered=delivered, seed=args.seed,
                                   baseline_s=round(baseline, 2), tally=dict(tally),
                                   runs=trials))
    print(f"-> {path}")
    sys.exit(1 if tally["FAILED"] else 0)


if __name__ == "__main__":
    main()
