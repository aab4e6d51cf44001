"""Schedules (issue #6): the closed form against brute force, its laws, Monte-Carlo SGD,
the weight-norm variant, the constructors, errors, gradients and tracing.

Compilation dominates the cost of this file, so evaluations share a few program
shapes: scalar configurations with schedules padded to `PAD` segments (unrolled)
or to `LONG_PAD` segments (scanned), constant schedules for the weight-norm
variant, and one jitted gradient function per risk.
"""

import csv
import os

import chex
import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special
from hypothesis import given, settings

import nqs_engine as nqs
from helpers import (
    DATA,
    REASON_NO_DATA,
    as_array,
    brute_force_schedule,
    brute_force_weight_norm,
    log_uniform,
    rel_err,
    thetas,
)

PAD = 16  # <= 16 segments are unrolled: every short schedule is padded to this
LONG_PAD = 2000  # > 16 segments are scanned: every long schedule is padded to this



def make_schedule(segments, pad=PAD):
    """A Schedule from [(multiplier, B, k), ...], padded with zero-step segments.

    Pads as `Schedule.pad` does (the last multiplier and batch size, no steps;
    checked in `test_truncate_and_pad`) but in NumPy: eager JAX ops compile once
    per shape, and hypothesis draws many segment counts.
    """
    last_mult, last_batch, _ = segments[-1]
    filler = [(last_mult, last_batch, 0.0)] * (pad - len(segments))
    mult, batch, steps = (np.array(c, dtype=np.float64) for c in zip(*segments, *filler))
    return nqs.Schedule(mult, batch, steps)


def pad_schedule(sched, pad):
    """`make_schedule` of an unbatched Schedule."""
    columns = (np.asarray(a).tolist() for a in (sched.lr, sched.batch, sched.steps))
    return make_schedule(list(zip(*columns)), pad)


def truth(N, theta, segments, lr):
    """(e_irr, e_appx, bias, variance, total) by brute force over every direction."""
    bias, var = brute_force_schedule(N, theta, segments, lr)
    approx = 0.5 * theta["P"] * scipy.special.zeta(theta["p"], N + 1.0)
    return np.array([theta["e_irr"], approx, bias, var, theta["e_irr"] + approx + bias + var])


def truth_weight_norm(N, theta, segments, lr, init_sq_norm=None):
    bias, var = brute_force_weight_norm(N, theta, segments, lr, init_sq_norm=init_sq_norm)
    approx = 0.5 * theta["P"] * scipy.special.zeta(theta["p"], N + 1.0)
    return theta["e_irr"] + approx + bias + var


def assert_terms_close(ours, ref, rtol):
    """Total to `rtol` relative; each term to `rtol` of the total (a term may be ~1e-300)."""
    assert rel_err(ours[4], ref[4]) <= rtol, (ours, ref)
    assert np.all(np.abs(ours - ref) <= rtol * abs(ref[4])), (ours, ref)


# ---------------------------------------------------------------------------
# Strategies: the parameter domain and stable schedules of 1..40 segments.
# ---------------------------------------------------------------------------


# gamma * Q of a segment: near 0, 1/2, 1 (a = 0), the edge of stability.
EDGES = st.one_of(st.sampled_from([1e-3, 0.5, 1.0, 1.999]), st.floats(1e-3, 1.999))
# ... and of the peak step size, which may itself be unstable (multipliers < 1).
PEAKS = st.one_of(st.sampled_from([1e-3, 0.5, 1.0, 1.999, 2.5]), st.floats(1e-3, 3.0))
# Real-valued k too, but no subnormal ones: XLA on CPU flushes them to zero.
STEPS = st.one_of(st.just(0.0), log_uniform(1.0, 1e5).map(np.floor), st.floats(1e-3, 100.0))


@st.composite
def scheduled_configs(draw, min_segments=1, max_segments=PAD, max_n=1e6):
    """(theta, peak lr, N, [(multiplier, B, k), ...]) with multiplier * lr * Q < 2."""
    theta = draw(thetas())
    peak = draw(PEAKS)
    lr = peak / theta["Q"]
    S = draw(st.integers(min_segments, max_segments))
    seg_edges = draw(st.lists(st.one_of(st.just(0.0), EDGES), min_size=S, max_size=S))
    batches = draw(st.lists(log_uniform(1.0, 1e4), min_size=S, max_size=S))
    steps = draw(st.lists(STEPS, min_size=S, max_size=S))
    N = float(np.floor(draw(log_uniform(1.0, max_n))))
    segments = [(e / peak, b, k) for e, b, k in zip(seg_edges, batches, steps)]
    return theta, lr, N, segments


# ---------------------------------------------------------------------------
# 1. Accuracy against the brute-force recursion over every direction.
# ---------------------------------------------------------------------------


@settings(max_examples=20)
@given(scheduled_configs())
def test_unrolled_schedules_match_brute_force(cfg):
    theta, lr, N, segments = cfg
    out = nqs.schedule_risk(nqs.NQSParams(**theta), N, make_schedule(segments), lr=lr)
    assert_terms_close(as_array(out), truth(N, theta, segments, lr), 1e-10)


@settings(max_examples=12)
@given(scheduled_configs(min_segments=20, max_segments=40, max_n=1e5))
def test_scanned_schedules_match_brute_force(cfg):
    """More than 16 segments run as a lax.scan."""
    theta, lr, N, segments = cfg
    out = nqs.schedule_risk(nqs.NQSParams(**theta), N, make_schedule(segments, LONG_PAD), lr=lr)
    assert_terms_close(as_array(out), truth(N, theta, segments, lr), 1e-10)


def test_fraction_of_a_step_at_a_equals_zero():
    """Regression: |a| = |1 - lr * lambda| was clamped at 2.2e-308, so a^(2k) = 0 came out
    as 2.2e-308^(2k) = 1.6e-5 for k = 2^-7 (bias 7.8e-6 instead of 0, variance 0.4999922)."""
    params = nqs.NQSParams(p=2.0, q=1.0, P=1.0, Q=1.0, e_irr=1.0, R=1.0, r=1.0)
    for k, pad in ((2.0**-7, 1), (2.0**-7, PAD), (0.0, PAD), (3.0, PAD)):
        sched = make_schedule([(1.0, 1.0, k)], pad) if pad > 1 else nqs.Schedule.constant(k, 1.0)
        out = nqs.schedule_risk(params, 1.0, sched, lr=1.0)
        # one direction, a = 0: a^(2k) = 0 and (1 - a^(2k)) / (1 - a^2) = 1 for every k > 0
        assert float(out.bias) == (0.5 if k == 0 else 0.0)
        assert float(out.variance) == pytest.approx(0.0 if k == 0 else 0.5, rel=1e-14)


# ---------------------------------------------------------------------------
# 2. Laws.
# ---------------------------------------------------------------------------


@settings(max_examples=15)
@given(scheduled_configs(max_segments=1, max_n=1e12))
def test_one_segment_is_constant_risk(cfg):
    theta, lr, N, [(mult, B, K)] = cfg
    params = nqs.NQSParams(**theta)
    ref = as_array(nqs.risk(params, N, B, K, lr=lr * mult))
    one = as_array(nqs.schedule_risk(params, N, nqs.Schedule.constant(K, B, lr=mult), lr=lr))
    padded = as_array(nqs.schedule_risk(params, N, make_schedule([(mult, B, K)]), lr=lr))
    assert_terms_close(one, ref, 1e-13)
    assert_terms_close(padded, ref, 1e-13)


