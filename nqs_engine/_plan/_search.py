r"""The searches of a plan: grids along lines and over the plane, and L-BFGS refinement.

A plan is a point $(\log N, \log B)$ in the feasible set of its budget
(`_budgets`). A logistic map sends $z \in \mathbb{R}$ (one batch line
$B = c N^e$) or $z \in \mathbb{R}^2$ (a free batch size) onto that set, so every
grid candidate and every L-BFGS iterate meets every limit. Candidates are
scored by the model's [`nqs_engine.AbstractLossModel.planning_loss`][], in few
compiled shapes.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._fit._optimize import minimize
from .._model import AbstractLossModel
from ._budgets import Budgets, Hardware, log_b_high, log_steps

# ---------------------------------------------------------------------------
# The loss along the search coordinates (JAX)
# ---------------------------------------------------------------------------


class Space(eqx.Module):
    """Per-budget data of the 2-D map t = (t_N, t_B) in [0, 1]^2 -> (log N, log B)."""

    a: jax.Array
    b: jax.Array
    b_low: jax.Array
    caps: tuple  # log C/(6 l), log D_max/l, log T_max F/6, log tau, log l
    log_k_min: jax.Array
    max_memory: jax.Array
    b_max: jax.Array
    hardware: Hardware = eqx.field(static=True)

    def point(self, t_n, t_b):
        log_n = self.a + (self.b - self.a) * t_n
        high = log_b_high(log_n, *self.caps, self.log_k_min, self.b_max, self.max_memory,
                           self.hardware, jnp)
        high = jnp.maximum(high, self.b_low)  # rounding at the corner of the region
        return log_n, self.b_low + (high - self.b_low) * t_b


class Line(eqx.Module):
    """Per-(budget, line) data of the 1-D map t in [0, 1] -> log N, with B = c N^e."""

    a: jax.Array
    b: jax.Array
    log_c: jax.Array
    exponent: jax.Array
    caps: tuple

    def point(self, t):
        log_n = self.a + (self.b - self.a) * t
        return log_n, self.log_c + self.exponent * log_n


def search_loss(z, model, where):
    """The model's loss at the plan that z (in R^1 or R^2) maps to on a Line or a Space."""
    log_n, log_b = where.point(*jax.nn.sigmoid(z))
    log_k = log_steps(log_n, log_b, *where.caps, jnp)
    seq_len = jnp.exp(where.caps[4])
    return model.planning_loss(jnp.exp(log_n), jnp.exp(log_b), jnp.exp(log_k), seq_len)


def logit(t):
    """The inverse of the logistic function, with `t` clipped away from 0 and 1."""
    t = np.clip(t, 1e-12, 1 - 1e-12)
    return np.log(t) - np.log1p(-t)


# ---------------------------------------------------------------------------
# Scoring many candidates
# ---------------------------------------------------------------------------


