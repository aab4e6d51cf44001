"""The `nqs-engine` command line: `predict` (plain and weight-norm, with schedules),
`trajectory`, their errors, the SPEC language, and atomic output.

Compilation dominates the time here, so every computation shares a few shapes:
`predict` pads each chunk to 64 rows, every test file has at most 64 rows per
chunk and every scheduled test uses 3-segment schedules, and the reference
values come from library calls on the same padded shapes (`in_blocks`). That
makes one compiled program each for `risk`, `schedule_risk` and
`weight_norm_risk` (64 rows) and one for `trajectory` (8 checkpoints). The demo
and `plot` are tested in test_plot.py.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

import nqs_engine as nqs
from nqs_engine._io import CsvColumns, InputError, atomic_output, read_json, write_json
from nqs_engine._model import _nqs as engine  # where the NQS models call risk & co
from nqs_engine._schedule import ScheduleSpec, parse_schedule
from nqs_engine.cli import _trajectory as trajectory_command
from nqs_engine.cli import main
from nqs_engine.cli._common import Progress, runtime_message
from nqs_engine.cli._main import COMMANDS, command_module
from nqs_engine.cli._predict import RUN_COLUMNS


def load_schedule_file(path):
    """A schedule file, as `--schedule-file` reads it."""
    return ScheduleSpec.from_segments(read_json(path), path)

TERMS = ["prediction", "irreducible", "approximation", "bias", "variance"]
FIELDS = {"prediction": "total"}

THETA = dict(p=1.3, q=0.9, P=5.0, Q=0.8, e_irr=0.5, R=2.0, r=1.2)

RUNS = [
    # tag, N, B, K, note  (N, B, K as written in the file)
    ("a", "1e8", "256", "1000", "x,y"),
    ("b", "3e9", "512", "20000", ""),
    ("c", "12", "1", "0", "tiny"),
    ("d", "1.5", "0.5", "7.25", "fractional"),
    ("e", "1000000000000", "1024", "100000", "1e12"),
]


@pytest.fixture(autouse=True)
def x64():
    """float64 for the reference values, whatever the suite's conftest does."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def runs_file(tmp_path, name="runs.csv"):
    """RUNS with non-required columns before, between and after N, B, K."""
    rows = [(tag, n, note, b, k, str(i)) for i, (tag, n, b, k, note) in enumerate(RUNS)]
    return write_csv(tmp_path / name, ["tag", "N", "note", "B", "K", "id"], rows)


def params_file(tmp_path, values=None, name="params.json", text=None):
    path = tmp_path / name
    if text is None:
        text = json.dumps(dict(THETA, lr=1.5) if values is None else values)
    path.write_text(text)
    return str(path)


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


BLOCK = 64  # predict's padded chunk size for files of <= 64 rows


def in_blocks(compute, *arrays, size=BLOCK):
    """`compute(*blocks)` on the rows of `arrays` in blocks of `size`, each padded like
    predict pads its chunks (repeating the last row); returns the (rows, 5) table."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    n, tables = len(arrays[0]), []
    for start in range(0, n, size):
        m = min(size, n - start)
        blocks = [
            np.pad(a[start : start + m], [(0, size - m)] + [(0, 0)] * (a.ndim - 1), mode="edge")
            for a in arrays
        ]
        out = compute(*blocks)
        tables.append(np.stack([np.asarray(getattr(out, FIELDS.get(t, t))) for t in TERMS], 1)[:m])
    return np.concatenate(tables)


def reference_table(params, lr, rows):
    """The plain risk of rows of (N, B, K) as written in a file."""
    N, B, K = (np.array([float(r[i]) for r in rows]) for i in range(3))
    return in_blocks(lambda n, b, k: nqs.risk(params, n, b, k, lr=lr), N, B, K)


def _digits(text):
    """The significant digits of a float's text, whatever its notation."""
    mantissa = text.lower().split("e")[0].lstrip("+-").replace(".", "")
    return mantissa.strip("0") or "0"


def assert_matches_risk(pred_path, params, lr):
    header, rows = read_csv(pred_path)
    assert header == ["tag", "N", "note", "B", "K", "id", *TERMS]
    assert len(rows) == len(RUNS)
    table = reference_table(params, lr, [(n, b, k) for _, n, b, k, _ in RUNS])
    for row, (tag, n, b, k, note), expected in zip(rows, RUNS, table):
        # input columns carried through unchanged, in order
        assert row[:6] == [tag, n, note, b, k, row[5]]
        values = dict(zip(TERMS, row[6:]))
        for text in values.values():
            # The shortest digits that read back to the float (pyarrow's notation,
            # '0' for 0.0, '0.00001...' for 1e-05, has repr's digits).
            assert _digits(text) == _digits(repr(float(text))), text
        for term, want in zip(TERMS, expected):
            assert float(values[term]) == pytest.approx(want, rel=1e-12, abs=1e-300)
        parts = sum(float(values[t]) for t in TERMS[1:])
        assert float(values["prediction"]) == pytest.approx(parts, rel=1e-14)


