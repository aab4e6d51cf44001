"""The closed-form risk against brute force, its laws, gradients, errors and batching."""

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

import nqs_engine as nqs
from helpers import (
    DATA,
    REASON_NO_DATA,
    as_array,
    brute_force_terms,
    log_uniform,
    rel_err,
    thetas,
)

@st.composite
def configs(draw, max_n=1e6):
    """Parameters over the issue's domain, a stable step size, and (N, B, K)."""
    theta = draw(thetas())
    edge = draw(st.sampled_from([1e-3, 0.5, 1.0, 1.999, None]))
    if edge is None:
        edge = draw(st.floats(1e-3, 1.9999))
    lr = edge / theta["Q"]
    N = float(np.floor(draw(log_uniform(1.0, max_n))))
    K = float(np.floor(draw(log_uniform(1.0, 1e6)))) if draw(st.booleans()) else 0.0
    B = draw(log_uniform(1.0, 1e4))
    return theta, lr, N, B, K


def evaluate(theta, lr, N, B, K, dtype=np.float64, **kwargs):
    t = {k: dtype(v) for k, v in theta.items()}
    return nqs.risk(nqs.NQSParams(**t), dtype(N), dtype(B), dtype(K), lr=dtype(lr), **kwargs)


# ---------------------------------------------------------------------------
# Accuracy against an independent brute-force sum over every direction.
# ---------------------------------------------------------------------------


@settings(max_examples=40)
@given(configs())
def test_float64_matches_brute_force(cfg):
    theta, lr, N, B, K = cfg
    ref = np.array(brute_force_terms(N, theta, K, B, lr))
    ours = as_array(evaluate(theta, lr, N, B, K))
    assert rel_err(ours[4], ref[4]) <= 1e-10
    # Each term to 1e-10 of the total (a term can be ~1e-200 of it, e.g. dead bias).
    assert np.all(np.abs(ours - ref) <= 1e-10 * ref[4])


@settings(max_examples=25)
@given(configs())
def test_float32_matches_brute_force(cfg):
    theta, lr, N, B, K = cfg
    # The truth for float32 inputs: round them first, then sum exactly in float64.
    f32 = lambda v: float(np.float32(v))  # noqa: E731
    theta32 = {k: f32(v) for k, v in theta.items()}
    if f32(lr) * theta32["Q"] >= 2:
        return
    ref = np.array(brute_force_terms(f32(N), theta32, f32(K), f32(B), f32(lr)))
    with jax.enable_x64(False):
        out = evaluate(theta32, f32(lr), f32(N), f32(B), f32(K), dtype=np.float32)
        assert out.total.dtype == jnp.float32
        ours = as_array(out)
    assert rel_err(ours[4], ref[4]) <= 1e-5
    assert np.all(np.abs(ours - ref) <= 1e-5 * ref[4])


@pytest.mark.parametrize("N", [1e8, 1e10, 1e12])
@pytest.mark.parametrize("theta", [
    dict(p=1.05, q=0.3, P=10.0, Q=1.0, e_irr=0.5, R=1.0, r=0.3),
    dict(p=3.0, q=3.0, P=1.0, Q=10.0, e_irr=0.5, R=100.0, r=3.0),
    dict(p=1.113, q=0.584, P=3.39, Q=0.885, e_irr=0.354, R=8.41, r=2.58),
])
def test_huge_n_converged(theta, N):
    """Beyond brute force: the default rule agrees with a much finer one."""
    fine = nqs.SumRule(head=512, panels=160, nodes=16, order=8)
    params = nqs.NQSParams(**theta)
    lr = 1.9 / theta["Q"]
    Ns, Bs, Ks = np.broadcast_arrays(N, [1.0, 64.0, 4096.0], [[10.0], [1e4], [1e7]])
    coarse = as_array(nqs.risk(params, Ns, Bs, Ks, lr=lr))
    ref = as_array(nqs.risk(params, Ns, Bs, Ks, lr=lr, rule=fine))
    assert np.all(np.abs(coarse - ref) <= 1e-12 * ref[4])


