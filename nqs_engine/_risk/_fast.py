r"""Fast loss evaluation for planning and sweeps: one parameter set, many configurations.

[`nqs_engine.risk`][] broadcasts parameters, checks every input and returns
the four terms; planners and sweeps instead score millions of constant-schedule
candidates $(N, B, K)$ under a single, already checked parameter set, and need
only the total

$$L(N, B, K) = e_{irr} + \tfrac12 P\,\zeta(p, N+1)
   + \sum_{n \le N} \tfrac12 P n^{-p} a_n^{2K}
   + \sum_{n \le N} \tfrac12 \lambda_n R n^{-r}\,\frac{\gamma^2}{B}\,
     \frac{1 - a_n^{2K}}{1 - a_n^2}, \qquad a_n = 1 - \gamma\lambda_n .$$

The functions here share the per-direction closed form of `_kernel` and differ
only in how configurations are batched. Callers validate the parameters
eagerly (with [`nqs_engine.check_params`][] and [`check_rule`][]) before any
heavy work.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._chunk import chunked_map
from .._params import NQSParams, PARAM_NAMES, check_params
from .._quadrature import SumRule
from ._kernel import approximation_term, config_sum

#: The quadrature used to score planning candidates: 32 head terms and
#: 16 panels of 8 Gauss-Legendre nodes (about 170 evaluations per
#: configuration instead of 461). Its relative error is below 1e-8 over the
#: planning range, far below any loss difference that decides a plan; chosen
#: plans are re-scored with the default [`nqs_engine.SumRule`][].
PLAN_RULE = SumRule(head=32, panels=16, nodes=8, order=5)


def theta_of(params: NQSParams, dtype=None) -> jax.Array:
    """The 7 parameters as one 1-D array, in `PARAM_NAMES` order."""
    values = [jnp.asarray(getattr(params, n)) for n in PARAM_NAMES]
    dtype = dtype or jnp.result_type(*values, float)
    return jnp.stack([v.astype(dtype).reshape(()) for v in values])


def check_rule(params: NQSParams, lr: float, rule: SumRule) -> None:
    """Eager domain checks: `check_params`, plus the quadrature's kink condition.

    Raises `ValueError` with the offending parameter named, before any heavy work.
    """
    check_params(params, lr)
    q, Q = float(params.q), float(params.Q)
    ratio = float(rule.kink_ratio(lr, Q, q))
    if ratio >= 1:
        raise ValueError(
            f"parameter q = {q:g} is too small for the quadrature rule (lr * Q * "
            f"{rule.smooth_from:g}^-q = {ratio:g} >= 1); raise q or lower lr or Q"
        )


def plain_loss(theta, N, B, K, lr, rule: SumRule = PLAN_RULE):
    r"""The constant-schedule loss $L(N, B, K)$ of one configuration (all scalars).

    Differentiable in `theta`, $N$, $B$, $K$ and `lr`; no domain checks (see
    the module docstring).

    **Example:**

    >>> import jax.numpy as jnp, nqs_engine as nqs
    >>> from nqs_engine._risk._fast import plain_loss, theta_of
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> a = plain_loss(theta_of(params), 1e8, 256.0, 1e4, lr, nqs.SumRule())
    >>> b = nqs.risk(params, 1e8, 256.0, 1e4, lr=lr).total
    >>> bool(jnp.abs(a - b) < 1e-5 * b)
    True
    """
    one = lambda v: jnp.reshape(jnp.asarray(v, theta.dtype), (1,))  # noqa: E731
    return segments_loss(theta, N, one(lr), one(B), one(K), rule)


def segments_loss(theta, N, lrs, batches, steps, rule: SumRule = PLAN_RULE, scan: bool = False):
    r"""The loss of one configuration after a schedule of segments (1-D arrays of length $S$).

    Segment $s$ runs `steps[s]` steps at step size `lrs[s]` and batch size
    `batches[s]` (SPEC section 1). `scan=True` scans the segments instead of
    unrolling them: a smaller program, quicker to compile under `grad`.
    Differentiable in everything; no domain checks.
    """
    th = tuple(theta)
    return (_fixed(theta, N, rule)
            + config_sum(th, N, lrs, batches, steps, rule, "bias", scan)
            + config_sum(th, N, lrs, batches, steps, rule, "variance", scan))


def _fixed(theta, N, rule):
    """e_irr plus the approximation term (1/2) P zeta(p, N + 1)."""
    return theta[4] + approximation_term(theta[0], theta[2], N, rule)


def _terms(theta, N, B, K, lr, rule, term):
    one = lambda v: jnp.reshape(v, (1,))  # noqa: E731
    lr = jnp.asarray(lr, theta.dtype)
    return config_sum(tuple(theta), N, one(lr), one(B), one(K), rule, term)


@eqx.filter_jit
def losses(theta, N, B, K, lr, rule: SumRule = PLAN_RULE, batch_size: int = 2048):
    r"""$L(N_i, B_i, K_i)$ for flat 1-D arrays of configurations under one `theta`.

    Each term is one `lax.map` over chunks of `batch_size` configurations (a
    single fused reduction per configuration, the fast layout on the CPU).
    Memory stays bounded by `batch_size` whatever the number of configurations.

    **Example:**

    >>> import jax.numpy as jnp, nqs_engine as nqs
    >>> from nqs_engine._risk._fast import losses, theta_of
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> N = jnp.array([1e7, 1e8, 1e9])
    >>> out = losses(theta_of(params), N, jnp.full(3, 256.0), jnp.full(3, 1e4), lr)
    >>> bool(jnp.all(jnp.diff(out) < 0))
    True
    """
    lr = jnp.asarray(lr, theta.dtype)

    def mapped(term):
        def one(args):
            n, b, k = args
            return _terms(theta, n, b, k, lr, rule, term)

        return chunked_map(one, (N, B, K), batch_size)

    return _fixed(theta, N, rule) + mapped("bias") + mapped("variance")


__all__ = ["PLAN_RULE", "check_rule", "losses", "plain_loss", "segments_loss", "theta_of"]
