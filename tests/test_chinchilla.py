"""The Chinchilla baseline: the model, its compute-optimal allocation, the fit and the bootstrap."""

import csv

import chex
import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from jax.test_util import check_grads

import nqs_engine as ch  # Chinchilla: the model, its presets, fit and bootstrap
from nqs_engine._model._chinchilla import CHINCHILLA_PARAM_NAMES, DEFAULT_SCREEN
from helpers import DATA, REASON_NO_DATA, log_uniform

NAMES = CHINCHILLA_PARAM_NAMES
HOFFMANN = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
EPOCH = dict(E=1.8169, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)
# Epoch AI's 95% bootstrap intervals (../shared/data/README.md).
EPOCH_CI = dict(E=(1.769, 1.871), A=(285, 744), B=(1042, 5810), alpha=(0.317, 0.373),
                beta=(0.331, 0.415))

# One 5 x 5 design (model sizes x token counts) for every synthetic fit, so that the
# compiled optimiser is shared between tests (and with the module's doctests).
N_GRID = np.repeat(np.geomspace(1e8, 1e10, 5), 5)
D_GRID = np.tile(np.geomspace(2e9, 2e11, 5), 5)


def direct_loss(p, N, D):
    """E + A/N^alpha + B/D^beta in NumPy float64, written independently of the engine."""
    return p["E"] + p["A"] * np.asarray(N, float) ** -p["alpha"] + p["B"] * np.asarray(
        D, float) ** -p["beta"]


def as_dict(params):
    return {n: float(getattr(params, n)) for n in NAMES}


def rel(a, b):
    return abs(a - b) / abs(b)


@pytest.fixture(scope="module")
def noiseless_fit():
    L = direct_loss(HOFFMANN, N_GRID, D_GRID)
    return ch.fit_chinchilla(N_GRID, D_GRID, L), L


def load_epoch():
    with open(DATA / "chinchilla_hoffmann_epoch.csv") as f:
        rows = list(csv.DictReader(f))
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    return N, C / (6 * N), loss


# ---------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("p", [HOFFMANN, EPOCH, dict(E=0.5, A=1e6, B=1e-3, alpha=1.5, beta=0.05)])
def test_loss_matches_direct_formula(p):
    N = np.geomspace(1.0, 1e13, 7)[:, None]
    D = np.geomspace(1.0, 1e15, 9)[None, :]
    ours = np.asarray(ch.chinchilla_loss(ch.ChinchillaParams(**p), N, D))
    assert ours.shape == (7, 9)
    np.testing.assert_allclose(ours, direct_loss(p, N, D), rtol=1e-13)


def test_loss_batched_params_broadcast_and_vmap():
    batch = ch.ChinchillaParams(
        E=jnp.array([1.69, 1.8169]), A=jnp.array([406.4, 482.01]), B=jnp.array([410.7, 2085.43]),
        alpha=jnp.array([0.34, 0.3478]), beta=jnp.array([0.28, 0.3658]))
    assert batch.shape == (2,)
    N, D = np.array([1e8, 1e9, 1e10]), np.array([1e10, 1e11, 1e12])
    # Broadcasting: parameters on axis 0, points on axis 1.
    expanded = jax.tree.map(lambda v: v[:, None], batch)
    grid = np.asarray(ch.chinchilla_loss(expanded, N[None, :], D[None, :]))
    mapped = np.asarray(jax.vmap(lambda p: ch.chinchilla_loss(p, N, D))(batch))
    np.testing.assert_array_equal(grid, mapped)
    for i, p in enumerate((HOFFMANN, EPOCH)):
        np.testing.assert_allclose(grid[i], direct_loss(p, N, D), rtol=1e-13)


def test_loss_jit_does_not_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(p, N, D):
        return ch.chinchilla_loss(p, N, D)

    for scale in (1.0, 2.0, 3.0):
        p = ch.ChinchillaParams(**{k: v * scale for k, v in HOFFMANN.items()})
        f(p, jnp.array([1e9 * scale]), jnp.array([1e11]))


