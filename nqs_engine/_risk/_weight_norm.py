r"""The weight-norm variant (SPEC section 2): the step size decays as the weights grow.

The run is cut into stairs (and at the schedule's own change points); before
each stair the step size is lowered according to the expected squared weight
norm, which a scan over the stairs carries per direction on the points of a
[`nqs_engine.DirectionNodes`][].
"""

from __future__ import annotations

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp

from .._chunk import chunked_map
from .._custom_types import FloatArray, RealLike
from .._params import DEFAULT_LR, NQSParams
from .._quadrature import Crossover, SumRule, direction_nodes
from .._schedule import Schedule
from ._kernel import (
    approximation_term,
    check_values,
    curvature,
    geometric_ratio,
    head_exponent,
    idle,
    log_abs_one_minus,
    two_minus_product,
    variance_from_state,
)
from ._risk import RiskBreakdown, prepare_inputs
from ._trajectory import cut_pieces


_MAX_STAIRS = 101  # K / w(K) < 101 for every K (w(K) as in stair_width)

#: The default quadrature of [`weight_norm_risk`][] and of the weight-norm model: 32 head
#: terms, order 5, and 4 panels of 12 Gauss-Legendre nodes graded over the crossover's
#: window (see `_crossover`): 91 points, which every stair sums over. Against a 128 x 16
#: uniform rule it differs by up to ~1e-9 over 300 random constant runs with N up to 1e12
#: (benchmarks/bench_weight_norm.py), the error of its short head and low order: the same
#: as with the 6 panels of 16 nodes (139 points) it had before, which took ~1.3x as long.
#: `rule=SumRule(window_panels=4)` (145 points) holds 3e-15 there; `rule=SumRule()`
#: (177 points) 8e-16. The plain risk's fits keep their own rule (`_model._nqs.FIT_RULE`).
WEIGHT_NORM_RULE = SumRule(head=32, panels=16, nodes=8, order=5, crossover_nodes=12,
                           window_panels=4)


