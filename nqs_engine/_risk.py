r"""The NQS expected risk: closed form per direction, summed over N directions.

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
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._chunk import bucket_rows, chunked_map, pad_rows
from ._custom_types import FloatArray, RealLike
from ._params import DEFAULT_LR, PARAM_NAMES, NQSParams
from ._quadrature import SumRule, hurwitz_zeta, sum_directions
from ._schedule import Schedule


class RiskBreakdown(eqx.Module):
    r"""The NQS expected risk and its four terms, all of one broadcast shape.

    $L = e_{irr} + e_{appx} + e_{bias} + e_{var}$ with

    - `irreducible` $= e_{irr}$;
    - `approximation` $= \tfrac12 P\,\zeta(p, N + 1)$, the directions $n > N$ that
      a model of size $N$ cannot move;
    - `bias` $= \sum_{n \le N} \tfrac12 P n^{-p}\, b_n$, the initial excess risk not yet
      optimised away;
    - `variance` $= \sum_{n \le N} \tfrac12 \lambda_n R n^{-r}\, v_n$, the excess risk
      from gradient noise;
    - `total` $= L$.

    **Example:**

    >>> import nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> out = nqs.risk(params, N=1e8, B=256, K=10_000)
    >>> bool(abs(out.total - (out.irreducible + out.approximation + out.bias + out.variance)) < 1e-5)
    True
    """

    irreducible: FloatArray
    approximation: FloatArray
    bias: FloatArray
    variance: FloatArray
    total: FloatArray

    @property
    def shape(self) -> tuple[int, ...]:
        """The broadcast shape of the configurations evaluated."""
        return self.total.shape

    @classmethod
    def from_terms(cls, irreducible, approximation, bias, variance, shape=None) -> "RiskBreakdown":
        """The breakdown with `total` as the sum of the four terms (broadcast, then reshaped)."""
        terms = jnp.broadcast_arrays(irreducible, approximation, bias, variance)
        total = terms[0] + terms[1] + terms[2] + terms[3]
        parts = [*terms, total]
        if shape is not None:
            parts = [a.reshape(shape) for a in parts]
        return cls(*parts)


# ---------------------------------------------------------------------------
# Cancellation-free building blocks (safe at x = 0, y = 0 and at x = 1).
# ---------------------------------------------------------------------------


def _two_minus_product(a, b):
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


def _log_abs_one_minus(x, two_minus_x):
    r"""$\log|1 - x|$ for $0 \le x < 2$, accurate at both ends ($-\infty$ at $x = 1$).

    `log1p(-x)` for $x < 1/2$; $\log|1 - x|$ (exact subtraction) in between;
    `log1p(-(2 - x))` for $x > 3/2$, with $2 - x$ supplied accurately.
    """
    low, high = x < 0.5, x > 1.5
    near0 = jnp.log1p(-jnp.where(low, x, 0))
    near2 = jnp.log1p(-jnp.where(high, two_minus_x, 0))
    mid = jnp.log(jnp.abs(1 - jnp.where(low | high, 2, x)))
    return jnp.where(low, near0, jnp.where(high, near2, mid))


def _head_exponent(k, L):
    """k * L, with 0 for k = 0 even where L = -inf (a = 0: a^0 = 1)."""
    return jnp.where(k > 0, k * L, 0)


def _geometric_ratio(one_minus_a2k, x, d, k):
    r"""$(1 - a^{2k})/(1 - a^2) = (1 - a^{2k})/(x(2 - x))$, with its limit $k$ as $x \to 0$."""
    ok = x > jnp.finfo(x.dtype).tiny
    return jnp.where(ok, one_minus_a2k / (jnp.where(ok, x, 1) * d), k)


# Segments beyond this count are applied with lax.scan instead of unrolled.
_UNROLL_SEGMENTS = 16


def _advance(lam, tail, log_b, v, lr, batch, k, need_v=True):
    r"""Apply one segment $(\gamma, B, k)$ to the per-direction state $(\log b, v)$.

    `lam` holds $\lambda_n$ at the points; `log_b` and `v` may be `None` (the
    initial state $b = 1$, $v = 0$), which saves work on the first segment.
    With `tail=True` assumes $0 < \gamma\lambda_n < 1$ (checked by the callers):
    then $\log|1 - x|$ is `log1p(-x)` and $(1 - a^{2k})/(1 - a^2) = -\mathrm{expm1}(y)/(x(2 - x))$
    holds with no select (clamping $x$ at the smallest normal number keeps the
    ratio at its limit $k$ should $x$ underflow), which keeps the hot path fusable.
    """
    x = lr * lam
    if tail:
        x = jnp.maximum(x, jnp.finfo(x.dtype).tiny)
        L = jnp.log1p(-x)
        d = 2 - x
        y = 2 * k * L
    else:
        d = _two_minus_product(lr, lam)
        L = _log_abs_one_minus(x, d)
        y = 2 * _head_exponent(k, L)
    log_b = y if log_b is None else log_b + y
    if need_v:
        if tail:
            fresh = (lr * lr / batch) * (-jnp.expm1(y)) / (x * d)
        else:
            fresh = (lr * lr / batch) * _geometric_ratio(-jnp.expm1(y), x, d, k)
        v = fresh if v is None else v * jnp.exp(y) + fresh
    return log_b, v


def _lambda(u, theta):
    # Q * n^-q rather than exp(log Q - q u): exactly Q at n = 1, where the edge of
    # stability makes the variance sensitive to the last bit of lr * lambda_1.
    return theta[3] * jnp.exp(-theta[1] * u)


def _bias_from_state(u, tail, theta, log_b):
    """Bias of direction e^u from its state (times n on the tail)."""
    p, P = theta[0], theta[2]
    shift = 1 if tail else 0
    return 0.5 * P * jnp.exp(log_b - (p - shift) * u)


def _variance_from_state(u, tail, theta, lam, v):
    """Variance of direction e^u from its state (times n on the tail)."""
    R, r = theta[5], theta[6]
    shift = 1 if tail else 0
    return 0.5 * R * lam * jnp.exp((shift - r) * u) * v


def _direction_terms(u, tail, theta, lrs, batches, steps, term, scan=False):
    r"""`term` ("bias" or "variance") of direction $n = e^u$ after the segments.

    With `tail=True` returns the term times $n$ (the integrand in $\log n$).
    Segments are 1-D arrays of static length $S$: unrolled up to 16, scanned beyond
    (or always with `scan=True`: a smaller program, quicker to compile under `grad`).
    """
    lam = _lambda(u, theta)
    need_v = term == "variance"
    S = lrs.shape[0]
    if S <= _UNROLL_SEGMENTS and not scan:
        log_b = v = None
        for i in range(S):
            log_b, v = _advance(lam, tail, log_b, v, lrs[i], batches[i], steps[i], need_v)
    else:

        def body(state, seg):
            return _advance(lam, tail, *state, *seg, need_v), None

        zeros = jnp.zeros_like(u)
        (log_b, v), _ = jax.lax.scan(body, (zeros, zeros), (lrs, batches, steps))
    if term == "bias":
        return _bias_from_state(u, tail, theta, log_b)
    return _variance_from_state(u, tail, theta, lam, v)


def _config_sum(theta, N, lrs, batches, steps, rule, term, scan=False):
    """One configuration's bias or variance sum (a scalar); segments are 1-D arrays."""
    return sum_directions(
        lambda u, tail: _direction_terms(u, tail, theta, lrs, batches, steps, term, scan), N, rule
    )