@pytest.mark.skipif(not DATA.exists(), reason=REASON_NO_DATA)
def test_pythia_reference_predictions():
    with open(DATA / "pythia_owt2_reference_predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    N, B, K, ref = (np.array([float(r[c]) for r in rows]) for c in ("N", "B", "K", "nqs_plain"))
    params, lr = nqs.preset("pythia-owt2")
    ours = np.asarray(nqs.risk(params, N, B, K, lr=lr).total)
    err = rel_err(ours, ref)
    assert len(rows) == 137
    # The reference itself is off by up to 5.5e-7 on its largest models (N >= 2.56e8;
    # benchmarks/accuracy.py checks those rows against a sum over every direction).
    assert np.all(err[N < 2.5e8] <= 1e-7)
    assert np.all(err <= 6e-7)
    assert np.sum(err > 1e-7) <= 7


# ---------------------------------------------------------------------------
# Laws of the model.
# ---------------------------------------------------------------------------


@settings(max_examples=20)
@given(configs(max_n=1e12))
def test_zero_steps_is_initial_risk(cfg):
    theta, lr, N, B, _ = cfg
    out = evaluate(theta, lr, N, B, 0.0)
    expected = theta["e_irr"] + 0.5 * theta["P"] * scipy.special.zeta(theta["p"], 1.0)
    assert rel_err(out.total, expected) <= 1e-12
    assert float(out.variance) == 0.0


@settings(max_examples=20)
@given(configs(max_n=1e12), st.floats(1.01, 100.0))
def test_larger_batch_lowers_risk(cfg, factor):
    theta, lr, N, B, K = cfg
    K = max(K, 1.0)
    small, large = evaluate(theta, lr, N, B, K), evaluate(theta, lr, N, B * factor, K)
    assert float(large.total) < float(small.total)
    np.testing.assert_allclose(float(large.variance) * factor, float(small.variance), rtol=1e-12)


@settings(max_examples=20)
@given(configs(max_n=1e3))
def test_long_noiseless_run_reaches_the_floor(cfg):
    theta, lr, N, _, _ = cfg
    floor = theta["e_irr"] + 0.5 * theta["P"] * scipy.special.zeta(theta["p"], N + 1)
    Ks = np.array([1e2, 1e4, 1e6, 1e14]) / (lr * theta["Q"] * N ** -theta["q"])
    out = evaluate(theta, lr, N, 1e300, Ks)
    total = np.asarray(out.total)
    assert np.all(np.diff(total) <= 0)  # more steps never hurt without noise
    assert rel_err(total[-1], floor) <= 1e-12


@settings(max_examples=10)
@given(st.lists(configs(max_n=1e9), min_size=3, max_size=3))
def test_batch_equals_each_element(cfgs):
    thetas, lrs, Ns, Bs, Ks = zip(*cfgs)
    stacked = nqs.NQSParams(**{k: np.array([t[k] for t in thetas]) for k in thetas[0]})
    batch = as_array(nqs.risk(stacked, np.array(Ns), np.array(Bs), np.array(Ks), lr=np.array(lrs)))
    for i, cfg in enumerate(cfgs):
        np.testing.assert_allclose(batch[:, i], as_array(evaluate(*cfg)), rtol=1e-13, atol=0)


def test_broadcasting_grid():
    params = nqs.NQSParams(p=np.array([[1.2], [1.5]]), q=1.0, P=10.0, Q=1.0, e_irr=1.0, R=1.0, r=1.0)
    out = nqs.risk(params, N=np.array([1e3, 1e6, 1e9]), B=32.0, K=1000.0)
    assert out.shape == (2, 3)
    for i, p in enumerate([1.2, 1.5]):
        for j, N in enumerate([1e3, 1e6, 1e9]):
            one = nqs.risk(nqs.NQSParams(p, 1.0, 10.0, 1.0, 1.0, 1.0, 1.0), N, 32.0, 1000.0)
            np.testing.assert_allclose(out.total[i, j], one.total, rtol=1e-14)


def test_terms_add_up():
    params, lr = nqs.preset("pythia-owt2")
    out = nqs.risk(params, np.geomspace(1e5, 1e11, 7), 256.0, 1e4, lr=lr)
    np.testing.assert_allclose(
        out.total, out.irreducible + out.approximation + out.bias + out.variance, rtol=1e-15
    )


def test_hurwitz_zeta_matches_scipy():
    s = np.array([1.01, 1.1, 1.5, 2.0, 3.0, 6.0])[:, None]
    a = np.array([1.0, 1.5, 10.0, 63.5, 1e4, 1e12])[None, :]
    np.testing.assert_allclose(nqs.hurwitz_zeta(s, a), scipy.special.zeta(s, a), rtol=1e-13)


def test_sum_directions_generic_summand():
    """Sum of n^-1.5 / (1 + n / 1e3) over n <= N against a direct sum."""
    def f(u, tail):
        n = jnp.exp(u)
        return n ** (-1.5 + (1.0 if tail else 0.0)) / (1 + n / 1e3)
    for N in [10.0, 64.0, 65.0, 3000.0, 123456.0]:
        n = np.arange(1, N + 1)
        exact = np.sum(n**-1.5 / (1 + n / 1e3))
        assert rel_err(nqs.sum_directions(f, jnp.asarray(N)), exact) <= 1e-13


# ---------------------------------------------------------------------------
# Gradients.
# ---------------------------------------------------------------------------

POINT = dict(p=1.4, q=0.9, P=12.0, Q=1.3, e_irr=0.4, R=3.0, r=1.2)


@pytest.mark.parametrize("N,B,K", [(3.0e6 + 0.3, 48.0, 2500.5), (40.5, 7.0, 60.0), (2.0e11, 1024.0, 1e5)])
def test_gradients_match_finite_differences(N, B, K):
    lr = 1.5 / POINT["Q"]

    def total(x):
        theta = dict(zip(POINT, x[:7]))
        return nqs.risk(nqs.NQSParams(**theta), x[7], x[8], x[9], lr=lr).total

    x0 = jnp.array([*POINT.values(), N, B, K])
    grad = np.asarray(jax.grad(total)(x0))
    jac = np.asarray(jax.jacfwd(total)(x0))
    np.testing.assert_allclose(jac, grad, rtol=1e-9, atol=0)
    for i in range(10):
        h = 1e-5 * abs(float(x0[i]))
        fd = (float(total(x0.at[i].add(h))) - float(total(x0.at[i].add(-h)))) / (2 * h)
        assert abs(grad[i] - fd) <= 1e-6 * abs(fd) + 1e-13, (i, grad[i], fd)


def test_gradients_through_vmap_and_jit():
    params, lr = nqs.preset("pythia-owt2")
    f = jax.jit(jax.vmap(jax.grad(lambda p, n: nqs.risk(p, n, 64.0, 1e3, lr=lr).total), (None, 0)))
    g = f(params, jnp.array([1e6, 1e8]))
    assert g.p.shape == (2,) and np.all(np.isfinite(np.asarray(g.p)))


# ---------------------------------------------------------------------------
# Transformations and errors.
# ---------------------------------------------------------------------------


def test_no_retrace_when_values_change():
    params, lr = nqs.preset("pythia-owt2")

    @jax.jit
    @chex.assert_max_traces(n=1)
    def total(params, N, B, K):
        return nqs.risk(params, N, B, K, lr=lr).total

    N = jnp.array([1e6, 1e7])
    a = total(params, N, jnp.array([32.0, 64.0]), jnp.array([100.0, 200.0]))
    other = eqx.tree_at(lambda t: t.p, params, jnp.asarray(np.float64(1.3)))
    b = total(other, 2 * N, jnp.array([8.0, 16.0]), jnp.array([10.0, 20.0]))
    assert not np.allclose(a, b)


def test_nearby_sizes_share_one_compiled_program(monkeypatch):
    """Calls with 5, 6 and 7 configurations pad to 8 rows and trace the sums once per term."""
    from nqs_engine._risk import _risk

    traced = []
    original = _risk.config_sum

    def counting(*args, **kwargs):
        traced.append(args[6])  # the term
        return original(*args, **kwargs)

    monkeypatch.setattr(_risk, "config_sum", counting)
    params, lr = nqs.preset("pythia-owt2")
    rule = nqs.SumRule(head=29)  # a static structure no other test compiles
    grids = [np.geomspace(1e6, 1e9, n) for n in (5, 6, 7)]
    outs = [nqs.risk(params, N, 64.0, 1e3, lr=lr, rule=rule).total for N in grids]
    assert len(traced) == 2, traced  # bias and variance, once each
    for N, out in zip(grids, outs):  # the padding changes no value
        assert out.shape == N.shape
        for i in (0, -1):
            one = nqs.risk(params, N[i], 64.0, 1e3, lr=lr, rule=rule).total
            np.testing.assert_allclose(out[i], one, rtol=1e-13)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**8), st.one_of(st.none(), st.integers(1, 10**6)))