@settings(max_examples=15)
@given(scheduled_configs(max_segments=PAD - 1, max_n=1e12), st.data())
def test_splitting_a_segment_leaves_the_risk_unchanged(cfg, data):
    theta, lr, N, segments = cfg
    i = data.draw(st.integers(0, len(segments) - 1))
    mult, B, k = segments[i]
    first = data.draw(st.one_of(st.floats(0.0, 1.0).map(lambda f: f * k),
                                st.floats(0.0, 1.0).map(lambda f: float(np.floor(f * k)))))
    split = [*segments[:i], (mult, B, first), (mult, B, k - first), *segments[i + 1:]]
    params = nqs.NQSParams(**theta)
    whole = as_array(nqs.schedule_risk(params, N, make_schedule(segments), lr=lr))
    parts = as_array(nqs.schedule_risk(params, N, make_schedule(split), lr=lr))
    assert_terms_close(parts, whole, 1e-12)


NUM_CHECKPOINTS = 6  # every trajectory below has this many (one compiled program)


@settings(max_examples=10)
@given(scheduled_configs(min_segments=2, max_n=1e12), st.data())
def test_trajectory_equals_truncated_schedule_risk(cfg, data):
    theta, lr, N, segments = cfg
    sched = make_schedule(segments)
    K = float(sched.total_steps)
    ends = np.cumsum([k for _, _, k in segments])
    boundary = float(ends[data.draw(st.integers(0, len(segments) - 2))])
    inner = data.draw(st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3))
    checkpoints = np.array([0.0, boundary, K, *(f * K for f in inner)])
    checkpoints = checkpoints[data.draw(st.permutations(range(NUM_CHECKPOINTS)))]  # any order
    params = nqs.NQSParams(**theta)
    curve = as_array(nqs.trajectory(params, N, sched, checkpoints, lr=lr))
    assert curve.shape == (5, NUM_CHECKPOINTS)
    for j, k in enumerate(checkpoints):
        ref = as_array(nqs.schedule_risk(params, N, sched.truncate(k), lr=lr))
        assert_terms_close(curve[:, j], ref, 1e-12)


def test_checkpoints_inside_a_short_segment_after_a_long_run_lose_no_steps():
    """Regression (a draw of the test above): idle segments of 41,622 steps, then 0.001 steps
    at gamma * Q = 0.5, checkpoints inside that last segment and at its end. The pieces between
    checkpoints were differences of positions near 41,622, so they summed to 7e-12 steps short
    of 0.001, and the trajectory at the schedule's end was 2.9e-12 off its risk."""
    params = nqs.NQSParams(p=2.0, q=1.0, P=1.0, Q=1.0, e_irr=1e-3, R=1.0, r=1.0)
    steps = [5000.0, 6000.0, 4000.0, 7000.0, 5000.0, 4622.0, 5000.0, 5000.0, 1e-3]
    sched = make_schedule([(0.0, 64.0, k) for k in steps[:-1]] + [(500.0, 64.0, steps[-1])])
    K = float(sched.total_steps)
    checkpoints = np.array([0.0, 41622.0, K, K - 8.6e-4, K - 7e-5, 0.3 * K])
    curve = as_array(nqs.trajectory(params, 1.0, sched, checkpoints, lr=1e-3))
    assert_terms_close(curve[:, 2], as_array(nqs.schedule_risk(params, 1.0, sched, lr=1e-3)),
                       1e-15)
    for j, k in enumerate(checkpoints):
        ref = as_array(nqs.schedule_risk(params, 1.0, sched.truncate(k), lr=1e-3))
        assert_terms_close(curve[:, j], ref, 1e-14)


@settings(max_examples=8)
@given(scheduled_configs(min_segments=2, max_n=1e12), st.data())
def test_longer_trajectory_extends_shorter_one(cfg, data):
    """Appending segments to a schedule leaves its trajectory up to the old end unchanged."""
    theta, lr, N, segments = cfg
    j = data.draw(st.integers(1, len(segments) - 1))
    long, short = make_schedule(segments), make_schedule(segments[:j])
    K_long, K_short = float(long.total_steps), float(short.total_steps)
    fractions = data.draw(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4))
    checkpoints = np.array([K_short, K_long, *(f * K_long for f in fractions)])
    params = nqs.NQSParams(**theta)
    a = as_array(nqs.trajectory(params, N, long, checkpoints, lr=lr))
    b = as_array(nqs.trajectory(params, N, short, np.minimum(checkpoints, K_short), lr=lr))
    for c in range(NUM_CHECKPOINTS):
        if checkpoints[c] <= K_short:
            assert_terms_close(b[:, c], a[:, c], 1e-12)
        else:  # the short run has stopped: its value at K_short, the long run's at K_short
            assert_terms_close(b[:, c], a[:, 0], 1e-12)


@pytest.mark.parametrize("theta,N,B", [
    (dict(p=1.5, q=1.0, P=2.0, Q=1.0, e_irr=0.5, R=1.0, r=1.0), 100.0, 16.0),
    (dict(p=1.2, q=1.5, P=1.0, Q=0.8, e_irr=0.1, R=20.0, r=0.5), 300.0, 4.0),
])
def test_halving_the_step_after_a_plateau_lowers_the_loss(theta, N, B):
    params, lr = nqs.NQSParams(**theta), 1.0 / theta["Q"]
    K = 200.0 * N ** theta["q"]  # the slowest direction has lr * lambda_N * 0.8 K = 160
    const = make_schedule([(1.0, B, K)])
    decay = make_schedule([(1.0, B, 0.8 * K), (0.5, B, 0.2 * K)])
    end = nqs.schedule_risk(params, N, const, lr=lr)
    before = nqs.schedule_risk(params, N, const.truncate(0.8 * K), lr=lr)
    after = nqs.schedule_risk(params, N, decay, lr=lr)
    # the constant run has plateaued: the last 20% of its steps change nothing ...
    assert rel_err(end.total, before.total) <= 1e-12
    assert float(end.bias) <= 1e-12 * float(end.variance)
    # ... and halving the step lowers the noise floor: variance 1/3 to 1/2 of it
    assert float(after.total) < float(end.total)
    ratio = float(after.variance / end.variance)
    assert 1 / 3 - 1e-9 <= ratio <= 0.5 + 1e-9, ratio


# ---------------------------------------------------------------------------
# 3. Monte-Carlo SGD with a mid-run batch-size and step-size change.
# ---------------------------------------------------------------------------

MC_THETA = dict(p=1.2, q=1.5, P=1.0, Q=1.0, e_irr=0.1, R=20.0, r=0.5)  # noise-dominated
MC_LR = 1.5  # the peak step size; simulate_sgd takes absolute step sizes lr * multiplier
MC_MULT, MC_BATCH, MC_STEPS = (1.0, 1.0, 0.4), (2.0, 16.0, 16.0), (60, 60, 40)
MC_N, MC_SEEDS, Z_MAX = 64, 4096, 3.0


