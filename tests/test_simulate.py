"""The closed form against Monte-Carlo SGD on a finite noisy quadratic.

`nqs_engine.simulate_sgd` runs SGD seed by seed; its mean loss over 4096 seeds
must lie within 3 standard errors of `nqs_engine.risk`, term by term, and a
closed form that is wrong by a modest amount must lie far outside. Keys are
fixed, so every test is deterministic.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import nqs_engine as nqs

NUM_SEEDS = 4096
Z_MAX = 3.0  # |MC mean - closed form| / stderr allowed for a correct closed form
N = 64

# name -> (params, B, K, lr, key seed). Together about 900 SGD steps of 4096 seeds x 64.
CONFIGS = {
    # bias and variance both visible; lr * Q = 1
    "balanced": (dict(p=1.5, q=1.0, P=2.0, Q=1.0, e_irr=0.5, R=1.0, r=1.0), 16.0, 100, 1.0, 0),
    # lr * Q = 1.9: the top direction oscillates, a = -0.9, and its noise is amplified
    "edge-of-stability": (
        dict(p=1.3, q=1.5, P=3.0, Q=0.95, e_irr=0.3, R=2.0, r=1.5), 32.0, 300, 2.0, 1),
    # B = 1 and large R: the variance is 99.9% of the excess risk
    "noise-dominated": (
        dict(p=1.2, q=1.5, P=1.0, Q=1.0, e_irr=0.1, R=20.0, r=0.5), 1.0, 500, 1.0, 2),
    # the published fit at the default lr (lr * Q = 1.77), few steps
    "pythia-preset": (nqs.PRESETS["pythia-owt2"], 8.0, 20, nqs.DEFAULT_LR, 3),
    # no step: the loss is e_irr + (1/2) P zeta(p, 1), all of it bias and approximation
    "no-steps": (dict(p=1.5, q=1.0, P=2.0, Q=1.0, e_irr=0.5, R=1.0, r=1.0), 16.0, 0, 1.999, 4),
}


@pytest.fixture(autouse=True)
def _float64():
    """Float64 even when this module runs without the suite's conftest."""
    with jax.enable_x64(True):
        yield


def _params(values):
    return nqs.NQSParams.from_dict(values)


@functools.lru_cache(maxsize=None)
def _simulation(name):
    values, B, K, lr, seed = CONFIGS[name]
    with jax.enable_x64(True):
        sim = nqs.simulate_sgd(
            _params(values), N, B, K, lr=lr, key=jax.random.key(seed), num_seeds=NUM_SEEDS
        )
    assert sim.losses.dtype == jnp.float64
    return sim


def _z(mean, stderr, expected):
    return float((mean - expected) / stderr)


def _z_scores(sim, exact):
    """(total, bias, variance) z-scores of a simulation against a RiskBreakdown."""
    return (
        _z(sim.mean, sim.stderr, exact.total),
        _z(sim.excess_bias_mean, sim.excess_bias_stderr, exact.bias),
        _z(sim.excess_variance_mean, sim.excess_variance_stderr, exact.variance),
    )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_monte_carlo_matches_closed_form(name):
    values, B, K, lr, _ = CONFIGS[name]
    sim = _simulation(name)
    exact = nqs.risk(_params(values), N, B, K, lr=lr)
    z_total, z_bias, z_var = _z_scores(sim, exact)
    if K == 0:
        # No noise was ever added: the variance is exactly zero on both sides.
        assert float(exact.variance) == 0.0
        assert float(sim.excess_variance_mean) == 0.0
        assert float(sim.excess_variance_stderr) == 0.0
        z_var = 0.0
        p, P = values["p"], values["P"]
        assert float(exact.total) == pytest.approx(
            values["e_irr"] + 0.5 * P * scipy.special.zeta(p, 1.0), rel=1e-12
        )
    assert abs(z_total) < Z_MAX, (name, z_total, float(sim.mean), float(exact.total))
    assert abs(z_bias) < Z_MAX, (name, z_bias, float(sim.excess_bias_mean), float(exact.bias))
    assert abs(z_var) < Z_MAX, (name, z_var, float(sim.excess_variance_mean), float(exact.variance))
    # The Monte-Carlo error is small enough for the comparison to mean something.
    assert float(sim.stderr / sim.mean) < 0.01


