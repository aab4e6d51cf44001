"""`nqs-engine fit`, `evaluate`, and `predict` with Chinchilla parameters."""

import csv
import json

import numpy as np
import pytest

import nqs_engine as nqs
from nqs_engine import ChinchillaParams, chinchilla_loss
from nqs_engine.cli import main

TRUTH, LR = nqs.preset("pythia-owt2")
# 20 rows and 16 refined starts, as in test_fit.py: the compiled programs are shared.
FAST = ["--starts", "1024", "--refine", "16", "--no-progress"]


def _write_runs(path, extra_rows=()):
    N = np.repeat([1e6, 3e6, 1e7, 3e7], 5)
    B = np.tile([16.0, 32, 64, 128, 256], 4)
    K = np.tile([8000.0, 5000, 3000, 2000, 1000], 4) * np.repeat([1.0, 1.5, 2, 3], 5)
    y = np.asarray(nqs.risk(TRUTH, N, B, K, lr=LR).total)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["N", "B", "K", "loss", "split", "filtered"])
        for row in zip(N, B, K, y):
            w.writerow([*row, "train", "False"])
        for row in extra_rows:
            w.writerow(row)
    return N, B, K, y


def test_fit_writes_params_that_predict_and_evaluate_accept(tmp_path, capsys):
    runs = tmp_path / "runs.csv"
    # Test and filtered rows are not fitted.
    _write_runs(runs, extra_rows=[[1e9, 512, 1e5, 2.5, "test", ""],
                                  [1e6, 16, 10, 99.0, "train", "True"]])
    out = tmp_path / "fit.json"
    assert main(["fit", str(runs), "--out", str(out), "--max-steps", "30", *FAST]) == 0
    data = json.loads(out.read_text())
    assert data["model"] == "nqs" and set(nqs.PARAM_NAMES) <= set(data)
    assert data["diagnostics"]["num_rows"] == 20
    assert data["diagnostics"]["objective"] >= 0 and data["lr"] == LR
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(runs), "--params", str(out), "--out", str(pred),
                 "--no-progress"]) == 0
    with open(pred) as f:
        assert len(list(csv.DictReader(f))) == 22
    capsys.readouterr()
    assert main(["evaluate", str(runs), "--params", str(out), "--params", "pythia-owt2"]) == 0
    table = capsys.readouterr().out
    assert "huber_e5" in table and "nqs:pythia-owt2" in table and "test" in table


def test_chinchilla_fit_and_predict(tmp_path):
    truth = ChinchillaParams(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.36)
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 40))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), 40))
    y = np.asarray(chinchilla_loss(truth, N, D))
    runs = tmp_path / "chin.csv"
    with open(runs, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["N", "D", "loss"])
        w.writerows(zip(N, D, y))
    out = tmp_path / "chin.json"
    assert main(["fit", str(runs), "--model", "chinchilla", "--out", str(out),
                 "--no-progress"]) == 0
    data = json.loads(out.read_text())
    assert data["model"] == "chinchilla"
    for name in ("E", "A", "B", "alpha", "beta"):
        assert data[name] == pytest.approx(float(getattr(truth, name)), rel=1e-3), name
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(runs), "--params", str(out), "--out", str(pred)]) == 0
    with open(pred) as f:
        got = np.array([float(r["prediction"]) for r in csv.DictReader(f)])
    np.testing.assert_allclose(got, y, rtol=1e-4)


@pytest.mark.parametrize(
    "rows, args, message",
    [
        ([[1e6, 64, 1000, -2.0]], [], r"row 1, column 'loss'.*must be > 0"),
        ([[1e6, 64, 1000, 3.0]] * 10, [], "same number of tokens"),
        ([[1e6, 64, 1000, 3.0], [1e7, 64, 1000, 2.9]], [], "too few observations"),
        ([[1e6, 64, 1000, 3.0]], ["--starts", "0"], "--starts: expected a positive integer"),
    ],
)
def test_fit_errors_are_one_line(tmp_path, capsys, rows, args, message):
    runs = tmp_path / "runs.csv"
    with open(runs, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["N", "B", "K", "loss"])
        w.writerows(rows)
    out = tmp_path / "fit.json"
    assert main(["fit", str(runs), "--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nqs-engine: error:")
    assert __import__("re").search(message, err[0]), err[0]
    assert not out.exists()


def test_fit_missing_column(tmp_path, capsys):
    runs = tmp_path / "runs.csv"
    runs.write_text("N,B,K\n1e6,64,1000\n")
    assert main(["fit", str(runs), "--out", str(tmp_path / "x.json")]) == 2
    assert "missing column 'loss'" in capsys.readouterr().err
