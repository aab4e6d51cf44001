"""The norm-growth sized NQS (issue #15): its step-size law against a step-by-step brute force,
its pieces, its reduction to the sized NQS, its fit and its parameters file.

The brute force runs SGD's expected-risk recursion (SPEC section 1) one step at a time
over every direction in numpy, with the effective multiplier of each step computed from
the norm-growth law at that step's middle; the model (with one piece per step) must agree.
"""

from __future__ import annotations

import numpy as np
import pytest

import nqs_engine as nqs
from nqs_engine._model._nqs_norm import NormSizedNQSSpace, effective_multipliers
from nqs_engine.cli import main

from helpers import curve_runs, curve_table, refit_held_out_cosine

PARAMS = nqs.NQSParams(p=1.4, q=0.9, P=3.0, Q=0.02, e_irr=2.0, R=0.3, r=1.5)
SIZED = nqs.SizedNQS(PARAMS, kappa=2e-4, A=0.3, alpha=0.34, rho=0.15)
TRUTH = nqs.NormSizedNQS(SIZED, h=2e-3, eta=0.5, T=800.0)


def _brute_force(model: nqs.NormSizedNQS, N: float, B: float, mult: np.ndarray) -> float:
    """The loss after the per-step multipliers `mult`, every direction summed term by term."""
    sized = model.sized
    n_dirs = int(round(float(sized.kappa) * N))
    x = N / float(sized.N_ref)
    p, q, P, Q, e_irr, R, r = (float(v) for v in (PARAMS.p, PARAMS.q, PARAMS.P, PARAMS.Q,
                                                  PARAMS.e_irr, PARAMS.R, PARAMS.r))
    R_N, h_N, T = R * x ** float(sized.rho), float(model.h) * x ** -float(model.eta), float(model.T)
    n = np.arange(1, n_dirs + 1, dtype=float)
    lam = Q * n**-q
    b, v, G = np.ones_like(n), np.zeros_like(n), 0.0
    # Each step's mean of 1 / (1 + h_N G(t)) over t in [0, 1], by Gauss-Legendre quadrature,
    # with G(t) = G_inf + (G_0 - G_inf) exp(-t / T), the solution of dG/dt = m^2/B - G/T.
    nodes, weights = np.polynomial.legendre.leggauss(12)
    t = 0.5 * (nodes + 1.0)
    for m in mult:
        G_inf = m * m / B * T
        mean = 0.5 * np.sum(weights / (1.0 + h_N * (G_inf + (G - G_inf) * np.exp(-t / T))))
        G = G_inf + (G - G_inf) * np.exp(-1.0 / T)
        gamma = float(sized.lr) * m * mean
        a2 = (1.0 - gamma * lam) ** 2
        b, v = b * a2, v * a2 + gamma**2 / B
    tail = np.arange(n_dirs + 1, 2_000_000, dtype=float)
    appx = 0.5 * P * (np.sum(tail**-p) + tail[-1] ** (1 - p) / (p - 1))
    bias = np.sum(0.5 * P * n**-p * b)
    var = np.sum(0.5 * lam * R_N * n**-r * v)
    return e_irr + appx + bias + var + float(sized.A) * x ** -float(sized.alpha)


