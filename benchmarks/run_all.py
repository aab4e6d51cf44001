"""Run every benchmark, one fresh process each, then rebuild the README's table.

    python benchmarks/run_all.py                      # all of them, full sizes, into results/
    python benchmarks/run_all.py --quick              # small sizes, into a scratch folder
    python benchmarks/run_all.py --only bench_risk,bench_risk_float32
    python benchmarks/run_all.py --skip accuracy
    python benchmarks/run_all.py --list

Each benchmark runs in its own `sys.executable` process from benchmarks/ (so
that compilation is timed from a cold start), one after the other, its output
streamed as it comes. Those that read ../shared/data are skipped, with the
reason, when that folder is absent. bench_fit runs before bench_plan, which
plans with the parameters bench_fit saved (results/fit.json).

Results go to benchmarks/results/ unless --results DIR (or the environment
variable NQS_BENCH_RESULTS) names another folder; --quick uses a new scratch
folder unless told otherwise, so a smoke run never replaces the committed
results. The README's table is rebuilt only from benchmarks/results/; for any
other folder the table is printed. The exit status is 1 if a benchmark failed
(its JSON is then not written: each script saves atomically, at its end).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"  # where the scripts look for it
sys.path.insert(0, str(HERE))
import table  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    script: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()  # extra arguments under --quick
    needs_data: bool = False  # skipped when ../shared/data is absent
    data_args: tuple[str, ...] = ()  # added when ../shared/data is present
    quick_data_args: tuple[str, ...] = ()  # the same, under --quick
    writes: str = ""
    note: str = ""


# In order: bench_fit before bench_plan, which reads the fit.
JOBS = (
    Job("bench_risk", "bench_risk.py", (), ("--configs", "20000", "--repeats", "1"),
        writes="risk_<backend>_float64.json"),
    Job("bench_risk_float32", "bench_risk.py", ("--float32",),
        ("--configs", "20000", "--repeats", "1"), writes="risk_<backend>_float32.json"),
    Job("bench_schedule", "bench_schedule.py", (),
        ("--configs", "2000", "--wn-configs", "500", "--trajectories", "50", "--repeats", "1"),
        writes="schedule_<backend>_float64.json"),
    Job("bench_sweep", "bench_sweep.py", (), ("--size", "16", "--repeats", "1"),
        writes="sweep_<backend>.json"),
    Job("accuracy", "accuracy.py", (), ("--max-n", "1e5", "--configs", "4"),
        data_args=("--pythia-rows", "--pythia-max-n", "3e9"),
        quick_data_args=("--pythia-rows", "--pythia-max-n", "1e6"), writes="accuracy.json",
        note="the Pythia rows (brute-force sums up to N = 2e9) need ../shared/data"),
    Job("bench_fit", "bench_fit.py", (), (), needs_data=True, writes="fit.json",
        note="no smaller size under --quick"),
    Job("compute_gap", "compute_gap.py", (), (), needs_data=True, writes="compute_gap.json",
        note="three fits; no smaller size under --quick"),
    Job("bench_plan", "bench_plan.py", (), (), needs_data=True, writes="plan.json",
        note="reads fit.json from the same results folder, else refits"),
    Job("bench_cli", "bench_cli.py", (), ("--rows", "20000", "--big-rows", "0", "--repeats", "1"),
        writes="cli.json"),
    Job("ladders", "ladders.py", (), ("--only", "comma", "--pythia-models", "nqs"),
        needs_data=True, writes="ladders.json",
        note="the weight-norm fit on Pythia takes ~6 minutes"),
    Job("ladders_bootstrap", "ladders.py", ("--bootstrap", "100", "--pythia-models",
                                            "nqs,chinchilla"), ("--only", "comma"),
        needs_data=True, writes="ladders_bootstrap.json"),
)
NAMES = [j.name for j in JOBS]


def _names(text: str, flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise SystemExit(f"run_all.py: {flag}: unknown benchmark {', '.join(unknown)} "
                         f"(known: {', '.join(NAMES)})")
    return names


def command(job: Job, quick: bool, have_data: bool) -> list[str]:
    args = [*job.args, *(job.quick if quick else ())]
    if have_data:
        args += job.quick_data_args if quick else job.data_args
    return [sys.executable, str(HERE / job.script), *args]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="benchmarks: " + ", ".join(NAMES))
    parser.add_argument("--only", metavar="NAME[,NAME]", action="append", default=[],
                        help="run only these")
    parser.add_argument("--skip", metavar="NAME[,NAME]", action="append", default=[],
                        help="run all but these")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes for a smoke run (into a scratch folder by default)")
    parser.add_argument("--results", type=pathlib.Path, metavar="DIR",
                        help="results folder (default: $NQS_BENCH_RESULTS, else "
                             "benchmarks/results; under --quick a new scratch folder)")
    args = parser.parse_args(argv)

    only = [n for text in args.only for n in _names(text, "--only")]
    skip = [n for text in args.skip for n in _names(text, "--skip")]
    jobs = [j for j in JOBS if (not only or j.name in only) and j.name not in skip]
    have_data = DATA.is_dir()

    if args.list:
        for j in JOBS:
            needs = "  [needs ../shared/data]" if j.needs_data else ""
            print(f"{j.name:<20} {' '.join([j.script, *j.args]):<28} -> {j.writes}{needs}")
            if j.data_args:
                print(f"{'':<20} with ../shared/data: {' '.join(j.data_args)}")
            if j.quick or j.quick_data_args:
                print(f"{'':<20} --quick: {' '.join(j.quick + j.quick_data_args)}")
            if j.note:
                print(f"{'':<20} ({j.note})")
        print(f"\n../shared/data: {DATA} ({'present' if have_data else 'absent'})")
        return 0

    if args.results is not None:
        results = args.results.resolve()
    elif os.environ.get("NQS_BENCH_RESULTS"):
        results = pathlib.Path(os.environ["NQS_BENCH_RESULTS"]).resolve()
    elif args.quick:
        results = pathlib.Path(tempfile.mkdtemp(prefix="nqs-bench-quick-"))
    else:
        results = table.RESULTS
    results.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NQS_BENCH_RESULTS": str(results), "PYTHONUNBUFFERED": "1"}
    print(f"results folder: {results}{' (quick sizes)' if args.quick else ''}", flush=True)

    summary = []
    for job in jobs:
        if job.needs_data and not have_data:
            reason = f"{DATA} is absent"
            print(f"\n=== {job.name}: skipped ({reason})", flush=True)
            summary.append((job.name, "skipped", None, reason))
            continue
        cmd = command(job, args.quick, have_data)
        if job.data_args and not have_data:
            print(f"\n(note: {DATA} is absent, so {job.name} runs without "
                  f"{' '.join(job.data_args)})", flush=True)
        print(f"\n=== {job.name}: python {' '.join([job.script, *cmd[2:]])}", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=HERE, env=env).returncode
        except KeyboardInterrupt:
            summary.append((job.name, "interrupted", time.perf_counter() - t0, ""))
            _print_summary(summary)
            return 130
        wall = time.perf_counter() - t0
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        summary.append((job.name, status, wall, ""))

    _print_summary(summary)
    failed = any(s[1].startswith("FAILED") for s in summary)

    print()
    if results == table.RESULTS.resolve():
        rc = table.main([])
    else:
        print(f"(results in {results}: the README's table is left alone)")
        rc = table.main(["--results", str(results), "--print-only"])
    return 1 if failed or rc else 0


def _print_summary(summary) -> None:
    print("\n=== summary")
    print(f"{'benchmark':<20} {'status':<18} {'wall time':>10}")
    for name, status, wall, reason in summary:
        wall_text = "" if wall is None else f"{wall:9.1f}s"
        print(f"{name:<20} {status:<18} {wall_text:>10}" + (f"  {reason}" if reason else ""))


if __name__ == "__main__":
    sys.exit(main())