def test_gradients_match_finite_differences():
    params = ch.ChinchillaParams(**HOFFMANN)
    # Parameters in log scale for N and D so that finite differences are well scaled.
    f = jax.jit(lambda p, log_n, log_d: ch.chinchilla_loss(p, jnp.exp(log_n), jnp.exp(log_d)))
    args = (params, jnp.array([18.0, 21.0]), jnp.array([22.0, 25.0]))
    check_grads(f, args, order=1, modes=("fwd", "rev"), eps=1e-5, atol=1e-7, rtol=1e-6)
    # The gradient in A is N^-alpha, in E it is 1.
    g = jax.jit(jax.grad(lambda p: ch.chinchilla_loss(p, 1e9, 1e11)))(params)
    np.testing.assert_allclose(float(g.E), 1.0, rtol=1e-14)
    np.testing.assert_allclose(float(g.A), 1e9 ** -0.34, rtol=1e-12)


@pytest.mark.parametrize("transform", ["eager", "jit", "vmap"])
def test_loss_rejects_bad_inputs_under_transformations(transform):
    params = ch.ChinchillaParams(**HOFFMANN)
    f = lambda N: ch.chinchilla_loss(params, N, 1e10)  # noqa: E731
    if transform == "jit":
        f = jax.jit(f)
    elif transform == "vmap":
        f = jax.vmap(f)
    N = jnp.array([1e9, -1.0]) if transform == "vmap" else jnp.asarray(-1.0)
    with pytest.raises(Exception, match="N must be > 0"):
        jax.block_until_ready(f(N))
    bad = ch.ChinchillaParams(**{**HOFFMANN, "E": -1.0})
    with pytest.raises(Exception, match="E, A and B must be >= 0"):
        jax.block_until_ready(jax.jit(ch.chinchilla_loss)(bad, 1e9, 1e10))


def test_params_dict_round_trip_and_errors():
    p = ch.ChinchillaParams(**HOFFMANN)
    assert ch.ChinchillaParams.from_dict(p.to_dict()).to_dict() == HOFFMANN
    with pytest.raises(ValueError, match="missing Chinchilla parameter.*beta"):
        ch.ChinchillaParams.from_dict({k: v for k, v in HOFFMANN.items() if k != "beta"})
    with pytest.raises(ValueError, match="'A' must be a number"):
        ch.ChinchillaParams.from_dict({**HOFFMANN, "A": "big"})
    with pytest.raises(ValueError, match="must broadcast"):
        ch.ChinchillaParams(E=np.ones(2), A=np.ones(3), B=1.0, alpha=1.0, beta=1.0)
    with pytest.raises(ValueError, match="real-valued"):
        ch.ChinchillaParams(E=1j, A=1.0, B=1.0, alpha=1.0, beta=1.0)


# ---------------------------------------------------------------------------
# Compute-optimal allocation.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("p", [HOFFMANN, EPOCH, dict(E=1.0, A=50.0, B=5e4, alpha=0.6, beta=0.25)])
@pytest.mark.parametrize("C", [1e18, 1e21, 5.76e23])
def test_compute_optimal_is_argmin_on_isoflop_curve(p, C):
    N_opt, D_opt = ch.chinchilla_compute_optimal(ch.ChinchillaParams(**p), C)
    N_opt, D_opt = float(N_opt), float(D_opt)
    assert rel(6 * N_opt * D_opt, C) < 1e-12
    # Brute force over a fine log grid of N on the curve 6 N D = C, in NumPy.
    log_n = np.linspace(np.log(N_opt) - 5, np.log(N_opt) + 5, 200_001)
    N = np.exp(log_n)
    best = log_n[np.argmin(direct_loss(p, N, C / (6 * N)))]
    spacing = log_n[1] - log_n[0]
    assert abs(best - np.log(N_opt)) <= 2 * spacing


@settings(max_examples=50)
@given(E=log_uniform(0.1, 10), A=log_uniform(1, 1e5), B=log_uniform(1, 1e5),
       alpha=st.floats(0.05, 2.0), beta=st.floats(0.05, 2.0), C=log_uniform(1e15, 1e27))
def test_compute_optimal_first_order_condition(E, A, B, alpha, beta, C):
    p = ch.ChinchillaParams(E=E, A=A, B=B, alpha=alpha, beta=beta)
    N, D = (float(v) for v in ch.chinchilla_compute_optimal(p, C))
    assert rel(6 * N * D, C) < 1e-12
    # Lagrange: alpha A N^-alpha = beta B D^-beta (d/dlogN of the loss along the curve is 0).
    assert rel(alpha * A * N**-alpha, beta * B * D**-beta) < 1e-10


