"""Loss curves across model sizes: the sized NQS (issue #15), its fit and the command line.

Synthetic curves are made by the engine itself: a `SizedNQS` with known
parameters predicts the checkpoints of warmup-then-constant, cosine and step
runs at two sizes, logged with their learning rate as real logs are; the fit
to some schedules recovers them and predicts the held-out schedule.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import nqs_engine as nqs
from nqs_engine._model._nqs_sizes import SizedNQSSpace, piece_bucket
from nqs_engine.cli import main

from helpers import WARMUP, curve_runs, curve_table, refit_held_out_cosine

TRUTH = nqs.SizedNQS(nqs.NQSParams(p=1.4, q=0.9, P=3.0, Q=0.02, e_irr=2.0, R=0.3, r=1.5),
                     kappa=2e-4, A=0.3, alpha=0.34, rho=0.15)


@pytest.fixture(scope="module")
def table():
    return curve_table(TRUTH)


def test_reduces_to_the_plain_nqs():
    params, lr = nqs.preset("pythia-owt2")
    sized = nqs.SizedNQS(params, kappa=0.25, A=0.0, rho=0.0)
    out = sized(4e8, 256, 5000)
    want = nqs.risk(params, 1e8, 256, 5000, lr=lr)
    assert float(out.total) == pytest.approx(float(want.total), rel=1e-12)
    assert float(out.capacity) == 0.0
    # With capacity and noise terms: the breakdown adds up; R is scaled by (N / N_ref)^rho.
    sized = nqs.SizedNQS(params, kappa=0.25, A=0.2, alpha=0.5, rho=0.3)
    out = sized(2.5e7, 256, 5000)
    terms = out.terms()
    assert float(out.total) == pytest.approx(float(sum(terms.values())), rel=1e-12)
    assert float(out.capacity) == pytest.approx(0.2 * 0.25**-0.5, rel=1e-12)
    scaled = dataclasses.replace(params, R=params.R * 0.25**0.3)
    want = nqs.risk(scaled, 2.5e7 * 0.25, 256, 5000, lr=lr)
    assert float(out.variance) == pytest.approx(float(want.variance), rel=1e-10)


def test_curves_in_one_pass_equal_each_checkpoint_alone(table):
    runs = curve_runs(table)
    curves = np.asarray(TRUTH.predict(runs))
    # The same checkpoints as separate runs (unique labels): one configuration each.
    alone = nqs.Runs.from_arrays(runs.N, schedule=runs.schedule, loss=runs.loss)
    rows = np.asarray(TRUTH.predict(alone))
    np.testing.assert_allclose(curves, rows, rtol=1e-9)
    # and the model called directly on the schedules agrees
    direct = np.asarray(TRUTH(runs.N, schedule=runs.schedule).total)
    np.testing.assert_allclose(curves, direct, rtol=1e-9)


def test_bigger_models_are_better_here(table):
    last = {r: l for r, l in zip(table["run"], table["loss"])}
    for name in ("constant", "cosine", "step"):
        assert last[f"100M/{name}"] < last[f"25M/{name}"]


def test_fit_space_fixes_what_the_sizes_cannot_identify(table):
    one = curve_runs(table, table["N"] == 25e6)
    space = TRUTH.fit_space(one)
    assert {"A", "alpha", "rho"}.isdisjoint(space.free) and "kappa" in space.free
    assert any("same model size" in r for r in space.remarks)
    two = TRUTH.fit_space(curve_runs(table))
    assert "alpha" not in two.free and {"A", "rho", "kappa"} <= set(two.free)
    three = curve_table(TRUTH, names=("constant",), sizes=(1e7, 4e7, 1.6e8))
    assert "alpha" in TRUTH.fit_space(curve_runs(three)).free
    # The flat form round-trips, and every coordinate gives a valid model.
    u = two.to_flat(TRUTH)
    np.testing.assert_allclose(two.to_flat(two.to_model(u)), u, rtol=1e-8, atol=1e-8)
    rng = np.random.default_rng(0)
    for v in rng.normal(0, 3, (5, u.size)):
        two.to_model(v).check()
    assert isinstance(two, SizedNQSSpace)


def test_fit_recovers_the_curves_and_predicts_a_held_out_schedule(table):
    _, result, err = refit_held_out_cosine(TRUTH, table)
    assert type(result.model) is nqs.SizedNQS
    assert np.max(np.abs(result.residuals)) < 2e-4
    assert np.mean(err) < 1e-3 and np.max(err) < 3e-3


def test_parameters_file_round_trip_and_errors():
    data = TRUTH.to_dict()
    assert data["model"] == "nqs-sizes" and data["kappa"] == pytest.approx(2e-4)
    back = nqs.model_from_dict(data)
    assert type(back) is nqs.SizedNQS
    assert float(back(5e7, 64, 1000).total) == pytest.approx(float(TRUTH(5e7, 64, 1000).total))
    with pytest.raises(ValueError, match="missing parameter"):
        nqs.model_from_dict({k: v for k, v in data.items() if k != "rho"})
    with pytest.raises(ValueError, match="kappa"):
        nqs.model_from_dict({**data, "kappa": -1.0})
    with pytest.raises(ValueError, match="step size diverges"):
        TRUTH.check_peak(2.0 / (1.999 * 0.02) + 1)


def test_piece_buckets_are_few():
    sizes = {piece_bucket(P) for P in range(1, 3000)}
    assert len(sizes) <= 20
    assert all(piece_bucket(P) >= P for P in range(1, 3000))
    assert all(piece_bucket(P) <= max(16, 1.5 * P) for P in range(1, 3000))


def _write(path, cols, keys=("run", "N", "step", "lr", "loss")):
    lines = [",".join(keys)]
    for i in range(cols["step"].size):
        lines.append(",".join(str(cols[k][i]) for k in keys))
    path.write_text("\n".join(lines) + "\n")


def test_predict_command_takes_whole_curves(tmp_path, table, capsys):
    params = tmp_path / "fit.json"
    params.write_text(json.dumps(TRUTH.to_dict()))
    curves = tmp_path / "curves.csv"
    _write(curves, table)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(curves), "--params", str(params), "--lr-column", "lr",
                 "--warmup", str(WARMUP), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "run,N,step,lr,loss,prediction"
    pred = np.array([float(line.split(",")[-1]) for line in lines[1:]])
    np.testing.assert_allclose(pred, table["loss"], rtol=1e-9)
    # a schedule flag beside --lr-column is refused in one line
    assert main(["predict", str(curves), "--params", str(params), "--lr-column", "lr",
                 "--schedule", "cosine", "--out", str(out)]) == 2
    assert "--lr-column gives each run's schedule" in capsys.readouterr().err


def test_fit_command_fits_the_sized_nqs(tmp_path, table):
    curves = tmp_path / "curves.csv"
    _write(curves, table)
    params = tmp_path / "fit.json"
    assert main(["fit", str(curves), "--model", "nqs-sizes", "--lr-column", "lr", "--warmup",
                 str(WARMUP), "--starts", "16", "--refine", "2", "--max-steps", "30",
                 "--out", str(params), "--no-progress"]) == 0
    data = json.loads(params.read_text())
    assert data["model"] == "nqs-sizes" and "kappa" in data
    model = nqs.model_from_dict(data)
    err = np.asarray(model.predict(curve_runs(table))) - table["loss"]
    assert np.mean(np.abs(err)) < 0.05  # a short fit from random starts: close, not exact
