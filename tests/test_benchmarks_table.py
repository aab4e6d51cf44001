"""benchmarks/table.py and benchmarks/run_all.py, without running a benchmark."""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_risk  # noqa: E402
import table  # noqa: E402

COMMITTED = sorted(table.RESULTS.glob("*.json"))


def test_every_committed_result_gives_rows():
    assert COMMITTED, "no committed results under benchmarks/results"
    rows = table.build_rows(table.RESULTS)
    sources = {r.source for r in rows}
    assert sources == {p.name for p in COMMITTED}
    for r in rows:
        assert math.isfinite(r.ours), r
        if r.ratio is not None:
            assert math.isfinite(r.ratio) and r.ratio > 0, r
            assert r.reference is not None and r.reference > 0, r
        assert r.device and r.date != "?", r
    # The reference implementation's throughputs are in the table with their ratios.
    risk = [r for r in rows if r.source == "risk_cpu_float64.json"]
    if risk:
        # The committed result was made against the figure the benchmark now compares with.
        reference = bench_risk.REFERENCE_CONFIGS_PER_S
        assert risk[0].reference == reference
        assert risk[0].ratio == pytest.approx(risk[0].ours / reference)


def test_ratio_orientation(tmp_path):
    info = {"backend": "gpu", "device": "NVIDIA H100 80GB HBM3", "num_devices": 1,
            "host_cpus": 16, "date": "2026-11-23T10:00:00+00:00"}
    (tmp_path / "risk_gpu_float64.json").write_text(json.dumps(
        {"device_info": info, "dtype": "float64", "configs": 4, "configs_per_s": 1090.0,
         "reference_configs_per_s": 545.0}))
    (tmp_path / "fit_gpu.json").write_text(json.dumps(
        {"device_info": info, "nqs_fit": {"num_starts": 8, "wall_time_s": 40.0,
                                          "objective": 0.04, "reference_objective": 0.02}}))
    (tmp_path / "notes.json").write_text("{}")  # written by no benchmark: skipped
    rows = table.build_rows(tmp_path)
    risk, wall, objective = rows
    assert risk.ratio == pytest.approx(2.0)  # throughput: higher is better
    assert "wall time" in wall.figure and wall.ratio == pytest.approx(2.0)  # 80 s vs 40 s
    assert "objective" in objective.figure and objective.ratio == pytest.approx(0.5)  # ours worse
    assert all(r.device.startswith("gpu: NVIDIA H100") for r in rows)
    assert {r.source for r in rows} == {"risk_gpu_float64.json", "fit_gpu.json"}


def test_missing_keys_drop_rows_not_files(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps(
        {"device_info": {"backend": "cpu", "host_cpus": 2, "date": "2026-11-23T10:00:00"},
         "throughput_1e6": {"candidates": 1000000, "first_call_s": 6.0, "warm_s": 2.0}}))
    (tmp_path / "sweep_cpu.json").write_text("{not json")
    rows = table.build_rows(tmp_path)
    assert [r.source for r in rows] == ["plan.json"]
    assert table.build_rows(tmp_path / "absent") == []


def test_render_and_idempotent_rewrite(tmp_path):
    rows = table.build_rows(table.RESULTS)
    text = table.render(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| benchmark | figure | ours | reference | ratio")
    assert len(lines) == len(rows) + 2
    assert all(line.count(" | ") == len(table.HEADER) - 1 for line in lines if line[1] != "-")

    readme = tmp_path / "README.md"
    hand = "# hand-written\n\nintro\n\n"
    readme.write_text(f"{hand}{table.START}\nold table\n{table.END}\n\nnotes\n")
    assert table.main(["--readme", str(readme), "--check"]) == 1
    assert table.main(["--readme", str(readme)]) == 0
    once = readme.read_text()
    assert table.main(["--readme", str(readme), "--check"]) == 0
    assert table.main(["--readme", str(readme)]) == 0
    assert readme.read_text() == once
    assert once.startswith(hand) and once.endswith(f"{table.END}\n\nnotes\n")
    assert text in once and "old table" not in once
    assert list(tmp_path.iterdir()) == [readme]  # no temporary file left behind

    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    assert table.main(["--readme", str(bare)]) == 2
    assert bare.read_text() == "no markers\n"


def test_committed_readme_table_is_current(tmp_path):
    # The same check as `python benchmarks/table.py --check`, on a copy.
    readme = tmp_path / "README.md"
    shutil.copy(table.README, readme)
    assert table.main(["--readme", str(readme), "--check"]) == 0


def _run_all(*args):
    return subprocess.run([sys.executable, str(BENCH / "run_all.py"), *args],
                          capture_output=True, text=True, timeout=60)


def test_run_all_list():
    done = _run_all("--list")
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines() if line and not line[0].isspace()]
    for name in ("bench_risk", "bench_risk_float32", "bench_schedule", "bench_sweep",
                 "accuracy", "bench_fit", "compute_gap", "bench_plan"):
        assert name in names
    assert names.index("bench_fit") < names.index("bench_plan")