def _to_float_array(x, name):
    if isinstance(x, jax.Array):
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x
        if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool:
            return x.astype(jnp.result_type(float))
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number or array, got {x!r}") from None
    return jnp.asarray(arr, dtype=jnp.result_type(float))


def _check_values(theta, N, lrs, batches, steps, rule):
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
def _term_sums(theta, N, lrs, batches, steps, rule, batch_size, term, check=True):
    """Sum of one risk term over directions for flat arrays of configurations.

    theta (7, C), N (C,), segments (C, S). Each term is its own compiled program
    with a single reduction per configuration: XLA's CPU backend fuses such a
    reduction with everything that feeds it, whereas two reductions sharing their
    producers force those producers into memory (several times slower).
    `check=False` skips the domain checks (the fitter's line searches probe
    far-away trial points and judge them by their value instead).
    """
    if check:
        N = _check_values(theta, N, lrs, batches, steps, rule)

    def one(args):
        th, n, lr, b, k = args
        return _config_sum(tuple(th), n, lr, b, k, rule, term)

    return chunked_map(one, (theta.T, N, lrs, batches, steps), batch_size)


@eqx.filter_jit
def _approximation(p, P, N, rule):
    """The approximation term (1/2) P zeta(p, N + 1)."""
    return 0.5 * P * hurwitz_zeta(p, N + 1, terms=rule.head)


