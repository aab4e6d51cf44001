r"""Sums over up to 1e12 directions: an exact head plus a quadrature tail.

A sum $\sum_{n=1}^{N} f(n)$ of a smooth summand is split into

- the head $n < H$, summed term by term (masked to $n \le N$), and
- the tail $n = H, \ldots, N$, evaluated by Gregory's form of the
  Euler-Maclaurin formula,

$$\sum_{n=H}^{N} f(n) = \int_H^N f(x)\,dx + \frac{f(H) + f(N)}{2}
  + \sum_{k=1}^{J} g_k \left(\nabla^k f(N) + (-1)^k \Delta^k f(H)\right),$$

where $\Delta, \nabla$ are the forward and backward unit differences and
$g_k = 1/12, 1/24, 19/720, 3/160, \ldots$ are the Gregory coefficients (the
coefficients of $x / \log(1 + x)$). The integral is taken in $u = \log x$
by composite Gauss-Legendre quadrature over equal panels:
$\int_H^N f(x)\,dx = \int_{\log H}^{\log N} f(e^u) e^u\,du$.

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


class SumRule(eqx.Module):
    """How sums over directions are taken: the static structure of the quadrature.

    **Arguments:**

    - `head`: directions $n < $ `head` are summed term by term. The tail starts at
      `head`; the summand must be smooth there, which needs
      $\\gamma Q\\,\\mathrm{head}^{-q} < 1$ (the kink at $\\gamma\\lambda_n = 1$ lies in
      the head). [`nqs_engine.risk`][] checks this.
    - `panels`: equal Gauss-Legendre panels in $\\log n$ over the tail.
    - `nodes`: Gauss-Legendre nodes per panel.
    - `order`: number of Gregory difference corrections at each end.

    The defaults (64, 32, 12, 6) give a relative error near 1e-12 in float64
    against an exact term-by-term sum over the parameter domain, for N up to
    1e12 (see `tests/test_risk.py` and `benchmarks/accuracy.py`). All fields are
    static: changing one recompiles.

    **Example:**

    >>> import nqs_engine as nqs
    >>> rule = nqs.SumRule()
    >>> rule.head, rule.num_evaluations
    (64, 461)
    """

    head: int = eqx.field(static=True, default=64)
    panels: int = eqx.field(static=True, default=32)
    nodes: int = eqx.field(static=True, default=12)
    order: int = eqx.field(static=True, default=6)

    def __check_init__(self):
        for name, lo in (("head", 2), ("panels", 1), ("nodes", 1), ("order", 0)):
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
        among the directions summed exactly, away from the quadrature tail.
        Works on floats, NumPy and JAX arrays alike.
        """
        return lr * Q * self.smooth_from ** (-q)

    @property
    def num_evaluations(self) -> int:
        """Evaluations of the summand per sum (head + quadrature + differences)."""
        return (self.head - 1) + self.panels * self.nodes + 2 * (self.order + 1)


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
    $+ [N \ge H] \sum_j$ `tail_weights[j]` $f(e^{u_j})\,e^{u_j}$ over `tail_log_n`
    (quadrature nodes, then the Gregory points at both ends). The tail's
    summand carries the factor $n = e^u$, as in [`nqs_engine.sum_directions`][].
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
        tail = jnp.sum(tail_values * self.tail_weights, axis=-1)
        return head + jnp.where(self.has_tail, tail, 0)