def test_bucket_rows(n, chunk):
    from nqs_engine._chunk import bucket_rows

    size, batch = bucket_rows(n, chunk)
    assert size >= n and size % batch == 0
    if chunk is not None:
        assert batch <= chunk
    # Small batches round to a power of two, larger ones waste at most 1/16 of the
    # work (past `chunk` rows, besides filling the last chunk).
    unit = 1 if chunk is None or n <= chunk else chunk
    if n > 64:
        assert size <= -(-n // unit) * unit * (1 + 1 / 16)
    else:
        assert size < 2 * n or size == 1
    # A bucket size is its own bucket.
    assert bucket_rows(min(size, 10**9), chunk)[0] == size


BAD = [
    (dict(p=1.0), "p must be > 1"),
    (dict(q=0.0), "q must be > 0"),
    (dict(P=-1.0), "P must be > 0"),
    (dict(Q=0.0), "Q must be > 0"),
    (dict(e_irr=-0.1), "e_irr must be >= 0"),
    (dict(R=0.0), "R must be > 0"),
    (dict(r=np.nan), "r must be finite"),
    (dict(N=0.5), "N \\(model size\\)"),
    (dict(B=0.0), "B \\(batch size\\)"),
    (dict(K=-1.0), "K \\(steps\\)"),
    (dict(lr=2.0), "step size diverges"),
    (dict(q=0.05, lr=1.9), "q is too small"),
]


@pytest.mark.parametrize("bad,match", BAD)
@pytest.mark.parametrize("mode", ["eager", "jit", "vmap"])
def test_errors_name_the_problem(bad, match, mode):
    theta = dict(POINT, Q=1.0)
    call = dict(N=1e6, B=32.0, K=100.0, lr=1.0)
    for k, v in bad.items():
        (theta if k in theta else call)[k] = v
    params = nqs.NQSParams(**theta)
    if mode == "eager":
        f = lambda N: nqs.risk(params, N, call["B"], call["K"], lr=call["lr"]).total  # noqa: E731
        N = call["N"]
    elif mode == "jit":
        f = jax.jit(lambda N: nqs.risk(params, N, call["B"], call["K"], lr=call["lr"]).total)
        N = call["N"]
    else:
        f = jax.vmap(lambda N: nqs.risk(params, N, call["B"], call["K"], lr=call["lr"]).total)
        N = jnp.array([1e6, call["N"]])
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(f(N))


def test_check_params_eager_messages():
    params, lr = nqs.preset("pythia-owt2")
    nqs.check_params(params, lr)
    with pytest.raises(ValueError, match="parameter R = -1 .*R > 0"):
        nqs.check_params(eqx.tree_at(lambda t: t.R, params, jnp.asarray(-1.0)), lr)
    with pytest.raises(ValueError, match="diverges: lr \\* Q = 2.1"):
        nqs.check_params(params, 2.1 / float(params.Q))


def test_bad_structure():
    with pytest.raises(ValueError, match="broadcast"):
        nqs.NQSParams(p=np.ones(2), q=np.ones(3), P=1.0, Q=1.0, e_irr=1.0, R=1.0, r=1.0)
    params, _ = nqs.preset("pythia-owt2")
    with pytest.raises(ValueError, match="must broadcast"):
        nqs.risk(params, np.ones(2), np.ones(3), 1.0)
    with pytest.raises(TypeError, match="NQSParams"):
        nqs.risk(dict(p=1.5), 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="head"):
        nqs.SumRule(head=4, order=6)
    with pytest.raises(ValueError, match="missing NQS parameter"):
        nqs.NQSParams.from_dict(dict(p=1.5))
    # A batch size that is no positive integer is named, not clamped or failed on inside.
    sched = nqs.Schedule.constant(1000.0, 64.0)
    for bad in (0, -5, 2.5, "x", True):
        with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
            nqs.risk(params, 1e7, 64.0, 1000.0, chunk=bad)
        with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
            nqs.schedule_risk(params, 1e7, sched, chunk=bad)
        with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
            nqs.weight_norm_risk(params, 1e7, sched, chunk=bad)


def test_library_import_leaves_x64_alone():
    import subprocess
    import sys

    code = "import nqs_engine, jax; print(jax.config.jax_enable_x64)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
