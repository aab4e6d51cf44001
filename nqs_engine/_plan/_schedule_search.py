r"""Schedule search: the batch-size ramp and learning-rate decay that minimise the loss.

The budget is a model of $N$ parameters trained for $K$ steps on $D$ tokens
(so compute $C = 6ND$ and the number of sequential steps, the wall-clock
proxy, are both fixed; the mean batch is $D/(K\ell)$). A schedule of $S$
segments spends a share $g_s$ of the steps at batch size $B_s$ and step size
$m_s\gamma_0$. It is parametrised by an unconstrained $x \in \mathbb{R}^{3S}$:

$$g = \operatorname{softmax}(u), \qquad
  \log\frac{B_s}{B_1} = \log(\rho)\sum_{j < s}\operatorname{softmax}(w)_j
  \ (\text{a non-decreasing ramp by at most } \rho),\qquad
  \log m_s = -\sum_{j \le s}\operatorname{softplus}(v_j)\ (\text{a decay},\ m_s \le 1),$$

with $B_1$ fixed by $\sum_s g_s K B_s \ell = D$. Every $x$ is thus a valid
schedule that takes exactly $K$ steps and $D$ tokens, and L-BFGS (optax)
minimises the scheduled risk ([`nqs_engine.schedule_risk`][]) through it. The
baseline is the best constant schedule: batch $D/(K\ell)$ at the best constant
multiplier $m \le 1$ (found on a fine grid, then a zoomed one).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import RealLike
from .._fit._optimize import minimize
from .._model import NQS
from .._params import DEFAULT_LR, NQSParams
from .._quadrature import SumRule
from .._risk._fast import check_rule, plain_loss, segments_loss, theta_of
from .._schedule import Schedule


class ScheduleSearch(eqx.Module):
    r"""The outcome of [`optimize_schedule`][].

    **Fields:**

    - `schedule`: the best [`nqs_engine.Schedule`][] found (segments in order;
      `lr` holds the multipliers $m_s$ of the peak step size, `steps` may be
      fractional).
    - `loss`: its predicted loss ([`nqs_engine.schedule_risk`][]).
    - `constant`, `constant_loss`: the best constant schedule and its loss.
    - `gain` $=$ `constant_loss` $-$ `loss` $\ge 0$: what the schedule saves.
    - `N`, `tokens`, `seq_len`: the budget; `converged`: L-BFGS met its tolerance.
    """

    schedule: Schedule
    loss: float
    constant: Schedule
    constant_loss: float
    gain: float
    N: float
    tokens: float
    seq_len: float
    converged: bool

    def table(self) -> list[dict[str, float]]:
        """The schedule as rows: token share, batch size, lr multiplier, steps."""
        s = self.schedule
        steps = np.asarray(s.steps, dtype=float)
        batch = np.asarray(s.batch, dtype=float)
        share = steps * batch * self.seq_len / self.tokens
        return [
            {"token_share": float(f), "B": float(b), "lr_multiplier": float(m), "steps": float(k)}
            for f, b, m, k in zip(share, batch, np.asarray(s.lr, dtype=float), steps)
        ]


class _Setup(eqx.Module):
    N: jax.Array
    tokens: jax.Array
    steps: jax.Array
    seq_len: jax.Array
    log_max_ramp: jax.Array
    segments: int = eqx.field(static=True)
    ramp: bool = eqx.field(static=True)
    decay: bool = eqx.field(static=True)


def _unpack(x, setup: _Setup):
    """x -> (lr multipliers, batch sizes, steps), each of length S."""
    S = setup.segments
    steps = jax.nn.softmax(x[2 * S : 3 * S]) * setup.steps
    if setup.ramp:
        share = jax.nn.softmax(x[:S])  # of the allowed growth, spent between segments
        rise = setup.log_max_ramp * jnp.concatenate([jnp.zeros(1, x.dtype), jnp.cumsum(share[: S - 1])])
    else:
        rise = jnp.zeros(S, x.dtype)
    ratio = jnp.exp(rise - jnp.max(rise))  # B_s / B_S, in (0, 1]
    batches = ratio * setup.tokens / (setup.seq_len * jnp.sum(steps * ratio))
    if setup.decay:
        mult = jnp.exp(-jnp.cumsum(jax.nn.softplus(x[S : 2 * S])))
    else:
        mult = jnp.ones(S, x.dtype)
    return mult, batches, steps


def _loss(x, data):
    theta, lr, rule, setup = data
    mult, batches, steps = _unpack(x, setup)
    # Segments scanned rather than unrolled: half the compile time of the L-BFGS program.
    return segments_loss(theta, setup.N, lr * mult, batches, steps, rule, scan=True)


def _inv_softplus(y):
    return np.where(y > 30, y, np.log(np.expm1(np.maximum(y, 1e-300))))


def optimize_schedule(
    params: NQSParams,
    N: RealLike,
    tokens: RealLike,
    steps: RealLike,
    *,
    seq_len: RealLike,
    lr: float = DEFAULT_LR,
    segments: int = 8,
    ramp: bool = True,
    max_ramp: float = 8.0,
    decay: bool = True,
    rule: SumRule = SumRule(),
    max_steps: int = 1000,
) -> ScheduleSearch:
    r"""The batch-size ramp and step-size decay of least predicted loss for a fixed budget.

    Minimises the scheduled risk over the $S$-segment schedules of the module
    docstring (non-decreasing batch sizes if `ramp`, non-increasing multipliers
    $m_s \le 1$ of the peak step size `lr` if `decay`, free step shares), with
    the model size $N$, the tokens $D$ (hence the compute $6ND$) and the number
    of steps $K$ fixed, by L-BFGS through the model from several starts; and
    the best constant schedule (batch $D/(K\ell)$, one multiplier). Reports the gain.

    **Arguments:**

    - `params`, `lr`: the parameters and peak step size (or a plain [`nqs_engine.NQS`][]
      model as `params`, whose own step size is used).
    - `N`, `tokens`, `steps`, `seq_len`: model size, tokens $D$, steps $K$,
      tokens per sequence $\ell$ (for instance a [`nqs_engine.Plan`][]'s).
    - `segments`: $S$ (at most 16); `ramp`, `decay`: which of the two to optimise.
    - `max_ramp`: $\rho \ge 1$, the largest growth of the batch size, last over
      first segment. Without a bound the model would grow the batch without
      limit at the very end (a huge batch for a fraction of a step acts as a
      step-size decay), which no real run can do.
    - `rule`: the quadrature; `max_steps`: L-BFGS iterations per start.

    **Returns:** a [`ScheduleSearch`][].

    **Example:**

    >>> import numpy as np, nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> out = nqs.optimize_schedule(params, 1e8, 2e9, 30_000, seq_len=128, lr=lr, segments=2,
    ...                           max_ramp=4.0)
    >>> bool(out.gain > 0.01)                                  # decaying and ramping pays
    True
    >>> bool(np.all(np.diff(np.asarray(out.schedule.lr)) <= 0))  # the step size decays
    True
    >>> check = nqs.schedule_risk(params, 1e8, out.schedule, lr=lr).total
    >>> bool(abs(check - out.loss) < 1e-9)
    True
    """
    if isinstance(params, NQS):
        params, lr = params.params, float(np.asarray(params.lr))
    if not isinstance(params, NQSParams):
        raise TypeError(f"params must be an NQSParams or a plain NQS model (the schedule search "
                        f"runs through the NQS risk), got {type(params).__name__}")
    check_rule(params, lr, rule)
    values = {}
    for name, value in (("N", N), ("tokens", tokens), ("steps", steps), ("seq_len", seq_len)):
        v = float(np.asarray(value, dtype=float))
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
        values[name] = v
    if values["N"] < 1:
        raise ValueError(f"N must be >= 1, got {N!r}")
    if not (math.isfinite(max_ramp) and max_ramp >= 1):
        raise ValueError(f"max_ramp must be a number >= 1, got {max_ramp!r}")
    if not (isinstance(segments, int) and 1 <= segments <= 16):
        raise ValueError(f"segments must be an integer in [1, 16], got {segments!r}")
    dtype = jnp.result_type(float)
    theta = theta_of(params, dtype)
    as_arr = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    S = segments
    N_, D, K, ell = values["N"], values["tokens"], values["steps"], values["seq_len"]
    B_mean = D / (K * ell)

    # 1. The best constant schedule: batch D/(K l), multiplier m <= 1 on a grid, then zoomed.
    m_best = 1.0
    if decay:
        lo, hi = math.log(1e-4), 0.0
        grid = np.linspace(0.0, 1.0, 256)
        for _ in range(3):
            log_m = lo + (hi - lo) * grid
            L = _constant_losses(theta, N_, B_mean, K, lr, np.exp(log_m), rule, dtype)
            i = int(np.argmin(L))
            m_best = math.exp(log_m[i])
            width = 2 * (hi - lo) / (grid.size - 1)
            lo, hi = max(log_m[i] - width, math.log(1e-4)), min(log_m[i] + width, 0.0)
    constant = Schedule(lr=as_arr([m_best]), batch=as_arr([B_mean]), steps=as_arr([K]))
    c_loss = float(_constant_losses(theta, N_, B_mean, K, lr, np.array([m_best]), rule, dtype)[0])

    # 2. The schedule, from flat starts (the constant schedule) and a few ramps and decays.
    full = _Setup(as_arr(N_), as_arr(D), as_arr(K), as_arr(ell), as_arr(math.log(max_ramp)),
                  segments=S, ramp=ramp, decay=decay)
    x0 = np.zeros((6, 3 * S))
    grow = np.array([-30.0, -3.0, -1.0, -3.0, -1.0, 0.0])  # growth held back in the last share
    fall = np.array([-30.0, -3.0, -3.0, -1.0, -1.0, 0.0])
    x0[:, : S - 1] = 0.0
    x0[:, S - 1] = -grow
    x0[:, S] = _inv_softplus(-math.log(m_best)) if m_best < 1 else -30.0
    x0[:, S + 1 : 2 * S] = fall[:, None]
    data = (theta, as_arr(lr), rule, full)
    out = minimize(_loss, jnp.asarray(x0, dtype), data, max_steps=max_steps,
                   gtol=1e-12, ftol=1e-15, block=50)
    val = np.where(np.asarray(out.failed), np.inf, np.asarray(out.value))
    i = int(np.argmin(val))
    mult, batch, seg_steps = (np.asarray(v) for v in _unpack(jnp.asarray(np.asarray(out.x)[i]), full))
    schedule = Schedule(lr=as_arr(mult), batch=as_arr(batch), steps=as_arr(seg_steps))
    loss = float(val[i])
    return ScheduleSearch(
        schedule=schedule, loss=loss, constant=constant, constant_loss=c_loss,
        gain=c_loss - loss, N=N_, tokens=D, seq_len=ell,
        converged=bool(np.asarray(out.converged)[i]),
    )


@eqx.filter_jit
def _vmapped_lr(theta, N, B, K, lrs, rule):
    return jax.vmap(plain_loss, in_axes=(None, None, None, None, 0, None))(theta, N, B, K, lrs, rule)


def _constant_losses(theta, N, B, K, lr, mult, rule, dtype):
    """Loss of the constant schedule (N, B, K) at step sizes lr * mult (a 1-D array)."""
    a = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    return np.asarray(_vmapped_lr(theta, a(N), a(B), a(K), a(lr * mult), rule), dtype=float)


__all__ = ["ScheduleSearch", "optimize_schedule"]