def test_components_add_up():
    """The loss splits as e_irr + e_appx + bias + variance + a mean-zero cross term."""
    values, B, K, lr, _ = CONFIGS["balanced"]
    sim = _simulation("balanced")
    e_appx = 0.5 * values["P"] * scipy.special.zeta(values["p"], N + 1.0)
    parts = values["e_irr"] + e_appx + sim.excess_bias_mean + sim.excess_variance_mean
    assert abs(float(sim.mean - parts)) < Z_MAX * float(sim.stderr)
    assert float(jnp.mean(sim.losses)) == pytest.approx(float(sim.mean), rel=1e-14)
    assert float(jnp.std(sim.losses, ddof=1)) / np.sqrt(NUM_SEEDS) == pytest.approx(
        float(sim.stderr), rel=1e-12
    )


@pytest.mark.parametrize(
    "name, wrong, component",
    [
        # The brief's power check: the closed form with B doubled halves the variance.
        ("noise-dominated", dict(B=2.0), "total"),
        ("noise-dominated", dict(B=1.1), "variance"),
        ("edge-of-stability", dict(lr=1.9), "total"),
        ("balanced", dict(K=110), "bias"),
    ],
)
def test_wrong_closed_form_is_rejected(name, wrong, component):
    """The test has power: a closed form wrong by 5-100% in B, lr or K lies outside."""
    values, B, K, lr, _ = CONFIGS[name]
    args = dict(B=B, K=K, lr=lr) | wrong
    sim = _simulation(name)
    exact = nqs.risk(_params(values), N, args["B"], args["K"], lr=args["lr"])
    z = dict(zip(("total", "bias", "variance"), _z_scores(sim, exact)))[component]
    assert abs(z) > 3 * Z_MAX, (name, wrong, component, z)


def _schedule_closed_form(values, n_max, lrs, batches, steps):
    """SPEC section 1's per-direction recursion over segments, summed in numpy."""
    p, q, P, Q, e_irr, R, r = (values[k] for k in nqs.PARAM_NAMES)
    n = np.arange(1, n_max + 1, dtype=np.float64)
    lam = Q * n**-q
    b, v = np.ones_like(n), np.zeros_like(n)
    for gamma, batch, k in zip(lrs, batches, steps):
        a2 = (1 - gamma * lam) ** 2
        b = b * a2**k
        v = v * a2**k + gamma**2 / batch * (1 - a2**k) / (1 - a2)
    bias = np.sum(0.5 * P * n**-p * b)
    variance = np.sum(0.5 * lam * R * n**-r * v)
    approx = 0.5 * P * scipy.special.zeta(p, n_max + 1.0)
    return e_irr + approx + bias + variance, bias, variance


def test_schedule_matches_closed_form():
    """A warm-up, a peak and a decay with a growing batch, against SPEC's recursion."""
    values = CONFIGS["balanced"][0]
    lrs, batches, steps = [0.5, 1.9, 0.2], [4.0, 8.0, 32.0], [20, 60, 40]
    sim = nqs.simulate_sgd(
        _params(values), N, None, None, segments=(lrs, batches, steps), key=jax.random.key(5)
    )
    total, bias, variance = _schedule_closed_form(values, N, lrs, batches, steps)
    assert abs(_z(sim.mean, sim.stderr, total)) < Z_MAX
    assert abs(_z(sim.excess_bias_mean, sim.excess_bias_stderr, bias)) < Z_MAX
    assert abs(_z(sim.excess_variance_mean, sim.excess_variance_stderr, variance)) < Z_MAX
    # ... and not against the same schedule without its final decay
    wrong, _, _ = _schedule_closed_form(values, N, lrs[:2], batches[:2], steps[:2])
    assert abs(_z(sim.mean, sim.stderr, wrong)) > 3 * Z_MAX