def run_error(capsys, argv):
    """Run main, expecting one `nqs-engine: error:` line and exit status 2."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nqs-engine: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------------
# Successful runs
# ---------------------------------------------------------------------------


def test_predict_matches_risk_and_carries_columns(tmp_path, capsys):
    runs, params = runs_file(tmp_path), params_file(tmp_path)
    out = tmp_path / "pred.csv"
    assert main(["predict", runs, "--params", params, "--out", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("nqs-engine: predicted 5 row(s)") and str(out) in err
    assert_matches_risk(out, nqs.NQSParams(**THETA), 1.5)  # lr from the JSON file
    assert sorted(os.listdir(tmp_path)) == ["params.json", "pred.csv", "runs.csv"]


def test_lr_option_overrides_file(tmp_path):
    runs, params = runs_file(tmp_path), params_file(tmp_path)
    out = tmp_path / "pred.csv"
    assert main(["predict", runs, "--params", params, "--out", str(out), "--lr", "0.7"]) == 0
    assert_matches_risk(out, nqs.NQSParams(**THETA), 0.7)


def test_lr_defaults_to_1999(tmp_path):
    runs, params = runs_file(tmp_path), params_file(tmp_path, values=THETA)
    out = tmp_path / "pred.csv"
    assert main(["predict", runs, "--params", params, "--out", str(out)]) == 0
    assert_matches_risk(out, nqs.NQSParams(**THETA), nqs.DEFAULT_LR)


def test_preset_name(tmp_path):
    runs, out = runs_file(tmp_path), tmp_path / "pred.csv"
    assert main(["predict", runs, "--params", "pythia-owt2", "--out", str(out)]) == 0
    assert_matches_risk(out, *nqs.preset("pythia-owt2"))


def test_chunks_match_reference(tmp_path, monkeypatch):
    """70 rows in chunks of 64: the second chunk is padded, both share one shape."""
    rng = np.random.default_rng(0)
    rows = [
        (f"{10 ** rng.uniform(1, 11):.6g}", 2 ** rng.integers(0, 11), rng.integers(0, 10**5), i)
        for i in range(70)
    ]
    runs = write_csv(tmp_path / "runs.csv", ["N", "B", "K", "i"], rows)
    shapes = []
    real_risk = engine.risk

    def spy(params, N, B, K, **kwargs):
        shapes.append(np.shape(N))
        return real_risk(params, N, B, K, **kwargs)

    monkeypatch.setattr(engine, "risk", spy)
    out = tmp_path / "pred.csv"
    args = ["predict", runs, "--params", "pythia-owt2", "--out", str(out), "--chunk-rows", "64"]
    assert main(args) == 0
    assert shapes == [(64,), (64,)]
    header, got = read_csv(out)
    assert header == ["N", "B", "K", "i", *TERMS] and len(got) == 70
    assert [r[:4] for r in got] == [[str(v) for v in r] for r in rows]
    expected = reference_table(*nqs.preset("pythia-owt2"), rows)
    # a bias term can underflow towards 1e-305, where float64 keeps fewer digits
    np.testing.assert_allclose(
        np.array([r[4:] for r in got], float), expected, rtol=1e-12, atol=1e-290
    )


def test_blank_lines_and_spaces_in_header(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("N , B,K\n\n1e8,256,1000\n\n3e9,512,20000\n\n")
    out = tmp_path / "pred.csv"
    assert main(["predict", str(path), "--params", "pythia-owt2", "--out", str(out)]) == 0
    header, rows = read_csv(out)
    assert header == ["N ", " B", "K", *TERMS]
    assert [r[:3] for r in rows] == [["1e8", "256", "1000"], ["3e9", "512", "20000"]]


def test_replaces_existing_output(tmp_path):
    runs, out = runs_file(tmp_path), tmp_path / "pred.csv"
    out.write_text("old\n")
    assert main(["predict", runs, "--params", "pythia-owt2", "--out", str(out)]) == 0
    assert read_csv(out)[0][-5:] == TERMS


# ---------------------------------------------------------------------------
# Errors: one line, status 2, no output, and nothing computed
# ---------------------------------------------------------------------------


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if the CLI reaches the model (errors must come first)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the engine was called before the input was validated")

    for name in ("risk", "schedule_risk", "weight_norm_risk"):
        monkeypatch.setattr(engine, name, forbidden)
    monkeypatch.setattr(trajectory_command, "trajectory", forbidden)


CSV_ERRORS = [
    ("N,B,steps\n1,2,3\n", ["missing column 'K'", "'steps'", "'N'"]),
    ("tag,B,K\nx,2,3\n", ["missing column 'N'", "'tag', 'B', 'K'"]),
    ("N,B,K\n1e8,256,1000\nabc,256,1000\n", ["row 2", "column 'N'", "'abc'", "not a number"]),
    ("N,B,K\n1e8,,1000\n", ["row 1", "column 'B'", "''", "not a number"]),
    ("N,B,K\n1e8,256,1000\n1e8,256,nan\n", ["row 2", "column 'K'", "'nan'", "not finite"]),
    ("N,B,K\n1e8,inf,1000\n", ["row 1", "column 'B'", "'inf'", "not finite"]),
    ("N,B,K\n1e999,256,1000\n", ["row 1", "column 'N'", "'1e999'", "not finite"]),
    ("N,B,K\n1e8,256,1\n1e8,256,1\n0.5,256,1\n", ["row 3", "column 'N'", "'0.5'", ">= 1"]),
    ("N,B,K\n1e8,0,1\n", ["row 1", "column 'B'", "'0'", "> 0"]),
    ("N,B,K\n1e8,-2,1\n", ["row 1", "column 'B'", "'-2'", "> 0"]),
    ("N,B,K\n1e8,256,1\n1e8,256,-1\n", ["row 2", "column 'K'", "'-1'", ">= 0"]),
    ("N,B,K\n1e8,256,1\n1e8,256\n", ["row 2", "2 field(s)", "expected 3"]),
    ("", ["empty", "N, B, K"]),
    ("\n\n", ["empty"]),
    ("N,B,K\n", ["no data rows"]),
    ("N,B,K\n\n\n", ["no data rows"]),
    ("N,B,K,prediction\n1,2,3,4\n", ["'prediction'", "rename"]),
    ("N,B,K,N\n1,2,3,4\n", ["'N'", "2 times"]),
]


@pytest.mark.parametrize("text, expected", CSV_ERRORS)
def test_csv_errors(tmp_path, capsys, no_compute, text, expected):
    runs = tmp_path / "runs.csv"
    runs.write_text(text)
    out = tmp_path / "pred.csv"
    line = run_error(capsys, ["predict", str(runs), "--params", "pythia-owt2", "--out", str(out)])
    for part in expected:
        assert part in line, line
    assert str(runs) in line
    assert sorted(os.listdir(tmp_path)) == ["runs.csv"]  # no output, no temporary file


def test_bad_last_row_found_before_any_work(tmp_path, capsys, no_compute):
    rows = [("1e8", "256", "1000")] * 499 + [("1e8", "256", "x")]
    runs = write_csv(tmp_path / "runs.csv", ["N", "B", "K"], rows)
    out = tmp_path / "pred.csv"
    out.write_text("precious\n")
    args = ["predict", runs, "--params", "pythia-owt2", "--out", str(out), "--chunk-rows", "3"]
    line = run_error(capsys, args)
    assert "row 500" in line and "column 'K'" in line and "'x'" in line
    assert out.read_text() == "precious\n"  # an existing output is left untouched
    assert sorted(os.listdir(tmp_path)) == ["pred.csv", "runs.csv"]


PARAM_ERRORS = [
    (dict(text="{'p': 1.5"), [], ["not valid JSON", "line 1"]),
    (dict(text="[1, 2]"), [], ["expected a JSON object", "list"]),
    (dict(values={k: v for k, v in THETA.items() if k != "R"}), [], ["missing parameter", "R"]),
    (dict(values=dict(THETA, p="1.5")), [], ["parameter 'p'", "must be a number"]),
    (dict(values=dict(THETA, e_irr=True)), [], ["parameter 'e_irr'", "must be a number"]),
    (dict(values=dict(THETA, p=0.9)), [], ["parameter p = 0.9", "p > 1"]),
    (dict(values=dict(THETA, P=-1.0)), [], ["parameter P = -1", "P > 0"]),
    (dict(values=dict(THETA, e_irr=-0.1)), [], ["parameter e_irr", ">= 0"]),
    (dict(values=dict(THETA, lr="fast")), [], ["'lr'", "must be a number"]),
    (dict(values=dict(THETA, Q=1.2)), [], ["lr * Q", ">= 2", "diverges"]),  # 1.999 * 1.2
    (dict(values=dict(THETA, lr=3.0)), [], ["lr * Q", "diverges"]),
    (dict(), ["--lr", "-1"], ["--lr -1", "lr = -1", "positive"]),
    (dict(), ["--lr", "nan"], ["lr = nan"]),
    (dict(values=dict(THETA, q=0.01)), [], ["parameter q = 0.01", "too small"]),
]


@pytest.mark.parametrize("params, extra, expected", PARAM_ERRORS)
def test_param_errors(tmp_path, capsys, no_compute, params, extra, expected):
    runs, out = runs_file(tmp_path), tmp_path / "pred.csv"
    path = params_file(tmp_path, **params)
    line = run_error(capsys, ["predict", runs, "--params", path, "--out", str(out), *extra])
    for part in expected:
        assert part in line, line
    assert path in line
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["params.json", "runs.csv"]


def test_unknown_params_source(tmp_path, capsys, no_compute):
    runs, out = runs_file(tmp_path), tmp_path / "pred.csv"
    line = run_error(capsys, ["predict", runs, "--params", "pythia-xyz", "--out", str(out)])
    assert "pythia-xyz" in line and "preset" in line and "pythia-owt2" in line


@pytest.mark.parametrize("which", ["runs", "out-folder", "out-is-dir", "out-is-input"])
def test_path_errors(tmp_path, capsys, no_compute, which):
    runs = runs_file(tmp_path)
    out = str(tmp_path / "pred.csv")
    expected = {
        "runs": "no such file",
        "out-folder": "does not exist",
        "out-is-dir": "is a directory",
        "out-is-input": "must not be the input",
    }[which]
    if which == "runs":
        runs = str(tmp_path / "missing.csv")
    elif which == "out-folder":
        out = str(tmp_path / "nowhere" / "pred.csv")
    elif which == "out-is-dir":
        out = str(tmp_path)
    else:
        out = runs
    line = run_error(capsys, ["predict", runs, "--params", "pythia-owt2", "--out", out])
    assert expected in line
    assert sorted(os.listdir(tmp_path)) == ["runs.csv"]


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "runs.csv", "--params", "pythia-owt2"],  # no --out
        ["predict", "runs.csv", "--out", "pred.csv"],  # no --params
        ["predict", "r.csv", "--params", "x", "--out", "o.csv", "--chunk-rows", "0"],
        ["predict", "r.csv", "--params", "x", "--out", "o.csv", "--lr", "fast"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("nqs-engine: error: "), err
    assert err[0].endswith("--help')")  # points at the command's help


def test_failure_while_computing_leaves_no_output(tmp_path, capsys, monkeypatch):
    """A chunk failing after others were written: the output is not created."""
    calls = []

    def fake_risk(params, N, B, K, **kwargs):
        calls.append(len(N))
        total = np.where(np.arange(len(N)) == 1, np.nan, 1.0) if len(calls) == 2 else N * 0 + 1
        return nqs.RiskBreakdown(total, total, total, total, total)

    monkeypatch.setattr(engine, "risk", fake_risk)
    runs, out = runs_file(tmp_path), tmp_path / "pred.csv"
    args = ["predict", runs, "--params", "pythia-owt2", "--out", str(out), "--chunk-rows", "2"]
    line = run_error(capsys, args)
    assert calls == [2, 2]  # every chunk padded to the same size
    assert "row 4" in line and "not finite" in line and "N=1.5" in line
    assert sorted(os.listdir(tmp_path)) == ["runs.csv"]


def test_keyboard_interrupt_leaves_no_output(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "risk", interrupted)
    runs, out = runs_file(tmp_path), tmp_path / "pred.csv"
    out.write_text("precious\n")
    assert main(["predict", runs, "--params", "pythia-owt2", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert sorted(os.listdir(tmp_path)) == ["pred.csv", "runs.csv"]


def test_internal_error_is_one_line(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("boom")

    monkeypatch.setattr(engine, "risk", broken)
    monkeypatch.delenv("NQS_ENGINE_DEBUG", raising=False)
    runs, out = runs_file(tmp_path), tmp_path / "pred.csv"
    code = main(["predict", runs, "--params", "pythia-owt2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == ["nqs-engine: error: internal error: TypeError: boom"]
    assert not out.exists()


def test_x64_restored(tmp_path, capsys):
    jax.config.update("jax_enable_x64", False)
    try:
        main(["predict", str(tmp_path / "missing.csv"), "--params", "pythia-owt2", "--out", "o"])
        assert jax.config.read("jax_enable_x64") is False
    finally:
        jax.config.update("jax_enable_x64", True)


# ---------------------------------------------------------------------------
# Help, the real process, helpers
# ---------------------------------------------------------------------------


def test_help_describes_formats(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "predict" in out and "exit status" in out
    assert main(["predict", "--help"]) == 0
    out = capsys.readouterr().out
    for part in ["RUNS.csv", "PRED.csv", "N ", "B ", "K ", '"e_irr"', '"lr"', "pythia-owt2",
                 *TERMS, "--chunk-rows", "--no-progress", "--lr"]:
        assert part in out, part


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_complete_help_and_one_line_usage_errors(capsys, name):
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: nqs-engine {name}")
    description = command_module(name).DESCRIPTION
    assert description.split("\n")[0] in out  # the description, not just options
    assert "--out" in out  # every command writes files named by --out
    assert main([name, "--no-such-flag"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"nqs-engine: error: {name}: "), err
    assert "--no-such-flag" in err[0] or "required" in err[0]
    # ... and the main help lists the command with its summary.
    assert main(["--help"]) == 0
    assert re.search(rf"^    {name}\b", capsys.readouterr().out, re.MULTILINE)


def test_subprocess_help_and_error(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-m", "nqs_engine.cli", "predict", "--help"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: nqs-engine predict" in done.stdout and "RUNS.csv" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "nqs_engine.cli", "predict", str(tmp_path / "none.csv"),
         "--params", "pythia-owt2", "--out", str(tmp_path / "o.csv")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"nqs-engine: error: {tmp_path / 'none.csv'}: no such file"
    ]
    assert os.listdir(tmp_path) == []


def test_runtime_error_message_is_one_line():
    """An `eqx.error_if` failure inside `risk` is reported without JAX's advice."""
    import equinox as eqx

    bad = nqs.NQSParams(**dict(THETA, q=0.01))
    with pytest.raises(eqx.EquinoxRuntimeError) as info:
        nqs.risk(bad, np.full(BLOCK, 1e6), 1.0, 1.0)  # predict's shape: compiled already
    message = runtime_message(info.value)
    assert message.startswith("q is too small") and "\n" not in message