def test_monte_carlo_with_batch_and_step_change():
    params = nqs.NQSParams(**MC_THETA)
    absolute = [MC_LR * m for m in MC_MULT]
    sim = nqs.simulate_sgd(params, MC_N, None, None, key=jax.random.key(2026),
                           num_seeds=MC_SEEDS, segments=(absolute, MC_BATCH, MC_STEPS))
    sched = make_schedule(list(zip(MC_MULT, MC_BATCH, map(float, MC_STEPS))))
    exact = nqs.schedule_risk(params, float(MC_N), sched, lr=MC_LR)
    z = lambda mean, se, ref: float((mean - ref) / se)  # noqa: E731
    assert abs(z(sim.mean, sim.stderr, exact.total)) < Z_MAX
    assert abs(z(sim.excess_bias_mean, sim.excess_bias_stderr, exact.bias)) < Z_MAX
    assert abs(z(sim.excess_variance_mean, sim.excess_variance_stderr, exact.variance)) < Z_MAX
    assert float(sim.stderr / sim.mean) < 0.01
    # Power: the same step sizes without the batch change are far outside.
    no_change = make_schedule([(m, MC_BATCH[0], float(k)) for m, k in zip(MC_MULT, MC_STEPS)])
    wrong = nqs.schedule_risk(params, float(MC_N), no_change, lr=MC_LR)
    assert abs(z(sim.mean, sim.stderr, wrong.total)) > 3 * Z_MAX
    # ... and so is the closed form without the final step-size decay.
    no_decay = make_schedule([(1.0, b, float(k)) for b, k in zip(MC_BATCH, MC_STEPS)])
    wrong = nqs.schedule_risk(params, float(MC_N), no_decay, lr=MC_LR)
    assert abs(z(sim.mean, sim.stderr, wrong.total)) > 3 * Z_MAX


# ---------------------------------------------------------------------------
# 4. The weight-norm variant against a direct transcription of SPEC section 2.
# ---------------------------------------------------------------------------

PYTHIA = nqs.PRESETS["pythia-owt2"]
PYTHIA_THETA = {k: PYTHIA[k] for k in nqs.PARAM_NAMES}

WN_CASES = [  # (N, K, B) across the stair-width regimes w(K)
    (1e5, 7.0, 32.0),  # K <= 10: w = 1
    (1e5, 10.0, 32.0),
    (3e4, 2345.0, 64.0),  # 10 < K < 1e4: w = floor(K / 10)
    (1e5, 1e4, 128.0),  # 1e4 <= K <= 1e5: w = 1000
    (2e4, 54321.0, 256.0),
    (5e4, 1e5, 256.0),
    (1e4, 100099.0, 512.0),  # K > 1e5: w = floor(K / 100); 101 stairs, the last of 99 steps
    (1e4, 3e6 + 7, 512.0),
]


@pytest.mark.parametrize("N,K,B", WN_CASES)
def test_weight_norm_constant_matches_brute_force(N, K, B):
    params, lr = nqs.preset("pythia-owt2")
    ours = float(nqs.weight_norm_risk(params, N, nqs.Schedule.constant(K, B), lr=lr).total)
    ref = truth_weight_norm(N, PYTHIA_THETA, [(1.0, B, K)], lr)
    assert rel_err(ours, ref) <= 1e-9


@jax.jit
@chex.assert_max_traces(n=1)
def _weight_norm_value_and_grad(params, N, mult, batch, steps):
    """Value and gradient (wrt params and multipliers) for 3-segment schedules at lr 1.999.

    One compiled program serves the gradient test and, through its value, the
    brute-force test of a 3-segment schedule.
    """
    def total(p, m):
        return nqs.weight_norm_risk(p, N, nqs.Schedule(m, batch, steps), lr=nqs.DEFAULT_LR).total

    return jax.value_and_grad(total, argnums=(0, 1))(params, mult)


def test_weight_norm_step_decay_and_batch_change_matches_brute_force():
    theta = dict(p=1.3, q=0.7, P=8.0, Q=0.95, e_irr=0.2, R=5.0, r=1.4)
    sched = nqs.Schedule.piecewise(23_456, (0.4, 0.7), lr=(1.0, 1.0, 0.1), batch=(64, 256, 256))
    segments = list(zip(*fields(sched)))
    assert [k for _, _, k in segments] == [9382.0, 7037.0, 7037.0]  # not on the stairs
    params = nqs.NQSParams(**theta)
    ours, _ = _weight_norm_value_and_grad(params, 5e4, sched.lr, sched.batch, sched.steps)
    ref = truth_weight_norm(5e4, theta, segments, nqs.DEFAULT_LR)
    assert rel_err(float(ours), ref) <= 1e-9
    # the weight norm matters here: the plain risk is far away
    plain = nqs.schedule_risk(params, 5e4, pad_schedule(sched, PAD), lr=nqs.DEFAULT_LR).total
    assert rel_err(float(plain), ref) > 1e-4


def test_weight_norm_zero_step_segments_are_no_ops():
    """An empty segment starts no stair: its multiplier cannot cap the steps after it."""
    params = nqs.NQSParams(**PYTHIA_THETA)  # Python floats (weak types), as in the other calls
    N, K, B = 3e4, 2345.0, 64.0
    ref = nqs.weight_norm_risk(params, N, nqs.Schedule.constant(K, B, lr=0.7)).total
    padded, _ = _weight_norm_value_and_grad(
        params, N, jnp.array([0.0, 0.7, 0.05]), jnp.array([1.0, B, 1.0]), jnp.array([0.0, K, 0.0]))
    assert rel_err(float(padded), float(ref)) <= 1e-13


def test_weight_norm_batches_of_any_size_give_the_same_risk():
    """The default batch of the stair loop grows with the number of configurations
    (`default_chunk`): 3,000 runs of one to 101 stairs under a step decay, in batches of
    512 (the default here) and 16, and the first 200 one at a time, give the same risks
    up to rounding."""
    from nqs_engine._risk._weight_norm import default_chunk

    params, lr = nqs.preset("pythia-owt2")
    rng = np.random.default_rng(3)
    n = 3000
    N = 10 ** rng.uniform(4, 9, n)
    K = np.floor(10 ** rng.uniform(0.5, 5.3, n))
    B = 2.0 ** rng.integers(4, 12, n)
    assert default_chunk(n) == 512
    sched, first = nqs.Schedule.step_decay(K, B), nqs.Schedule.step_decay(K[:200], B[:200])
    ref = np.asarray(nqs.weight_norm_risk(params, N, sched, lr=lr).total)
    out = np.asarray(nqs.weight_norm_risk(params, N, sched, lr=lr, chunk=16).total)
    np.testing.assert_allclose(out, ref, rtol=1e-13)
    few = np.asarray(nqs.weight_norm_risk(params, N[:200], first, lr=lr, chunk=1).total)
    np.testing.assert_allclose(few, ref[:200], rtol=1e-13)
    # The model's predictions (batched by `default_chunk` too) are the same risks.
    model = nqs.WeightNormNQS.preset("pythia-owt2")
    prediction = np.asarray(model.predict(nqs.Runs.from_arrays(N, schedule=sched)))
    np.testing.assert_allclose(prediction, ref, rtol=1e-13)