def _risk_segments(theta, N, lrs, batches, steps, rule, batch_size, check=True):
    """The four risk terms (irreducible, approximation, bias, variance) for flat configurations."""
    bias = _term_sums(theta, N, lrs, batches, steps, rule, batch_size, "bias", check)
    variance = _term_sums(theta, N, lrs, batches, steps, rule, batch_size, "variance", check)
    return theta[4], _approximation(theta[0], theta[2], N, rule), bias, variance


def risk(
    params: NQSParams,
    N: RealLike,
    B: RealLike,
    K: RealLike,
    *,
    lr: RealLike = DEFAULT_LR,
    rule: SumRule = SumRule(),
    chunk: int = 2048,
) -> RiskBreakdown:
    r"""The NQS expected risk after $K$ SGD steps at batch size $B$ on a model of size $N$.

    For a constant schedule (step size $\gamma$ = `lr`, batch $B$, $K$ steps), with
    $\lambda_n = Q n^{-q}$ and $a_n = 1 - \gamma\lambda_n$:

    $$L = e_{irr} + \tfrac12 P\,\zeta(p, N+1)
       + \sum_{n=1}^{N} \tfrac12 P n^{-p} a_n^{2K}
       + \sum_{n=1}^{N} \tfrac12 \lambda_n R n^{-r}\,\frac{\gamma^2}{B}\,
         \frac{1 - a_n^{2K}}{1 - a_n^2}.$$

    Sums over $N$ up to $10^{12}$ directions are taken by [`nqs_engine.SumRule`][]
    (an exact head and a quadrature tail); relative error near 1e-12 in float64
    and 1e-6 in float32. $N$, $B$, $K$ are treated as continuous, so `jax.grad`
    and `jax.jacfwd` give derivatives in all of them and in every parameter
    (for $N <$ `rule.head` the sum is over $n \le \lfloor N \rfloor$).

    **Arguments:**

    - `params`: the [`nqs_engine.NQSParams`][]; its fields may carry batch shapes.
    - `N`, `B`, `K`: model size (directions), batch size, steps. Arrays broadcast
      against each other, against the fields of `params` and against `lr`.
    - `lr`: peak step size $\gamma_0$ (default 1.999).
    - `rule`: the quadrature structure (static).
    - `chunk`: configurations evaluated together; bounds memory for huge grids.
      The configurations are padded to one of few row counts (past 64 rows, at
      most 1/16 more work), so calls of nearby sizes share one compiled program.

    **Returns:** a [`nqs_engine.RiskBreakdown`][] of the broadcast shape.

    Out-of-domain values raise (through `eqx.error_if`, also under `jit` and
    `vmap`) an error naming the parameter and its range, as does a diverging step
    size ($\gamma Q \ge 2$). The computation runs in the floating dtype of the
    inputs: float32 unless the caller enabled `jax_enable_x64`.

    **Example:**

    >>> import jax, jax.numpy as jnp
    >>> import nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> out = nqs.risk(params, N=jnp.array([1e7, 1e8]), B=256, K=10_000, lr=lr)
    >>> out.total.shape
    (2,)
    >>> bool(out.total[1] < out.total[0])   # a bigger model reaches a lower loss
    True
    >>> dL_dN = jax.grad(lambda n: nqs.risk(params, n, 256.0, 1e4).total)(1e8)
    >>> bool(dL_dN < 0)
    True
    """
    B = _to_float_array(B, "B")
    K = _to_float_array(K, "K")
    segments = (jnp.ones((1,), B.dtype), B[..., None], K[..., None])
    prepared = _prepare(params, N, lr, segments, rule, names=("B", "K"), chunk=chunk)
    return prepared.breakdown(*_risk_segments(*prepared.flat, rule, prepared.batch))