class Scorer:
    """Loss of flat candidate arrays (N, B, K) under one model (its planning loss).

    Candidates are padded to a multiple of 4096, so that repeated searches share
    compiled shapes; `evaluations` counts the candidates scored.
    """

    def __init__(self, model: AbstractLossModel, seq_len: float, dtype):
        self.model = model
        self.seq_len = float(seq_len)
        self.dtype = dtype
        self.evaluations = 0

    def __call__(self, N, B, K) -> np.ndarray:
        shape = np.shape(N)
        N, B, K = (np.asarray(v, dtype=float).reshape(-1) for v in (N, B, K))
        self.evaluations += N.size
        size = max(4096, -(-N.size // 4096) * 4096)
        pad = lambda v, fill: np.concatenate([v, np.full(size - v.size, fill)])  # noqa: E731
        out = _planning_losses(
            self.model, *(jnp.asarray(pad(v, f), self.dtype) for v, f in ((N, 1e6), (B, 1.0), (K, 1.0))),
            jnp.asarray(self.seq_len, self.dtype),
        )
        return np.asarray(out, dtype=float)[: N.size].reshape(shape)


@eqx.filter_jit
def _planning_losses(model, N, B, K, seq_len):
    return model.planning_loss(N, B, K, seq_len)


def grid_lines(score, lines: dict, n: int):
    """Grid search along lines: `n` points, then `n` more in a window of +-2 cells.

    `lines` holds arrays of one shape (budgets x lines): `a`, `b` (the feasible
    interval of log N), `log_c`, `exponent`, `compute`, `seq_len`. Returns the
    best t in [0, 1] and its loss, each of that shape.
    """
    shape = lines["a"].shape
    lo, hi = np.zeros(shape), np.ones(shape)
    u = np.linspace(0.0, 1.0, n)
    for _ in range(2):
        t = lo[..., None] + (hi - lo)[..., None] * u
        log_n = lines["a"][..., None] + (lines["b"] - lines["a"])[..., None] * t
        log_b = lines["log_c"][..., None] + lines["exponent"][..., None] * log_n
        N, B = np.exp(log_n), np.exp(log_b)
        K = lines["budgets"].steps(N.reshape(N.shape[0], -1), B.reshape(B.shape[0], -1)).reshape(N.shape)
        L = score(N, B, K)
        i = np.argmin(L, axis=-1)[..., None]
        t_best = np.take_along_axis(t, i, -1)[..., 0]
        best = np.take_along_axis(L, i, -1)[..., 0]
        width = (hi - lo) * 2.0 / max(n - 1, 1)
        lo, hi = np.clip(t_best - width, 0, 1), np.clip(t_best + width, 0, 1)
    return t_best, best


def grid_space(score, space: dict, n_n: int, n_b: int):
    """Grid search over the 2-D map; coarse grid, then a zoomed grid. Best (t_N, t_B), loss."""
    M = space["a"].shape[0]
    lo = np.zeros((M, 2))
    hi = np.ones((M, 2))
    u_n, u_b = np.linspace(0.0, 1.0, n_n), np.linspace(0.0, 1.0, n_b)
    for _ in range(2):
        tn = lo[:, :1] + (hi - lo)[:, :1] * u_n  # (M, n_n)
        tb = lo[:, 1:] + (hi - lo)[:, 1:] * u_b  # (M, n_b)
        log_n = space["a"][:, None] + (space["b"] - space["a"])[:, None] * tn
        high = np.maximum(space["budgets"].log_b_high(log_n), space["b_low"][:, None])
        log_b = space["b_low"][:, None, None] + (high - space["b_low"][:, None])[:, :, None] * tb[:, None, :]
        N = np.broadcast_to(np.exp(log_n)[:, :, None], log_b.shape)
        B = np.exp(log_b)
        K = space["budgets"].steps(N.reshape(M, -1), B.reshape(M, -1)).reshape(N.shape)
        L = score(N, B, K).reshape(M, -1)
        flat = np.argmin(L, axis=-1)
        i, j = np.unravel_index(flat, (n_n, n_b))
        t_best = np.stack([tn[np.arange(M), i], tb[np.arange(M), j]], axis=-1)
        best = L[np.arange(M), flat]
        width = (hi - lo) * 2.0 / np.maximum(np.array([n_n, n_b]) - 1, 1)
        lo, hi = np.clip(t_best - width, 0, 1), np.clip(t_best + width, 0, 1)
    return t_best, best


# ---------------------------------------------------------------------------
# Feasible intervals of lines B = c N^e (NumPy, vectorised)
# ---------------------------------------------------------------------------

_DENSE = 2048  # points per line when locating its feasible interval
_BISECT = 60


def line_feasible(budgets: Budgets, log_b_low, log_n, log_c, exponent):
    """Feasibility of points on lines; arrays shaped (M, L, P) (or broadcasting)."""
    c = lambda v: v.reshape(v.shape + (1,) * (log_n.ndim - v.ndim))  # noqa: E731
    log_b = log_c + exponent * log_n
    ok = (log_n >= math.log(budgets.n_range[0])) & (log_n <= math.log(budgets.n_range[1]))
    ok &= log_b >= c(log_b_low)
    ok &= log_b <= budgets.log_b_high(log_n)
    return ok


def line_intervals(budgets: Budgets, log_b_low, log_c, exponent):
    """Feasible [a, b] in log N of each (budget, line); `valid` False where empty.

    The feasible set of a line is an interval when exponent > -1 (every limit
    is monotone along it). It is located on a dense grid in log N, then each
    end is refined by bisection to float64 precision.
    """
    M, Lc = budgets.size, log_c.shape[-1]
    lo_n, hi_n = math.log(budgets.n_range[0]), math.log(budgets.n_range[1])
    grid = np.linspace(lo_n, hi_n, _DENSE)
    log_c3, e3 = log_c[..., None], exponent[..., None]
    ok = line_feasible(budgets, log_b_low, np.broadcast_to(grid, (M, Lc, _DENSE)), log_c3, e3)
    valid = ok.any(axis=-1)
    first = np.argmax(ok, axis=-1)
    last = _DENSE - 1 - np.argmax(ok[..., ::-1], axis=-1)

    def refine(inside_idx, outside_idx):
        inside, outside = grid[inside_idx], grid[np.clip(outside_idx, 0, _DENSE - 1)]
        edge = (outside_idx < 0) | (outside_idx >= _DENSE)
        for _ in range(_BISECT):
            mid = 0.5 * (inside + outside)
            good = line_feasible(budgets, log_b_low, mid[..., None], log_c3, e3)[..., 0]
            inside, outside = np.where(good, mid, inside), np.where(good, outside, mid)
        return np.where(edge, grid[inside_idx], inside)

    a = refine(first, first - 1)
    b = refine(last, last + 1)
    return a, b, valid


# ---------------------------------------------------------------------------
# Gradient refinement (optax L-BFGS under vmap, through the model)
# ---------------------------------------------------------------------------


def polish(per_start, z0, model, max_steps):
    """L-BFGS through the model's planning loss from every start; the batch is padded to a
    power of two (>= 8) so that plans of different sizes share compiled programs."""
    n = z0.shape[0]
    size = max(8, 1 << (n - 1).bit_length())
    take = np.minimum(np.arange(size), n - 1)
    z0 = np.asarray(z0)[take]
    per_start = jax.tree.map(lambda v: v[take], per_start)
    dtype = jnp.result_type(float)
    out = minimize(
        search_loss, jnp.asarray(z0, dtype), model,
        per_start=per_start, max_steps=max_steps, gtol=1e-10, ftol=1e-14, block=50,
    )
    x, value, conv = (np.asarray(v)[:n] for v in (out.x, out.value, out.converged))
    return x.astype(float), value.astype(float), conv


__all__ = ["Line", "Scorer", "Space", "grid_lines", "grid_space", "line_intervals", "logit",
           "polish", "search_loss"]
