"""Reference problems and independent brute-force computations for the tests."""

from __future__ import annotations

import pathlib

import hypothesis.strategies as st
import numpy as np
import scipy.special

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
REASON_NO_DATA = f"shared data folder {DATA} is absent (see ../shared/data/README.md)"


def brute_force_terms(N, theta, K, B, lr, chunk=1 << 22):
    """(e_irr, e_appx, e_bias, e_var, total) by summing every direction n <= N in numpy.

    Written independently of the engine: the per-direction closed form of SPEC
    section 1 in float64, with log1p/expm1 so that small gamma*lambda does not
    cancel; exact up to the rounding of a float64 sum (pairwise in numpy).
    """
    p, q, P, Q, e_irr, R, r = (float(theta[k]) for k in ("p", "q", "P", "Q", "e_irr", "R", "r"))
    n_max = int(np.floor(N))
    bias = var = 0.0
    for start in range(1, n_max + 1, chunk):
        n = np.arange(start, min(n_max, start + chunk - 1) + 1, dtype=np.float64)
        lam = Q * n**-q
        x = lr * lam
        with np.errstate(divide="ignore", invalid="ignore"):
            log_abs_a = np.where(x < 0.5, np.log1p(-np.minimum(x, 0.5)), np.log(np.abs(1.0 - x)))
            y = 2.0 * K * log_abs_a
            a2k = np.where(x == 1.0, 1.0 if K == 0 else 0.0, np.exp(y))  # 0^0 = 1
            # (1 - a^{2K}) / (1 - a^2); equals 1 at a = 0 (x = 1) when K > 0.
            geo = np.where(x == 1.0, 1.0 if K > 0 else 0.0, -np.expm1(y) / (x * (2.0 - x)))
        bias += np.sum(0.5 * P * n**-p * a2k)
        var += np.sum(0.5 * lam * R * n**-r * (lr * lr / B) * geo)
    approx = 0.5 * P * scipy.special.zeta(p, N + 1.0)
    return e_irr, approx, bias, var, e_irr + approx + bias + var


#: The fields of a RiskBreakdown, in order.
FIELDS = ("irreducible", "approximation", "bias", "variance", "total")


def as_array(out):
    """A RiskBreakdown as a float64 array with the five fields on the first axis."""
    return np.array([np.asarray(getattr(out, f), dtype=np.float64) for f in FIELDS])


def log_uniform(lo, hi):
    """Floats log-uniform on [lo, hi]."""
    return st.floats(np.log10(lo), np.log10(hi)).map(lambda e: float(10.0**e))


@st.composite
def thetas(draw):
    """NQS parameters (a dict) over the issues' test domain."""
    return dict(
        p=draw(st.floats(1.05, 3.0)),
        q=draw(st.floats(0.3, 3.0)),
        P=draw(log_uniform(1e-2, 1e2)),
        Q=draw(log_uniform(1e-2, 1e2)),
        e_irr=draw(log_uniform(1e-3, 1e1)),
        R=draw(log_uniform(1e-3, 1e3)),
        r=draw(st.floats(0.3, 3.0)),
    )


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b) / np.abs(b)


def brute_force_schedule(N, theta, segments, lr, chunk=1 << 21):
    """(bias, variance) after piecewise-constant `segments` [(multiplier, B, k), ...].

    Every direction n <= N, the recursion of SPEC section 1 in numpy float64.
    """
    bias = var = 0.0
    for n, lam in _directions(N, theta, chunk):
        b = np.ones_like(n)
        v = np.zeros_like(n)
        for mult, B, k in segments:
            a2k, geo = _segment_factors(lr * mult * lam, k)
            b = b * a2k
            v = v * a2k + (lr * mult) ** 2 / B * geo
        bias += np.sum(0.5 * theta["P"] * n ** -theta["p"] * b)
        var += np.sum(0.5 * lam * theta["R"] * n ** -theta["r"] * v)
    return bias, var


def brute_force_weight_norm(N, theta, segments, lr, init_sq_norm=None):
    """(bias, variance) of the weight-norm variant (SPEC section 2), every direction n <= N.

    A direct transcription of the SPEC: stairs of w(K) steps and the schedule's
    change points, W2 from its defining formula with c_n = prod |a|^k, the step
    min(previous, schedule, gamma0 s / (s + W2)) before each stair.
    """
    n = np.arange(1, int(np.floor(N)) + 1, dtype=np.float64)
    P, p, Q, q, R, r = (theta[k] for k in ("P", "p", "Q", "q", "R", "r"))
    lam = Q * n**-q
    s = N * 0.02**2 if init_sq_norm is None else init_sq_norm
    K = sum(k for _, _, k in segments)
    w = max(np.floor(K / 100), min(1000, np.floor(K / 10))) if K > 10 else 1.0
    # Cut points: every w steps and at the schedule's change points.
    ends = np.cumsum([k for _, _, k in segments])
    cuts = sorted(set(np.minimum(w * np.arange(1, int(np.ceil(K / w)) + 1), K)) | set(ends))
    b = np.ones_like(n)
    v = np.zeros_like(n)
    log_c = np.zeros_like(n)  # log prod |a|^k
    gamma_prev, start = np.inf, 0.0
    for cut in cuts:
        seg = int(np.searchsorted(ends, cut, side="left"))
        mult, B, _ = segments[seg]
        bias_n = 0.5 * P * n**-p * b
        var_n = 0.5 * lam * R * n**-r * v
        W2 = np.sum((1 - 2 * np.exp(log_c)) * P * n**-p / lam + 2 / lam * (bias_n + var_n))
        scale = lr * s / (s + W2) if W2 >= 0 else np.inf
        gamma = min(gamma_prev, lr * mult, scale)
        k = cut - start
        a2k, geo = _segment_factors(gamma * lam, k)
        b = b * a2k
        v = v * a2k + gamma**2 / B * geo
        with np.errstate(divide="ignore"):
            log_c = log_c + k * np.log(np.abs(1 - gamma * lam))
        gamma_prev, start = gamma, cut
    return np.sum(0.5 * P * n**-p * b), np.sum(0.5 * lam * R * n**-r * v)


