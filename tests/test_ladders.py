"""Real ladders: column mappings of training logs, the lr-mapped NQS, backtests, intervals."""

import csv
import json

import numpy as np
import pytest

import nqs_engine as nqs
from nqs_engine._io import InputError
from nqs_engine._logs import Formula, parse_mapping, read_table
from nqs_engine.cli import main

TRUTH, LR = nqs.preset("pythia-owt2")


# ---------------------------------------------------------------------------
# Column mappings
# ---------------------------------------------------------------------------


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_parse_mapping_keeps_commas_in_parentheses_and_backticks():
    assert parse_mapping("N=16*L*d^2, B=bs,lr=min2(`a,b`, c)") == {
        "N": "16*L*d^2", "B": "bs", "lr": "min2(`a,b`, c)"}
    with pytest.raises(ValueError, match="NAME=EXPR|="):
        parse_mapping("N")


def test_formula_matches_numpy_on_random_columns():
    rng = np.random.default_rng(0)
    header = ("model.d", "model.L", "eval/loss", "bs")
    cols = {h: rng.uniform(1.0, 5.0, 50) for h in header}
    f = Formula.compile("16*model.L*model.d^2 + sqrt(bs)/`eval/loss` - exp(-bs) * log(model.d)",
                        header, "N")
    got = f.evaluate([cols[c] for c in f.columns])
    want = (16 * cols["model.L"] * cols["model.d"] ** 2 + np.sqrt(cols["bs"]) / cols["eval/loss"]
            - np.exp(-cols["bs"]) * np.log(cols["model.d"]))
    np.testing.assert_allclose(got, want, rtol=1e-14)
    # A header that is the whole value is that column, whatever characters it has.
    assert Formula.compile("eval/loss", header, "loss").evaluate([cols["eval/loss"]]).tolist() \
        == cols["eval/loss"].tolist()


@pytest.mark.parametrize("text, message", [
    ("16*model.q", "'model.q' is not a column of the file \\(did you mean 'model.d'"),
    ("`model.q`", "no column 'model.q'"),
    ("foo(model.d)", "'foo' is not a column of the file nor one of sqrt, log, exp"),
    ("model.d +", "not a formula"),
    ("__import__('os')", "'__import__' is not a column"),
    ("model.d.real", "'model.d.real' is not a column"),
    ("model.d if 1 else 2", "'if' is not a column"),
    ("(lambda: 1)()", "'lambda' is not a column"),
    ("[model.d][0]", "only numbers, columns"),
])
def test_formula_errors_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        Formula.compile(text, ("model.d", "bs"), "N")


def test_read_table_budget_and_bad_cells(tmp_path):
    path = _write(tmp_path / "log.csv", ["Name", "d", "L", "bs", "eval/loss"], [
        ["iso-1e+18-a", 512, 8, 64, 3.1],
        ["iso-3e+18-b", 768, 12, "", 2.9],
        ["iso-1e+19-c", 1024, 16, 128, "nan"],
        ["other", 1024, 16, 128, 2.5],
    ])
    mapping = {"N": "16*L*d^2", "B": "bs", "loss": "`eval/loss`"}
    budget = r"Name:iso-([0-9.]+e[+-]?[0-9]+)-"
    with pytest.raises(InputError, match=r"row 2, column 'bs': empty.*--drop-bad"):
        read_table(path, mapping, budget=budget)
    t = read_table(path, mapping, budget=budget, drop_bad=True)
    assert t.dropped == 3 and t.rows.tolist() == [1]
    assert t.values["N"].tolist() == [16 * 8 * 512**2] and t.budget.tolist() == [1e18]
    with pytest.raises(InputError, match="holds no budget"):
        read_table(path, {"N": "d"}, budget=budget)
    with pytest.raises(InputError, match="needs a group"):
        read_table(path, {"N": "d"}, budget="Name:iso")
    with pytest.raises(InputError, match="COLUMN:REGEX"):
        read_table(path, {"N": "d"}, budget="Nope:(x)")


