"""The benchmarks' headline figures as one markdown table, kept in benchmarks/README.md.

    python benchmarks/table.py            # print the table and rewrite README's copy
    python benchmarks/table.py --check    # exit 1 if README's copy is stale

Reads every results/*.json written by the benchmark scripts (the CPU files and
any from another backend, such as risk_gpu_float64.json or plan_gpu.json) and
picks a few headline figures from each: one row per figure with our value, the
published reference implementation's figure where one exists (SPEC.md section 6,
or the paper's figure recorded in the JSON), their ratio, the device and the
date of the run. The ratio is oriented so that > 1 means ours is better:
ours / reference for throughputs, reference / ours for times and errors.

The README's table lies between the marker lines `<!-- table:start -->` and
`<!-- table:end -->`; the rest of the README is written by hand and left as it
is. The rewrite is atomic (a temporary file, then os.replace). Needs no JAX.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
START, END = "<!-- table:start -->", "<!-- table:end -->"
HEADER = ("benchmark", "figure", "ours", "reference", "ratio (> 1: ours better)", "device",
          "date (UTC)")


@dataclasses.dataclass(frozen=True)
class Row:
    benchmark: str  # the script that wrote the file
    figure: str  # what is measured, with units
    ours: float
    ours_text: str
    reference: float | None  # None where the reference has no such figure
    reference_text: str
    ratio: float | None  # > 1: ours better; None without a reference
    device: str
    date: str
    source: str  # the JSON file's name

    def cells(self) -> tuple[str, ...]:
        ratio = "—" if self.ratio is None else f"{fmt_ratio(self.ratio)}×"
        return (self.benchmark, self.figure, self.ours_text, self.reference_text, ratio,
                self.device, self.date)


# ---------------------------------------------------------------------------- formatting


def fmt(x: float, unit: str = "") -> str:
    """A figure for the table: thousands separated, 3-4 significant digits, 6.2e-14."""
    x = float(x)
    if x == 0:
        text = "0"
    elif abs(x) >= 1000:
        text = f"{x:,.0f}"
    elif x == int(x):
        text = str(int(x))  # 80, 36
    elif abs(x) >= 1:
        text = f"{x:#.3g}".rstrip(".")  # 4.00, 50.1, 611
    elif abs(x) >= 1e-3:
        text = f"{x:.4g}"
    else:
        text = f"{x:.2g}"
        mantissa, exponent = (text if "e" in text else f"{x:.1e}").split("e")  # 5.2e-4 too
        text = f"{mantissa}e{int(exponent)}"
    return f"{text} {unit}".rstrip()


def sci(x: float) -> str:
    """A size or a budget, 3e15, 1.5e19."""
    mantissa, exponent = f"{float(x):.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def fmt_ratio(r: float) -> str:
    if r >= 1e4:
        mantissa, exponent = f"{r:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    if r >= 100:
        return f"{r:,.0f}"
    if 0.9 <= r < 1.1:
        return f"{r:.3f}"  # near 1 the third decimal is the news
    return f"{r:.3g}"


def describe_device(info: dict) -> str:
    backend = info.get("backend", "?")
    kind = str(info.get("device", backend))
    cpus = info.get("host_cpus")
    host = f"{cpus} cpus" if cpus else "host ?"
    if backend == "cpu":
        return f"cpu ({host})"
    devices = info.get("num_devices", 1)
    count = f"{devices}× " if devices and devices > 1 else ""
    return f"{backend}: {count}{kind} ({host})"


def describe_date(info: dict) -> str:
    date = str(info.get("date", "?"))  # ISO 8601, UTC
    return date[:16].replace("T", " ") if "T" in date else date


# ---------------------------------------------------------------------------- rows


class _Builder:
    """Rows of one results file; `optional()` drops a row whose keys are missing."""

    def __init__(self, benchmark: str, path: pathlib.Path, data: dict):
        self.benchmark, self.path, self.data = benchmark, path, data
        info = data.get("device_info", {})
        self.device, self.date = describe_device(info), describe_date(info)
        self.rows: list[Row] = []

    @contextlib.contextmanager
    def optional(self):
        try:
            yield
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            print(f"table.py: {self.path.name}: a row skipped ({type(exc).__name__}: {exc})",
                  file=sys.stderr)

    def add(self, figure: str, ours: float, reference: float | None = None, *,
            better: str, unit: str = "", reference_note: str = "",
            ours_text: str | None = None) -> None:
        """One row; `better` is "higher" or "lower" (which way ours beats the reference)."""
        ours = float(ours)
        if not math.isfinite(ours):
            raise ValueError(f"{figure}: not a finite figure ({ours})")
        ratio = None
        if reference is not None:
            reference = float(reference)
            if better == "higher":
                ratio = ours / reference
            elif better == "lower":
                ratio = reference / ours if ours > 0 else None  # ours exact: no finite ratio
            else:
                raise ValueError(better)
            if ratio is not None and not (math.isfinite(ratio) and ratio > 0):
                ratio = None
        ref_text = "—" if reference is None else fmt(reference, unit)
        if reference_note:
            ref_text = reference_note if reference is None else f"{ref_text} ({reference_note})"
        self.rows.append(Row(self.benchmark, figure, ours,
                             fmt(ours, unit) if ours_text is None else ours_text,
                             reference, ref_text, ratio, self.device, self.date, self.path.name))


def _risk(b: _Builder) -> None:
    d = b.data
    with b.optional():
        b.add(f"plain risk, {d['dtype']}, {d['configs']:,} configs in one call (configs/s)",
              d["configs_per_s"], d.get("reference_configs_per_s"), better="higher",
              reference_note="one config at a time, 2-core CPU")


def _schedule(b: _Builder) -> None:
    d = b.data
    dtype = d.get("dtype", "?")
    for name, r in d.get("a_scheduled_risk", {}).items():
        with b.optional():
            b.add(f"scheduled risk, {name}, {dtype}, {r['configs']:,} configs (configs/s)",
                  r["configs_per_s"], better="higher")
    with b.optional():
        t = d["b_trajectory"]
        b.add(f"one loss curve, 200 checkpoints, cosine 32 pieces, {dtype}: time per call once "
              f"compiled (ms, median of 50; target < {fmt(t['target_per_call_ms'])})",
              t["per_call_ms_median"], better="lower")
    with b.optional():
        t = d["b_trajectory"]
        b.add(f"loss curves, {t['batched_runs']:,} runs x 200 checkpoints in one call "
              f"(curves/s)", t["batched_trajectories_per_s"], better="higher")
    with b.optional():
        w = d["c_weight_norm"]
        b.add(f"weight-norm risk, Pythia-like configs, {dtype}, {w['configs']:,} configs "
              f"(configs/s)", w["configs_per_s"], w.get("reference_configs_per_s"),
              better="higher", reference_note="2-core CPU")
    with b.optional():
        e = d["d_discretisation_max_rel_error"]
        b.add(f"cosine cut into 32 pieces vs the exact per-step run, K = {e['K']}: "
              f"max relative error of the loss", e["pieces"]["32"]["Schedule.cosine"],
              better="lower")


def _sweep(b: _Builder) -> None:
    d = b.data
    grid = "x".join(str(g) for g in d.get("grid", ())) or "?"
    with b.optional():
        r = d["one_device"]
        b.add(f"sweep, {grid} grid, {d.get('dtype', '?')}, 1 device (cells/s)",
              r["cells_per_s"], better="higher")
    with b.optional():
        r = d["virtual_devices"]
        virtual = " virtual" if b.device.startswith("cpu") else ""
        b.add(f"the same sweep sharded over {r['devices']}{virtual} devices (cells/s; "
              f"max rel. difference from 1 device {fmt(d['max_rel_diff_virtual_vs_one'])})",
              r["cells_per_s"], better="higher")


def _accuracy(b: _Builder) -> None:
    d = b.data
    if "max_n" not in d:  # accuracy_rules.json (accuracy.py --rules): its own format
        return
    rows = d.get("rows", [])
    max_n = sci(d.get("max_n", float("nan")))
    for dtype, target in (("float64", "1e-10"), ("float32", "1e-5")):
        with b.optional():
            b.add(f"risk vs an exact sum over every direction, {len(rows)} random configs, "
                  f"N <= {max_n}, {dtype}: max relative error (target <= {target})",
                  d[f"worst_rel_err_{dtype}"], better="lower")
    pythia = d.get("pythia_rows") or []
    if pythia:
        with b.optional():
            ours = max(abs(r["ours_vs_exact"]) for r in pythia)
            ref = max(abs(r["reference_vs_exact"]) for r in pythia)
            b.add(f"the {len(pythia)} Pythia rows where ours and the reference's published "
                  f"predictions differ by > 1e-7: max relative error vs an exact sum",
                  ours, ref, better="lower", reference_note="its published predictions")


def _fit(b: _Builder) -> None:
    d = b.data
    with b.optional():
        f = d["nqs_fit"]
        b.add(f"NQS fit on the 64 Pythia training runs, {f['num_starts']:,} starts: wall time, "
              f"compilation included (s)", f["wall_time_s"], 80.0, better="lower",
              reference_note="its authors' GPU; refuses to run on CPU")
    with b.optional():
        f = d["nqs_fit"]
        b.add("NQS fit objective on those runs (sum of 0.5 log-error²)",
              f["objective"], f.get("reference_objective"), better="lower")
    held = {(r["type"], r["model"]): r for r in d.get("held_out", [])}
    ref_msle = d.get("reference_held_out_msle", {})
    for variant in ("weight-norm", "plain"):
        for kind in ("isoflop", "isotoken"):
            with b.optional():
                b.add(f"held-out mean squared log error, {kind} test runs, our fit, "
                      f"{variant} predictor", held[kind, f"nqs-ours/{variant}"]["msle"],
                      ref_msle.get(variant, {}).get(kind), better="lower",
                      reference_note="its fit, SPEC §6")
    paper = d.get("paper_huber_e5", {})
    for model, key, label in (
        ("nqs", "nqs-ours/weight-norm", "NQS, our fit, weight-norm predictor"),
        ("chinchilla", "chinchilla", "Chinchilla fitted to the same 64 runs"),
    ):
        for kind in ("isoflop", "isotoken"):
            with b.optional():
                b.add(f"held-out mean Huber x 1e-5, {kind} test runs, {label}",
                      held[kind, key]["huber_e5"], paper.get(model, {}).get(kind),
                      better="lower", reference_note="paper")
    with b.optional():
        e = d["chinchilla_epoch"]
        inside = e["inside_95ci"]
        p = e["params"]
        b.add("Chinchilla refitted to Epoch AI's Hoffmann et al. data (240 points): parameters "
              "inside Epoch AI's 95% intervals", sum(inside.values()),
              ours_text=f"{sum(inside.values())}/{len(inside)} (E {p['E']:.3f}, "
                        f"α {p['alpha']:.3f}, β {p['beta']:.3f})",
              better="higher")


def _compute_gap(b: _Builder) -> None:
    rows = b.data.get("rows", [])
    by = {(r["C0"], r["model"]): r for r in rows}
    for c0 in sorted({r["C0"] for r in rows}):
        with b.optional():
            nqs, wn, ch = (by[c0, m] for m in ("nqs/plain", "nqs/weight-norm", "chinchilla"))
            b.add(f"fitted on the {nqs['n_train']} runs with C <= {sci(c0)} FLOPs, scored on the "
                  f"{nqs['n_test']} above (up to {fmt(nqs['gap'])}x more compute): held-out "
                  f"mean Huber x 1e-5, NQS plain predictor (weight-norm {fmt(wn['huber_e5'])}; "
                  f"Chinchilla {fmt(ch['huber_e5'])})", nqs["huber_e5"], better="lower")


def _plan(b: _Builder) -> None:
    d = b.data
    with b.optional():
        groups = d["regret"]["groups"]
        worst = {k: max(g[k]["regret"] for g in groups)
                 for k in ("nqs_rule_plain", "nqs_rule_weight_norm", "chinchilla")}
        b.add(f"planning regret on the {len(groups)} Pythia test isoflop groups, worst group "
              f"(nats): NQS along the groups' batch rule, plain predictor (weight-norm "
              f"{fmt(worst['nqs_rule_weight_norm'])}; Chinchilla's N_opt "
              f"{fmt(worst['chinchilla'])})", worst["nqs_rule_plain"], better="lower")
    with b.optional():
        cases = d["grid_vs_gradient"]
        worst = max(max(c["rel_diff_N"], c["rel_diff_B"]) for c in cases)
        b.add(f"grid vs gradient planner over {len(cases)} budgets and limits: max relative "
              f"difference in N and B", worst, better="lower")
    with b.optional():
        t = d["throughput_1e6"]
        b.add(f"one plan over {t['candidates']:,} candidates, warm (s; first call "
              f"{fmt(t['first_call_s'])} s)", t["warm_s"], better="lower")
    with b.optional():
        s = d["schedule_search"]
        b.add(f"schedule search at {sci(s['C'])} FLOPs, {len(s['segments'])} segments: gain "
              f"over the best constant schedule (nats)", s["gain"],
              better="higher")


def _curves(b: _Builder) -> None:
    d = b.data
    kind = d.get("transfer", {}).get("fit", {}).get("params", {}).get("model", "nqs-sizes")
    name = {"nqs-sizes": "nqs.SizedNQS", "nqs-sizes-norm": "nqs.NormSizedNQS"}.get(kind, kind)
    for size, s in sorted(d.get("transfer", {}).get("summary", {}).items(), key=lambda t: int(t[0])):
        with b.optional():
            b.add(f"schedule transfer on the MPL curves, one NQS across sizes ({name}) fitted "
                  f"on 3 schedules x 2 sizes: mean held-out MAE over the {s['held_out']} unseen "
                  f"schedules' curves, {size}M (nats; MAE <= 0.005 on {s['mae_ok']}/{s['held_out']}, "
                  f"final within 0.006 on {s['final_ok']}/{s['held_out']}; worst curve "
                  f"{fmt(s['held_out_mae_max'])})", s["held_out_mae_mean"],
                  s["mpl_published_mae"], better="lower",
                  reference_note=f"Multi-Power Law, one fit per size, published "
                                 f"{s['mpl_published_mae_text']}")
    seen = set()
    for r in d.get("run_to_run") or []:
        if r["branched"] or r["size"] in seen:
            continue
        seen.add(r["size"])
        with b.optional():
            b.add(f"the data's own noise, {r['size']}M: two runs of one schedule "
                  f"({r['runs'][0]}, {r['runs'][1]}) over their {r['checkpoints']} shared "
                  f"checkpoints to step {r['to_step']:.0f}, MAE between them (nats; worst "
                  f"{fmt(r['worst'])}; a model of the mean misses one curve by ~1/sqrt(2) of "
                  f"it)", r["mae"], better="lower")
    for size, r in sorted(d.get("prefix", {}).get("at_half", {}).items(), key=lambda t: int(t[0])):
        with b.optional():
            b.add(f"prefix -> endpoint at p = 0.5, {size}M, {r['runs']} runs: NQS endpoint MAE "
                  f"(nats; worst {fmt(r['model worst'])})", r["model mae"], r["best form mae"],
                  better="lower", reference_note=f"best parametric form, {r['best form']}")
    with b.optional():
        b.add("benchmarks/curves.py, the whole run: transfer fit, 9 prefix fractions, compute laws "
              "(s; target <= 600)", d["wall_time_s"], better="lower")


def _cli(b: _Builder) -> None:
    f = b.data["figures"]
    with b.optional():
        b.add(f"nqs-engine predict, whole process, {f['rows']:,} rows CSV in and out, warm "
              f"compile cache (rows/s; Parquet {fmt(f['predict_parquet_rows_per_s'])}; "
              f"target >= 100,000)", f["predict_csv_rows_per_s"], better="higher")
    with b.optional():
        b.add(f"nqs-engine predict on {f['big_rows']:,} rows: rows/s and peak RSS "
              f"{fmt(f['predict_big_peak_rss_mb'])} MB (1M rows: "
              f"{fmt(f['predict_csv_peak_rss_mb'])} MB)", f["predict_big_rows_per_s"],
              better="higher")
    with b.optional():
        b.add("nqs-engine predict --help, whole process (s; target < 1)", f["predict_help_s"],
              better="lower")
    with b.optional():
        b.add("nqs-engine predict on 10 rows, whole process, warm cache (s; target < 3)",
              f["predict_10_rows_s"], better="lower")


def _ladders(b: _Builder) -> None:
    boot = b.data.get("bootstrap", 0)
    for name, report in b.data.get("ladders", {}).items():
        overall = {r["model"]: r for r in report["rows"] if r["budget"] == "all"}
        best = {m: max(abs(r["best_run_error"]) for r in report["rows"]
                       if r["model"] == m and r["budget"] != "all") for m in overall}
        chin = overall.get("chinchilla")
        for model, r in overall.items():
            if model == "chinchilla":
                continue
            with b.optional():
                cover = "" if r.get("coverage") is None else \
                    f", 90% interval coverage {100 * r['coverage']:.0f}%"
                b.add(f"{name}: held-out MSLE, {model} ({r['n']} runs, gap up to "
                      f"{fmt(r['gap'])}x; worst best-run error {100 * best[model]:.2f}%{cover})",
                      r["msle"], None if chin is None else chin["msle"], better="lower",
                      reference_note="Chinchilla fitted the same way")
        with b.optional():
            if boot:
                b.add(f"{name}: backtest wall time with bootstrap {boot} (s; target <= 300)",
                      report["process_wall_s"], better="lower")


def _accuracy_rules(b: _Builder) -> None:
    d = b.data
    with b.optional():
        b.add(f"sum rule over {d['configs']:,} random runs of 1-20 segments (brute force, or a "
              f"512x20 uniform rule to N = 1e12): worst relative error, default rule (target "
              f"<= 1e-10)", d["worst_rel_err_default"], d["worst_rel_err_old"], better="lower",
              reference_note="the old 461-point rule")


def _weight_norm(b: _Builder) -> None:
    d = b.data
    with b.optional():
        r = d["weight_norm_rule"]
        # Files since 2026-12-03 time the former default rule beside it; older ones only
        # that rule's equal panels.
        before = "weight_norm_rule_before" in d
        ref = d["weight_norm_rule_before" if before else "weight_norm_rule_uniform"]
        b.add(f"weight-norm risk, {d['configs']:,} Pythia-like configurations, float64 "
              f"(configs/s; target {fmt(d['target_configs_per_s'])}; worst relative error vs a "
              f"fine rule {fmt(r['rel_err_vs_fine']['max'])})", r["configs_per_s"],
              ref["configs_per_s"], better="higher",
              reference_note="the former 139-point rule, same run" if before else "equal panels")


def _interrupts(b: _Builder) -> None:
    t = b.data["tally"]
    with b.optional():
        delivered = t.get("ok", 0) + t.get("FAILED", 0)
        b.add(f"signals at random moments of a {b.data['rows']:,}-row predict: ended right "
              f"(exit 130, one line, no file) of {delivered} delivered "
              f"({t.get('finished before the signal', 0)} runs finished first)", t.get("ok", 0),
              better="higher")


def _fit_curves(b: _Builder) -> None:
    what = {"one-size": "3 constant-plus-cosine curves of one size",
            "three-sizes": "9 such curves over 3 sizes",
            "mpl-25m": "3 real MPL 25M curves"}
    for name, r in b.data.items():
        if name == "device_info" or not isinstance(r, dict):
            continue
        with b.optional():
            target = r["target_s"]
            clean = r.get("mae_nats_vs_noiseless")
            b.add(f"nqs-engine fit --lr-column, whole process, cold cache: {what.get(name, name)}, "
                  f"{r['rows']} checkpoints (s; converged "
                  f"{'yes' if r['diagnostics']['converged'] else 'NO'}"
                  + ("" if target is None else f", target <= {target:g}")
                  + ("" if clean is None else
                     f"; MAE against the noiseless curves {fmt(clean)} nats")
                  + ")", r["wall_s"], better="lower")


def _suite_profile(b: _Builder) -> None:
    s = b.data["sum_over_tests"]
    with b.optional():
        b.add(f"test suite under pytest -n 2 with the profiler: XLA compile time summed over "
              f"{b.data['num_tests']} tests ({s['compiles']:.0f} programs; "
              f"{b.data['compile_share_of_test_wall']:.0%} of their in-process wall time) (s)",
              s["compile_s"], better="lower")
    with b.optional():
        b.add("test suite under pytest -n 2 with the profiler: session wall time (s; CI target "
              "<= 480 for the whole of .ci/run)", b.data["session_wall_s"], better="lower")


# file-name prefix -> (the script that writes it, row builder); the order of the table
KINDS = {
    "risk": ("bench_risk", _risk),
    "schedule": ("bench_schedule", _schedule),
    "sweep": ("bench_sweep", _sweep),
    "accuracy": ("accuracy", _accuracy),
    "fit": ("bench_fit", _fit),
    "fit_curves": ("fit_curves", _fit_curves),
    "compute_gap": ("compute_gap", _compute_gap),
    "plan": ("bench_plan", _plan),
    "cli": ("bench_cli", _cli),
    "accuracy_rules": ("accuracy", _accuracy_rules),
    "weight_norm": ("bench_weight_norm", _weight_norm),
    "interrupts": ("interrupts", _interrupts),
    "ladders": ("ladders", _ladders),
    "curves": ("curves", _curves),
    "suite_profile": ("suite_profile", _suite_profile),
}


def _kind(path: pathlib.Path) -> str | None:
    stem = path.stem
    for prefix in sorted(KINDS, key=len, reverse=True):
        if stem == prefix or stem.startswith(prefix + "_"):
            return prefix
    return None


def build_rows(results: pathlib.Path = RESULTS) -> list[Row]:
    """The table's rows from every results/*.json, CPU files before the others of a kind.

    Files that cannot be read, or that no benchmark here writes, are skipped
    with a note on stderr; so are rows whose keys a file lacks.
    """
    loaded = []
    for path in sorted(pathlib.Path(results).glob("*.json")):
        kind = _kind(path)
        if kind is None:
            print(f"table.py: {path.name}: no headline figures known for this file",
                  file=sys.stderr)
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"table.py: {path.name}: unreadable ({exc})", file=sys.stderr)
            continue
        if not isinstance(data, dict):
            print(f"table.py: {path.name}: not a results object", file=sys.stderr)
            continue
        backend = (data.get("device_info") or {}).get("backend", "?")
        # CPU first; within a kind float64 before float32
        key = (list(KINDS).index(kind), backend != "cpu", "float32" in path.stem, path.stem)
        loaded.append((key, kind, path, data))
    rows = []
    for _, kind, path, data in sorted(loaded, key=lambda t: t[0]):
        script, builder = KINDS[kind]
        b = _Builder(script, path, data)
        builder(b)
        rows.extend(b.rows)
    return rows


def render(rows: list[Row]) -> str:
    """The markdown table (no trailing newline)."""
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(esc(c) for c in r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def replace_table(text: str, table: str) -> str:
    """`text` with the part between the marker lines replaced by `table`."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {START} ... {END} markers")
    return text[: start + len(START)] + "\n\n" + table + "\n\n" + text[end:]


def write_atomic(path: pathlib.Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS,
                        help="folder of results JSON (default benchmarks/results)")
    parser.add_argument("--readme", type=pathlib.Path, default=README,
                        help="markdown file holding the table (default benchmarks/README.md)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true",
                       help="write nothing; exit 1 if the README's table is stale")
    group.add_argument("--print-only", action="store_true", help="print the table, write nothing")
    args = parser.parse_args(argv)

    table = render(build_rows(args.results))
    if args.print_only:
        print(table)
        return 0
    try:
        old = args.readme.read_text()
        new = replace_table(old, table)
    except (OSError, ValueError) as exc:
        print(f"table.py: {args.readme}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != old:
            print(f"table.py: the table in {args.readme} is stale; run python benchmarks/table.py",
                  file=sys.stderr)
            return 1
        print(f"{args.readme}: table up to date")
        return 0
    print(table)
    if new != old:
        write_atomic(args.readme, new)
        print(f"\nwrote the table into {args.readme}")
    else:
        print(f"\n{args.readme}: table already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