@pytest.mark.parametrize("flag", ["--only", "--skip"])
def test_run_all_unknown_name(flag):
    done = _run_all(flag, "bench_risk,no_such_bench")
    assert done.returncode != 0
    assert done.stdout == ""
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "no_such_bench" in err[0]


def test_run_all_skips_without_data_and_fails_loudly(tmp_path, monkeypatch, capsys):
    import run_all

    monkeypatch.setattr(run_all, "DATA", tmp_path / "no-data")
    assert run_all.main(["--only", "bench_fit,bench_plan", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (") == 2 and "no-data is absent" in out
    assert not list(tmp_path.glob("*.json"))

    broken = run_all.Job("broken", "no_such_script.py", writes="nothing.json")
    monkeypatch.setattr(run_all, "JOBS", (broken,))
    monkeypatch.setattr(run_all, "NAMES", ["broken"])
    assert run_all.main(["--results", str(tmp_path)]) == 1
    assert "FAILED (exit" in capsys.readouterr().out


def test_save_names_the_backend_and_is_atomic(tmp_path, monkeypatch):
    import _common

    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(_common, "device_info", lambda: {"backend": "gpu", "device": "H100"})
    assert _common.save("plan", {"x": 1}).name == "plan_gpu.json"
    assert _common.save("risk_gpu_float64", {"x": 1}).name == "risk_gpu_float64.json"
    with pytest.raises(TypeError):
        _common.save("fit", {"x": object()})  # not JSON: nothing half-written is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan_gpu.json", "risk_gpu_float64.json"]
    monkeypatch.setattr(_common, "device_info", lambda: {"backend": "cpu", "device": "cpu"})
    assert _common.save("plan", {"x": 1}).name == "plan.json"


def test_curves_run_to_run_separates_branched_runs_from_repeated_ones():
    """benchmarks/curves.py's run-to-run figure on made-up curves whose answer is known."""
    import numpy as np
    import curves

    step = np.arange(curves.WARMUP + 40, 24_001, 100.0)
    rng = np.random.default_rng(0)
    base = 3.0 + 2.0 * (step / 1e3) ** -0.3
    a, b = base + rng.normal(0, 1e-3, step.size), base + rng.normal(0, 1e-3, step.size)
    decay = step > 20_000
    wsd_lr = np.where(decay, 3e-4 * 0.1 ** ((step - 20_000) / 4000), 3e-4)
    wsd_loss = np.where(decay, b - 0.05, b)  # branched off constant_72000 at step 20000
    curves_in = [("constant_24000", np.full(step.size, 3e-4), a),
                 ("constant_72000", np.full(step.size, 3e-4), b),
                 ("wsd_20000_24000", wsd_lr, wsd_loss)]
    c = {
        "size": np.full(3 * step.size, 25),
        "schedule": np.repeat([n for n, _, _ in curves_in], step.size),
        "step": np.tile(step, 3),
        "lr": np.concatenate([lr for _, lr, _ in curves_in]),
        "loss": np.concatenate([loss for _, _, loss in curves_in])}
    out = {tuple(r["runs"]): r for r in curves.run_to_run(c)}
    assert set(out) == {("constant_24000", "constant_72000"),
                        ("constant_24000", "wsd_20000_24000"),
                        ("constant_72000", "wsd_20000_24000")}
    whole = out[("constant_24000", "constant_72000")]
    assert not whole["branched"] and whole["checkpoints"] == step.size
    assert whole["mae"] == pytest.approx(np.mean(np.abs(a - b)))
    branch = out[("constant_72000", "wsd_20000_24000")]
    assert branch["branched"] and branch["mae"] == 0.0
    assert branch["checkpoints"] == int(np.sum(~decay)) and branch["to_step"] == step[~decay][-1]
    assert not out[("constant_24000", "wsd_20000_24000")]["branched"]