def _directions(N, theta, chunk):
    n_max = int(np.floor(N))
    for start in range(1, n_max + 1, chunk):
        n = np.arange(start, min(n_max, start + chunk - 1) + 1, dtype=np.float64)
        yield n, theta["Q"] * n ** -theta["q"]


def _segment_factors(x, k):
    """a^(2k) and (1 - a^(2k)) / (1 - a^2) for a = 1 - x, cancellation-free."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_abs_a = np.where(x < 0.5, np.log1p(-np.minimum(x, 0.5)), np.log(np.abs(1.0 - x)))
        y = 2.0 * k * log_abs_a
        a2k = np.where(x == 1.0, 1.0 if k == 0 else 0.0, np.exp(y))
        geo = np.where(x == 0.0, k, np.where(x == 1.0, 1.0 if k > 0 else 0.0,
                                              -np.expm1(y) / (x * (2.0 - x))))
    return a2k, geo


#: Synthetic loss curves: warmup from lr 0 over WARMUP steps, then the shape, K steps,
#: checkpoints every EVERY steps, peak learning rate PEAK.
WARMUP, K, EVERY, PEAK = 200, 3000, 100, 3e-4


def curve_lr(name: str, t: np.ndarray) -> np.ndarray:
    """Per-step learning rate of the synthetic schedules (warmup from 0, then the shape)."""
    x = np.clip((t - WARMUP) / (K - WARMUP), 0, 1)
    shape = {"constant": np.ones_like(x), "cosine": 0.1 + 0.45 * (1 + np.cos(np.pi * x)),
             "step": np.where(t < 2000, 1.0, 0.3)}[name]
    return PEAK * np.where(t < WARMUP, t / WARMUP, shape)


def curve_table(model, names=("constant", "cosine", "step"), sizes=(25e6, 100e6)):
    """Columns run, N, step, lr, loss of synthetic curves logged with their learning rate as
    real logs are, the loss predicted by `model` (any loss model that reads curves)."""
    import nqs_engine as nqs

    step = np.arange(WARMUP + EVERY, K + 1, EVERY, dtype=float)
    cols = {k: [] for k in ("run", "N", "step", "lr")}
    for N in sizes:
        for name in names:
            cols["run"] += [f"{N / 1e6:g}M/{name}"] * step.size
            cols["N"] += [N] * step.size
            cols["step"] += step.tolist()
            cols["lr"] += curve_lr(name, step).tolist()
    cols = {k: np.asarray(v) for k, v in cols.items()}
    runs = nqs.Runs.from_curves(cols["N"], cols["step"], cols["lr"], run=cols["run"],
                                warmup=WARMUP)
    cols["loss"] = np.asarray(model.predict(runs))
    return cols


def curve_runs(cols, mask=None, loss=True):
    """`Runs.from_curves` of the rows of `cols` where `mask` is true (default all)."""
    import nqs_engine as nqs

    m = np.ones(cols["step"].size, bool) if mask is None else mask
    return nqs.Runs.from_curves(cols["N"][m], cols["step"][m], cols["lr"][m],
                                cols["loss"][m] if loss else None, run=cols["run"][m],
                                warmup=WARMUP)


def refit_held_out_cosine(truth, cols):
    """Fit `truth`'s family to the curves of `cols` other than cosine, from `truth` moved by
    N(0, 0.1) in its flat coordinates; return the fit space, the fit and the absolute error
    of its prediction of the held-out cosine curves."""
    import nqs_engine as nqs

    train = ~np.char.endswith(cols["run"].astype(str), "/cosine")
    runs = curve_runs(cols, train)
    space = truth.fit_space(runs)
    u = space.to_flat(truth)
    start = space.to_model(u + np.random.default_rng(1).normal(0, 0.1, u.size))
    result = nqs.fit(runs, start, starts=8, refine=1, init=start, max_steps=60)
    pred = np.asarray(result.model.predict(curve_runs(cols, ~train, loss=False)))
    return space, result, np.abs(pred - cols["loss"][~train])
