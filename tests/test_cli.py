"""The `nqs-engine` command line: `predict` end to end, its errors, and atomic output.

Every successful `predict` here has at most 64 rows, so the CLI compiles one
padded chunk shape (64) for the whole file, plus one for the chunking test
(3); the reference values come from scalar `nqs_engine.risk` calls (one more
compilation, shape ()).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import nqs_engine as nqs
from nqs_engine import _cli
from nqs_engine._cli import main
from nqs_engine._io import CsvColumns, InputError, RUN_COLUMNS, atomic_output, write_json

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


def reference(params, lr, n, b, k):
    out = nqs.risk(params, float(n), float(b), float(k), lr=lr)
    return {t: float(getattr(out, FIELDS.get(t, t))) for t in TERMS}


def assert_matches_risk(pred_path, params, lr):
    header, rows = read_csv(pred_path)
    assert header == ["tag", "N", "note", "B", "K", "id", *TERMS]
    assert len(rows) == len(RUNS)
    for row, (tag, n, b, k, note) in zip(rows, RUNS):
        # input columns carried through unchanged, in order
        assert row[:6] == [tag, n, note, b, k, row[5]]
        values = dict(zip(TERMS, row[6:]))
        for text in values.values():
            assert repr(float(text)) == text  # full precision, shortest repr
        expected = reference(params, lr, n, b, k)
        for term in TERMS:
            assert float(values[term]) == pytest.approx(expected[term], rel=1e-12, abs=1e-300)
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


def test_tiny_chunks_equal_one_chunk(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        (f"{10 ** rng.uniform(1, 11):.6g}", 2 ** rng.integers(0, 11), rng.integers(0, 10**5), i)
        for i in range(10)
    ]
    runs = write_csv(tmp_path / "runs.csv", ["N", "B", "K", "i"], rows)
    one, many = tmp_path / "one.csv", tmp_path / "many.csv"
    assert main(["predict", runs, "--params", "pythia-owt2", "--out", str(one)]) == 0
    args = ["predict", runs, "--params", "pythia-owt2", "--out", str(many), "--chunk-rows", "3"]
    assert main(args) == 0
    (h1, r1), (h2, r2) = read_csv(one), read_csv(many)
    assert h1 == h2 and len(r1) == len(r2) == 10
    for a, b in zip(r1, r2):
        assert a[:4] == b[:4]
        # a bias term can underflow towards 1e-305, where float64 keeps fewer digits
        np.testing.assert_allclose(
            np.array(b[4:], float), np.array(a[4:], float), rtol=1e-12, atol=1e-290
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
        raise AssertionError("risk() called before the input was validated")

    monkeypatch.setattr(_cli, "risk", forbidden)


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
    err = capsys.readouterr().err
    assert "usage: nqs-engine" in err and "Traceback" not in err


def test_failure_while_computing_leaves_no_output(tmp_path, capsys, monkeypatch):
    """A chunk failing after others were written: the output is not created."""
    calls = []

    def fake_risk(params, N, B, K, lr):
        calls.append(len(N))
        total = np.where(np.arange(len(N)) == 1, np.nan, 1.0) if len(calls) == 2 else N * 0 + 1
        return nqs.RiskBreakdown(total, total, total, total, total)

    monkeypatch.setattr(_cli, "risk", fake_risk)
    runs, out = runs_file(tmp_path), tmp_path / "pred.csv"
    args = ["predict", runs, "--params", "pythia-owt2", "--out", str(out), "--chunk-rows", "2"]
    line = run_error(capsys, args)
    assert calls == [2, 2]  # every chunk padded to the same size
    assert "row 4" in line and "not finite" in line and "N=1.5" in line
    assert sorted(os.listdir(tmp_path)) == ["runs.csv"]


def test_keyboard_interrupt_leaves_no_output(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "risk", interrupted)
    runs, out = runs_file(tmp_path), tmp_path / "pred.csv"
    out.write_text("precious\n")
    assert main(["predict", runs, "--params", "pythia-owt2", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert out.read_text() == "precious\n"
    assert sorted(os.listdir(tmp_path)) == ["pred.csv", "runs.csv"]


def test_internal_error_is_one_line(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("boom")

    monkeypatch.setattr(_cli, "risk", broken)
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


def test_subprocess_help_and_error(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, "-m", "nqs_engine._cli", "predict", "--help"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: nqs-engine predict" in done.stdout and "RUNS.csv" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "nqs_engine._cli", "predict", str(tmp_path / "none.csv"),
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
        nqs.risk(bad, 1e6, 1.0, 1.0)
    message = _cli._runtime_message(info.value)
    assert message.startswith("q is too small") and "\n" not in message


def test_progress_bar_draws_and_ends_line():
    stream = io.StringIO()
    bar = _cli._Progress("work", enabled=True, stream=stream)
    bar.show(0.5, "5/10 rows", force=True)
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\rwork [") and "50.0%" in text and "5/10 rows" in text
    assert text.endswith("\n")
    quiet = io.StringIO()
    bar = _cli._Progress("work", enabled=False, stream=quiet)
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


def test_demo_runs_on_the_builtin_preset(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--batch", "256"]) == 0
    printed = capsys.readouterr().out
    assert "compute-optimal" in printed
    with open(out / "ladder.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7
    params, lr = nqs.preset("pythia-owt2")
    with jax.enable_x64(True):
        for row in rows:
            expected = nqs.risk(params, float(row["N"]), float(row["B"]), float(row["K"]), lr=lr)
            assert float(row["prediction"]) == pytest.approx(float(expected.total), rel=1e-12)
    with open(out / "isoflop.csv") as fh:
        iso = list(csv.DictReader(fh))
    losses = [float(r["loss"]) for r in iso]
    assert len(iso) == 4 and losses == sorted(losses, reverse=True)  # more compute, lower loss
