r"""Sums over up to 1e12 directions: an exact head plus a quadrature tail.

A sum $\sum_{n=1}^{N} f(n)$ of a smooth summand is split into

- the head $n < H$, summed term by term (masked to $n \le N$), and
- the tail $n = H, \ldots, N$, evaluated by Gregory's form of the
  Euler-Maclaurin formula,

$$\sum_{n=H}^{N} f(n) = \int_H^N f(x)\,dx + \frac{f(H) + f(N)}{2}
  + \sum_{k=1}^{J} g_k \left(\nabla^k f(N) + (-1)^k \Delta^k f(H)\right),$$

where $\Delta, \nabla$ are the forward and backward unit differences and
$g_k = 1/12, 1/24, 19/720, 3/160, \ldots$ are the Gregory coefficients (the
coefficients of $x / \log(1 + x)$). The integral is taken in $u = \log x$,
$\int_H^N f(x)\,dx = \int_{\log H}^{\log N} f(e^u) e^u\,du$, by composite
Gauss-Legendre quadrature, over panels placed in one of two ways:

- **uniform**: equal panels over $[\log H, \log N]$, for any smooth summand;
- **graded at a crossover**: for the NQS the summand of direction $n$ depends on
  $\gamma\lambda_n T = \gamma Q T n^{-q}$ ($T$ the steps taken): directions with
  $\gamma\lambda_n T \gg 1$ are trained out (bias $\approx 0$, variance at its
  stationary value), those with $\gamma\lambda_n T \ll 1$ untouched (both smooth
  power laws in $n$), and the summand changes shape only across the
  [`Crossover`][] $2\gamma\lambda_n T \approx 1$, a window in $\log n$ of width
  $\sim 1/q$ (for a schedule, from its smallest segment to its whole run). The
  panels are then equal in $\Phi(u)$, which grows like $u/\ell$ over the window
  and like $\operatorname{asinh}$ of the distance from it outside, so they are
  $\sim \ell$ wide at the crossover and widen in proportion to the distance from
  it. Four panels of 16 nodes hold 1e-12 where 32 equal panels of 12 did.

Differences replace the derivatives of the classical Euler-Maclaurin formula,
so the rule needs only $2(J + 1)$ extra evaluations of $f$ and no
differentiation of it, and it works unchanged for any summand (schedules, the
weight-norm variant). For non-integer $N$ the same formula is the smooth
extension of the sum that matches the Hurwitz zeta function, so the result is
differentiable in $N$.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from fractions import Fraction

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import FloatArray


@functools.lru_cache(maxsize=None)
def gregory_coefficients(order: int) -> tuple[float, ...]:
    r"""The Gregory coefficients $g_1, \ldots, g_J$ ($J$ = `order`).

    They are the absolute values of the coefficients of $x^{k+1}$ in
    $x / \log(1 + x) = 1 + x/2 - x^2/12 + x^3/24 - 19x^4/720 + \ldots$,
    computed exactly in rational arithmetic.

    **Example:**

    >>> from nqs_engine._quadrature import gregory_coefficients
    >>> [round(1 / g, 6) for g in gregory_coefficients(2)]
    [12.0, 24.0]
    """
    # log(1+x)/x = sum_k (-1)^k x^k / (k+1); invert the power series.
    series = [Fraction((-1) ** k, k + 1) for k in range(order + 2)]
    inverse = [Fraction(1)]
    for m in range(1, order + 2):
        inverse.append(-sum(series[k] * inverse[m - k] for k in range(1, m + 1)))
    return tuple(float(abs(inverse[k + 1])) for k in range(1, order + 1))


# Bernoulli numbers B_2, B_4, ..., B_12 for the Hurwitz zeta tail.
_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730)

# Graded panels (in units of the crossover's width 1/q, see `_graded_breaks`): the
# panels at the crossover are _SPREAD wide, and the window is moved _SHIFT towards
# the trained directions (smaller n), whose summand changes fastest: the bias
# dies like exp(-exp(q (log n* - log n))) there, while the untrained side is a
# power series in (n*/n)^q. Tuned on 20,000 random configurations over the domain
# of the tests (N up to 1e12, K up to 1e7) and on random schedules.
_SPREAD = 2.0
_SHIFT = 2.0


class SumRule(eqx.Module):
    """How sums over directions are taken: the static structure of the quadrature.

    **Arguments:**

    - `head`: directions $n < $ `head` are summed term by term. The tail starts at
      `head`; the summand must be smooth there, which needs
      $\\gamma Q\\,n_0^{-q} < 1$ at $n_0$ = `smooth_from` (the kink at
      $\\gamma\\lambda_n = 1$ lies in the head). [`nqs_engine.risk`][] checks this.
    - `panels`, `nodes`: equal Gauss-Legendre panels in $\\log n$ over the tail, and
      nodes per panel: the uniform placement, used where the summand does not say
      where its crossover lies (loss curves, the weight-norm variant,
      [`nqs_engine.sum_directions`][] without `crossover`).
    - `order`: number of Gregory difference corrections at each end.
    - `crossover_panels`, `crossover_nodes`: panels graded at the crossover (see the
      module docstring) and nodes per panel, used where the summand names its
      [`Crossover`][] (the risk and scheduled risk, the fast evaluators of fitting
      and planning). `crossover_panels=0` uses the uniform placement everywhere
      (`SumRule(64, 32, 12, 6, crossover_panels=0)` is the rule of versions up to
      0.1: 461 evaluations).
    - `window_panels`: graded panels where the crossover is a window rather than a
      point (the variance of a schedule of several segments changes shape at every
      partial sum of its segments' steps): 4 panels over a window many widths wide
      lose accuracy (up to 7e-11 on random schedules against 2e-15 with 6).

    The defaults (64, 32, 12, 8, 4, 16, 6) give a relative error near 1e-13 in float64
    against an exact term-by-term sum over the parameter domain, for N up to
    1e12, in 145 evaluations of the summand with a crossover (177 with a window,
    465 without; see
    `tests/test_risk.py`, `tests/test_sum_rule.py` and `benchmarks/accuracy.py`).
    Directions $n <$ `careful_head` are evaluated by the summand's general form
    (any $\\gamma\\lambda_n < 2$), the rest of the head by its fast form, valid where
    $\\gamma\\lambda_n < 1$. All fields are static: changing one recompiles.

    **Example:**

    >>> import nqs_engine as nqs
    >>> rule = nqs.SumRule()
    >>> rule.head, rule.num_evaluations, rule.uniform_evaluations
    (64, 145, 465)
    >>> nqs.SumRule(64, 32, 12, 6, crossover_panels=0).num_evaluations  # the old default
    461
    """

    head: int = eqx.field(static=True, default=64)
    panels: int = eqx.field(static=True, default=32)
    nodes: int = eqx.field(static=True, default=12)
    order: int = eqx.field(static=True, default=8)
    crossover_panels: int = eqx.field(static=True, default=4)
    crossover_nodes: int = eqx.field(static=True, default=16)
    window_panels: int = eqx.field(static=True, default=6)

    def __check_init__(self):
        for name, lo in (("head", 2), ("panels", 1), ("nodes", 1), ("order", 0),
                         ("crossover_panels", 0), ("crossover_nodes", 1), ("window_panels", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < lo:
                raise ValueError(f"SumRule.{name} must be an integer >= {lo}, got {value!r}")
        if self.order >= self.head:
            raise ValueError(
                f"SumRule.order ({self.order}) must be smaller than SumRule.head ({self.head})"
            )

    @property
    def smooth_from(self) -> float:
        """The tail's summand must be smooth from this n on (half the lowest tail point)."""
        return (self.head - self.order) / 2

    def kink_ratio(self, lr, Q, q):
        r"""$\gamma Q\,n_0^{-q}$ at $n_0$ = `smooth_from`; the rule needs it below 1.

        The summand has a kink where $\gamma\lambda_n = 1$; a ratio below 1 puts it
        among the directions summed exactly by the summand's general form, away
        from the fast form of the rest of the head and from the quadrature tail.
        Works on floats, NumPy and JAX arrays alike.
        """
        return lr * Q * self.smooth_from ** (-q)

    @property
    def careful_head(self) -> int:
        """Directions $n <$ this (the first integer $\\ge$ `smooth_from`) take the general form."""
        return min(self.head, max(2, math.ceil(self.smooth_from)))

    @property
    def num_evaluations(self) -> int:
        """Evaluations of the summand per sum with a one-point crossover (head + quadrature +
        differences); a window adds `window_panels - crossover_panels` panels."""
        if self.crossover_panels == 0:
            return self.uniform_evaluations
        quad = self.crossover_panels * self.crossover_nodes
        return (self.head - 1) + quad + 2 * (self.order + 1)

    @property
    def uniform_evaluations(self) -> int:
        """Evaluations of the summand per sum with uniform panels."""
        return (self.head - 1) + self.panels * self.nodes + 2 * (self.order + 1)


class Crossover(eqx.Module):
    r"""Where a summand over directions changes shape, in $u = \log n$.

    For the NQS after steps $T = \gamma k$ summed over a schedule's segments, the
    summand of direction $n$ turns from trained to untrained where
    $2\gamma\lambda_n T = 1$, at $\log n^* = \log(2 Q T)/q$, over a width $\sim 1/q$
    in $\log n$. `lo` and `hi` are $\log n^*$ of the smallest and the largest $T$
    that matter (equal for one segment), `width` is $1/q$. Only the placement of the
    quadrature panels depends on it (under `stop_gradient`): any value gives a
    valid, if less accurate, rule. `window` (static) says that `lo` may lie below
    `hi`: the rule then grades `SumRule.window_panels` panels instead of
    `SumRule.crossover_panels`.
    """

    lo: FloatArray
    hi: FloatArray
    width: FloatArray
    window: bool = eqx.field(static=True, default=False)


def _legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    t, w = np.polynomial.legendre.leggauss(nodes)
    return (t + 1) / 2, w / 2  # on [0, 1]


@functools.lru_cache(maxsize=None)
def _gregory_weights(order: int) -> np.ndarray:
    r"""Weights of f(H + j), j = 0..order, in the lower-end correction (the upper end mirrors them).

    Expands $f/2 + \sum_k g_k (-1)^k \Delta^k f(H)$ and, equally,
    $f/2 + \sum_k g_k \nabla^k f(N)$ into point values.
    """
    weights = np.zeros(order + 1)
    weights[0] = 0.5
    for k, g in enumerate(gregory_coefficients(order), start=1):
        for j in range(k + 1):
            # (-1)^k Delta^k f(H) = sum_j (-1)^k (-1)^(k-j) C(k, j) f(H + j); nabla^k f(N) likewise.
            weights[j] += g * (-1) ** j * math.comb(k, j)
    return weights


class DirectionNodes(eqx.Module):
    r"""The points and weights of a [`nqs_engine.SumRule`][] for one $N$.

    $\sum_{n \le N} f(n) \approx \sum_i$ `head_weights[i]` $f(e^{u_i})$ over `head_log_n`
    $+ \sum_j$ `tail_weights[j]` $f(e^{u_j})\,e^{u_j}$ over `tail_log_n`. The head
    points are the directions $n <$ `rule.careful_head`, where the summand must be
    evaluated in its general form; the tail points, where it may take its fast form
    and carries the factor $n = e^u$ (as in [`nqs_engine.sum_directions`][]), are the
    rest of the head (weights $1/n$), the quadrature nodes and the Gregory points at
    both ends, whose weights are zero when $N <$ `rule.head` (`has_tail` false).
    Any recurrence carried per direction (schedules, weight norm) can run on
    these points and be summed with these weights at every step.
    """

    head_log_n: FloatArray
    head_weights: FloatArray
    tail_log_n: FloatArray
    tail_weights: FloatArray
    has_tail: FloatArray

    def total(self, head_values: FloatArray, tail_values: FloatArray) -> FloatArray:
        """Combine summand values at the head and tail points (last axis) into the sum."""
        head = jnp.sum(head_values * self.head_weights, axis=-1)
        return head + jnp.sum(tail_values * self.tail_weights, axis=-1)


def _asinh(z):
    """asinh, for panel ends only (their accuracy does not matter, their monotonicity does)."""
    return jnp.sign(z) * jnp.log(jnp.abs(z) + jnp.sqrt(z * z + 1))


def _graded_breaks(a, b, crossover, panels, dtype):
    r"""Panel ends $a = u_0 < \ldots < u_M = b$, equally spaced in $\Phi$.

    With the window $[l, h]$ (the crossover moved `_SHIFT` widths to smaller $n$)
    and $\ell$ = `_SPREAD` widths,
    $\Phi(u) = \operatorname{asinh}(\min(u - l, 0)/\ell) + \operatorname{clip}(u - l, 0, h - l)/\ell
    + \operatorname{asinh}(\max(u - h, 0)/\ell)$, inverted in closed form; no
    branches, so every intermediate stays finite (also under differentiation).
    """
    sg = jax.lax.stop_gradient
    width = sg(crossover.width).astype(dtype)
    ell = _SPREAD * width
    lo = sg(crossover.lo).astype(dtype) - _SHIFT * width
    hi = jnp.maximum(sg(crossover.hi).astype(dtype) - _SHIFT * width, lo)
    span = (hi - lo) / ell

    def phi(u):
        z = (u - lo) / ell
        return _asinh(jnp.minimum(z, 0)) + jnp.clip(z, 0, span) + _asinh(jnp.maximum(z - span, 0))

    def sinh(f):
        e = jnp.exp(f)
        return 0.5 * (e - 1 / e)

    j = np.arange(panels + 1)
    fa, fb = phi(a), phi(b)
    f = fa + (fb - fa) * jnp.asarray(j / panels, dtype)
    u = lo + ell * (sinh(jnp.minimum(f, 0)) + jnp.clip(f, 0, span) + sinh(jnp.maximum(f - span, 0)))
    # The ends exactly (the integral's limits), the rest kept inside them.
    return jnp.where(jnp.asarray(j == 0), a, jnp.where(jnp.asarray(j == panels), b, jnp.clip(u, a, b)))


def _node_groups(N, rule, crossover=None):
    """The rule's points for one N, in groups that each fuse with their summand.

    Returns (careful, fast, tail, has_tail): `careful` = (log n, weights) of the
    directions n < `rule.careful_head` (general form of the summand); `fast` =
    (log n, weights) of the rest of the head and the lower Gregory points (fast
    form, weights already carrying the factor 1/n and the masks); `tail` = the
    quadrature nodes and the upper Gregory points, [(log n, weights), ...], to be
    counted only where `has_tail` (N >= head). Each group is summed in its own
    reduction (no concatenated arrays, no conversions: both would keep XLA's CPU
    backend from fusing the reduction with its producers).
    """
    N = jnp.asarray(N)
    dtype = N.dtype if jnp.issubdtype(N.dtype, jnp.floating) else jnp.result_type(float)
    N = N.astype(dtype)
    H, C, J = rule.head, rule.careful_head, rule.order
    has_tail = N >= H
    one = jnp.ones((), dtype)
    n_careful = np.arange(1, C, dtype=np.float64)
    careful = (jnp.asarray(np.log(n_careful), dtype),
               jnp.where(jnp.asarray(n_careful, dtype) <= N, one, 0))
    greg = _gregory_weights(J)
    # The rest of the head (counted for n <= N) and the lower Gregory points (if N >= H).
    n_fast = np.arange(C, H + J + 1, dtype=np.float64)
    w_fast = np.concatenate([np.ones(H - C), greg]) / n_fast
    counted = jnp.where(jnp.asarray(n_fast >= H), has_tail, jnp.asarray(n_fast, dtype) <= N)
    fast = (jnp.asarray(np.log(n_fast), dtype), jnp.where(counted, jnp.asarray(w_fast, dtype), 0))

    N_t = jnp.where(has_tail, N, jnp.asarray(H + 1, dtype))  # keeps the unused branch finite
    u_lo, u_hi = jnp.asarray(np.log(H), dtype), jnp.log(N_t)
    if crossover is not None and rule.crossover_panels > 0:
        t, w = _legendre(rule.crossover_nodes)
        panels = rule.crossover_panels
        if crossover.window:
            panels = max(panels, rule.window_panels)
        ends = _graded_breaks(u_lo, u_hi, crossover, panels, dtype)
        width = ends[1:] - ends[:-1]
        quad = ((ends[:-1, None] + width[:, None] * jnp.asarray(t, dtype)).ravel(),
                (width[:, None] * jnp.asarray(w, dtype)).ravel())
    else:
        width = u_hi - u_lo
        t, w = _legendre(rule.nodes)
        frac = (np.arange(rule.panels, dtype=np.float64)[:, None] + t[None, :]) / rule.panels
        quad = (
            u_lo + width * jnp.asarray(frac.ravel(), dtype),
            width * jnp.asarray(np.tile(w, rule.panels) / rule.panels, dtype),
        )
    # Gregory points enter as f(n) = (f(n) n) / n.
    hi_n = N_t - jnp.asarray(np.arange(J + 1, dtype=np.float64), dtype)
    upper = (jnp.log(hi_n), jnp.asarray(greg, dtype) / hi_n)
    return careful, fast, [quad, upper], has_tail


def direction_nodes(
    N: FloatArray, rule: SumRule = SumRule(), crossover: Crossover | None = None
) -> DirectionNodes:
    """The [`DirectionNodes`][] of `rule` for a scalar $N$ (vmap over configurations).

    Uniform panels, or, given a [`Crossover`][], panels graded at it.

    **Example:**

    >>> import jax.numpy as jnp
    >>> from nqs_engine._quadrature import direction_nodes
    >>> nodes = direction_nodes(jnp.asarray(1e6))
    >>> f = lambda u: jnp.exp(-2.0 * u)  # n^-2
    >>> s = nodes.total(f(nodes.head_log_n), f(nodes.tail_log_n) * jnp.exp(nodes.tail_log_n))
    >>> bool(abs(s - (jnp.pi**2 / 6 - 1e-6)) < 1e-5)
    True
    """
    careful, fast, tail, has_tail = _node_groups(N, rule, crossover)
    gated = [(u, jnp.where(has_tail, w, 0)) for u, w in tail]
    tail_u = jnp.concatenate([fast[0], *(u for u, _ in gated)])
    tail_w = jnp.concatenate([fast[1], *(w for _, w in gated)])
    return DirectionNodes(careful[0], careful[1], tail_u, tail_w, has_tail)


def sum_directions(
    summand: Callable[[FloatArray, bool], FloatArray],
    N: FloatArray,
    rule: SumRule = SumRule(),
    crossover: Crossover | None = None,
) -> FloatArray:
    r"""$\sum_{n=1}^{N} f(n)$ for a smooth summand, with $N$ up to $10^{12}$ and beyond.

    `summand(u, tail)` evaluates at an array of $u = \log n$:

    - with `tail=False` (directions $n <$ `rule.careful_head`), $f(e^u)$, valid for
      any $n$;
    - with `tail=True` (the rest of the head, quadrature nodes and difference
      points), $f(e^u)\,e^u$, the integrand in $u$. There the summand may assume it
      is smooth: this variant is on the hot path, so it should avoid `jnp.where` on
      the outputs of its functions (XLA's CPU backend then no longer fuses the
      reduction with its producers).

    For $N <$ `rule.head` the sum is exact over $n \le \lfloor N \rfloor$; above it
    the tail is evaluated as described in this module's docstring and is smooth
    in $N$: over uniform panels, or over panels graded at `crossover` when given
    (and `rule.crossover_panels > 0`). `N` is a scalar: `jax.vmap` over
    configurations.

    **Example:** $\sum_{n=1}^{10^9} n^{-2}$ against $\zeta(2) - \zeta(2, 10^9 + 1)$.

    >>> import jax.numpy as jnp
    >>> from nqs_engine._quadrature import sum_directions
    >>> f = lambda u, tail: jnp.exp((1.0 if tail else 0.0) * u - 2.0 * u)
    >>> s = sum_directions(f, jnp.asarray(1e9))
    >>> bool(abs(s - (jnp.pi**2 / 6 - 1e-9)) < 1e-6)
    True

    The sum of $n^{-3/2}\,e^{-10^4/n}$ changes shape near $n = 10^4$; four graded
    panels there do what 32 uniform ones do:

    >>> from nqs_engine._quadrature import Crossover, SumRule
    >>> g = lambda u, tail: jnp.exp((1.0 if tail else 0.0) * u - 1.5 * u - 1e4 * jnp.exp(-u))
    >>> at = Crossover(jnp.log(2e4), jnp.log(2e4), jnp.asarray(1.0))
    >>> fine = sum_directions(g, jnp.asarray(1e9), SumRule(panels=128, crossover_panels=0))
    >>> bool(abs(sum_directions(g, jnp.asarray(1e9), SumRule(), at) / fine - 1) < 1e-6)
    True
    """
    (head_u, head_w), (fast_u, fast_w), tail, has_tail = _node_groups(N, rule, crossover)
    head = jnp.sum(summand(head_u, False) * head_w) + jnp.sum(summand(fast_u, True) * fast_w)
    # One reduction per group: each fuses with its summand (no concatenated arrays).
    tail_sum = sum(jnp.sum(summand(u, True) * w) for u, w in tail)
    return head + jnp.where(has_tail, tail_sum, 0)


def hurwitz_zeta(s: FloatArray, a: FloatArray, terms: int = 64) -> FloatArray:
    r"""The Hurwitz zeta function $\zeta(s, a) = \sum_{k \ge 0} (a + k)^{-s}$, $s > 1$, $a > 0$.

    Sums the first `terms` terms directly, then the Euler-Maclaurin tail at
    $A = a + $ `terms` with six Bernoulli corrections,

    $$\zeta(s, A) = \frac{A^{1-s}}{s-1} + \frac{A^{-s}}{2}
      + \sum_{j=1}^{6} \frac{B_{2j}}{(2j)!}\,(s)_{2j-1}\,A^{-s-2j+1},$$

    ($(s)_m$ the rising factorial), accurate to float64 rounding for $s \lesssim 10$.
    Smooth and differentiable in both $s$ and $a$ (unlike `jax.scipy.special.zeta`,
    which has no derivative in $s$). Broadcasts `s` against `a`.

    **Example:**

    >>> import jax.numpy as jnp
    >>> from nqs_engine import hurwitz_zeta
    >>> round(float(hurwitz_zeta(jnp.asarray(2.0), jnp.asarray(1.0))), 6)  # pi^2 / 6
    1.644934
    """
    s, a = jnp.broadcast_arrays(jnp.asarray(s), jnp.asarray(a))
    dtype = jnp.result_type(s.dtype, a.dtype, float)
    s, a = s.astype(dtype), a.astype(dtype)
    k = jnp.arange(terms, dtype=dtype)
    head = jnp.sum(jnp.exp(-s[..., None] * jnp.log(a[..., None] + k)), axis=-1)
    A = a + terms
    log_A = jnp.log(A)
    tail = jnp.exp((1 - s) * log_A) / (s - 1) + 0.5 * jnp.exp(-s * log_A)
    rising = s  # (s)_{2j-1}
    factorial = 2.0  # (2j)!
    for j, b in enumerate(_BERNOULLI, start=1):
        tail = tail + b / factorial * rising * jnp.exp(-(s + 2 * j - 1) * log_A)
        rising = rising * (s + 2 * j - 1) * (s + 2 * j)
        factorial = factorial * (2 * j + 1) * (2 * j + 2)
    return head + tail


__all__ = [
    "SumRule",
    "Crossover",
    "DirectionNodes",
    "direction_nodes",
    "sum_directions",
    "hurwitz_zeta",
    "gregory_coefficients",
]
