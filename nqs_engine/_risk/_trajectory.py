r"""Loss trajectories under a schedule: the risk at many checkpoints in one pass.

The recurrence of the closed form runs per direction over a sequence of
*pieces* (the schedule's segments cut at the checkpoints), on the points of a
[`nqs_engine.DirectionNodes`][], and sums the directions after every piece: one
pass over the schedule, as a `lax.scan`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import FloatArray, RealLike
from .._params import DEFAULT_LR, NQSParams
from .._quadrature import SumRule, direction_nodes
from .._schedule import Schedule
from ._kernel import (
    advance,
    approximation_term,
    bias_from_state,
    check_values,
    curvature,
    variance_from_state,
)
from ._risk import RiskBreakdown, prepare_inputs


def cut_pieces(steps, cuts):
    """Merge segment ends with extra cut points: piece ends, lengths and segment index.

    A piece's length is the difference of its two offsets within its segment, each
    measured from the segment's start, with the segment's own ends at offsets 0 and
    $k_i$ exactly: a difference of positions along the whole run would lose the
    low digits of a short segment after a long one (0.001 steps after 41622 cut
    at two checkpoints came out 7e-12 short, and the trajectory at the end of the
    schedule 3e-12 off its risk). A piece that spans a whole segment takes that
    segment's step count exactly, and one that spans nothing takes 0.
    """
    ends = jnp.cumsum(steps)
    starts = jnp.concatenate([jnp.zeros((1,), ends.dtype), ends[:-1]])
    piece_ends = jnp.sort(jnp.concatenate([ends, cuts]))
    piece_starts = jnp.concatenate([jnp.zeros((1,), piece_ends.dtype), piece_ends[:-1]])
    seg = jnp.clip(jnp.searchsorted(ends, piece_ends, side="left"), 0, steps.shape[0] - 1)
    k, s0 = steps[seg], starts[seg]
    zero = jnp.zeros_like(k)
    off_start = jnp.where(piece_starts == s0, zero, jnp.clip(piece_starts - s0, 0, k))
    off_end = jnp.where(piece_ends == ends[seg], k, jnp.clip(piece_ends - s0, 0, k))
    lengths = jnp.where(piece_ends == piece_starts, zero, jnp.maximum(off_end - off_start, 0))
    return piece_ends, lengths, seg


class _State(eqx.Module):
    log_b: FloatArray
    v: FloatArray


def _initial(nodes):
    zeros = lambda u: jnp.zeros_like(u)  # noqa: E731
    return (
        _State(zeros(nodes.head_log_n), zeros(nodes.head_log_n)),
        _State(zeros(nodes.tail_log_n), zeros(nodes.tail_log_n)),
    )


def _step(lams, states, lr, batch, k, top):
    """Advance head and tail states by one piece (`top` = Q, the largest curvature)."""
    out = []
    for lam, state, tail in zip(lams, states, (False, True)):
        log_b, v = advance(lam, tail, state.log_b, state.v, lr, batch, k, top)
        out.append(_State(log_b, v))
    return tuple(out)


def _sums(nodes, theta, lams, states):
    """(bias, variance) summed over directions for the current states."""
    us = (nodes.head_log_n, nodes.tail_log_n)
    bias = [bias_from_state(u, t, theta, s.log_b) for u, t, s in zip(us, (False, True), states)]
    var = [variance_from_state(u, t, theta, lam, s.v)
           for u, t, lam, s in zip(us, (False, True), lams, states)]
    return nodes.total(*bias), nodes.total(*var)


def pieces_trajectory(theta, N, lrs, batches, lengths, rule):
    """(bias, variance) of one configuration after each of a sequence of pieces.

    Piece $j$ runs `lengths[j]` steps at step size `lrs[j]` and batch `batches[j]`;
    one `lax.scan` over the pieces, summing the directions after each.
    """
    nodes = direction_nodes(N, rule)
    lams = (curvature(nodes.head_log_n, theta), curvature(nodes.tail_log_n, theta))

    def body(states, piece):
        lr, batch, k = piece
        states = _step(lams, states, lr, batch, k, theta[3])
        return states, _sums(nodes, theta, lams, states)

    _, (bias, var) = jax.lax.scan(body, _initial(nodes), (lrs, batches, lengths))
    return bias, var


def config_trajectory(theta, N, lrs, batches, steps, checkpoints, rule):
    """(bias, variance) of one configuration at each of `checkpoints`, in one pass."""
    piece_ends, lengths, seg = cut_pieces(steps, checkpoints)
    bias, var = pieces_trajectory(theta, N, lrs[seg], batches[seg], lengths, rule)
    # The last piece ending at each checkpoint (zero-length pieces change nothing).
    pos = jnp.searchsorted(piece_ends, checkpoints, side="right") - 1
    return bias[pos], var[pos]


@eqx.filter_jit
def _trajectory_flat(theta, N, lrs, batches, steps, checkpoints, rule):
    N = check_values(theta, N, lrs, batches, steps, rule)
    total = jnp.sum(steps, axis=-1)
    N = eqx.error_if(
        N,
        jnp.any((checkpoints[None, :] > total[:, None]) | (checkpoints[None, :] < 0), axis=-1),
        "checkpoints must lie between 0 and the schedule's total number of steps",
    )
    bias, var = jax.vmap(
        lambda th, n, lr, b, k: config_trajectory(tuple(th), n, lr, b, k, checkpoints, rule)
    )(theta.T, N, lrs, batches, steps)
    return bias, var, approximation_term(theta[0], theta[2], N, rule)


def trajectory(
    params: NQSParams,
    N: RealLike,
    schedule: Schedule,
    checkpoints: RealLike,
    *,
    lr: RealLike = DEFAULT_LR,
    rule: SumRule = SumRule(),
) -> RiskBreakdown:
    r"""The loss curve: the risk after each of `checkpoints` steps of `schedule`.

    The schedule is cut at the checkpoints into pieces and the recurrence of
    [`nqs_engine.schedule_risk`][] runs once over them (a `lax.scan`), summing the
    directions after every piece, so the whole curve costs one pass. The value at
    checkpoint $k$ equals the risk of the schedule truncated at $k$ steps.

    **Arguments:** as [`nqs_engine.schedule_risk`][], plus `checkpoints`, a 1-D
    array of step counts in $[0, K]$ (any order; shared by all configurations).

    **Returns:** a [`nqs_engine.RiskBreakdown`][] of shape
    `(*batch_shape, len(checkpoints))`.

    **Example:**

    >>> import numpy as np, nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> sched = nqs.Schedule.cosine(10_000, 256, pieces=16)
    >>> curve = nqs.trajectory(params, 1e8, sched, np.linspace(0, 10_000, 5), lr=lr)
    >>> curve.total.shape
    (5,)
    >>> bool(np.all(np.diff(curve.total) < 0))
    True
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    checkpoints = np.asarray(checkpoints) if not isinstance(checkpoints, jax.Array) else checkpoints
    if checkpoints.ndim != 1 or checkpoints.shape[0] == 0:
        raise ValueError(f"checkpoints must be a non-empty 1-D array, got shape {checkpoints.shape}")
    prepared = prepare_inputs(params, N, lr, (schedule.lr, schedule.batch, schedule.steps), rule,
                        chunk=None)
    cps = jnp.asarray(checkpoints, dtype=prepared.N.dtype)
    bias, var, approx = _trajectory_flat(*prepared.flat, cps, rule)
    shape = (*prepared.shape, cps.shape[0])
    return prepared.breakdown(prepared.theta[4][:, None], approx[:, None], bias, var, shape)


__all__ = ["config_trajectory", "cut_pieces", "pieces_trajectory", "trajectory"]