def default_chunk(size: int) -> int:
    r"""The configurations per batch of the stair loop for `size` configurations.

    16 below 2,048 configurations, else a quarter of them rounded down to a power of
    two, at most 2,048. The batch's loop runs as many stairs as its longest run needs
    (the runs are sorted by their number of pieces first), so at least four batches
    keep that waste small; on a CPU, batches of 512 and more are vectorised and
    threaded by XLA (on 20,000 Pythia-like runs 2,048 gave 24k configs/s against
    15k with 16: benchmarks/bench_schedule.py (c); 4,000 runs: 18.5k against 15.5k,
    benchmarks/bench_weight_norm.py). In reverse mode the loop keeps a batch's
    per-direction state (batch x 91 points x 3 values with the default rule) at each
    of its checkpoints, so a larger batch takes proportionally more memory there.

    **Example:**

    >>> from nqs_engine._risk._weight_norm import default_chunk
    >>> [default_chunk(n) for n in (100, 2_000, 4_000, 20_000, 10**6)]
    [16, 16, 512, 2048, 2048]
    """
    quarter = 1 << max(0, (int(size) // 4).bit_length() - 1)
    return min(2048, quarter) if quarter >= 512 else 16


def stair_width(K: FloatArray) -> FloatArray:
    r"""$w(K) = \max(\lfloor K/100 \rfloor, \min(1000, \lfloor K/10 \rfloor))$ for $K > 10$, else 1.

    **Example:**

    >>> from nqs_engine import stair_width
    >>> [int(stair_width(k)) for k in (5, 50, 5_000, 50_000, 500_000)]
    [1, 5, 500, 1000, 5000]
    """
    K = jnp.asarray(K)
    wide = jnp.maximum(jnp.floor(K / 100), jnp.minimum(1000.0, jnp.floor(K / 10)))
    return jnp.where(K > 10, wide, 1.0)


class _NormState(eqx.Module):
    """Per-direction state of the weight-norm scan: c = sqrt(b), m = 1 - sqrt(b), and v."""

    c: FloatArray
    m: FloatArray
    v: FloatArray


def _advance_sqrt(lam, tail, state, lr, batch, k, top):
    r"""One piece of the recurrence, carried as $c = \sqrt{b}$ and $m = 1 - \sqrt{b}$.

    With $h = \mathrm{expm1}(k \log|1 - x|)$, i.e. $|a|^k = 1 + h$:
    $c \leftarrow c(1 + h)$, $m \leftarrow m(1 + h) - h$ (both terms $\ge 0$: no
    cancellation), $a^{2k} = (1 + h)^2$ and $1 - a^{2k} = -h(2 + h)$. One `log1p` and
    one `expm1` per direction and piece, and $m$ gives $W_2$'s $(1 - \sqrt{b})^2$
    without cancellation. A piece at step size 0 is a no-op (see `_kernel.idle`).
    """
    lr, k = idle(lr, k, top)
    x = lr * lam
    if tail:
        x = jnp.maximum(x, jnp.finfo(x.dtype).tiny)
        d = 2 - x
        h = jnp.expm1(k * jnp.log1p(-x))
    else:
        d = two_minus_product(lr, lam)
        h = jnp.expm1(head_exponent(k, log_abs_one_minus(x, d)))
    one_minus_a2k = -h * (2 + h)
    if tail:
        fresh = (lr * lr / batch) * one_minus_a2k / (x * d)
    else:
        fresh = (lr * lr / batch) * geometric_ratio(one_minus_a2k, x, d, k)
    decay = 1 + h
    return _NormState(state.c * decay, state.m * decay - h, state.v * decay * decay + fresh)


def _weight_norm_pieces(steps):
    """Stairs and segment ends merged into pieces, the non-empty ones first (in order).

    Returns (lengths, segment index, number of non-empty pieces); at most
    101 + S pieces, of which typically 10-100 are non-empty.
    """
    K = jnp.sum(steps)
    w = stair_width(K)
    stairs = jnp.minimum(w * jnp.arange(1, _MAX_STAIRS + 1, dtype=K.dtype), K)
    _, lengths, seg = cut_pieces(steps, stairs)
    order = jnp.argsort(lengths <= 0, stable=True)
    return lengths[order], seg[order], jnp.sum(lengths > 0)


def _crossover(theta, lrs, lengths):
    r"""Where the summands of the stairs change shape: a window [`Crossover`][].

    After the pieces so far (step sizes $\gamma_i \le$ the schedule's) direction $n$
    is trained out where $2\lambda_n \sum_i \gamma_i k_i \gg 1$; the sums over the
    directions at every stair place their crossovers between that of the first
    non-empty piece and that of the whole run at the schedule's step sizes (the
    weight-norm decay moves them lower, a little outside the window).
    """
    q, Q = theta[1], theta[3]
    T = jnp.where((lengths > 0) & (lrs > 0), lrs * lengths, 0)
    total = jnp.sum(T)
    tiny = jnp.finfo(T.dtype).tiny
    smallest = jnp.min(jnp.where(T > 0, T, total))
    log_2Q = jnp.log(2 * Q)
    hi = (log_2Q + jnp.log(jnp.maximum(total, tiny))) / q
    lo = (log_2Q + jnp.log(jnp.maximum(smallest, tiny))) / q
    return Crossover(lo, hi, 1 / q, window=True)


def _config_weight_norm(theta, N, lrs, batches, lengths, seg, n_pieces, gamma0, s0, rule):
    p, q, P, Q = theta[0], theta[1], theta[2], theta[3]
    R, r = theta[5], theta[6]
    nodes = direction_nodes(N, rule, _crossover(theta, lrs[seg], lengths))
    us = (nodes.head_log_n, nodes.tail_log_n)
    tails = (False, True)
    lams = tuple(curvature(u, theta) for u in us)
    # W2_n = (P/Q) n^(q-p) (1 - sqrt(b_n))^2 + R n^-r v_n  (times n on the tail).
    c_bias = tuple((P / Q) * jnp.exp((q - p + t) * u) for u, t in zip(us, tails))
    c_var = tuple(R * jnp.exp((t - r) * u) for u, t in zip(us, tails))

    def body(carry):
        i, states, gamma_prev = carry
        lr_sched, batch, k = lrs[seg[i]], batches[seg[i]], lengths[i]
        w2 = nodes.total(*(cb * s.m**2 + cv * s.v for cb, cv, s in zip(c_bias, c_var, states)))
        scaled = gamma0 * s0 / (s0 + jnp.maximum(w2, 0))
        gamma = jnp.minimum(jnp.minimum(gamma_prev, lr_sched), scaled)
        states = tuple(
            _advance_sqrt(lam, t, s, gamma, batch, k, Q) for lam, t, s in zip(lams, tails, states)
        )
        return i + 1, states, gamma

    def start(u):
        return _NormState(jnp.ones_like(u), jnp.zeros_like(u), jnp.zeros_like(u))

    init = (jnp.asarray(0), tuple(start(u) for u in us), jnp.asarray(jnp.inf, dtype=N.dtype))
    # Only the non-empty pieces run; "checkpointed" keeps reverse-mode differentiation.
    _, states, _ = eqxi.while_loop(
        lambda carry: carry[0] < n_pieces, body, init, max_steps=lengths.shape[0],
        kind="checkpointed",
    )
    bias = nodes.total(
        *(0.5 * P * s.c**2 * jnp.exp((t - p) * u) for u, t, s in zip(us, tails, states))
    )
    var = nodes.total(
        *(variance_from_state(u, t, theta, lam, s.v) for u, t, lam, s in zip(us, tails, lams, states))
    )
    return bias, var


@eqx.filter_jit
def weight_norm_terms(theta, N, lrs, batches, steps, gamma0, s0, rule, batch_size, check=True):
    if check:  # the fitter turns the checks off (see _risk._term_sums)
        N = check_values(theta, N, lrs, batches, steps, rule)
        N = eqx.error_if(N, ~jnp.isfinite(s0) | (s0 <= 0), "init_sq_norm must be finite and > 0")
    lengths, seg, n_pieces = jax.vmap(_weight_norm_pieces)(steps)
    # Configurations with similar numbers of stairs share a batch, so that the
    # batched while loop runs about as many steps as each of them needs.
    order = jnp.argsort(n_pieces)
    inputs = (theta.T, N, lrs, batches, lengths, seg, n_pieces, gamma0, s0)

    def one(args):
        th, *rest = args
        return _config_weight_norm(tuple(th), *rest, rule)

    bias, var = chunked_map(one, tuple(a[order] for a in inputs), batch_size)
    inverse = jnp.argsort(order)
    return bias[inverse], var[inverse], approximation_term(theta[0], theta[2], N, rule)


def weight_norm_risk(
    params: NQSParams,
    N: RealLike,
    schedule: Schedule,
    *,
    lr: RealLike = DEFAULT_LR,
    init_sq_norm: RealLike | None = None,
    rule: SumRule = WEIGHT_NORM_RULE,
    chunk: int | None = None,
) -> RiskBreakdown:
    r"""The risk of the weight-norm variant (SPEC section 2): weight growth decays the step.

    The run is cut into stairs of $w(K)$ steps ([`stair_width`][]; the last takes the
    remainder) and at the schedule's own change points. Before each stair the
    step size becomes

    $$\gamma \leftarrow \min\Big(\gamma_{prev},\ \gamma_{sched},\ \gamma_0 \frac{s}{s + W_2}\Big),
      \qquad W_2 = \sum_{n \le N} \frac{P n^{-p}}{\lambda_n}(1 - \sqrt{b_n})^2
        + \frac{2}{\lambda_n}\mathrm{var}_n,$$

    the expected squared weight norm after the stairs so far (SPEC's
    $(1 - 2c_n) P n^{-p}/\lambda_n + (2/\lambda_n)(\mathrm{bias}_n + \mathrm{var}_n)$ with
    $c_n = \sqrt{b_n}$, written without cancellation), $s$ = `init_sq_norm`
    $= E\|w_0\|^2$ (default $N \cdot 0.02^2$) and $\gamma_0$ = `lr`. The stairs run
    as one `lax.scan` (at most 101 stairs plus the schedule's segments), each
    summing $W_2$ over the directions; the loss is then that of the resulting
    per-stair step sizes.

    Because of $\gamma_{prev}$ the step size never rises again, as SPEC states the
    variant: a schedule that starts with a warmup stays at its first warmup
    piece's step size for the whole run (e.g. 2.78 against 2.25 without warmup for
    the preset at $N = 10^8$, $B = 512$, $K = 40000$, 1% warmup). Predict runs with
    warmup by the plain risk, or by this variant on the schedule after the warmup.

    `chunk` is the number of configurations per batch of the stair loop (default:
    `default_chunk` of their number, 16 to 2,048); any value gives the same risk up to
    rounding, larger ones faster on many configurations and heavier in reverse mode.

    **Example:**

    >>> import nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> sched = nqs.Schedule.constant(10_000, 256)
    >>> plain = nqs.schedule_risk(params, 1e8, sched, lr=lr).total
    >>> wn = nqs.weight_norm_risk(params, 1e8, sched, lr=lr).total
    >>> bool(wn != plain)
    True
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    extras = () if init_sq_norm is None else (("init_sq_norm", init_sq_norm),)
    prepared = prepare_inputs(params, N, lr, (schedule.lr, schedule.batch, schedule.steps), rule,
                        extras=extras, chunk=default_chunk if chunk is None else chunk)
    s0 = prepared.extras[0] if extras else prepared.N * 0.02**2
    bias, var, approx = weight_norm_terms(*prepared.flat, prepared.lr, s0, rule, prepared.batch)
    return prepared.breakdown(prepared.theta[4], approx, bias, var)


__all__ = ["WEIGHT_NORM_RULE", "stair_width", "weight_norm_risk", "weight_norm_terms"]