class _Prepared(eqx.Module):
    """Inputs broadcast to one batch shape and flattened: theta (7, C), N (C,), segments (C, S).

    With bucketing (`_prepare(chunk=...)`) the C rows are `size` configurations padded
    by repeating the last one (see `bucket_rows`); `breakdown` drops the padding and
    `batch` is the batch size of `chunked_map` over the rows.
    """

    theta: FloatArray
    N: FloatArray
    lr: FloatArray
    lrs: FloatArray
    batches: FloatArray
    steps: FloatArray
    extras: tuple
    shape: tuple = eqx.field(static=True)
    batch: int = eqx.field(static=True, default=1)

    @property
    def flat(self):
        return self.theta, self.N, self.lrs, self.batches, self.steps

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def breakdown(self, irreducible, approximation, bias, variance, shape=None) -> "RiskBreakdown":
        """The `RiskBreakdown` (of this batch shape, or `shape`) from the terms of the padded rows."""
        shape = self.shape if shape is None else tuple(shape)
        return _breakdown(irreducible, approximation, bias, variance, self.size, shape)


_NO_BUCKET = object()


def _prepare(params, N, lr, segments, rule, names=("schedule",), extras=(), chunk=_NO_BUCKET):
    """Check types, broadcast params, N, lr, the segments' batch shape and `extras`; flatten.

    `segments` = (multipliers, batch sizes, steps), arrays whose last axis is the
    segment axis; step sizes are lr * multipliers. `extras` are further arrays
    (name, value) that broadcast like N. Given `chunk` (an int, or None for no
    chunking), the rows are padded to `bucket_rows(size, chunk)`, so that calls of
    nearby sizes share the compiled programs downstream.
    """
    if not isinstance(params, NQSParams):
        raise TypeError(f"params must be an NQSParams, got {type(params).__name__}")
    if not isinstance(rule, SumRule):
        raise TypeError(f"rule must be a SumRule, got {type(rule).__name__}")
    fields = [_to_float_array(getattr(params, n), f"params.{n}") for n in PARAM_NAMES]
    N = _to_float_array(N, "N")
    lr = _to_float_array(lr, "lr")
    extra_arrays = [_to_float_array(v, name) for name, v in extras]
    segs = [_to_float_array(v, "schedule") for v in segments]
    scalars = [*fields, N, lr, *extra_arrays]
    dtype = jnp.result_type(*scalars, *segs)
    seg_shape = np.broadcast_shapes(*(a.shape for a in segs))
    S = seg_shape[-1]
    seg_batch = seg_shape[:-1]
    labels = [*PARAM_NAMES, "N", "lr", *(name for name, _ in extras)]
    try:
        shape = np.broadcast_shapes(*(a.shape for a in scalars), seg_batch)
    except ValueError:
        desc = ", ".join(f"{n}{a.shape}" for n, a in zip(labels, scalars))
        what = "/".join(names)
        raise ValueError(
            f"N, {what}, lr and the parameters must broadcast; got {desc}, {what}{seg_batch}"
        ) from None
    shape = tuple(shape)
    size = int(np.prod(shape, dtype=np.int64))
    rows, batch = (size, max(1, size)) if chunk is _NO_BUCKET else bucket_rows(size, chunk)
    return _flatten(scalars, segs, shape, S, np.dtype(dtype), rows, batch)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _flatten(scalars, segs, shape, S, dtype, rows, batch):
    """The broadcasting, flattening and padding of `_prepare` as one small compiled
    program (run op by op, its thirty-odd array operations each compile for every
    new shape, 0.2 s in all on a CPU)."""
    flat = [pad_rows(jnp.broadcast_to(a.astype(dtype), shape).reshape(-1), rows)
            for a in scalars]
    mult, batches, steps = (
        pad_rows(jnp.broadcast_to(a.astype(dtype), (*shape, S)).reshape(-1, S), rows)
        for a in segs
    )
    lr_f = flat[8]
    return _Prepared(
        theta=jnp.stack(flat[:7]),
        N=flat[7],
        lr=lr_f,
        lrs=lr_f[:, None] * mult,
        batches=batches,
        steps=steps,
        extras=tuple(flat[9:]),
        shape=shape,
        batch=batch,
    )