def test_progress_bar_draws_and_ends_line():
    stream = io.StringIO()
    bar = Progress("work", enabled=True, stream=stream)
    bar.show(0.5, "5/10 rows", force=True)
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\rwork [") and "50.0%" in text and "5/10 rows" in text
    assert text.endswith("\n")
    quiet = io.StringIO()
    bar = Progress("work", enabled=False, stream=quiet)
    bar.show(0.5, "x", force=True)
    bar.close()
    assert quiet.getvalue() == ""


def test_csv_chunks_stream(tmp_path):
    rows = [(str(i + 1), "2", "3", f"r{i}") for i in range(10)]
    runs = CsvColumns(write_csv(tmp_path / "r.csv", ["N", "B", "K", "x"], rows), RUN_COLUMNS)
    chunks = list(runs.chunks(4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert [c.start for c in chunks] == [0, 4, 8]
    assert chunks[2].values["N"].tolist() == [9.0, 10.0]
    assert chunks[2].rows[1] == ["10", "2", "3", "r9"]
    assert runs.count_rows() == 10


def test_atomic_output_and_write_json(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as f:
            f.write("partial")
            raise RuntimeError("fail midway")
    assert os.listdir(tmp_path) == []
    write_json(target, {"p": 1.5, "lr": 1.999})
    assert json.loads(target.read_text()) == {"p": 1.5, "lr": 1.999}
    with pytest.raises(ValueError):
        write_json(target, {"p": math.nan})
    assert json.loads(target.read_text()) == {"p": 1.5, "lr": 1.999}
    assert os.listdir(tmp_path) == ["out.json"]
    with pytest.raises(InputError, match="does not exist"):
        with atomic_output(tmp_path / "no" / "x.csv"):
            pass


# ---------------------------------------------------------------------------
# The SPEC language and schedule files (no engine calls)
# ---------------------------------------------------------------------------

S = nqs.Schedule
K_B = [(1000.0, 64.0), (7.25, 2.0), (0.0, 1.0), (20000.0, 512.0)]

SPECS = [  # one per kind and option; batch:F=X alone and step:F=1e-1 appear further down
    ("constant", lambda K, B: S.constant(K, B)),
    ("constant:lr=0.5", lambda K, B: S.constant(K, B, 0.5)),
    ("cosine", lambda K, B: S.cosine(K, B)),
    ("cosine:pieces=4,warmup=0.1,final=0.1",
     lambda K, B: S.cosine(K, B, pieces=4, warmup=0.1, final=0.1)),
    (" cosine : pieces = 3 ;final=0.2; warmup=0.05,warmup_pieces=2",
     lambda K, B: S.cosine(K, B, pieces=3, final=0.2, warmup=0.05, warmup_pieces=2)),
    ("wsd", lambda K, B: S.wsd(K, B)),
    ("wsd:decay=0.3,pieces=2,warmup=0.1,final=0.05",
     lambda K, B: S.wsd(K, B, decay=0.3, pieces=2, warmup=0.1, final=0.05)),
    ("warmup:0.01", lambda K, B: S.warmup(K, B, warmup=0.01)),
    ("warmup:0.1;pieces=2", lambda K, B: S.warmup(K, B, warmup=0.1, pieces=2)),
    ("step:0.5=0.1,0.75=0.01", lambda K, B: S.step_decay(K, B, (0.5, 0.75), (0.1, 0.01))),
    ("batch:0.3=2;0.6=4", lambda K, B: S.batch_ramp(K, (B, 2 * B, 4 * B), (0.3, 0.6))),
]


def schedule_lists(sched):
    s = sched.broadcast()
    return [np.asarray(a).tolist() for a in (s.lr, s.batch, s.steps)]


@pytest.mark.parametrize("text, make", SPECS, ids=[t for t, _ in SPECS])
def test_spec_builds_the_library_schedule(text, make):
    spec = parse_schedule(text)
    K, B = (np.array(v) for v in zip(*K_B))
    built = spec.build(K, B)  # vectorized over the rows
    assert built.lr.shape == (len(K_B), spec.num_segments)
    for i, (k, b) in enumerate(K_B):
        want = schedule_lists(make(k, b))
        got = [a[i] for a in schedule_lists(built)]
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-15, atol=0)
    assert spec.peak == 1.0 or text.startswith("constant:lr")


def test_combined_spec_cuts_at_both_and_multiplies():
    spec = parse_schedule("step:0.5=0.1,0.75=0.01+batch:0.6=2")
    assert spec.num_segments == 4
    got = schedule_lists(spec.build(1000.0, 32.0))
    assert got == [[1.0, 0.1, 0.1, 0.01], [32.0, 32.0, 64.0, 64.0], [500.0, 100.0, 150.0, 250.0]]
    # Same as the per-step run it describes.
    t = np.arange(1000)
    per_step = nqs.Schedule.from_arrays(
        np.where(t < 500, 1.0, np.where(t < 750, 0.1, 0.01)), np.where(t < 600, 32.0, 64.0)
    )
    assert schedule_lists(per_step) == got
    # A '+' inside a number is not a separator; cuts at the same step leave an empty piece.
    spec = parse_schedule("step:0.5=1e+0+batch:0.5=2")
    got = schedule_lists(spec.build(10.0, 1.0))
    assert got == [[1.0, 1.0, 1.0], [1.0, 1.0, 2.0], [5.0, 0.0, 5.0]]
    assert parse_schedule("step:0.5=1.5+step:0.2=0.5").peak == 1.5


SPEC_ERRORS = [
    ("", ["empty", "expected a SPEC"]),
    ("  ", ["empty"]),
    ("cosin", ["unknown schedule 'cosin'", "constant, cosine, wsd, warmup, step, batch"]),
    ("cosine:", ["nothing after 'cosine:'"]),
    ("cosine:pieces=x", ["pieces must be an integer from 1 to 4096", "'x'"]),
    ("cosine:pieces=0", ["pieces must be an integer"]),
    ("cosine:pieces=1.5", ["pieces must be an integer"]),
    ("cosine:pieces=99999", ["from 1 to 4096"]),
    ("cosine:foo=1", ["unknown option 'foo' for cosine", "pieces, warmup, final, warmup_pieces"]),
    ("cosine:3", ["cosine takes NAME=VALUE options", "'3'"]),
    ("cosine:final=2", ["final must be a fraction in [0, 1]", "'2'"]),
    ("cosine:final=nan", ["final must be finite"]),
    ("cosine:pieces=3,pieces=4", ["'pieces' given twice"]),
    ("wsd:decay=0.9,warmup=0.2", ["warmup + decay must be <= 1"]),
    ("warmup", ["warmup needs its fraction first", "warmup:0.01"]),
    ("warmup:pieces=2", ["warmup needs its fraction first"]),
    ("warmup:2", ["warmup must be a fraction in [0, 1]"]),
    ("warmup:0.1,foo=2", ["only pieces=P"]),
    ("step", ["step needs FRACTION=MULTIPLIER pairs", "step:0.5=0.1,0.75=0.01"]),
    ("step:0.5", ["FRACTION=MULTIPLIER pairs", "got '0.5'"]),
    ("step:0.75=0.1,0.5=0.01", ["fractions must increase", "'0.5'"]),
    ("step:1=0.1", ["fractions must lie in (0, 1)", "'1'"]),
    ("step:x=0.1", ["a fraction must be a number", "'x'"]),
    ("step:0.5=-1", ["multiplier must be >= 0", "'-1'"]),
    ("step:0.5=0.1,", ["empty item in step's list"]),
    ("batch:0.5=0", ["batch multiplier must be > 0", "'0'"]),
    ("batch:0.5", ["batch needs FRACTION=BATCH MULTIPLIER pairs", "batch:0.5=2"]),
    ("constant:lr=-1", ["lr must be >= 0"]),
    ("constant:0.5", ["constant takes NAME=VALUE options (lr)"]),
    ("cosine+", ["empty schedule around '+'"]),
    ("cosine+cosin", ["unknown schedule 'cosin'"]),
]


@pytest.mark.parametrize("text, expected", SPEC_ERRORS, ids=[t or "empty" for t, _ in SPEC_ERRORS])
def test_spec_errors_say_what_was_expected(text, expected):
    with pytest.raises(ValueError) as info:
        parse_schedule(text)
    message = str(info.value)
    assert message.startswith(f"schedule {text!r}: ") and "\n" not in message
    for part in expected:
        assert part in message, message


def schedule_file(tmp_path, data, name="sched.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def test_schedule_file_relative_and_exact(tmp_path):
    path = schedule_file(
        tmp_path, {"lr": [1, 0.3, 0.1], "batch": [1, 2, 4], "steps": [0.5, 0.3, 0.2]}
    )
    spec = load_schedule_file(path)
    assert spec.num_segments == 3 and spec.peak == 1.0
    got = schedule_lists(spec.build(np.array([1000.0, 7.0]), np.array([8.0, 1.0])))
    assert got == [[[1.0, 0.3, 0.1]] * 2, [[8.0, 16.0, 32.0], [1.0, 2.0, 4.0]],
                   [[500.0, 300.0, 200.0], [3.0, 2.0, 2.0]]]
    # Steps adding up to K reproduce the segments exactly (no rounding drift).
    steps = [1234, 4321, 7, 4438]
    path = schedule_file(tmp_path, {"lr": [1, 0.5, 0.25, 0.1], "steps": steps}, "abs.json")
    built = load_schedule_file(path).build(float(sum(steps)), 256.0)
    assert schedule_lists(built)[2] == steps and schedule_lists(built)[1] == [256.0] * 4


FILE_ERRORS = [
    ("[1, 2]", ["expected a JSON object", "list"]),
    ("{bad json", ["not valid JSON"]),
    ({"lr": [1]}, ["missing key 'steps'"]),
    ({"lr": [1], "steps": [1], "lrs": [1]}, ["unknown key 'lrs'"]),
    ({"lr": [], "steps": []}, ["'lr' must be a non-empty list"]),
    ({"lr": 1, "steps": [1]}, ["'lr' must be a non-empty list"]),
    ({"lr": [1, "x"], "steps": [1, 1]}, ["lr[1] must be a number"]),
    ({"lr": [1, 0.1], "steps": [1]}, ["'steps' has 1 entries, 'lr' has 2"]),
    ({"lr": [1, -0.1], "steps": [1, 1]}, ["lr[1] = -0.1 must be finite and >= 0"]),
    ({"lr": [1], "steps": [1], "batch": [0]}, ["batch[0] = 0 must be finite and > 0"]),
    ({"lr": [1], "steps": [-1]}, ["steps[0] = -1"]),
    ({"lr": [1, 1], "steps": [0, 0]}, ["'steps' are all 0"]),
]


@pytest.mark.parametrize("data, expected", FILE_ERRORS)
def test_schedule_file_errors(tmp_path, data, expected):
    path = schedule_file(tmp_path, data)
    with pytest.raises(ValueError) as info:
        load_schedule_file(path)
    message = str(info.value)
    assert message.startswith(path) and "\n" not in message
    for part in expected:
        assert part in message, message


# ---------------------------------------------------------------------------
# predict with schedules and the weight-norm variant
# ---------------------------------------------------------------------------

# Three-segment schedules (the shared compiled shape), per row of RUNS.
ROW_SPECS = [  # one per kind and option; batch:F=X alone and step:F=1e-1 appear further down
    ("cosine:pieces=3", lambda K, B: S.cosine(K, B, pieces=3)),
    ("step:0.5=0.1,0.75=0.01", lambda K, B: S.step_decay(K, B, (0.5, 0.75), (0.1, 0.01))),
    ("constant", lambda K, B: S.constant(K, B).pad(3)),
    ("wsd:decay=0.2;pieces=2", lambda K, B: S.wsd(K, B, decay=0.2, pieces=2)),
    ("batch:0.3=2;0.6=4", lambda K, B: S.batch_ramp(K, (B, 2 * B, 4 * B), (0.3, 0.6))),
]


def stacked(makers, rows):
    """Per-row library schedules, stacked: (lr, batch, steps) arrays of shape (rows, 3)."""
    scheds = [make(float(k), float(b)).broadcast() for make, (k, b) in zip(makers, rows)]
    return [np.stack([np.asarray(getattr(s, f)) for s in scheds]) for f in ("lr", "batch", "steps")]


def run_rows():
    return [(n, b, k) for _, n, b, k, _ in RUNS]


def scheduled_reference(params, lr, makers, rows, variant="plain", init=None):
    N = np.array([float(n) for n, _, _ in rows])
    fields = stacked(makers, [(k, b) for _, b, k in rows])
    if variant == "plain":
        compute = lambda n, *f: nqs.schedule_risk(params, n, nqs.Schedule(*f), lr=lr)  # noqa: E731
        return in_blocks(compute, N, *fields)
    init = np.full_like(N, np.nan) if init is None else np.asarray(init, float)
    compute = lambda n, s0, *f: nqs.weight_norm_risk(  # noqa: E731
        params, n, nqs.Schedule(*f), lr=lr, init_sq_norm=None if np.isnan(s0).all() else s0
    )
    return in_blocks(compute, N, init, *fields)


def predicted(path):
    header, rows = read_csv(path)
    return header, rows, np.array([r[-5:] for r in rows], float)


@pytest.fixture
def engine_calls(monkeypatch):
    """Record the segment shapes of every schedule_risk / weight_norm_risk call."""
    calls = []
    for name in ("schedule_risk", "weight_norm_risk"):
        real = getattr(engine, name)

        def spy(params, N, schedule, *, _real=real, _name=name, **kwargs):
            calls.append((_name, np.shape(N), schedule.broadcast().lr.shape))
            return _real(params, N, schedule, **kwargs)

        monkeypatch.setattr(engine, name, spy)
    return calls


def test_predict_one_schedule_for_all_rows(tmp_path, engine_calls):
    runs, params = runs_file(tmp_path), params_file(tmp_path)
    out = tmp_path / "pred.csv"
    argv = ["predict", runs, "--params", params, "--out", str(out),
            "--schedule", "step:0.5=0.1,0.75=0.01"]
    assert main(argv) == 0
    header, rows, got = predicted(out)
    assert header == ["tag", "N", "note", "B", "K", "id", *TERMS] and len(rows) == len(RUNS)
    make = ROW_SPECS[1][1]
    want = scheduled_reference(nqs.NQSParams(**THETA), 1.5, [make] * len(RUNS), run_rows())
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)
    assert engine_calls == [("schedule_risk", (64,), (64, 3))]


def test_predict_schedule_per_row_from_a_column(tmp_path, engine_calls):
    """Rows with different SPECs: one padded engine call per chunk, equal to the library."""
    rows = [(tag, n, f'"{spec}"' if "," in spec else spec, b, k)
            for (tag, n, b, k, _), (spec, _) in zip(RUNS, ROW_SPECS)]
    path = tmp_path / "runs.csv"
    path.write_text("tag,N,sched,B,K\n" + "\n".join(",".join(r) for r in rows) + "\n")
    out = tmp_path / "pred.csv"
    argv = ["predict", str(path), "--params", "pythia-owt2", "--out", str(out),
            "--schedule-column", "sched"]
    assert main(argv) == 0
    header, got_rows, got = predicted(out)
    assert header == ["tag", "N", "sched", "B", "K", *TERMS]
    assert [r[2] for r in got_rows] == [spec for spec, _ in ROW_SPECS]
    want = scheduled_reference(*nqs.preset("pythia-owt2"), [m for _, m in ROW_SPECS], run_rows())
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)
    assert engine_calls == [("schedule_risk", (64,), (64, 3))]


def test_schedule_column_over_several_chunks(tmp_path, engine_calls):
    """The longest SPEC is only in the second chunk: the first is padded to it all the same."""
    rng = np.random.default_rng(1)
    specs = ["constant"] * 64 + ["constant:lr=0.5", "batch:0.5=2", "cosine:pieces=3"] * 2
    makers = {"constant": lambda K, B: S.constant(K, B).pad(3),
              "constant:lr=0.5": lambda K, B: S.constant(K, B, 0.5).pad(3),
              "batch:0.5=2": lambda K, B: S.batch_ramp(K, (B, 2 * B)).pad(3),
              "cosine:pieces=3": lambda K, B: S.cosine(K, B, pieces=3)}
    rows = [(f"{10 ** rng.uniform(3, 10):.6g}", str(2 ** rng.integers(0, 10)),
             str(rng.integers(0, 10**5)), spec) for spec in specs]
    runs = write_csv(tmp_path / "runs.csv", ["N", "B", "K", "s"], rows)
    out = tmp_path / "pred.csv"
    argv = ["predict", runs, "--params", "pythia-owt2", "--out", str(out),
            "--schedule-column", "s", "--chunk-rows", "64"]
    assert main(argv) == 0
    _, got_rows, got = predicted(out)
    assert len(got_rows) == 70
    want = scheduled_reference(*nqs.preset("pythia-owt2"), [makers[s] for s in specs],
                               [r[:3] for r in rows])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)
    assert engine_calls == [("schedule_risk", (64,), (64, 3))] * 2  # one shape, two chunks


def test_predict_schedule_file(tmp_path, engine_calls):
    runs, params = runs_file(tmp_path), params_file(tmp_path)
    sched = schedule_file(tmp_path, {"lr": [1, 0.3, 0.1], "batch": [1, 2, 4],
                                     "steps": [0.5, 0.3, 0.2]})
    out = tmp_path / "pred.csv"
    argv = ["predict", runs, "--params", params, "--out", str(out), "--schedule-file", sched]
    assert main(argv) == 0
    _, _, got = predicted(out)

    def make(K, B):
        cuts = np.floor(np.array([0.5, 0.8]) * K)
        steps = np.diff(np.concatenate([[0.0], cuts, [K]]))
        return nqs.Schedule(np.array([1, 0.3, 0.1]), B * np.array([1.0, 2, 4]), steps)

    want = scheduled_reference(nqs.NQSParams(**THETA), 1.5, [make] * len(RUNS), run_rows())
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("with_init", [False, True])
def test_weight_norm_variant_matches_library(tmp_path, engine_calls, with_init):
    rows = run_rows()
    init = [1e3, 200.0, 1.0, 0.5, 4e8]
    header = ["N", "B", "K"] + (["init_sq_norm"] if with_init else [])
    body = [(*r, *([s] if with_init else [])) for r, s in zip(rows, init)]
    runs = write_csv(tmp_path / "runs.csv", header, body)
    out = tmp_path / "pred.csv"
    argv = ["predict", runs, "--params", "pythia-owt2", "--out", str(out),
            "--variant", "weight-norm", "--schedule", "step:0.5=0.1,0.75=0.01"]
    assert main(argv) == 0
    got_header, _, got = predicted(out)
    assert got_header == [*header, *TERMS]
    make = ROW_SPECS[1][1]
    want = scheduled_reference(*nqs.preset("pythia-owt2"), [make] * len(rows), rows,
                               variant="weight-norm", init=init if with_init else None)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)
    assert engine_calls == [("weight_norm_risk", (64,), (64, 3))]
    plain = scheduled_reference(*nqs.preset("pythia-owt2"), [make] * len(rows), rows)
    assert not np.allclose(got[:, 0], plain[:, 0])  # the variant changes the prediction