def test_weight_norm_init_sq_norm_is_respected():
    params, lr = nqs.preset("pythia-owt2")
    N, sched = 3e4, nqs.Schedule.constant(5000.0, 64.0)
    custom = float(nqs.weight_norm_risk(params, N, sched, lr=lr, init_sq_norm=0.1).total)
    default = float(nqs.weight_norm_risk(params, N, sched, lr=lr).total)
    explicit = float(nqs.weight_norm_risk(params, N, sched, lr=lr, init_sq_norm=N * 0.02**2).total)
    segments = [(1.0, 64.0, 5000.0)]
    assert rel_err(custom, truth_weight_norm(N, PYTHIA_THETA, segments, lr, 0.1)) <= 1e-9
    assert rel_err(default, truth_weight_norm(N, PYTHIA_THETA, segments, lr)) <= 1e-9
    assert explicit == pytest.approx(default, rel=1e-15)  # default s = N * 0.02^2
    assert rel_err(custom, default) > 1e-2  # s = 0.1 instead of 12: the step decays sooner


def test_stair_width():
    K = np.array([0, 5, 10, 11, 50, 5_000, 9_999, 10_000, 54_321, 100_000, 100_099, 3e6])
    expected = [1, 1, 1, 1, 5, 500, 999, 1000, 1000, 1000, 1000, 30_000]
    assert np.asarray(nqs.stair_width(K)).tolist() == expected