@functools.partial(jax.jit, static_argnums=(4, 5))
def _breakdown(irreducible, approximation, bias, variance, size, shape):
    """`RiskBreakdown.from_terms` of the first `size` rows, compiled as one program."""
    terms = (a[:size] for a in (irreducible, approximation, bias, variance))
    return RiskBreakdown.from_terms(*terms, shape=shape)


def schedule_risk(
    params: NQSParams,
    N: RealLike,
    schedule: Schedule,
    *,
    lr: RealLike = DEFAULT_LR,
    rule: SumRule = SumRule(),
    chunk: int = 2048,
) -> RiskBreakdown:
    r"""The NQS expected risk at the end of a piecewise-constant schedule.

    Segment $s$ runs $k_s$ steps at step size $\gamma_s = m_s\,\gamma_0$ ($\gamma_0$ =
    `lr`, $m_s$ = `schedule.lr`) and batch size $B_s$. Each direction starts at
    $b = 1$, $v = 0$ and, with $a_s = 1 - \gamma_s\lambda_n$,

    $$b \leftarrow b\,a_s^{2k_s}, \qquad
      v \leftarrow v\,a_s^{2k_s} + \frac{\gamma_s^2}{B_s}\frac{1 - a_s^{2k_s}}{1 - a_s^2};$$

    then bias $= \sum_{n \le N} \tfrac12 P n^{-p} b_n$ and variance
    $= \sum_{n \le N} \tfrac12 \lambda_n R n^{-r} v_n$, summed as in [`nqs_engine.risk`][]
    (same accuracy). The schedule's batch shape broadcasts against `N`, `lr` and
    the parameters; up to 16 segments are unrolled, longer schedules scanned.

    **Example:** annealing the step size lowers the final loss.

    >>> import nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> const = nqs.Schedule.constant(20_000, 256)
    >>> decay = nqs.Schedule.step_decay(20_000, 256, boundaries=(0.8,), factors=(0.1,))
    >>> a = nqs.schedule_risk(params, 1e8, const, lr=lr).total
    >>> b = nqs.schedule_risk(params, 1e8, decay, lr=lr).total
    >>> bool(b < a)
    True
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    segments = (schedule.lr, schedule.batch, schedule.steps)
    prepared = _prepare(params, N, lr, segments, rule, chunk=chunk)
    return prepared.breakdown(*_risk_segments(*prepared.flat, rule, prepared.batch))


__all__ = ["RiskBreakdown", "risk", "schedule_risk"]