def test_plain_variant_carries_init_sq_norm_through(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "risk", lambda params, N, B, K, **kw: calls.append(1) or
                        nqs.RiskBreakdown(*(N * 0 + 1.0,) * 5))
    runs = write_csv(tmp_path / "runs.csv", ["N", "B", "K", "init_sq_norm"], [(1e8, 256, 10, "x")])
    out = tmp_path / "pred.csv"
    assert main(["predict", runs, "--params", "pythia-owt2", "--out", str(out)]) == 0
    assert calls == [1] and read_csv(out)[1][0][:4] == ["100000000.0", "256", "10", "x"]


SCHEDULE_ERRORS = [
    (["--schedule", "cosin"], None, ["--schedule: schedule 'cosin'", "unknown schedule"]),
    (["--schedule", "step:0.5=1.2"], None,
     ["--schedule 'step:0.5=1.2'", "diverges", "multiplier 1.2", ">= 2"]),
    (["--schedule-column", "sched"], None, ["missing column 'sched'", "--schedule-column"]),
    (["--schedule-column", "s"],
     "N,B,K,s\n" + "1e8,256,10,cosine\n" * 499 + "1e8,256,10,cosine:x=1\n",
     ["row 500", "column 's'", "schedule 'cosine:x=1'", "unknown option 'x'"]),
    (["--schedule-column", "s"], "N,B,K,s\n1e8,256,10,cosine\n1e8,256,10,\n",
     ["row 2", "column 's'", "empty"]),
    (["--schedule-column", "s"], "N,B,K,s\n1e8,256,10,step:0.5=0.1\n1e8,256,10,step:0.5=1.2\n",
     ["row 2", "column 's'", "diverges"]),
    (["--schedule-file", "missing.json"], None, ["missing.json: no such file"]),
    (["--variant", "weight-norm"], "N,B,K,init_sq_norm\n1e8,256,10,1\n1e8,256,10,0\n",
     ["row 2", "column 'init_sq_norm'", "must be > 0"]),
    (["--variant", "weight-norm"], "N,B,K,init_sq_norm\n1e8,256,10,x\n",
     ["row 1", "column 'init_sq_norm'", "not a number"]),
]


