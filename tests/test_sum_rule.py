"""The sum rule graded at the crossover (145 evaluations) against independent references.

`tests/test_risk.py` checks the default rule against brute-force sums over every
direction for N <= 1e6. Here: brute force where the crossover lies deep in the
tail (N of a few million, long runs), and, for N up to 1e12 where brute force is
out of reach, a uniform rule four times finer than the old default (256 panels
of 16 nodes, 4,000 evaluations) that does not use the crossover at all.
"""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import nqs_engine as nqs
from nqs_engine._quadrature import Crossover, SumRule, sum_directions

from helpers import brute_force_schedule, brute_force_terms, log_uniform, thetas

FINE = SumRule(panels=256, nodes=16, crossover_panels=0)
OLD = SumRule(64, 32, 12, 6, crossover_panels=0)


def _params(theta):
    return nqs.NQSParams(**{k: np.float64(v) for k, v in theta.items()})


def test_the_default_rule_and_its_cost():
    rule = nqs.SumRule()
    assert (rule.num_evaluations, rule.uniform_evaluations, OLD.num_evaluations) == (145, 465, 461)


@pytest.mark.parametrize("q, K", [(0.5, 1e6), (1.2, 3e5), (2.5, 1e7)])
def test_brute_force_with_the_crossover_deep_in_the_tail(q, K):
    """N = 3e6 directions, runs long enough that 2 lr lambda_n K = 1 lies far past the head."""
    theta = dict(p=1.3, q=q, P=2.0, Q=0.9, e_irr=0.3, R=5.0, r=1.4)
    lr, N, B = 1.9, 3e6, 64.0
    ref = np.array(brute_force_terms(N, theta, K, B, lr))
    ours = nqs.risk(_params(theta), N, B, K, lr=lr)
    got = np.array([float(getattr(ours, f)) for f in ("irreducible", "approximation", "bias",
                                                       "variance", "total")])
    assert np.all(np.abs(got - ref) <= 1e-12 * ref[4])


@settings(max_examples=30, deadline=None)
@given(theta=thetas(), edge=st.floats(1e-3, 1.999), N=log_uniform(1e7, 1e12),
       K=log_uniform(1.0, 1e7), B=log_uniform(1.0, 1e4))
def test_huge_n_matches_a_much_finer_uniform_rule(theta, edge, N, K, B):
    lr = edge / theta["Q"]
    params = _params(theta)
    try:
        fine = nqs.risk(params, N, B, K, lr=lr, rule=FINE)
    except Exception:  # the fine rule's head must hold the kink too; skip where it cannot
        return
    ours = nqs.risk(params, N, B, K, lr=lr)
    total = float(fine.total)
    for f in ("bias", "variance", "total"):
        assert abs(float(getattr(ours, f)) - float(getattr(fine, f))) <= 1e-11 * total, f


def test_random_schedules_match_brute_force():
    """Three to six segments of random step sizes, batches and lengths, N = 2e6."""
    rng = np.random.default_rng(7)
    theta = dict(p=1.2, q=0.7, P=3.0, Q=0.9, e_irr=0.3, R=8.0, r=2.0)
    for _ in range(4):
        S = int(rng.integers(3, 7))
        mult = rng.uniform(0.0, 1.0, S)
        mult[rng.integers(S)] = 1.0
        batch = 2.0 ** rng.integers(4, 10, S)
        steps = np.floor(10 ** rng.uniform(1, 5, S))
        lr, N = 1.9, 2e6
        sched = nqs.Schedule(mult, batch, steps)
        ours = nqs.schedule_risk(_params(theta), N, sched, lr=lr)
        bias, var = brute_force_schedule(N, theta, list(zip(mult, batch, steps)), lr)
        total = float(ours.total)
        assert abs(float(ours.bias) - bias) <= 1e-12 * total
        assert abs(float(ours.variance) - var) <= 1e-12 * total


def test_gradients_equal_the_fine_rules():
    """The panels move with the crossover under stop_gradient: the derivative of the rule
    is the rule of the derivative, and matches the fine uniform rule's."""
    theta = dict(p=1.11, q=0.58, P=3.4, Q=0.89, e_irr=0.35, R=8.4, r=2.6)

    def loss(x, rule):
        p = nqs.NQSParams(*(x[i] for i in range(7)))
        return nqs.risk(p, 3e9, 256.0, 2e4, lr=1.999, rule=rule).total

    x = jnp.asarray([theta[k] for k in ("p", "q", "P", "Q", "e_irr", "R", "r")])
    g = jax.grad(loss)(x, nqs.SumRule())
    g_fine = jax.grad(loss)(x, FINE)
    np.testing.assert_allclose(g, g_fine, rtol=1e-9, atol=1e-13)
    # ... and finite differences of the default rule in Q (central, float64).
    h = 1e-6
    dq = (loss(x.at[3].add(h), nqs.SumRule()) - loss(x.at[3].add(-h), nqs.SumRule())) / (2 * h)
    np.testing.assert_allclose(g[3], dq, rtol=1e-6)


def test_a_misplaced_crossover_still_gives_a_valid_rule():
    """Only the panels' placement depends on the crossover: a wrong one costs accuracy,
    not correctness (more panels converge to the same sum)."""
    def f(u, tail):
        return jnp.exp((1.0 if tail else 0.0) * u - 1.5 * u - 1e4 * jnp.exp(-u))

    N = jnp.asarray(1e9)
    exact = sum_directions(f, N, SumRule(panels=512, nodes=16, crossover_panels=0))
    wrong = Crossover(jnp.log(30.0), jnp.log(30.0), jnp.asarray(1.0))
    many = sum_directions(f, N, SumRule(crossover_panels=64), wrong)
    assert abs(float(many / exact) - 1) < 1e-10
    right = Crossover(jnp.log(2e4), jnp.log(2e4), jnp.asarray(1.0))
    assert abs(float(sum_directions(f, N, SumRule(), right) / exact) - 1) < 1e-10


def test_below_the_head_the_sum_is_exact():
    theta = dict(p=1.5, q=0.8, P=2.0, Q=0.9, e_irr=0.1, R=3.0, r=1.0)
    for N in (1.0, 7.0, 63.0, 63.9):
        ref = np.array(brute_force_terms(N, theta, 500.0, 32.0, 1.5))
        ours = nqs.risk(_params(theta), N, 32.0, 500.0, lr=1.5)
        assert abs(float(ours.total) - ref[4]) <= 1e-14 * ref[4]
