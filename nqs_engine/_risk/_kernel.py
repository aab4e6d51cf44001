r"""The closed form of one direction of the NQS, without cancellation, and its sums.

For a schedule of segments $s = 1..S$ with step sizes $\gamma_s$, batch sizes
$B_s$ and step counts $k_s$, direction $n$ starts from $b = 1$, $v = 0$ and, with
$a_s = 1 - \gamma_s\lambda_n$,

$$b \leftarrow b\,a_s^{2k_s}, \qquad
  v \leftarrow v\,a_s^{2k_s} + \frac{\gamma_s^2}{B_s}\,\frac{1 - a_s^{2k_s}}{1 - a_s^2}.$$

Everything is evaluated without cancellation: with $x = \gamma\lambda$,
$L = \log|1 - x|$ (by `log1p` for small $x$) and $y = 2kL$,

$$a^{2k} = e^{y}, \qquad
  \frac{1 - a^{2k}}{1 - a^2} = 2k\,\frac{\operatorname{expm1}(y)}{y}\,
  \frac{L}{-x}\,\frac{1}{2 - x},$$

each factor being a bounded function with its exact limit at $x \to 0$ or $y \to 0$.
The parameters enter as `theta`, the tuple $(p, q, P, Q, e_{irr}, R, r)$ of scalars.
These are the building blocks of every evaluator of the package (the risk, loss
curves, the weight-norm variant, the fast evaluators of fitting and planning).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._quadrature import Crossover, hurwitz_zeta, sum_directions


# ---------------------------------------------------------------------------
# Cancellation-free building blocks (safe at x = 0, y = 0 and at x = 1).
# ---------------------------------------------------------------------------


def two_minus_product(a, b):
    r"""$2 - ab$ to within a rounding of the result, even when $ab \approx 2$.

    Near the edge of stability ($\gamma\lambda_1 \to 2$) the factor $1/(2 - x)$ of
    the variance amplifies the rounding of $x = \gamma\lambda$ by $2/(2 - x)$; in
    float32 that is 1e-4 at $\gamma\lambda_1 = 1.999$. The product is therefore
    split exactly (Veltkamp-Dekker): $ab = \mathrm{fl}(ab) + e$ with $e$ exact, and
    $2 - \mathrm{fl}(ab)$ is exact for $\mathrm{fl}(ab) \in [1, 4]$ (Sterbenz).
    """
    bits = (jnp.finfo(a.dtype).nmant + 2) // 2
    factor = float(2**bits + 1)

    def split(v):
        c = factor * v
        hi = c - (c - v)
        return hi, v - hi

    prod = a * b
    a_hi, a_lo = split(a)
    b_hi, b_lo = split(b)
    err = ((a_hi * b_hi - prod) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return (2 - prod) - err


def log_abs_one_minus(x, two_minus_x):
    r"""$\log|1 - x|$ for $0 \le x < 2$, accurate at both ends ($-\infty$ at $x = 1$).

    `log1p(-x)` for $x < 1/2$; $\log|1 - x|$ (exact subtraction) in between;
    `log1p(-(2 - x))` for $x > 3/2$, with $2 - x$ supplied accurately. Written as
    $\log t + \operatorname{log1p}(s)$ with the selects on the arguments only
    ($t = 1$ or $s = 0$ where a branch is not taken, each exactly 0 after its
    function): a select on the output of a transcendental function stops XLA's CPU
    backend from fusing it into the reduction that consumes it (three to four times
    slower per point).
    """
    low, high = x < 0.5, x > 1.5
    mid = jnp.log(jnp.where(low | high, 1, jnp.abs(1 - x)))
    ends = jnp.log1p(-jnp.where(low, x, jnp.where(high, two_minus_x, 0)))
    return mid + ends


def head_exponent(k, L):
    """k * L, with 0 for k = 0 even where L = -inf (a = 0: a^0 = 1).

    The clamp of L (to the most negative float where k = 0) is select-free per point.
    """
    floor = jnp.where(k > 0, -jnp.inf, jnp.finfo(L.dtype).min)
    return k * jnp.maximum(L, floor)


def geometric_ratio(one_minus_a2k, x, d, k):
    r"""$(1 - a^{2k})/(1 - a^2) = (1 - a^{2k})/(x(2 - x))$, with its limit $k$ as $x \to 0$.

    $x$ is clamped at the smallest normal number (select-free): where the caller
    computed $1 - a^{2k}$ from the same clamped $x$ (as [`advance`][] does), the ratio
    stays at its limit $k$ should $x$ underflow. `k` is kept for the signature.
    """
    del k
    return one_minus_a2k / (jnp.maximum(x, jnp.finfo(x.dtype).tiny) * d)


# Segments beyond this count are applied with lax.scan instead of unrolled.
UNROLL_SEGMENTS = 16


def idle(lr, k, top):
    r"""A segment at step size 0 as an equivalent no-op: `(lr, k)` to use instead.

    A segment with $\gamma = 0$ moves nothing ($b$ and $v$ keep their values), as a
    segment of no steps at any stable step size does. Evaluating it at $x = 0$
    gives the right value but, under differentiation, quotients of numbers that
    underflow (the ratio $(1 - a^{2k})/(x(2 - x))$ at the smallest positive
    $x$), whose derivative overflows and turns into NaN. So such a segment is
    run as zero steps at step size $1/(2\lambda_1)$ (`top` $= \lambda_1 = Q$): the
    same value, and finite derivatives, which are zero in the segment's own
    step size and length (as they are for the schedule it stands for).
    """
    moving = lr > 0
    return jnp.where(moving, lr, 0.5 / top), jnp.where(moving, k, jnp.zeros_like(k))


def advance(lam, tail, log_b, v, lr, batch, k, top, need_v=True):
    r"""Apply one segment $(\gamma, B, k)$ to the per-direction state $(\log b, v)$.

    `lam` holds $\lambda_n$ at the points and `top` $= \lambda_1 = Q$; `log_b` and `v`
    may be `None` (the initial state $b = 1$, $v = 0$), which saves work on the
    first segment. With `tail=True` assumes $0 \le \gamma\lambda_n < 1$ (checked by
    the callers): then $\log|1 - x|$ is `log1p(-x)` and
    $(1 - a^{2k})/(1 - a^2) = -\mathrm{expm1}(y)/(x(2 - x))$ holds with no select
    (clamping $x$ at the smallest normal number keeps the ratio at its limit $k$
    should $x$ underflow), which keeps the hot path fusable. A segment at
    $\gamma = 0$ is a no-op with finite derivatives (see [`idle`][]).
    """
    lr, k = idle(lr, k, top)
    x = jnp.maximum(lr * lam, jnp.finfo(lam.dtype).tiny)
    if tail:
        L = jnp.log1p(-x)
        d = 2 - x
        y = 2 * k * L
    else:
        d = two_minus_product(lr, lam)
        L = log_abs_one_minus(x, d)
        y = 2 * head_exponent(k, L)
    log_b = y if log_b is None else log_b + y
    if need_v:
        if tail:
            fresh = (lr * lr / batch) * (-jnp.expm1(y)) / (x * d)
        else:
            fresh = (lr * lr / batch) * geometric_ratio(-jnp.expm1(y), x, d, k)
        v = fresh if v is None else v * jnp.exp(y) + fresh
    return log_b, v


def curvature(u, theta):
    r"""$\lambda_n = Q n^{-q}$ at $u = \log n$."""
    # Q * n^-q rather than exp(log Q - q u): exactly Q at n = 1, where the edge of
    # stability makes the variance sensitive to the last bit of lr * lambda_1.
    return theta[3] * jnp.exp(-theta[1] * u)


def bias_from_state(u, tail, theta, log_b):
    """Bias of direction e^u from its state (times n on the tail)."""
    p, P = theta[0], theta[2]
    shift = 1 if tail else 0
    return 0.5 * P * jnp.exp(log_b - (p - shift) * u)


def variance_from_state(u, tail, theta, lam, v):
    """Variance of direction e^u from its state (times n on the tail)."""
    R, r = theta[5], theta[6]
    shift = 1 if tail else 0
    return 0.5 * R * lam * jnp.exp((shift - r) * u) * v


def direction_terms(u, tail, theta, lrs, batches, steps, term, scan=False):
    r"""`term` ("bias" or "variance") of direction $n = e^u$ after the segments.

    With `tail=True` returns the term times $n$ (the integrand in $\log n$).
    Segments are 1-D arrays of static length $S$: unrolled up to 16, scanned beyond
    (or, for $S > 1$, always with `scan=True`: a smaller program, quicker to compile
    under `grad` and `jvp`, where it also runs faster; unrolled is faster for plain
    evaluation).
    """
    lam = curvature(u, theta)
    need_v = term == "variance"
    S = lrs.shape[0]
    if S == 1 or (S <= UNROLL_SEGMENTS and not scan):
        log_b = v = None
        for i in range(S):
            log_b, v = advance(lam, tail, log_b, v, lrs[i], batches[i], steps[i], theta[3],
                              need_v)
    else:

        def body(state, seg):
            return advance(lam, tail, *state, *seg, theta[3], need_v), None

        zeros = jnp.zeros_like(u)
        (log_b, v), _ = jax.lax.scan(body, (zeros, zeros), (lrs, batches, steps))
    if term == "bias":
        return bias_from_state(u, tail, theta, log_b)
    return variance_from_state(u, tail, theta, lam, v)


def crossover(theta, lrs, steps, term):
    r"""Where `term` of one configuration changes shape over the directions: a [`Crossover`][].

    Segment $s$ has taken $T_s = \gamma_s k_s$ (step size times steps) when it ends.
    Direction $n$ is trained out where $2\lambda_n \sum_s T_s \gg 1$ and untouched
    where it is $\ll 1$, so the bias changes shape only around
    $2\lambda_n \sum_s T_s = 1$, i.e. $\log n^* = \log(2 Q \sum_s T_s)/q$. The
    variance adds each segment's own noise, saturated where $2\lambda_n T_s \gg 1$
    and damped by the later segments: it changes shape at $\log n^*$ of every partial
    sum of the $T_s$, all between those of $\min_s T_s$ and of $\sum_s T_s$. Segments
    without steps or at step size 0 do not count.
    """
    q, Q = theta[1], theta[3]
    tiny = jnp.finfo(lrs.dtype).tiny
    moving = (lrs > 0) & (steps > 0)
    T = jnp.where(moving, lrs * steps, 0)
    total = jnp.sum(T)
    log_2Q = jnp.log(2 * Q)
    hi = (log_2Q + jnp.log(jnp.maximum(total, tiny))) / q
    if term == "bias" or T.shape[0] == 1:
        return Crossover(hi, hi, 1 / q)
    smallest = jnp.min(jnp.where(moving, T, total))
    lo = (log_2Q + jnp.log(jnp.maximum(smallest, tiny))) / q
    return Crossover(lo, hi, 1 / q, window=True)


def config_sum(theta, N, lrs, batches, steps, rule, term, scan=False):
    """One configuration's bias or variance sum (a scalar); segments are 1-D arrays."""
    return sum_directions(
        lambda u, tail: direction_terms(u, tail, theta, lrs, batches, steps, term, scan), N, rule,
        crossover(theta, lrs, steps, term),
    )