@pytest.mark.parametrize("extra, text, expected", SCHEDULE_ERRORS)
def test_schedule_errors_before_any_work(tmp_path, capsys, no_compute, monkeypatch, extra, text,
                                         expected):
    monkeypatch.chdir(tmp_path)
    runs = runs_file(tmp_path) if text is None else str(tmp_path / "runs.csv")
    if text is not None:
        (tmp_path / "runs.csv").write_text(text)
    out = tmp_path / "pred.csv"
    argv = ["predict", runs, "--params", "pythia-owt2", "--out", str(out), *extra]
    line = run_error(capsys, argv)
    for part in expected:
        assert part in line, line
    assert sorted(os.listdir(tmp_path)) == ["runs.csv"]


@pytest.mark.parametrize("argv", [
    ["--schedule", "cosine", "--schedule-column", "s"],
    ["--schedule", "cosine", "--schedule-file", "s.json"],
    ["--variant", "fancy"],
])
def test_schedule_usage_errors(capsys, argv):
    assert main(["predict", "r.csv", "--params", "pythia-owt2", "--out", "o.csv", *argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("nqs-engine: error: predict: "), err


# ---------------------------------------------------------------------------
# trajectory
# ---------------------------------------------------------------------------

CURVE = ["step", "loss", "irreducible", "approximation", "bias", "variance"]


def test_trajectory_matches_library(tmp_path, capsys):
    out = tmp_path / "curve.csv"
    argv = ["trajectory", "--params", "pythia-owt2", "--N", "1e8", "--B", "256", "--K", "20000",
            "--schedule", "step:0.5=0.1,0.75=0.01", "--checkpoints", "8", "--out", str(out)]
    assert main(argv) == 0
    assert "8 checkpoint(s)" in capsys.readouterr().err
    header, rows = read_csv(out)
    assert header == CURVE
    assert [r[0] for r in rows] == [str(2500 * i) for i in range(1, 9)]
    params, lr = nqs.preset("pythia-owt2")
    steps = np.arange(1, 9) * 2500.0
    sched = nqs.Schedule.step_decay(20000.0, 256.0, (0.5, 0.75), (0.1, 0.01))
    want = nqs.trajectory(params, 1e8, sched, steps, lr=lr)
    got = np.array([r[1:] for r in rows], float)
    np.testing.assert_allclose(
        got, np.stack([np.asarray(getattr(want, f)) for f in
                       ("total", "irreducible", "approximation", "bias", "variance")], 1),
        rtol=1e-12,
    )
    # the last checkpoint is the end of the run: predict's value for it
    end = scheduled_reference(params, lr, [ROW_SPECS[1][1]], [("1e8", "256", "20000")])
    np.testing.assert_allclose(got[-1], end[0], rtol=1e-10)

    # --at: checkpoints in the order given, fractional ones written in full.
    out2 = tmp_path / "at.csv"
    at = "20000,0,1e3,10000.5,12000,2,3,4"
    argv = argv[:-4] + ["--at", at, "--out", str(out2)]
    assert main(argv) == 0
    rows2 = read_csv(out2)[1]
    assert [r[0] for r in rows2] == ["20000", "0", "1000", "10000.5", "12000", "2", "3", "4"]
    assert rows2[0][1:] == rows[-1][1:]
    # The same schedule from a file (relative segment lengths 2:1:1).
    sched_file = schedule_file(tmp_path, {"lr": [1, 0.1, 0.01], "steps": [2, 1, 1]})
    out3 = tmp_path / "file.csv"
    argv3 = [a for a in argv if a not in ("--schedule", "step:0.5=0.1,0.75=0.01")]
    assert main(argv3[:-2] + ["--schedule-file", sched_file, "--out", str(out3)]) == 0
    assert read_csv(out3)[1] == rows2
    zero = np.array(rows2[1][1:], float)
    assert zero[0] == pytest.approx(float(params.e_irr) + 0.5 * float(params.P)
                                    * float(nqs.hurwitz_zeta(float(params.p), 1.0)), rel=1e-10)


TRAJECTORY_ERRORS = [
    (["--N", "0.5"], ["--N must be a finite number >= 1", "0.5"]),
    (["--B", "0"], ["--B must be a finite number > 0"]),
    (["--K", "0"], ["--K must be a finite number > 0"]),
    (["--K", "inf"], ["--K must be a finite number"]),
    (["--at", "10,x"], ["--at: 'x' is not a number"]),
    (["--at", "10,30000"], ["--at: step '30000' is outside [0, K] = [0, 20000]"]),
    (["--at", "-1"], ["outside [0, K]"]),
    (["--schedule", "step:0.5"], ["--schedule: schedule 'step:0.5'", "FRACTION=MULTIPLIER"]),
    (["--schedule", "step:0.5=3"], ["diverges"]),
    (["--schedule-file", "none.json"], ["none.json: no such file"]),
    (["--params", "pythia-xyz"], ["pythia-xyz", "preset"]),
]


@pytest.mark.parametrize("extra, expected", TRAJECTORY_ERRORS)
def test_trajectory_errors(tmp_path, capsys, no_compute, monkeypatch, extra, expected):
    monkeypatch.chdir(tmp_path)
    base = {"--params": "pythia-owt2", "--N": "1e8", "--B": "256", "--K": "20000",
            "--out": str(tmp_path / "curve.csv")}
    for flag, value in zip(extra[::2], extra[1::2]):
        base[flag] = value
    argv = ["trajectory", *(x for kv in base.items() for x in kv)]
    line = run_error(capsys, argv)
    for part in expected:
        assert part in line, line
    assert os.listdir(tmp_path) == []


def test_trajectory_output_errors(tmp_path, capsys, no_compute):
    argv = ["trajectory", "--params", "pythia-owt2", "--N", "1e8", "--B", "256", "--K", "100",
            "--out", str(tmp_path / "no" / "curve.csv")]
    assert "does not exist" in run_error(capsys, argv)
    assert main(argv[:-1] + [str(tmp_path / "c.csv"), "--at", "1", "--checkpoints", "3"]) == 2
    assert "not allowed with" in capsys.readouterr().err


def test_help_documents_schedules_variants_and_trajectory(capsys):
    assert main(["predict", "--help"]) == 0
    out = capsys.readouterr().out
    for part in ["--variant", "weight-norm", "init_sq_norm", "--schedule SPEC", "--schedule-column",
                 "--schedule-file", '"steps"', "cosine[:OPTS]", "wsd[:OPTS]", "warmup:F",
                 "step:F=M", "batch:F=X", "SPEC+SPEC"]:
        assert part in out, part
    assert main(["trajectory", "--help"]) == 0
    out = capsys.readouterr().out
    for part in ["--N", "--B", "--K", "--checkpoints", "--at", "CURVE.csv", *CURVE, "step:F=M"]:
        assert part in out, part
    assert main(["--help"]) == 0
    assert "trajectory" in capsys.readouterr().out