# ---------------------------------------------------------------------------
# Fitting.
# ---------------------------------------------------------------------------


def test_fit_recovers_noiseless_parameters(noiseless_fit):
    fit, _ = noiseless_fit
    assert fit.converged and fit.loss == "huber" and fit.num_refined == DEFAULT_SCREEN
    assert fit.num_starts == 5400  # the grid, screened
    assert fit.objective < 1e-15 and np.max(np.abs(fit.residuals)) < 1e-8
    got = as_dict(fit.params)
    for name in NAMES:
        assert rel(got[name], HOFFMANN[name]) < 1e-3, (name, got[name])
    # Held-out predictions, in range and far out of it (Chinchilla, 70B on 1.4T tokens).
    N = np.array([3e8, 2e9, 7e10, 1e12])
    D = np.array([7e9, 5e10, 1.4e12, 2e13])
    pred = np.asarray(ch.chinchilla_loss(fit.params, N, D))
    assert np.all(rel(pred, direct_loss(HOFFMANN, N, D)) < 1e-3)
    assert fit.start_values.shape == (fit.num_refined,)
    assert fit.start_params.shape == (fit.num_refined,)


def test_fit_is_deterministic(noiseless_fit):
    first, L = noiseless_fit
    noisy = L * np.exp(0.01 * np.random.default_rng(3).standard_normal(L.shape))
    a = ch.fit_chinchilla(N_GRID, D_GRID, noisy)
    b = ch.fit_chinchilla(N_GRID, D_GRID, noisy)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if not isinstance(x, float):  # wall_time differs
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a.objective == b.objective and a.params.to_dict() == b.params.to_dict()


def test_fit_mse_objective_user_starts_and_progress():
    L = direct_loss(HOFFMANN, N_GRID, D_GRID)
    starts = ch.ChinchillaParams(E=[2.0, 1.0], A=[1e3, 1e2], B=[1e3, 1e2], alpha=[0.5, 0.3],
                                 beta=[0.5, 0.3])
    calls = []
    fit = ch.fit_chinchilla(N_GRID, D_GRID, L, objective="mse", starts=starts,
                            progress=lambda done, total, values: calls.append(values.shape))
    assert fit.loss == "mse" and fit.num_refined == 2 and fit.converged
    assert calls and calls[0] == (2,)
    for name in NAMES:
        assert rel(float(getattr(fit.params, name)), HOFFMANN[name]) < 1e-3


def test_fit_weights_zero_drops_points(noiseless_fit):
    _, L = noiseless_fit
    corrupted = L.copy()
    corrupted[[3, 17]] *= 1.5  # two gross outliers, then weighted out
    w = np.ones_like(L)
    w[[3, 17]] = 0.0
    fit = ch.fit_chinchilla(N_GRID, D_GRID, corrupted, weights=w)
    for name in NAMES:
        assert rel(float(getattr(fit.params, name)), HOFFMANN[name]) < 1e-3
    assert abs(float(fit.residuals[3])) > 0.3  # the outlier is left unexplained
    # The bootstrap keeps them out too: every resample fits the rest exactly.
    boot = ch.bootstrap_chinchilla(N_GRID, D_GRID, corrupted, weights=w, num_samples=100,
                                   fit=fit)
    for name in NAMES:
        lo, hi = boot.intervals[name]
        assert rel(lo, HOFFMANN[name]) < 1e-3 and rel(hi, HOFFMANN[name]) < 1e-3, name