def test_agrees_with_a_step_by_step_brute_force():
    N, B, k = 2e5, 4.0, 300                       # 40 directions, 300 steps
    mult = np.concatenate([np.full(k // 2, 1.0), np.full(k - k // 2, 0.4)])
    schedule = nqs.Schedule(mult, np.full(k, B), np.ones(k))
    one_step = nqs.NormSizedNQS(SIZED, h=TRUTH.h, eta=TRUTH.eta, T=TRUTH.T, pieces=1)
    got = float(one_step(N, schedule=schedule).total)
    want = _brute_force(TRUTH, N, B, mult)
    assert got == pytest.approx(want, rel=1e-9)
    # The effect is not negligible here: the sized NQS alone is off by far more.
    assert abs(float(SIZED(N, schedule=schedule).total) - want) > 1e-3 * want
    # Two segments cut into many pieces converge to the same loss.
    two = nqs.Schedule(np.array([1.0, 0.4]), np.array([B, B]), np.array([k // 2, k - k // 2]))
    coarse = float(nqs.NormSizedNQS(SIZED, h=TRUTH.h, eta=TRUTH.eta, T=TRUTH.T,
                                    pieces=150)(N, schedule=two).total)
    assert coarse == pytest.approx(want, rel=1e-9)
    default = float(TRUTH(N, schedule=two).total)
    assert default == pytest.approx(want, rel=2e-4)


def test_effective_multipliers_are_the_means_over_each_piece():
    # m = 1, B = 2: G(t) = (T / 2) (1 - exp(-t / T)); each piece's multiplier is the mean of
    # 1 / (1 + h G(t)) over its steps (a fine trapezoid rule here).
    T, h, k, P = 500.0, 0.01, 100.0, 12
    one = np.ones((1, P))
    got = np.asarray(effective_multipliers(np.array([h]), T, one, 2 * one, k * one))[0]
    t = np.linspace(0.0, k * P, 200 * P + 1)
    f = 1.0 / (1.0 + h * 0.5 * T * (1 - np.exp(-t / T)))
    want = [np.trapezoid(f[200 * j: 200 * (j + 1) + 1], t[200 * j: 200 * (j + 1) + 1]) / k
            for j in range(P)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Empty pieces take the value at their point; without growth the multipliers are the
    # schedule's.
    lengths = np.array([[0.0, 50.0, 0.0]])
    m = np.asarray(effective_multipliers(np.array([h]), T, np.ones((1, 3)), np.ones((1, 3)),
                                         lengths))[0]
    G = T * (1 - np.exp(-50.0 / T))
    assert m[0] == 1.0 and m[2] == pytest.approx(1 / (1 + h * G), rel=1e-12)
    m = np.array([[1.0, 0.5, 0.25]])
    np.testing.assert_array_equal(effective_multipliers(np.zeros(1), T, m, m * 0 + 8, m * 0 + 9), m)


def test_without_growth_it_is_the_sized_nqs():
    off = nqs.NormSizedNQS(SIZED, h=0.0, eta=0.3, T=1e3)
    assert float(off(5e7, 64, 4000).total) == pytest.approx(float(SIZED(5e7, 64, 4000).total),
                                                             rel=1e-12)
    runs = curve_runs(curve_table(TRUTH, names=("cosine",)))
    np.testing.assert_allclose(off.predict(runs), SIZED.predict(runs), rtol=1e-12)
    grid = np.array([1e7, 1e8]), np.array([32.0, 256.0]), np.array([1000.0, 8000.0])
    np.testing.assert_allclose(off.planning_loss(*grid, 128), SIZED.planning_loss(*grid, 128),
                               rtol=1e-12)


def test_norm_growth_anneals_a_long_constant_run():
    short, long = (float(TRUTH(1e8, 64, k).total) for k in (2000, 20000))
    plain = (float(SIZED(1e8, 64, k).total) for k in (2000, 20000))
    gain, plain_gain = short - long, next(plain) - next(plain)
    assert gain > plain_gain > 0
    # A bigger model (eta > 0) sees less of it.
    h_small, h_big = np.asarray(TRUTH.h_N(np.array([1e7, 1e9])))
    assert h_small > h_big


@pytest.fixture(scope="module")
def table():
    return curve_table(TRUTH)


def test_curves_in_one_pass_equal_each_checkpoint_alone(table):
    runs = curve_runs(table)
    # With one piece per segment, a checkpoint alone is the curve's own pieces: equal.
    coarse = nqs.NormSizedNQS(SIZED, h=TRUTH.h, eta=TRUTH.eta, T=TRUTH.T, pieces=1)
    curves = np.asarray(TRUTH.predict(runs))
    np.testing.assert_allclose(curves, np.asarray(coarse(runs.N, schedule=runs.schedule).total),
                               rtol=1e-10)
    # Cut into 32 pieces per segment, it resolves the step size's fall within each logging
    # interval, which the curve's pieces (one mean multiplier per interval) do not: they
    # agree to first order in the change of h_N G over one interval. TRUTH's is large (about
    # 0.2 per 100 steps early on): under 3e-3 relative, and less at a tenth of its h.
    def gap(model):
        fine = np.asarray(model(runs.N, schedule=runs.schedule).total)
        return np.max(np.abs(np.asarray(model.predict(runs)) / fine - 1))

    strong = gap(TRUTH)
    weak = gap(nqs.NormSizedNQS(SIZED, h=TRUTH.h / 10, eta=TRUTH.eta, T=TRUTH.T))
    assert strong < 3e-3 and weak < strong / 3


def test_fit_recovers_the_curves_and_predicts_a_held_out_schedule(table):
    space, result, err = refit_held_out_cosine(TRUTH, table)
    assert isinstance(space, NormSizedNQSSpace) and {"h", "eta", "T"} <= set(space.free)
    u = space.to_flat(TRUTH)
    np.testing.assert_allclose(space.to_flat(space.to_model(u)), u, rtol=1e-8, atol=1e-8)
    assert type(result.model) is nqs.NormSizedNQS
    assert np.max(np.abs(result.residuals)) < 3e-4
    assert np.mean(err) < 1e-3 and np.max(err) < 3e-3


def test_fit_space_checks_and_fixes(table):
    one = TRUTH.fit_space(curve_runs(table, table["N"] == 25e6))
    assert "eta" not in one.free and {"h", "T"} <= set(one.free)
    assert any("eta = 0 is fixed" in n for n in one.describe_bounds(TRUTH))
    rng = np.random.default_rng(0)
    two = TRUTH.fit_space(curve_runs(table))
    for v in rng.normal(0, 3, (4, two.to_flat(TRUTH).size)):
        two.to_model(v).check()
    cand = two.candidates(16, 0, {"T": (100.0, 200.0)})
    Ts = np.array([float(two.to_model(c).T) for c in cand])
    assert np.all((Ts >= 100.0 - 1e-6) & (Ts <= 200.0 + 1e-6))
    with pytest.raises(ValueError, match="unknown parameter"):
        two.candidates(4, 0, {"tau": (1.0, 2.0)})
    few = curve_runs(table, np.arange(table["step"].size) < 10)
    with pytest.raises(ValueError, match="too few observations to fit the 10 parameters of the "
                       "norm-growth sized NQS: 10 \\(need at least 11"):
        TRUTH.fit_space(few)


def test_parameters_file_round_trip_and_errors(tmp_path):
    data = TRUTH.to_dict()
    assert data["model"] == "nqs-sizes-norm" and data["T"] == 800.0 and data["pieces"] == 32
    back = nqs.model_from_dict(data)
    assert type(back) is nqs.NormSizedNQS
    assert float(back(5e7, 64, 1000).total) == pytest.approx(float(TRUTH(5e7, 64, 1000).total),
                                                              rel=1e-12)
    with pytest.raises(ValueError, match="missing parameter"):
        nqs.model_from_dict({k: v for k, v in data.items() if k != "T"})
    with pytest.raises(ValueError, match="parameter T = -1 must be finite and > 0"):
        nqs.model_from_dict({**data, "T": -1.0})
    with pytest.raises(ValueError, match="parameter h = -0.1 must be finite and >= 0"):
        nqs.model_from_dict({**data, "h": -0.1})
    with pytest.raises(ValueError, match="parameter eta = nan must be finite$"):
        nqs.NormSizedNQS(SIZED, eta=float("nan")).check()
    with pytest.raises(ValueError, match="parameter T = -2 must be finite and > 0"):
        nqs.NormSizedNQS(SIZED, T=np.array([1.0, -2.0])).check()
    with pytest.raises(ValueError, match="'pieces' must be an integer >= 1"):
        nqs.model_from_dict({**data, "pieces": 2.5})
    with pytest.raises(ValueError, match="pieces must be an integer >= 1"):
        nqs.NormSizedNQS(SIZED, pieces=0)
    with pytest.raises(ValueError, match="missing parameter"):
        nqs.model_from_dict({k: v for k, v in data.items() if k != "rho"})
    # The command line reads the file: one predicted loss per row.
    params = tmp_path / "params.json"
    params.write_text(__import__("json").dumps(data))
    runs = tmp_path / "runs.csv"
    runs.write_text("N,B,K\n5e7,64,1000\n1e8,64,2000\n")
    out = tmp_path / "pred.csv"
    assert main(["predict", "--params", str(params), str(runs), "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    col = lines[0].split(",").index("prediction")
    got = float(lines[1].split(",")[col])
    assert got == pytest.approx(float(TRUTH(5e7, 64, 1000).total), rel=1e-9)