def _node_groups(N, rule):
    """Head (log n, weights), the tail's groups [(log n, weights), ...] and has_tail.

    The tail's groups are the Gauss-Legendre nodes and the Gregory points at each
    end; they stay separate so that each sum over them fuses with its summand.
    """
    N = jnp.asarray(N)
    dtype = N.dtype if jnp.issubdtype(N.dtype, jnp.floating) else jnp.result_type(float)
    N = N.astype(dtype)
    H = rule.head
    n_head = np.arange(1, H, dtype=np.float64)
    head = (jnp.asarray(np.log(n_head), dtype), (jnp.asarray(n_head, dtype) <= N).astype(dtype))

    has_tail = N >= H
    N_t = jnp.where(has_tail, N, jnp.asarray(H + 1, dtype))  # keeps the unused branch finite
    u_lo = np.log(H)
    width = jnp.log(N_t) - u_lo
    t, w = _legendre(rule.nodes)
    frac = (np.arange(rule.panels, dtype=np.float64)[:, None] + t[None, :]) / rule.panels
    quad = (
        u_lo + width * jnp.asarray(frac.ravel(), dtype),
        width * jnp.asarray(np.tile(w, rule.panels) / rule.panels, dtype),
    )
    steps = np.arange(rule.order + 1, dtype=np.float64)
    greg = jnp.asarray(_gregory_weights(rule.order), dtype)
    lo_n = jnp.asarray(H + steps, dtype)
    hi_n = N_t - jnp.asarray(steps, dtype)
    # Gregory points enter as f(n) = (f(n) n) / n.
    ends = [(jnp.log(lo_n), greg / lo_n), (jnp.log(hi_n), greg / hi_n)]
    return head, [quad, *ends], has_tail


def direction_nodes(N: FloatArray, rule: SumRule = SumRule()) -> DirectionNodes:
    """The [`DirectionNodes`][] of `rule` for a scalar $N$ (vmap over configurations).

    **Example:**

    >>> import jax.numpy as jnp
    >>> from nqs_engine._quadrature import direction_nodes
    >>> nodes = direction_nodes(jnp.asarray(1e6))
    >>> f = lambda u: jnp.exp(-2.0 * u)  # n^-2
    >>> s = nodes.total(f(nodes.head_log_n), f(nodes.tail_log_n) * jnp.exp(nodes.tail_log_n))
    >>> bool(abs(s - (jnp.pi**2 / 6 - 1e-6)) < 1e-5)
    True
    """
    (head_u, head_w), tail, has_tail = _node_groups(N, rule)
    tail_u = jnp.concatenate([u for u, _ in tail])
    tail_w = jnp.concatenate([w for _, w in tail])
    return DirectionNodes(head_u, head_w, tail_u, tail_w, has_tail)


def sum_directions(
    summand: Callable[[FloatArray, bool], FloatArray],
    N: FloatArray,
    rule: SumRule = SumRule(),
) -> FloatArray:
    r"""$\sum_{n=1}^{N} f(n)$ for a smooth summand, with $N$ up to $10^{12}$ and beyond.

    `summand(u, tail)` evaluates at an array of $u = \log n$:

    - with `tail=False` (the head, $n <$ `rule.head`), $f(e^u)$, valid for any $n$;
    - with `tail=True` (quadrature nodes and difference points), $f(e^u)\,e^u$, the
      integrand in $u$. There the summand may assume it is smooth: this variant is
      on the hot path, so it should avoid `jnp.where` (XLA's CPU backend fuses a
      reduction with its producers only when they hold no selects).

    For $N <$ `rule.head` the sum is exact over $n \le \lfloor N \rfloor$; above it
    the tail is evaluated as described in this module's docstring and is smooth
    in $N$. `N` is a scalar: `jax.vmap` over configurations.

    **Example:** $\sum_{n=1}^{10^9} n^{-2}$ against $\zeta(2) - \zeta(2, 10^9 + 1)$.

    >>> import jax.numpy as jnp
    >>> from nqs_engine._quadrature import sum_directions
    >>> f = lambda u, tail: jnp.exp((1.0 if tail else 0.0) * u - 2.0 * u)
    >>> s = sum_directions(f, jnp.asarray(1e9))
    >>> bool(abs(s - (jnp.pi**2 / 6 - 1e-9)) < 1e-6)
    True
    """
    (head_u, head_w), tail, has_tail = _node_groups(N, rule)
    head = jnp.sum(summand(head_u, False) * head_w)
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
    "DirectionNodes",
    "direction_nodes",
    "sum_directions",
    "hurwitz_zeta",
    "gregory_coefficients",
]