def check_values(theta, N, lrs, batches, steps, rule):
    """`eqx.error_if` checks of the model's domain; returns N so the checks stay live."""
    p, q, P, Q, e_irr, R, r = theta
    fin = jnp.isfinite
    checks = [
        (~fin(p) | (p <= 1), "NQS parameter p must be > 1 (the tail sum must converge)"),
        (~fin(q) | (q <= 0), "NQS parameter q must be > 0"),
        (~fin(P) | (P <= 0), "NQS parameter P must be > 0"),
        (~fin(Q) | (Q <= 0), "NQS parameter Q must be > 0"),
        (~fin(e_irr) | (e_irr < 0), "NQS parameter e_irr must be >= 0"),
        (~fin(R) | (R <= 0), "NQS parameter R must be > 0"),
        (~fin(r), "NQS parameter r must be finite"),
        (~fin(N) | (N < 1), "N (model size) must be a finite number >= 1"),
        (jnp.any(~fin(batches) | (batches <= 0), axis=-1), "B (batch size) must be finite and > 0"),
        (jnp.any(~fin(steps) | (steps < 0), axis=-1), "K (steps) must be finite and >= 0"),
        (jnp.any(~fin(lrs) | (lrs < 0), axis=-1), "lr (step size) must be finite and >= 0"),
    ]
    ok = jnp.zeros_like(N, dtype=bool)
    for pred, msg in checks:
        N = eqx.error_if(N, pred, msg)
        ok = ok | pred
    ok = ~ok  # the checks below are only meaningful on otherwise valid input
    lr_max = jnp.max(jnp.where(steps > 0, lrs, 0), axis=-1)  # empty segments never run
    N = eqx.error_if(
        N,
        ok & (lr_max * Q >= 2),
        "step size diverges: lr * Q >= 2, so |1 - lr * lambda_1| >= 1 and SGD blows up "
        "in the top direction",
    )
    # The summand has a kink where lr * lambda_n = 1; the quadrature tail must not reach it.
    N = eqx.error_if(
        N,
        ok & (rule.kink_ratio(lr_max, Q, q) >= 1),
        f"q is too small for the quadrature rule: the direction where lr * lambda_n = 1 lies "
        f"beyond n = {rule.smooth_from:g}; pass rule=SumRule(head=...) with a larger head",
    )
    return N


@eqx.filter_jit
def approximation_term(p, P, N, rule):
    r"""The approximation term $\tfrac12 P\,\zeta(p, N + 1)$ (the directions $n > N$)."""
    return 0.5 * P * hurwitz_zeta(p, N + 1, terms=min(rule.head, 16))