def _pythia_rows():
    with open(DATA / "pythia_owt2_reference_predictions.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.skipif(not DATA.exists(), reason=REASON_NO_DATA)
def test_pythia_reference_weight_norm_predictions():
    rows = _pythia_rows()
    assert len(rows) == 137
    params, lr = nqs.preset("pythia-owt2")
    N, B, K, ref = (np.array([float(r[c]) for r in rows])
                    for c in ("N", "B", "K", "nqs_weight_norm"))
    # One row at a time: shares the compiled program of the constant-schedule tests.
    ours = np.array([
        float(nqs.weight_norm_risk(params, n, nqs.Schedule.constant(k, b), lr=lr).total)
        for n, b, k in zip(N, B, K)
    ])
    err = rel_err(ours, ref)
    # The reference itself is off by up to 1.3e-5 (N=1e7, B=98304, K=312: see below).
    assert np.all(err <= 1.5e-5), np.max(err)
    assert np.sum(err > 1e-5) <= 1, err[err > 1e-5]


@pytest.mark.skipif(not DATA.exists(), reason=REASON_NO_DATA)
@pytest.mark.skipif(
    os.environ.get("NQS_SLOW_TESTS") != "1",
    reason="brute force over 1e7 directions takes ~30 s on a shared 2-core CPU; "
    "set NQS_SLOW_TESTS=1 to run it",
)
def test_pythia_worst_row_is_the_reference_error():
    """On the row where the reference is 1.3e-5 off, the engine matches brute force."""
    row = next(r for r in _pythia_rows()
               if (float(r["N"]), float(r["B"]), float(r["K"])) == (1e7, 98304.0, 312.0))
    params, lr = nqs.preset("pythia-owt2")
    sched = nqs.Schedule.constant(312.0, 98304.0)
    ours = float(nqs.weight_norm_risk(params, 1e7, sched, lr=lr).total)
    ref = truth_weight_norm(1e7, PYTHIA_THETA, [(1.0, 98304.0, 312.0)], lr)
    assert rel_err(ours, ref) <= 1e-12
    assert rel_err(float(row["nqs_weight_norm"]), ref) > 1e-5


# ---------------------------------------------------------------------------
# 6. Constructors, truncate, pad, batching.
# ---------------------------------------------------------------------------


def fields(sched):
    return [np.asarray(a).tolist() for a in (sched.lr, sched.batch, sched.steps)]


def test_step_decay_batch_ramp_piecewise():
    assert fields(nqs.Schedule.step_decay(1000, 64)) == [
        [1.0, 0.1, 0.01], [64.0] * 3, [500.0, 250.0, 250.0]]
    assert fields(nqs.Schedule.step_decay(999, 8, (1 / 3,), (0.5,))) == [
        [1.0, 0.5], [8.0, 8.0], [333.0, 666.0]]
    assert fields(nqs.Schedule.batch_ramp(1000, (256, 512, 1024))) == [
        [1.0] * 3, [256.0, 512.0, 1024.0], [333.0, 333.0, 334.0]]
    assert fields(nqs.Schedule.batch_ramp(1000, (32, 64), boundaries=(0.9,), lr=0.5)) == [
        [0.5, 0.5], [32.0, 64.0], [900.0, 100.0]]
    s = nqs.Schedule.piecewise(900, (1 / 3, 2 / 3), lr=(1, 0.3, 0.1), batch=(32, 64, 128))
    assert fields(s) == [[1.0, 0.3, 0.1], [32.0, 64.0, 128.0], [300.0, 300.0, 300.0]]
    # empty segments at coinciding boundaries; the steps always add up to K
    s = nqs.Schedule.piecewise(10, (0.0, 0.5, 0.5, 1.0), lr=(1, 1, 1, 1, 1), batch=4)
    assert fields(s)[2] == [0.0, 5.0, 0.0, 5.0, 0.0]
    # a batch of K gives a batch of schedules
    s = nqs.Schedule.step_decay(np.array([100.0, 1000.0]), 8, (0.5,), (0.1,))
    assert s.shape == (2,) and np.asarray(s.steps).tolist() == [[50.0, 50.0], [500.0, 500.0]]
    assert np.asarray(s.total_steps).tolist() == [100.0, 1000.0]


def test_step_decay_batched_B_is_one_batch_size_per_schedule():
    """Regression: a batch-shaped B was taken as per-segment batch sizes ([32, 64] for both
    schedules here; a ValueError for three schedules of two segments)."""
    K, B = np.array([100.0, 1000.0]), np.array([32.0, 64.0])
    s = nqs.Schedule.step_decay(K, B, (0.5,), (0.1,))
    assert np.asarray(s.broadcast().batch).tolist() == [[32.0, 32.0], [64.0, 64.0]]
    s = nqs.Schedule.step_decay(np.array([10.0, 20.0, 30.0]), np.array([1.0, 2.0, 3.0]))
    assert np.asarray(s.broadcast().batch).tolist() == [[1.0] * 3, [2.0] * 3, [3.0] * 3]


def _piece_means(curve, edges):
    return np.array([scipy.integrate.quad(curve, a, b, epsabs=0, epsrel=1e-13)[0] / (b - a)
                     for a, b in zip(edges[:-1], edges[1:])])


def test_cosine_multipliers_are_exact_piece_means():
    # (4 pieces throughout: eager constructors compile once per shape)
    K, final = 1001, 0.1
    s = nqs.Schedule.cosine(K, 64, pieces=4, final=final)
    edges = np.floor(np.linspace(0, 1, 5) * K)
    assert fields(s)[2] == np.diff(edges).tolist() and fields(s)[1] == [64.0] * 4
    curve = lambda t: final + (1 - final) * 0.5 * (1 + np.cos(np.pi * t / K))  # noqa: E731
    np.testing.assert_allclose(s.lr, _piece_means(curve, edges), rtol=1e-12)
    # with warmup: a linear ramp over floor(0.05 K) steps, then the cosine over the rest
    s = nqs.Schedule.cosine(K, 64, pieces=4, warmup=0.05, warmup_pieces=4)
    Kw = np.floor(0.05 * K)
    w_edges = np.floor(np.linspace(0, 1, 5) * Kw)
    c_edges = np.floor(np.linspace(0, 1, 5) * (K - Kw))
    assert fields(s)[2] == [*np.diff(w_edges), *np.diff(c_edges)]
    ramp = _piece_means(lambda t: t / Kw, w_edges)
    cos = _piece_means(lambda t: 0.5 * (1 + np.cos(np.pi * t / (K - Kw))), c_edges)
    np.testing.assert_allclose(s.lr, [*ramp, *cos], rtol=1e-12)
    assert float(s.total_steps) == K
    assert [round(v, 4) for v in fields(nqs.Schedule.cosine(1000, 64, pieces=4))[0]] == [
        0.9502, 0.6865, 0.3135, 0.0498]


def test_warmup_and_wsd():
    assert fields(nqs.Schedule.warmup(1000, 8, warmup=0.1, pieces=2)) == [
        [0.25, 0.75, 1.0], [8.0] * 3, [50.0, 50.0, 900.0]]
    assert fields(nqs.Schedule.wsd(1000, 64, decay=0.2, pieces=2)) == [
        [1.0, 0.75, 0.25], [64.0] * 3, [800.0, 100.0, 100.0]]
    K, final = 1003, 0.1
    s = nqs.Schedule.wsd(K, 64, decay=0.2, pieces=4, warmup=0.1, final=final, warmup_pieces=4)
    Kw, Kd = np.floor(0.1 * K), np.floor(0.2 * K)
    w_edges = np.floor(np.linspace(0, 1, 5) * Kw)
    d_edges = np.floor(np.linspace(0, 1, 5) * Kd)
    assert fields(s)[2] == [*np.diff(w_edges), K - Kw - Kd, *np.diff(d_edges)]
    ramp = _piece_means(lambda t: t / Kw, w_edges)
    line = _piece_means(lambda t: 1 - (1 - final) * t / Kd, d_edges)
    np.testing.assert_allclose(s.lr, [*ramp, 1.0, *line], rtol=1e-12)


def test_from_arrays_exact_run_length_encoding_is_the_per_step_run():
    """The exact conversion reproduces SPEC's recursion applied step by step (K = 300)."""
    rng = np.random.default_rng(300)
    runs = rng.integers(1, 12, 60)
    runs = runs[: np.searchsorted(np.cumsum(runs), 300)]
    runs = np.append(runs, 300 - runs.sum())
    m = np.repeat(rng.uniform(0.0, 1.0, runs.size), runs)
    m[:40] = 0.5 * (1 + np.cos(np.pi * np.arange(40) / 40))[::-1]  # a ramp: a run per step
    b = np.repeat(rng.choice([4.0, 16.0, 64.0], runs.size), runs)
    sched = nqs.Schedule.from_arrays(m, b)
    lr_, b_, k_ = fields(sched)
    assert sum(k_) == 300 and np.repeat(lr_, np.int64(k_)).tolist() == m.tolist()
    assert np.repeat(b_, np.int64(k_)).tolist() == b.tolist()
    assert all(x != y for x, y in zip(zip(lr_, b_), zip(lr_[1:], b_[1:])))  # maximal runs
    theta = dict(p=1.4, q=0.9, P=12.0, Q=1.3, e_irr=0.4, R=3.0, r=1.2)
    lr = 1.9 / theta["Q"]
    per_step = [(mi, bi, 1.0) for mi, bi in zip(m, b)]
    out = nqs.schedule_risk(nqs.NQSParams(**theta), 1e4, pad_schedule(sched, LONG_PAD), lr=lr)
    assert_terms_close(as_array(out), truth(1e4, theta, per_step, lr), 1e-10)


def test_from_arrays_pieces_keep_step_and_noise_sums():
    rng = np.random.default_rng(7)
    m, b = rng.uniform(0.1, 1.0, 103), rng.choice([8.0, 32.0], 103)
    s = nqs.Schedule.from_arrays(m, b, segments=10)
    lr_, b_, k_ = (np.asarray(a) for a in (s.lr, s.batch, s.steps))
    assert k_.tolist() == [11.0] * 3 + [10.0] * 7  # np.array_split
    starts = np.concatenate([[0], np.cumsum(k_)]).astype(int)
    for i in range(10):
        piece = slice(starts[i], starts[i + 1])
        assert lr_[i] * k_[i] == pytest.approx(m[piece].sum(), rel=1e-14)
        noise = np.sum(m[piece] ** 2 / b[piece])
        assert lr_[i] ** 2 / b_[i] * k_[i] == pytest.approx(noise, rel=1e-14)
    # zero multipliers: no noise, the batch is the mean batch
    z = nqs.Schedule.from_arrays(np.zeros(4), np.array([2.0, 4.0, 6.0, 8.0]), segments=2)
    assert fields(z) == [[0.0, 0.0], [3.0, 7.0], [2.0, 2.0]]


COSINE_K = 2000
COSINE_PER_STEP = 0.5 * (1 + np.cos(np.pi * (np.arange(COSINE_K) + 0.5) / COSINE_K))


def test_cosine_discretisation_error_decreases_with_segments():
    """segments=S pieces of a per-step cosine against its exact (2000-segment) encoding.

    Observed (pythia preset, N=1e8, B=256): 1.0e-4, 2.6e-5, 7.7e-6, 2.0e-6 relative
    for S = 8, 16, 32, 64 (from_arrays), 3.5e-5, 8.1e-6, 2.8e-6, 7.0e-7 (Schedule.cosine).
    """
    params, lr = nqs.preset("pythia-owt2")
    N, B = 1e8, 256.0
    exact = nqs.Schedule.from_arrays(COSINE_PER_STEP, B)  # one segment per step, unpadded
    assert exact.num_segments == COSINE_K == LONG_PAD
    ref = float(nqs.schedule_risk(params, N, exact, lr=lr).total)
    errors = []
    for S in (8, 16, 32, 64):
        approx = pad_schedule(nqs.Schedule.from_arrays(COSINE_PER_STEP, B, segments=S),
                              PAD if S <= PAD else LONG_PAD)
        errors.append(rel_err(float(nqs.schedule_risk(params, N, approx, lr=lr).total), ref))
    errors = np.array(errors)
    assert errors[2] < 1.5e-5, errors
    assert np.all(errors[1:] < errors[:-1] / 3), errors  # about second order


def test_truncate_and_pad():
    s = nqs.Schedule.step_decay(100, 8, (0.5,), (0.1,))
    assert fields(s.truncate(70))[2] == [50.0, 20.0]
    assert fields(s.truncate(0))[2] == [0.0, 0.0]
    assert fields(s.truncate(100)) == fields(s) == fields(s.truncate(1e9))
    two = s.truncate(np.array([10.0, 60.0]))
    assert np.asarray(two.steps).tolist() == [[10.0, 0.0], [50.0, 10.0]]
    p = s.pad(5)
    assert fields(p) == [[1.0, 0.1, 0.1, 0.1, 0.1], [8.0] * 5, [50.0, 50.0, 0.0, 0.0, 0.0]]
    assert p.num_segments == 5 and float(p.total_steps) == 100.0
    assert fields(s.pad(2)) == fields(s)
    assert fields(make_schedule(list(zip(*fields(s))), 5)) == fields(p)  # the tests' own padding
    batched = nqs.Schedule.constant(np.array([10.0, 20.0]), 4.0).pad(3)
    assert batched.shape == (2,)
    assert np.asarray(batched.steps).tolist() == [[10.0, 0, 0], [20.0, 0, 0]]
    # padding changes nothing
    params, lr = nqs.preset("pythia-owt2")
    a = as_array(nqs.schedule_risk(params, 1e8, pad_schedule(s, PAD), lr=lr))
    b = as_array(nqs.schedule_risk(params, 1e8, pad_schedule(s, LONG_PAD), lr=lr))
    assert_terms_close(b, a, 1e-13)


def test_truncate_at_a_boundary_leaks_nothing_of_the_next_segment():
    """A cut exactly at a segment end keeps zero steps after it, not a rounding sliver.

    `ends - steps` puts the second start one ulp below 0.1229...; the sliver it left
    mattered where the next segment has gamma * lambda_1 = 1 exactly, since then any
    positive step count zeroes that direction's bias (found by hypothesis in
    test_trajectory_equals_truncated_schedule_risk).
    """
    first, second = 0.12292057180858407, 1.2095899718636771
    s = nqs.Schedule(np.array([0.0, 1000.0]), np.array([1.0, 1.0]), np.array([first, second]))
    assert fields(s.truncate(first))[2] == [first, 0.0]
    theta = dict(p=2.0, q=1.0, P=1.0, Q=1.0, e_irr=1.0, R=1.0, r=1.0)
    params = nqs.NQSParams(**theta)
    cut = as_array(nqs.schedule_risk(params, 1.0, s.truncate(first), lr=1e-3))
    before = as_array(nqs.schedule_risk(params, 1.0, nqs.Schedule.constant(first, 1.0, lr=0.0), lr=1e-3))
    assert cut.tolist() == before.tolist()
    assert cut[2] == 0.5 and cut[3] == 0.0  # lr 0: the single direction has not moved


def test_truncate_at_a_segment_end_keeps_that_segment_whole():
    """A cut at a segment's end (in the float cumulative sum) keeps its steps exactly.

    `k - start` rounds a short segment after a long one: 0.001 steps after 43648 came
    back as 0.000999999997 (3.4e-9 fewer steps), and with gamma * Q = 0.63 in that
    sliver of a step the variance moved by as much (the total by 1.8e-9), while the
    trajectory (which keeps whole segments whole) was exact: a failure of
    test_trajectory_equals_truncated_schedule_risk (2.4e-12 there; 1.8e-9 here, found
    by a random search of the same strategy with N = 1).
    """
    steps = [43648.0, 0.001, 69.96712608423283, 3.0]
    s = nqs.Schedule(np.array([0.0, 1556.7879705601924, 1999.0, 1000.0]),
                     np.array([2.27, 4.07, 35.6, 2.14]), np.array(steps))
    ends = np.cumsum(steps)
    for i, end in enumerate(ends):  # every prefix, bit for bit (the whole schedule too)
        assert fields(s.truncate(end))[2] == steps[: i + 1] + [0.0] * (len(steps) - i - 1)
    theta = dict(p=1.7269887654093596, q=2.544745840999722, P=0.06616562989145576,
                 Q=2.47070377353698, e_irr=0.0024826844856875546, R=352.2082200395252,
                 r=2.699773226346609)
    params, lr = nqs.NQSParams(**theta), 0.00040474297676262183
    curve = as_array(nqs.trajectory(params, 1.0, s, ends, lr=lr))
    for j, end in enumerate(ends):
        cut = as_array(nqs.schedule_risk(params, 1.0, s.truncate(end), lr=lr))
        segments = [(m, b, k) for m, b, k in zip(*fields(s))][: j + 1]
        assert_terms_close(cut, truth(1.0, theta, segments, lr), 1e-12)
        assert_terms_close(curve[:, j], cut, 1e-12)


def test_concatenate_joins_segments_and_carries_the_state():
    warm = nqs.Schedule.warmup(1_000, 64, warmup=0.5, pieces=2)
    decay = nqs.Schedule.constant(3_000, 128, lr=0.3)
    run = nqs.Schedule.concatenate(warm, decay)
    assert fields(run) == [[0.25, 0.75, 1.0, 0.3], [64.0, 64.0, 64.0, 128.0],
                           [250.0, 250.0, 500.0, 3000.0]]
    assert fields(nqs.Schedule.concatenate(decay)) == fields(decay)
    # The risk runs the recurrence through both: brute force over every direction.
    theta = dict(p=1.4, q=1.1, P=2.0, Q=0.8, e_irr=0.3, R=0.5, r=0.2)
    lr = 1.5 / theta["Q"]
    segments = list(zip(*fields(run)))
    ours = as_array(nqs.schedule_risk(nqs.NQSParams(**theta), 3_000.0, pad_schedule(run, PAD), lr=lr))
    assert_terms_close(ours, truth(3_000.0, theta, segments, lr), 1e-11)
    # Batch shapes broadcast: two lengths of the first phase, one second phase.
    two = nqs.Schedule.concatenate(nqs.Schedule.constant(np.array([100.0, 200.0]), 32), decay)
    assert two.shape == (2,) and np.asarray(two.total_steps).tolist() == [3100.0, 3200.0]


def test_from_spec_is_the_command_line_schedule():
    """The constructors' schedules, and SPEC+SPEC as both at once (multipliers multiply)."""
    K, B = 1_000, 64
    assert fields(nqs.Schedule.from_spec("constant", K, B)) == fields(nqs.Schedule.constant(K, B))
    assert fields(nqs.Schedule.from_spec("step:0.5=0.1,0.75=0.01", K, B)) == fields(
        nqs.Schedule.step_decay(K, B, (0.5, 0.75), (0.1, 0.01)))
    both = nqs.Schedule.from_spec("step:0.5=0.1+batch:0.25=2,0.75=4", K, B)
    assert fields(both) == [[1.0, 1.0, 0.1, 0.1], [64.0, 128.0, 128.0, 256.0],
                            [250.0, 250.0, 250.0, 250.0]]
    # A batch of runs: one schedule per (K, B), cut points rounded down to whole steps.
    runs = nqs.Schedule.from_spec("warmup:0.1,pieces=2", np.array([1_000.0, 995.0]), 32)
    assert runs.shape == (2,)
    assert np.asarray(runs.steps).tolist() == [[50.0, 50.0, 900.0], [49.0, 50.0, 896.0]]


@pytest.mark.parametrize("build,error,match", [
    (lambda s: nqs.Schedule.concatenate(), ValueError, "at least one schedule"),
    (lambda s: nqs.Schedule.concatenate(s, "cosine"), TypeError, "schedule 1 must be a Schedule"),
    (lambda s: nqs.Schedule.concatenate(nqs.Schedule.constant(np.ones(2), 8),
                                        nqs.Schedule.constant(np.ones(3), 8)),
     ValueError, r"batch shapes must broadcast, got \(2,\), \(3,\)"),
    (lambda s: nqs.Schedule.from_spec("cosine:pieces=0", 100, 8), ValueError,
     "schedule 'cosine:pieces=0': pieces must be an integer"),
    (lambda s: nqs.Schedule.from_spec("linear", 100, 8), ValueError, "unknown schedule 'linear'"),
    (lambda s: nqs.Schedule.from_spec(None, 100, 8), TypeError, "spec must be a SPEC string.*got NoneType"),
    (lambda s: nqs.Schedule.from_spec("constant", -1.0, 8), ValueError, "K must be finite and >= 0"),
    (lambda s: nqs.Schedule.from_spec("constant", 100, np.array([8.0, 0.0])), ValueError,
     "B must be finite and > 0, got 0$"),
    (lambda s: nqs.Schedule.from_spec("constant", np.ones(2), np.ones(3)), ValueError,
     r"K\(2,\) and B\(3,\) must broadcast"),
])
def test_concatenate_and_from_spec_errors(build, error, match):
    with pytest.raises(error, match=match):
        build(nqs.Schedule.constant(10, 8))


def test_empty_segments_never_diverge():
    """Regression: padding (then multiplier 1) made a stable schedule raise "diverges"."""
    params = nqs.NQSParams(p=1.5, q=1.0, P=2.0, Q=1.0, e_irr=0.5, R=1.0, r=1.0)
    s = nqs.Schedule(np.array([0.5, 0.3]), np.array([8.0, 8.0]), np.array([100.0, 100.0]))
    ref = as_array(nqs.schedule_risk(params, 1e3, s.pad(PAD), lr=3.0))  # peak lr * Q = 3
    # an empty segment at an unstable step size never runs
    unstable = make_schedule([(0.5, 8.0, 100.0), (1.0, 8.0, 0.0), (0.3, 8.0, 100.0)])
    assert_terms_close(as_array(nqs.schedule_risk(params, 1e3, unstable, lr=3.0)), ref, 1e-13)
    with pytest.raises(Exception, match="step size diverges"):
        bad = make_schedule([(0.5, 8.0, 100.0), (1.0, 8.0, 1.0), (0.3, 8.0, 100.0)])
        jax.block_until_ready(nqs.schedule_risk(params, 1e3, bad, lr=3.0).total)


def test_batched_schedules_broadcast_and_vmap():
    params, lr = nqs.preset("pythia-owt2")
    K = np.array([1000.0, 3000.0, 10_000.0])
    scheds = nqs.Schedule.step_decay(K, 128.0, (0.6,), (0.1,))  # shape (3,), 2 segments
    N = np.array([[1e6], [1e8]])
    out = nqs.schedule_risk(params, N, scheds, lr=lr)
    assert out.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            one = pad_schedule(nqs.Schedule(scheds.lr[j], scheds.batch[j], scheds.steps[j]), PAD)
            ref = as_array(nqs.schedule_risk(params, N[i, 0], one, lr=lr))
            assert_terms_close(as_array(out)[:, i, j], ref, 1e-13)
    vmapped = jax.vmap(lambda s: nqs.schedule_risk(params, 1e8, s, lr=lr).total)(scheds)
    np.testing.assert_allclose(vmapped, out.total[1], rtol=1e-13)
    # the vmapped check reports the failing element
    bad = eqx.tree_at(lambda s: s.steps, scheds, scheds.steps.at[1, 1].set(-1.0))
    with pytest.raises(Exception, match="K \\(steps\\)"):
        jax.block_until_ready(
            jax.vmap(lambda s: nqs.schedule_risk(params, 1e8, s, lr=lr).total)(bad))


# ---------------------------------------------------------------------------
# 7. Errors.
# ---------------------------------------------------------------------------

GOOD = dict(p=1.5, q=1.0, P=2.0, Q=1.0, e_irr=0.5, R=1.0, r=1.0)


@pytest.mark.parametrize("segments,lr,match", [
    ([(1.0, 8.0, 10.0), (1.0, 8.0, -1.0)], 1.0, "K \\(steps\\) must be finite and >= 0"),
    ([(1.0, 8.0, 10.0), (1.0, 0.0, 5.0)], 1.0, "B \\(batch size\\) must be finite and > 0"),
    ([(1.0, 8.0, 10.0), (2.0, 8.0, 5.0)], 1.0, "step size diverges"),  # 2 * 1 * Q = 2
    ([(1.0, 8.0, 10.0), (0.5, 8.0, 5.0)], 4.01, "step size diverges"),
    ([(-0.1, 8.0, 10.0)], 1.0, "lr \\(step size\\) must be finite and >= 0"),
])
def test_schedule_errors_name_the_problem(segments, lr, match):
    params = nqs.NQSParams(**GOOD)
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(nqs.schedule_risk(params, 1e3, make_schedule(segments), lr=lr).total)


def test_errors_under_jit():
    params = nqs.NQSParams(**GRAD_THETA)
    mult, batch, steps = (jnp.asarray(a) for a in GRAD_SCHEDULE)
    with pytest.raises(Exception, match="K \\(steps\\)"):
        jax.block_until_ready(_schedule_value_and_grad(params, mult, batch, steps.at[1].set(-3.0)))
    with pytest.raises(Exception, match="step size diverges"):
        jax.block_until_ready(_schedule_value_and_grad(params, mult.at[0].set(1.4), batch, steps))


def test_trajectory_and_weight_norm_errors():
    params = nqs.NQSParams(**GOOD)
    sched = make_schedule([(1.0, 8.0, 100.0), (0.5, 8.0, 50.0)])
    for bad in ([0.0, 10.0, 100.0, 150.0, 150.0, 151.0], [-1.0, 10.0, 100.0, 150.0, 150.0, 0.0]):
        with pytest.raises(Exception, match="checkpoints must lie between 0 and"):
            jax.block_until_ready(nqs.trajectory(params, 1e3, sched, np.array(bad), lr=1.0).total)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        nqs.trajectory(params, 1e3, sched, np.array([[1.0]]), lr=1.0)
    with pytest.raises(Exception, match="init_sq_norm must be finite and > 0"):
        jax.block_until_ready(nqs.weight_norm_risk(
            params, 1e3, nqs.Schedule.constant(100.0, 8.0), lr=1.0, init_sq_norm=0.0).total)
    with pytest.raises(Exception, match="step size diverges"):
        jax.block_until_ready(nqs.weight_norm_risk(
            params, 1e3, nqs.Schedule.constant(100.0, 8.0), lr=2.5).total)


@pytest.mark.parametrize("build,match", [
    (lambda: nqs.Schedule.warmup(100, 8, warmup=1.5), "warmup must be a fraction"),
    (lambda: nqs.Schedule.cosine(100, 8, final=-0.1), "final must be a fraction"),
    (lambda: nqs.Schedule.cosine(100, 8, warmup=float("nan")), "warmup must be a fraction"),
    (lambda: nqs.Schedule.wsd(100, 8, decay=1.2), "decay must be a fraction"),
    (lambda: nqs.Schedule.piecewise(100, (0.6, 0.4), (1, 1, 1), 8), "increasing fractions"),
    (lambda: nqs.Schedule.piecewise(100, (0.5, 1.1), (1, 1, 1), 8), "increasing fractions"),
    (lambda: nqs.Schedule.piecewise(100, (0.5,), (1, 1, 1), 8), "lr needs 2 values"),
    (lambda: nqs.Schedule.piecewise(100, (0.5,), (1, 1), (8, 16, 32)), "batch needs 2 values"),
    (lambda: nqs.Schedule.step_decay(100, 8, (0.5, 0.7), (0.1,)), "one factor per boundary"),
    (lambda: nqs.Schedule.batch_ramp(100, ()), "at least one batch size"),
    (lambda: nqs.Schedule.from_arrays(np.array([1.0, -0.5]), 8), "lr_per_step\\[1\\]"),
    (lambda: nqs.Schedule.from_arrays(np.ones(3), [8.0, 0.0, 8.0]), "batch_per_step\\[1\\]"),
    (lambda: nqs.Schedule.from_arrays(np.ones(3), 8, segments=4), "segments must be an integer"),
    (lambda: nqs.Schedule.from_arrays(np.ones((2, 2)), 8), "non-empty 1-D"),
    (lambda: nqs.Schedule(np.ones(2), np.ones(3), np.ones(2)), "must broadcast"),
    (lambda: nqs.Schedule(1.0, 8.0, 10.0), "last axis of segments"),
    (lambda: nqs.Schedule(np.ones(0), np.ones(0), np.ones(0)), "at least one segment"),
    (lambda: nqs.Schedule.step_decay(100, 8).pad(2), "cannot pad 3 segments down to 2"),
])
def test_constructor_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("call", [
    lambda p, s: nqs.schedule_risk(p, 1e3, s),
    lambda p, s: nqs.trajectory(p, 1e3, s, np.array([1.0])),
    lambda p, s: nqs.weight_norm_risk(p, 1e3, s),
])
def test_schedule_must_be_a_schedule(call):
    with pytest.raises(TypeError, match="schedule must be a Schedule, got tuple"):
        call(nqs.NQSParams(**GOOD), ([1.0], [8.0], [10.0]))


# ---------------------------------------------------------------------------
# 8-9. Gradients against central finite differences; no retrace.
# ---------------------------------------------------------------------------

GRAD_THETA = dict(p=1.4, q=0.9, P=12.0, Q=1.3, e_irr=0.4, R=3.0, r=1.2)
GRAD_SCHEDULE = (np.array([1.0, 0.55, 0.12]), np.array([48.0, 96.0, 400.0]),
                 np.array([1234.5, 700.25, 300.75]))
GRAD_N, GRAD_LR = 3e6 + 0.3, 1.5 / 1.3


@jax.jit
@chex.assert_max_traces(n=1)
def _schedule_value_and_grad(params, mult, batch, steps):
    def total(m, b, k):
        return nqs.schedule_risk(params, GRAD_N, nqs.Schedule(m, b, k), lr=GRAD_LR).total

    return jax.value_and_grad(total, argnums=(0, 1, 2))(mult, batch, steps)


def test_schedule_gradients_match_finite_differences():
    params = nqs.NQSParams(**GRAD_THETA)
    x = [jnp.asarray(a) for a in GRAD_SCHEDULE]
    _, grads = _schedule_value_and_grad(params, *x)
    for which in range(3):  # multipliers, batch sizes, steps
        for s in range(3):
            h = 1e-5 * abs(float(x[which][s]))
            def at(d):
                shifted = [a.at[s].add(d) if i == which else a for i, a in enumerate(x)]
                return float(_schedule_value_and_grad(params, *shifted)[0])

            plus, minus = at(h), at(-h)
            fd = (plus - minus) / (2 * h)
            g = float(grads[which][s])
            assert abs(g - fd) <= 1e-6 * abs(fd) + 1e-13, (which, s, g, fd)


def test_no_retrace_when_schedule_values_change():
    """New values of the same shapes (schedule and parameters) reuse the compiled program."""
    x = [jnp.asarray(a) for a in GRAD_SCHEDULE]
    a, _ = _schedule_value_and_grad(nqs.NQSParams(**GRAD_THETA), *x)
    other = nqs.NQSParams(**dict(GRAD_THETA, p=2.0, R=0.5))
    b, _ = _schedule_value_and_grad(other, x[0] * 0.5, x[1] * 2, x[2] + 17.0)
    assert float(a) != float(b)  # assert_max_traces(n=1) raises on a second trace


# Every multiplier sets the step of some stair (all three derivatives are nonzero).
WN_GRAD_SCHEDULE = (np.array([0.9, 0.1, 0.01]), np.array([64.0, 256.0, 256.0]),
                    np.array([2500.0, 1500.0, 1000.0]))


def test_weight_norm_gradients_match_finite_differences():
    """Smooth in the parameters and multipliers (the stairs depend on K only)."""
    theta = dict(PYTHIA_THETA)
    mult, batch, steps = (jnp.asarray(a) for a in WN_GRAD_SCHEDULE)
    value, (g_params, g_mult) = _weight_norm_value_and_grad(
        nqs.NQSParams(**theta), 1e6, mult, batch, steps)

    def at(th, m):
        return float(_weight_norm_value_and_grad(nqs.NQSParams(**th), 1e6, m, batch, steps)[0])

    for name in nqs.PARAM_NAMES:
        h = 1e-5 * abs(theta[name])
        fd = (at(dict(theta, **{name: theta[name] + h}), mult)
              - at(dict(theta, **{name: theta[name] - h}), mult)) / (2 * h)
        g = float(getattr(g_params, name))
        assert abs(g - fd) <= 1e-6 * abs(fd) + 1e-13, (name, g, fd)
    for s in range(3):
        h = 1e-5 * float(mult[s])
        fd = (at(theta, mult.at[s].add(h)) - at(theta, mult.at[s].add(-h))) / (2 * h)
        assert abs(fd) > 1e-3
        assert abs(float(g_mult[s]) - fd) <= 1e-6 * abs(fd) + 1e-13, (s, float(g_mult[s]), fd)
    # the weight norm matters here: the value is not the plain risk's
    plain_schedule = make_schedule(list(zip(*WN_GRAD_SCHEDULE)))
    plain = nqs.schedule_risk(nqs.NQSParams(**theta), 1e6, plain_schedule)
    assert rel_err(float(value), float(plain.total)) > 1e-3


def test_the_fitters_scanned_form_equals_the_unrolled_one_with_its_derivatives():
    """The fit's search data scan a run's segments (`NQSData.scan`: a program that compiles
    several times faster under the Jacobian): its values equal the unrolled form's to
    rounding, and its Jacobian matches central differences of the unrolled values
    (differentiating the unrolled form itself would compile for ~20 s), for a step decay
    of 3 segments."""
    from nqs_engine._model._nqs import nqs_data, row_losses

    N = np.array([3e6, 1e7, 3e7])
    K = np.array([2000.0, 5000.0, 9000.0])
    sched = nqs.Schedule.from_spec("step:0.5=0.3,0.8=0.1", K, np.array([32.0, 64, 128]))
    assert sched.steps.shape[-1] == 3
    runs = nqs.Runs.from_arrays(N, schedule=sched)
    unrolled, scanned = (nqs_data(runs, nqs.SumRule(), 4, "test", scan=s) for s in (False, True))
    assert scanned.scan and not unrolled.scan
    params, lr = nqs.preset("pythia-owt2")
    names = ("p", "q", "P", "Q", "e_irr", "R", "r")

    @eqx.filter_jit
    def losses(theta, data):
        return row_losses(nqs.NQSParams(**dict(zip(names, theta))), lr, data)

    theta = jnp.array([float(getattr(params, n)) for n in names])
    np.testing.assert_allclose(losses(theta, scanned), losses(theta, unrolled), rtol=1e-13)
    jac = np.asarray(jax.jacfwd(losses)(theta, scanned))
    for j in range(theta.size):
        h = 1e-5 * float(theta[j])
        up, down = (np.asarray(losses(theta.at[j].add(s * h), unrolled)) for s in (1, -1))
        np.testing.assert_allclose(jac[:, j], (up - down) / (2 * h), rtol=1e-6, atol=1e-9,
                                   err_msg=names[j])