def _marin_like(path, with_lr=True):
    """A small ladder with Marin's column names (12 runs, 3 budgets): lr = 0.33 sqrt(B) / d."""
    rows = []
    for budget in (1e18, 3e18, 1e19):
        for d in (256, 384, 512, 768):
            L, B = d // 64, float(np.round(16 * (budget / 1e18) ** 0.5))
            N = 16 * L * d**2
            K = float(np.round(budget / (6 * N * B * 4096)))
            lr = 0.33 * np.sqrt(B) / d
            loss = float(nqs.risk(TRUTH, N, B, K, lr=LR).total)
            rows.append([f"isoflop-{budget:.0e}-d{d}", d, L, B, K, loss, lr if with_lr else ""])
    return _write(path, ["Name", "model.hidden_dim", "model.num_layers",
                         "trainer.train_batch_size", "trainer.num_train_steps",
                         "eval/paloma/macro_loss", "optimizer.learning_rate"], rows)


MARIN_MAP = ("N=16*model.num_layers*model.hidden_dim^2,B=trainer.train_batch_size,"
             "K=trainer.num_train_steps,loss=`eval/paloma/macro_loss`,"
             "lr=0.33*sqrt(trainer.train_batch_size)/model.hidden_dim,width=model.hidden_dim")


def test_cli_fit_reads_a_mapped_log(tmp_path, capsys):
    path = _marin_like(tmp_path / "log.csv", with_lr=False)
    out = tmp_path / "fit.json"
    code = main(["fit", str(path), "--columns", MARIN_MAP, "--model", "nqs-lr", "--starts",
                 "64", "--refine", "4", "--max-steps", "20", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["model"] == "nqs-lr" and data["diagnostics"]["num_rows"] == 12
    # The references are the fitted runs' largest learning rate and width.
    assert data["lr_ref"] == pytest.approx(0.33 * np.sqrt(51) / 256) and data["width_ref"] == 768


def test_cli_mapping_errors_are_one_line(tmp_path, capsys):
    path = _marin_like(tmp_path / "log.csv", with_lr=False)
    out = str(tmp_path / "fit.json")
    # The lr column is empty: an error naming row and column, or dropped with a note.
    assert main(["fit", str(path), "--columns", "N=16*model.num_layers*model.hidden_dim^2,"
                 "B=trainer.train_batch_size,K=trainer.num_train_steps,"
                 "loss=`eval/paloma/macro_loss`,lr=optimizer.learning_rate",
                 "--model", "nqs-lr", "--out", out, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "row 1, column 'optimizer.learning_rate': empty" in err and err.count("\n") == 1
    assert main(["fit", str(path), "--columns", "N=model.hidden_dim", "--out", out]) == 2
    assert "missing column 'B'" in capsys.readouterr().err
    assert main(["fit", str(path), "--columns", "M=model.hidden_dim", "--out", out]) == 2
    assert "'M' is not a column this command reads" in capsys.readouterr().err
    assert main(["fit", str(path), "--columns", MARIN_MAP, "--out", out]) == 2
    assert "'lr' is an input of the model(s) nqs-lr, not of this one" in capsys.readouterr().err
    assert main(["fit", str(path), "--columns", MARIN_MAP.replace("16*", "0*"),
                 "--model", "nqs-lr", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "row 1: N = 0*model.num_layers" in err and "must be >= 1" in err
    assert main(["fit", str(path), "--columns", MARIN_MAP.replace("model.hidden_dim^2",
                                                                  "model.hiden_dim^2"),
                 "--model", "nqs-lr", "--out", out]) == 2
    assert "model.hidden_dim" in capsys.readouterr().err  # the suggestion


# ---------------------------------------------------------------------------
# The lr-mapped NQS
# ---------------------------------------------------------------------------


def test_lr_map_is_time_scaling_exactly():
    """c = (eta/eta_ref)^s_lr (d/d_ref)^s_width: K c steps at batch B / c of the plain NQS."""
    model = nqs.LearningRateNQS(TRUTH, s_lr=1.9, s_width=1.5, lr_ref=2e-3, width_ref=2048.0,
                                lr=LR)
    plain = nqs.NQS(TRUTH, lr=LR)
    eta = np.array([1e-3, 2e-3, 4e-3])
    d = np.array([512.0, 1024.0, 4096.0])
    N, B, K = np.array([1e7, 1e8, 1e9]), np.array([64.0, 256, 512]), np.array([3e3, 1e4, 5e4])
    c = (eta / 2e-3) ** 1.9 * (d / 2048) ** 1.5
    got = np.asarray(model(N, B, K, lr=eta, width=d).total)
    want = np.asarray(plain(N, B / c, K * c).total)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    runs = nqs.Runs.from_arrays(N, B, K, inputs={"lr": eta, "width": d})
    np.testing.assert_allclose(np.asarray(model.predict(runs)), want, rtol=1e-9)
    # Fitted with an lr, it refuses runs without one rather than assume eta_ref.
    with pytest.raises(ValueError, match="does not give 'lr'|give it"):
        model.predict(nqs.Runs.from_arrays(N, B, K, inputs={"width": d}))


def test_lr_map_matches_sgd_at_a_scaled_step_size_for_small_steps():
    """For gamma lambda << 1 every direction, c k steps at batch B / c is SGD at c gamma."""
    small = 1e-4  # gamma * P, the top direction's step, is tiny
    model = nqs.LearningRateNQS(TRUTH, s_lr=2.0, lr_ref=1.0, lr=small)
    for eta in (0.5, 0.8, 1.2):
        got = float(model(1e8, 64.0, 2e5, lr=eta).total)
        sgd = float(nqs.NQS(TRUTH, lr=small * eta**2)(1e8, 64.0, 2e5).total)
        assert got == pytest.approx(sgd, rel=1e-3)


# ---------------------------------------------------------------------------
# Backtests and intervals
# ---------------------------------------------------------------------------


def _nqs_ladder(noise=0.0, seed=0):
    """An isoflop ladder made by the NQS: 3 sizes at each of 5 budgets (1e15 ... 1e17)."""
    C = np.repeat([1e15, 3e15, 1e16, 3e16, 1e17], 3)
    N = np.sqrt(C) * np.tile([1 / 30, 1 / 10, 1 / 3], 5)
    B = np.full(C.size, 64.0)
    K = C / (6 * N * B * 128)
    y = np.asarray(nqs.risk(TRUTH, N, B, K, lr=LR).total)
    y = y * np.exp(noise * np.random.default_rng(seed).standard_normal(y.size))
    return nqs.Runs.from_arrays(N, B, K, y)


def test_compute_levels_groups_by_jumps():
    C = np.array([1e18, 1.2e18, 5e18, 5.5e18, 1e20])
    levels = nqs.compute_levels(C)
    assert len(set(levels.tolist())) == 3
    assert levels[0] == levels[1] == pytest.approx(np.sqrt(1e18 * 1.2e18))
    assert levels[-1] == pytest.approx(1e20)


def test_backtest_extrapolates_a_ladder_the_model_made():
    runs = _nqs_ladder()
    bt = nqs.backtest(runs, {"nqs": nqs.NQS(), "chinchilla": nqs.Chinchilla()}, cutoffs=[1e16],
                      fit_options=dict(starts=256, refine=8))
    summary = {r["model"]: r for r in bt.summary()}
    assert summary["nqs"]["msle"] < 1e-5
    assert summary["nqs"]["msle"] < summary["chinchilla"]["msle"]
    levels = nqs.compute_levels(np.asarray(runs.C))
    held = levels > 1e16 * 1.001
    assert summary["nqs"]["n"] == int(held.sum())
    per_budget = [r for r in bt.rows if r["model"] == "nqs" and r["budget"] != "all"]
    assert sorted(r["budget"] for r in per_budget) == sorted(set(levels[held].tolist()))
    assert all(r["gap"] > 1 for r in per_budget)
    # The best-run error is the prediction's error at the budget's lowest-loss run.
    y = np.asarray(runs.loss)
    pred = np.asarray(bt.fits[(1e16, "nqs")]["result"].model.predict(runs))
    for r in per_budget:
        sel = levels == r["budget"]
        j = np.flatnonzero(sel)[np.argmin(y[sel])]
        assert r["best_run_error"] == pytest.approx(pred[j] / y[j] - 1, rel=1e-6, abs=1e-12)
    assert "gap" in bt.table()
    assert bt.figure().axes


def test_backtest_errors_before_fitting():
    runs = _nqs_ladder()
    with pytest.raises(ValueError, match="cutoffs"):
        nqs.backtest(runs, [nqs.NQS()])
    with pytest.raises(ValueError, match="each needs at least one"):
        nqs.backtest(runs, [nqs.NQS()], cutoffs=[1e30])
    with pytest.raises(ValueError, match="budget"):
        nqs.backtest(runs, [nqs.NQS()], cutoffs=[1e16], budget=-np.ones(runs.size))
    with pytest.raises(TypeError, match="loss model"):
        nqs.backtest(runs, {"x": 3}, cutoffs=[1e16])


def test_prediction_intervals_cover_noisy_chinchilla_runs():
    """90% prediction intervals of a correct model on 1% noise cover about 90% of new runs."""
    truth = nqs.ChinchillaParams(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.36)
    rng = np.random.default_rng(3)

    def runs_of(n):
        N = np.exp(rng.uniform(np.log(1e7), np.log(1e9), n))
        D = np.exp(rng.uniform(np.log(1e9), np.log(1e11), n))
        y = np.asarray(nqs.chinchilla_loss(truth, N, D)) * np.exp(0.01 * rng.standard_normal(n))
        return nqs.Runs.from_arrays(N, D=D, loss=y)

    train, test = runs_of(60), runs_of(400)
    result = nqs.fit(train, nqs.Chinchilla(), loss="mse")
    boot = nqs.bootstrap(train, result, num_samples=64, level=0.9)
    assert boot.inflation == pytest.approx(np.sqrt(60 / 55))
    lo, hi = boot.predict_interval(test, prediction=True)
    y = np.asarray(test.loss)
    coverage = float(np.mean((lo <= y) & (y <= hi)))
    assert 0.8 <= coverage <= 0.97
    # The confidence interval of the mean alone is far too narrow for single runs.
    lo, hi = boot.predict_interval(test)
    assert float(np.mean((lo <= y) & (y <= hi))) < 0.6


def test_cli_backtest_with_budgets_from_names(tmp_path, capsys):
    path = _marin_like(tmp_path / "log.csv")
    out, fig = tmp_path / "bt.json", tmp_path / "bt.png"
    code = main(["backtest", str(path), "--columns", MARIN_MAP, "--budget",
                 r"Name:isoflop-([0-9.]+e[+-]?[0-9]+)-", "--cutoff", "3e18", "--models",
                 "nqs-lr,chinchilla", "--starts", "64", "--refine", "4", "--out", str(out),
                 "--figure", str(fig), "--no-progress"])
    assert code == 0
    data = json.loads(out.read_text())
    rows = [r for r in data["rows"] if r["budget"] != "all"]
    assert {r["model"] for r in rows} == {"nqs-lr", "chinchilla"}
    assert sorted((r["budget"], r["gap"], r["n"]) for r in rows if r["model"] == "chinchilla") \
        == [(1e19, pytest.approx(10 / 3), 4)]
    assert {f["model"] for f in data["fits"]} == {"nqs-lr", "chinchilla"}
    assert fig.stat().st_size > 1000
    assert "best_run_error" in capsys.readouterr().out
    assert main(["backtest", str(path), "--cutoff", "1e18", "--models", "nqs-lrr",
                 "--columns", MARIN_MAP, "--out", str(out)]) == 2
    assert "did you mean 'nqs-lr'" in capsys.readouterr().err


@pytest.mark.skipif(not __import__("os").path.exists("../shared/data/marin/isoflop-comma.csv"),
                    reason="the Marin ladders are not in ../shared/data/marin")
def test_marin_comma_ladder_reads_whole():
    t = read_table("../shared/data/marin/isoflop-comma.csv", parse_mapping(MARIN_MAP),
                   text=["Name"], budget=r"Name:(?:isoflop|optimal)-([0-9.]+e[+-]?[0-9]+)-")
    assert len(t) == 92 and t.dropped == 0
    assert set(np.unique(t.budget).tolist()) >= {1e18, 1e19, 1e20}


def test_cli_fit_bootstrap_then_predict_intervals(tmp_path, capsys):
    """fit --bootstrap keeps the refits; predict adds lower/upper (confidence, then prediction)."""
    truth = nqs.ChinchillaParams(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.36)
    rng = np.random.default_rng(5)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e9), 40))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e11), 40))
    y = np.asarray(nqs.chinchilla_loss(truth, N, D)) * np.exp(0.01 * rng.standard_normal(40))
    _write(tmp_path / "runs.csv", ["N", "D", "loss"], [[a, b, c] for a, b, c in zip(N, D, y)])
    fit_json = str(tmp_path / "fit.json")
    assert main(["fit", str(tmp_path / "runs.csv"), "--model", "chinchilla", "--bootstrap", "24",
                 "--level", "0.8", "--out", fit_json, "--no-progress"]) == 0
    stored = json.load(open(fit_json))["bootstrap"]
    assert stored["level"] == 0.8 and len(stored["samples"]) + stored["num_failed"] == 24
    # The stored samples give back the Python bootstrap's interval.
    model = nqs.model_from_dict(json.load(open(fit_json)))
    boot = nqs.BootstrapResult.from_dict(model, stored)
    test = nqs.Runs.from_arrays(N[:5], D=D[:5])
    lo_py, hi_py = boot.predict_interval(test)
    outs = {}
    for extra in ([], ["--prediction-interval", "--level", "0.9"]):
        out = str(tmp_path / f"pred{len(extra)}.csv")
        assert main(["predict", str(tmp_path / "runs.csv"), "--params", fit_json, "--out", out,
                     "--no-progress", *extra]) == 0
        with open(out) as f:
            rows = list(csv.DictReader(f))
        outs[len(extra)] = np.array([[float(r[k]) for k in ("lower", "prediction", "upper")]
                                     for r in rows])
    conf, pred = outs[0], outs[3]
    np.testing.assert_allclose(conf[:5, 0], lo_py, rtol=1e-12)
    np.testing.assert_allclose(conf[:5, 2], hi_py, rtol=1e-12)
    assert np.all(conf[:, 0] <= conf[:, 2]) and np.mean(
        (conf[:, 0] <= conf[:, 1]) & (conf[:, 1] <= conf[:, 2])) > 0.9
    assert np.all(pred[:, 2] - pred[:, 0] > conf[:, 2] - conf[:, 0])  # adds run-to-run noise
    # A prediction interval covers the runs' own losses about as often as its level says.
    assert 0.75 <= np.mean((pred[:, 0] <= y) & (y <= pred[:, 2])) <= 1.0
    capsys.readouterr()
    # Without a bootstrap the interval flags are refused, naming what is missing.
    plain = str(tmp_path / "plain.json")
    assert main(["fit", str(tmp_path / "runs.csv"), "--model", "chinchilla", "--out", plain,
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "runs.csv"), "--params", plain, "--out",
                 str(tmp_path / "x.csv"), "--prediction-interval"]) == 2
    assert "needs a PARAMS.json written by 'fit --bootstrap M'" in capsys.readouterr().err
    bad = json.load(open(fit_json))
    bad["bootstrap"]["Samples"] = bad["bootstrap"].pop("samples")
    json.dump(bad, open(tmp_path / "bad.json", "w"))
    assert main(["predict", str(tmp_path / "runs.csv"), "--params", str(tmp_path / "bad.json"),
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "unknown key 'Samples' (did you mean 'samples'?)" in capsys.readouterr().err