@pytest.mark.skipif(not DATA.exists(), reason=REASON_NO_DATA)
def test_epoch_data_fit():
    N, D, loss = load_epoch()
    assert N.shape == (245,)
    # Epoch AI's fit drops the 5 highest-loss points (outliers at 1e19 FLOP, see the
    # module docstring); weight 0 does the same with the same shapes.
    keep = np.ones(245)
    keep[np.argsort(-loss, kind="stable")[:5]] = 0.0
    fit = ch.fit_chinchilla(N, D, loss, weights=keep)
    got = as_dict(fit.params)
    assert fit.converged and fit.wall_time < 60
    for name, (lo, hi) in EPOCH_CI.items():
        assert lo <= got[name] <= hi, (name, got[name])
    # The values reported from Epoch AI's notebook (third-party quote).
    notebook = dict(A=477.84171, B=2143.8638, alpha=0.34731266, beta=0.36718262)
    for name, value in notebook.items():
        assert rel(got[name], value) < 1e-3, (name, got[name])
    # All 245 points: the minimum of the same objective, checked independently with
    # SciPy's L-BFGS-B (tight tolerance, every grid start): lower than at Epoch AI's
    # and Hoffmann's published points.
    full = ch.fit_chinchilla(N, D, loss)
    scipy_min = dict(E=1.89134, A=495.74, B=12846.0, alpha=0.349314, beta=0.453050)
    for name, value in scipy_min.items():
        assert rel(as_dict(full.params)[name], value) < 1e-3, name
    assert abs(full.objective - 1.8260105e-3) < 1e-9
    for published in (EPOCH, HOFFMANN):
        r = np.log(direct_loss(published, N, D)) - np.log(loss)
        assert full.objective < np.sum(scipy.special.huber(1e-3, r))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(loss=[3.0, 2.9, 2.8, -1.0, 2.7, 2.6]), r"loss\[3\] = -1 must be finite and > 0"),
        (dict(loss=[3.0, 2.9, np.nan, 2.8, 2.7, 2.6]), r"loss\[2\] = nan must be finite"),
        (dict(N=[1e8, 0.5, 1e9, 3e9, 1e10, 3e10]), r"N\[1\] = 0.5 must be finite and >= 1"),
        (dict(D=[1e9, 1e10, 1e11, 1e9, np.inf, 1e11]), r"D\[4\] = inf must be finite"),
        (dict(D=[1e9, 1e10, 1e11]), r"D must have 6 entries, got 3"),
        (dict(N=[[1e8, 1e9]] * 3), r"N must be a 1-D array"),
        (dict(weights=[1, 1, 1, -2, 1, 1]), r"weights\[3\] = -2 must be finite and >= 0"),
        (dict(weights=[0.0] * 6), r"weights must have a positive sum"),
        (dict(weights=[1, 1, 1, 1, 0, 0]), r"at least 5 data points"),
        (dict(N=[1e9] * 6), r"degenerate design: N takes only 1 distinct value"),
        (dict(D=[1e10, 1e11] * 3), r"degenerate design: D takes only 2 distinct value"),
        (dict(objective="l1"), r"objective must be one of huber, mse"),
        (dict(delta=0.0), r"delta must be finite and > 0"),
        (dict(starts=np.ones((3, 4))), r"starts must be a ChinchillaParams or an array of shape"),
        (dict(screen=0), r"screen must be >= 1"),
    ],
)
def test_fit_input_errors(change, message):
    args = dict(N=[1e8, 3e8, 1e9, 3e9, 1e10, 3e10], D=[1e9, 1e10, 1e11, 1e9, 1e10, 1e11],
                loss=[3.0, 2.9, 2.8, 2.75, 2.7, 2.6])
    args.update(change)
    N, D, loss = args.pop("N"), args.pop("D"), args.pop("loss")
    with pytest.raises(ValueError, match=message):
        ch.fit_chinchilla(N, D, loss, **args)


def test_model_in_float32():
    with jax.enable_x64(False):
        p = ch.ChinchillaParams(**HOFFMANN)
        N, D = np.geomspace(1e6, 1e13, 8), np.geomspace(1e8, 1e15, 8)
        L = ch.chinchilla_loss(p, N.astype(np.float32), D.astype(np.float32))
        n_opt, _ = ch.chinchilla_compute_optimal(p, np.float32(5.76e23))
        assert L.dtype == jnp.float32 and n_opt.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(L), direct_loss(HOFFMANN, N, D), rtol=1e-5)
    n64, _ = ch.chinchilla_compute_optimal(ch.ChinchillaParams(**HOFFMANN), 5.76e23)
    assert rel(float(n_opt), float(n64)) < 1e-4


def test_too_few_points():
    with pytest.raises(ValueError, match="at least 5 data points.*got 4"):
        ch.fit_chinchilla([1e8, 1e9, 1e10, 1e11], [1e9, 1e10, 1e11, 1e12], [3, 2.5, 2.2, 2])


# ---------------------------------------------------------------------------
# Bootstrap.
# ---------------------------------------------------------------------------


