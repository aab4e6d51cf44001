"""Backtests on real ladders, run as a user runs them: `nqs-engine backtest`.

    python benchmarks/ladders.py [--only comma,nemotron,pythia] [--bootstrap 0]

For each ladder in ../shared/data (skipped, with a note, when absent) this runs
the command line's `backtest` in a fresh process, with the column mapping a
user would write for the raw export, and collects its JSON:

- `comma`, `nemotron`: Marin's isoFLOP ladders (raw W&B exports; sequence
  length 4096; non-embedding N = 16 L d^2 from depth and width; budgets read
  from the run names; the peak learning rate from Marin's rule
  0.33 sqrt(B) / d, which is also what comma's `optimizer.learning_rate`
  column holds and what nemotron's empty `learning_rate` column should have
  held). Fitted on budgets <= 1e19, scored on 3e19 ... 1e20 (10x in compute).
  Models: the plain NQS, the learning-rate NQS and Chinchilla.
- `pythia`: the NQS paper's Pythia / OpenWebText2 ladder, its `split` column
  (train / test), sequence length 128. Models: the plain NQS, the weight-norm
  NQS and Chinchilla.

Prints one line per ladder, model and held-out budget, and saves
results/ladders.json (every row of every backtest, the fits' wall times, the
command lines); with `--bootstrap M`, results/ladders_bootstrap.json with the
coverage of 90% prediction intervals and the wall time with the refits.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from _common import save

DATA = pathlib.Path(os.environ.get("NQS_DATA") or
                    pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")

MARIN_COLUMNS = ("N=16*model.num_layers*model.hidden_dim^2,B=trainer.train_batch_size,"
                 "K=trainer.num_train_steps,loss=`eval/paloma/macro_loss`,"
                 "lr=0.33*sqrt(trainer.train_batch_size)/model.hidden_dim,width=model.hidden_dim")
MARIN_BUDGET = r"Name:(?:isoflop|optimal)-([0-9.]+e[+-]?[0-9]+)-"

LADDERS = {
    "comma": (DATA / "marin" / "isoflop-comma.csv",
              ["--columns", MARIN_COLUMNS, "--budget", MARIN_BUDGET, "--seq-len", "4096",
               "--cutoff", "1e19", "--models", "nqs,nqs-lr,chinchilla"]),
    "nemotron": (DATA / "marin" / "isoflop-nemotron.csv",
                 ["--columns", MARIN_COLUMNS, "--budget", MARIN_BUDGET, "--seq-len", "4096",
                  "--cutoff", "1e19", "--models", "nqs,nqs-lr,chinchilla"]),
    "pythia": (DATA / "pythia_owt2_runs.csv",
               ["--split", "--models", "nqs,nqs-weight-norm,chinchilla"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(LADDERS))
    parser.add_argument("--bootstrap", type=int, default=0,
                        help="bootstrap refits per fit: interval coverage (saved apart, as "
                        "results/ladders_bootstrap.json)")
    parser.add_argument("--pythia-models", default="nqs,nqs-weight-norm,chinchilla",
                        help="models backtested on Pythia (the weight-norm fit takes minutes)")
    args = parser.parse_args()
    results, skipped = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.only.split(","):
            path, options = LADDERS[name]
            if name == "pythia":
                options = [*options[:-1], args.pythia_models]
            if not path.exists():
                skipped[name] = f"{path} not found"
                print(f"{name}: skipped ({skipped[name]})")
                continue
            out = os.path.join(folder, f"{name}.json")
            argv = ["backtest", str(path), *options]
            if args.bootstrap:
                argv += ["--bootstrap", str(args.bootstrap)]
            command = "nqs-engine " + " ".join(argv) + " --out OUT.json"
            argv += ["--out", out, "--no-progress"]
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "nqs_engine.cli", *argv],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name}: backtest failed: {done.stderr.strip()}")
            with open(out) as f:
                report = json.load(f)
            report["process_wall_s"] = time.perf_counter() - start
            report["command"] = command
            results[name] = report
            print(f"== {name} ({report['process_wall_s']:.0f} s)")
            print(done.stdout.rstrip())
    save("ladders_bootstrap" if args.bootstrap else "ladders",
         {"ladders": results, "skipped": skipped, "bootstrap": args.bootstrap})


if __name__ == "__main__":
    main()