def test_segments_reproduce_constant_run_exactly():
    """A constant run split into segments draws the same numbers: identical losses."""
    params = _params(CONFIGS["balanced"][0])
    key = jax.random.key(6)
    one = nqs.simulate_sgd(params, N, 16.0, 30, lr=1.0, key=key)
    again = nqs.simulate_sgd(params, N, 16.0, 30, lr=1.0, key=key)
    split = nqs.simulate_sgd(
        params, N, None, None, segments=([1.0, 1.0, 1.0], [16.0] * 3, [10, 0, 20]), key=key
    )
    other = nqs.simulate_sgd(params, N, 16.0, 30, lr=1.0, key=jax.random.key(7))
    np.testing.assert_array_equal(np.asarray(one.losses), np.asarray(again.losses))
    np.testing.assert_allclose(np.asarray(split.losses), np.asarray(one.losses), rtol=1e-14)
    assert not np.allclose(np.asarray(other.losses), np.asarray(one.losses))


def test_float32():
    """Without x64 the simulation runs, and agrees, in float32."""
    params = nqs.NQSParams(p=1.5, q=1.0, P=2.0, Q=1.0, e_irr=0.5, R=1.0, r=1.0)
    with jax.enable_x64(False):
        sim = nqs.simulate_sgd(params, 16, 4.0, 20, key=jax.random.key(8), num_seeds=512)
    assert sim.losses.dtype == jnp.float32
    # (numpy's closed form here: `risk` is checked above and compiling it again
    # for float32 would double this test's time)
    total, _, _ = _schedule_closed_form(_GOOD, 16, [nqs.DEFAULT_LR], [4.0], [20])
    assert abs(_z(sim.mean, sim.stderr, total)) < Z_MAX


_GOOD = dict(p=1.5, q=1.0, P=2.0, Q=1.0, e_irr=0.5, R=1.0, r=1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(N=0), "N .* positive"),
        (dict(N=64.0), "N .* positive Python int"),
        (dict(N=True), "N .* positive Python int"),
        (dict(K=-1), "K .* non-negative"),
        (dict(K=10.0), "K .* non-negative Python int"),
        (dict(num_seeds=1), "num_seeds"),
        (dict(B=0.0), "batch sizes must be > 0"),
        (dict(B=float("nan")), r"B\[0\] = nan must be finite"),
        (dict(lr=2.0), "lr \\* Q = 2 >= 2"),
        (dict(lr=-0.1), "step size lr"),
        (dict(params=dict(_GOOD, p=0.9)), "parameter p"),
        (dict(params=dict(_GOOD, Q=2.5)), "diverges"),  # lr = 1.999 by default
        (dict(segments=([1.0], [4.0], [10])), "either"),
        (dict(B=None, K=None, segments=([1.0, 1.0], [4.0], [5, 5])), "2 entries"),
        (dict(B=None, K=None, segments=([1.0], [4.0], [5.5])), "non-negative Python ints"),
        (dict(B=None, K=None, segments=([], [], [])), "non-empty"),
        (dict(B=None, K=None, segments=([1.0, 2.1], [4.0, 4.0], [5, 5])), "diverges"),
        (dict(B=None, K=None), "B and K are required"),
    ],
)
def test_invalid_inputs_raise(kwargs, match):
    args = dict(params=_GOOD, N=8, B=4.0, K=10, num_seeds=4)
    args |= kwargs
    args["params"] = _params(args["params"])
    with pytest.raises(ValueError, match=match):
        nqs.simulate_sgd(**args, key=jax.random.key(0))


def test_batched_params_and_traced_inputs_raise():
    batched = nqs.NQSParams(p=jnp.array([1.5, 2.0]), q=1.0, P=2.0, Q=1.0, e_irr=0.5, R=1.0, r=1.0)
    with pytest.raises(ValueError, match="one parameter set"):
        nqs.simulate_sgd(batched, 8, 4.0, 10, key=jax.random.key(0), num_seeds=4)
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda lr: nqs.simulate_sgd(_params(_GOOD), 8, 4.0, 10, lr=lr,
                                            key=jax.random.key(0), num_seeds=4).mean)(1.0)