def test_bootstrap_intervals_cover_the_truth():
    """80% intervals on 10 noisy data sets: coverage near 80%, widths near the true spread."""
    rng = np.random.default_rng(1)
    L0 = direct_loss(HOFFMANN, N_GRID, D_GRID)
    covered, widths, estimates = [], [], []
    held_out = (np.array([3e8, 3e9]), np.array([5e9, 1e11]))
    pred_covered = []
    for _ in range(10):
        L = L0 * np.exp(0.01 * rng.standard_normal(L0.shape))
        fit = ch.fit_chinchilla(N_GRID, D_GRID, L)
        boot = ch.bootstrap_chinchilla(N_GRID, D_GRID, L, num_samples=100, level=0.8, fit=fit)
        assert boot.failed == 0 and boot.samples.shape == (100,)
        covered.append([boot.intervals[n][0] <= HOFFMANN[n] <= boot.intervals[n][1]
                        for n in NAMES])
        widths.append([boot.intervals[n][1] - boot.intervals[n][0] for n in NAMES])
        estimates.append([float(getattr(fit.params, n)) for n in NAMES])
        lo, hi = boot.predict_interval(*held_out)
        pred_covered.append((lo <= direct_loss(HOFFMANN, *held_out)) & (direct_loss(
            HOFFMANN, *held_out) <= hi))
    covered = np.array(covered)
    assert 0.65 <= covered.mean() <= 0.95, covered.mean(axis=0)
    assert np.all(covered.mean(axis=0) >= 0.4)
    assert np.mean(pred_covered) >= 0.6
    # Not trivially wide: the typical width matches the spread of the estimates over
    # the 10 data sets (the 80% width of a normal, 2.56 standard deviations).
    spread = 2.563 * np.std(estimates, axis=0)
    ratio = np.median(widths, axis=0) / spread
    assert np.all((ratio > 0.4) & (ratio < 2.5)), ratio


def test_bootstrap_deterministic_and_errors(noiseless_fit):
    fit, L = noiseless_fit
    noisy = L * np.exp(0.01 * np.random.default_rng(5).standard_normal(L.shape))
    groups = np.repeat(np.arange(5), 5)  # resample whole model sizes
    kwargs = dict(num_samples=100, groups=groups)
    a = ch.bootstrap_chinchilla(N_GRID, D_GRID, noisy, **kwargs)
    b = ch.bootstrap_chinchilla(N_GRID, D_GRID, noisy, **kwargs)
    c = ch.bootstrap_chinchilla(N_GRID, D_GRID, noisy, seed=1, **kwargs)
    assert a.intervals == b.intervals
    np.testing.assert_array_equal(np.asarray(a.samples.E), np.asarray(b.samples.E))
    assert a.intervals != c.intervals
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        ch.bootstrap_chinchilla(N_GRID, D_GRID, noisy, level=1.0, fit=fit)
    with pytest.raises(ValueError, match="groups must have one label per point"):
        ch.bootstrap_chinchilla(N_GRID, D_GRID, noisy, groups=[0, 1], fit=fit)
    with pytest.raises(ValueError, match="fit used objective='huber'"):
        ch.bootstrap_chinchilla(N_GRID, D_GRID, noisy, objective="mse", fit=fit)
    with pytest.raises(ValueError, match=r"loss\[0\] = 0 must be"):
        ch.bootstrap_chinchilla(N_GRID, D_GRID, np.r_[0.0, noisy[1:]])


def test_predict_interval_brackets_the_fit(noiseless_fit):
    _, L = noiseless_fit
    noisy = L * np.exp(0.01 * np.random.default_rng(7).standard_normal(L.shape))
    fit = ch.fit_chinchilla(N_GRID, D_GRID, noisy)
    boot = ch.bootstrap_chinchilla(N_GRID, D_GRID, noisy, num_samples=100, fit=fit)
    N = np.array([[1e8], [1e9], [1e10]])
    D = np.array([[2e9, 2e10, 2e11]])
    lo, hi = boot.predict_interval(N, D)
    assert lo.shape == hi.shape == (3, 3)
    pred = np.asarray(ch.chinchilla_loss(fit.params, N, D))
    assert np.all(lo < hi)
    assert np.all((lo <= pred) & (pred <= hi))
    # Marking a sample failed (NaN) removes it without breaking the interval.
    samples = jax.tree.map(lambda v: v.at[0].set(jnp.nan), boot.samples)
    partial = eqx.tree_at(lambda b: b.samples, boot, samples)
    lo2, hi2 = partial.predict_interval(N, D)
    assert np.all(np.isfinite(lo2) & np.isfinite(hi2))
