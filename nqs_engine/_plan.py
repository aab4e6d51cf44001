r"""Planning: the best model size $N$, batch size $B$ and step count $K$ for a budget.

A plan minimises the predicted loss $L(N, B, K)$ over the runs a budget allows.
Compute $C = 6\,N\,B\,K\,\ell$ ($\ell$ = `seq_len`, tokens per sequence) is a
budget, $6NBK\ell \le C$, and so are the optional limits (SPEC section 4),
each combinable:

- data: tokens $B K \ell \le D_{max}$;
- time (a documented throughput model, [`Hardware`][]): one step processes
  $\min(B\ell, \tau)$ tokens per accelerator ($\tau$ = `tokens_per_device`; a
  larger batch is spread over more accelerators) at $F$ FLOP/s, so
  $T = 6 N K \min(B\ell, \tau) / F \le T_{max}$;
- memory (a documented bytes model, [`Hardware`][]):
  $M(N, B) = N\,(m_{state} + m_{act} B \ell) \le M_{max}$;
- ranges: $N \in [N_{lo}, N_{hi}]$, $B \in [B_{lo}, B_{hi}]$, $K \ge K_{min}$.

Compute, data and time each cap the number of steps, and a run takes every
step its caps allow (more steps lower the loss of a constant schedule), so

$$K(N, B) = \min\Big(\frac{C}{6NB\ell},\ \frac{D_{max}}{B\ell},\
  \frac{T_{max} F}{6 N \min(B\ell, \tau)}\Big),$$

which holds the binding caps exactly, and a plan is a point $(\log N, \log B)$.
With no other limit binding, the compute is spent exactly; a larger budget
only enlarges the feasible set, so more compute never plans a worse loss.

The remaining limits ($K \ge K_{min}$ under every cap, memory, ranges) bound
$\log B$ by a decreasing function of $\log N$, so the feasible
set is $\{a \le \log N \le b,\ \beta_{lo} \le \log B \le \beta_{hi}(\log N)\}$ and
the map

$$\log N = a + (b - a)\,\sigma(z_1), \qquad
  \log B = \beta_{lo} + (\beta_{hi}(\log N) - \beta_{lo})\,\sigma(z_2)$$

($\sigma$ the logistic function) sends every $z \in \mathbb{R}^2$ to a feasible
plan and covers them all: the gradient search (L-BFGS from optax, through the
model) runs unconstrained in $z$ and every iterate satisfies every limit
exactly. The grid search lays the same map over a regular grid in
$(\sigma(z_1), \sigma(z_2))$, so every candidate is feasible too, then zooms
in around the best cell. Batch sizes restricted to a set (powers of two, one
fixed value) or tied to $N$ by a rule $B = c N^{e}$ make each choice of batch a
line, searched the same way in one dimension.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import RealLike
from ._evaluator import PLAN_RULE, check_rule, losses, plain_loss, theta_of
from ._optimize import minimize
from ._params import DEFAULT_LR, NQSParams
from ._quadrature import SumRule
from ._schedule import Schedule

#: How a plan may choose its batch size.
BATCH_MODES = ("pow2", "free")
#: Search methods of [`plan`][].
METHODS = ("grid+gradient", "grid", "gradient")
#: Loss predictors a plan can minimise.
VARIANTS = ("plain", "weight-norm")

# Relative slack below which a limit counts as binding.
_BINDING = 1e-3


class Hardware(eqx.Module):
    r"""The memory and throughput model behind `max_memory` and `max_time` of [`plan`][].

    - memory in bytes: $M(N, B) = N\,(m_{state} + m_{act}\,B\,\ell)$, training state
      plus the activations of one batch of $B$ sequences of $\ell$ tokens.
      `bytes_per_param` $= m_{state}$ defaults to 16 (mixed-precision Adam: fp32
      master weights and two moments, 16-bit weights and gradients).
      `activation_bytes` $= m_{act}$ is bytes per parameter per token held: a
      transformer with $N = 12 L d^2$ stores about $34 L d$ bytes per token
      without recomputation (Korthikanti et al., 2022), i.e. $2.8/d$ per
      parameter; the default 0.0028 is $d = 1024$. Set it to match your
      architecture, activation checkpointing or micro-batching (0 models
      unlimited gradient accumulation).
    - time in seconds: $T = 6\,N\,K\,\min(B\ell, \tau)/F$: each accelerator
      sustains `device_flops` $= F$ FLOP/s (default 4e14, an H100 at ~40% of
      its dense bf16 peak) on `tokens_per_device` $= \tau$ tokens per step
      (default 16384); larger batches use proportionally more accelerators.

    **Example:**

    >>> from nqs_engine import Hardware
    >>> hw = Hardware()
    >>> round(hw.memory(1e9, 256, 2048) / 2**30)   # GiB: 1B model, a batch of 256 x 2048 tokens
    1382
    >>> round(float(hw.time(1e9, 256, 10_000, 2048)) / 3600, 2)   # hours for 10k steps
    0.68
    """

    bytes_per_param: float = 16.0
    activation_bytes: float = 0.0028
    device_flops: float = 4e14
    tokens_per_device: float = 16384.0

    def __check_init__(self):
        for name in ("bytes_per_param", "device_flops", "tokens_per_device"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"Hardware.{name} must be a positive number, got {value!r}")
        act = self.activation_bytes
        if not (isinstance(act, (int, float)) and math.isfinite(act) and act >= 0):
            raise ValueError(f"Hardware.activation_bytes must be a number >= 0, got {act!r}")

    def memory(self, N: Any, B: Any, seq_len: Any) -> Any:
        """Bytes to train a model of N parameters at batch B (sequences of seq_len tokens)."""
        return N * (self.bytes_per_param + self.activation_bytes * B * seq_len)

    def time(self, N: Any, B: Any, K: Any, seq_len: Any) -> Any:
        """Seconds for K steps (see the class docstring)."""
        return 6 * N * K * np.minimum(B * seq_len, self.tokens_per_device) / self.device_flops


# ---------------------------------------------------------------------------
# Budgets and their feasible sets (NumPy, eager, vectorised over budgets)
# ---------------------------------------------------------------------------


def _log_steps(log_n, log_b, log_c, log_d, log_tf, log_tau, log_s, xp):
    r"""$\log K$ with $K = \min(C/(6NB\ell),\ D_{max}/(B\ell),\ T_{max}F/(6N\min(B\ell, \tau)))$."""
    by_compute = log_c - log_n - log_b
    by_tokens = log_d - log_b
    by_time = log_tf - log_n - xp.minimum(log_b + log_s, log_tau + 0 * log_b)
    return xp.minimum(xp.minimum(by_compute, by_tokens), by_time)


def _log_b_high(log_n, log_c, log_d, log_tf, log_tau, log_s, log_k_min, log_b_max, max_memory, hw, xp):
    """Largest log B at log N: b_range, memory, and every cap allowing K >= min_steps."""
    high = xp.minimum(log_b_max, log_c - log_k_min - log_n)  # compute
    high = xp.minimum(high, log_d - log_k_min + 0 * log_n)  # tokens
    # time: N min(B l, tau) <= T F / (6 K_min); binds B only where N tau exceeds it
    room_t = log_tf - log_k_min - log_n
    high = xp.minimum(high, xp.where(room_t >= log_tau, xp.inf, room_t - log_s))
    room = max_memory * xp.exp(-log_n) - hw.bytes_per_param
    if hw.activation_bytes > 0:
        safe = xp.where(room > 0, room, 1.0)
        mem = xp.where(room > 0, xp.log(safe / (hw.activation_bytes * xp.exp(log_s))), -xp.inf)
    else:
        mem = xp.where(room >= 0, xp.inf, -xp.inf)
    return xp.minimum(high, mem)


@dataclasses.dataclass(frozen=True)
class _Budgets:
    """Limits of M budgets as float64 arrays of shape (M,); `inf` = no limit."""

    compute: np.ndarray
    seq_len: np.ndarray
    max_tokens: np.ndarray
    max_memory: np.ndarray
    max_time: np.ndarray
    min_steps: np.ndarray
    n_range: tuple[float, float]
    b_range: tuple[float, float]
    hardware: Hardware

    @property
    def size(self) -> int:
        return self.compute.shape[0]

    def steps(self, N, B):
        """K = the largest step count every cap allows (compute, tokens, time); (M,)+ arrays."""
        c = lambda a: a.reshape(a.shape + (1,) * (np.ndim(N) - 1))  # noqa: E731
        log_k = _log_steps(np.log(N), np.log(B), *(c(v) for v in self.log_caps()), np)
        return np.exp(log_k)

    def log_caps(self):
        """(log C/(6 l), log D_max/l, log T_max F/6, log tau, log l) per budget."""
        hw = self.hardware
        with np.errstate(divide="ignore"):
            return (
                np.log(self.compute / (6 * self.seq_len)),
                np.log(self.max_tokens / self.seq_len),
                np.log(self.max_time * hw.device_flops / 6),
                np.full(self.size, math.log(hw.tokens_per_device)),
                np.log(self.seq_len),
            )

    # Bounds on log B at a given log N (free batch size); arrays (M, ...) -> (M, ...).
    def log_b_low(self) -> np.ndarray:
        """Smallest log B (b_range)."""
        return np.full(self.size, math.log(self.b_range[0]))

    def log_b_high(self, log_n, xp=np):
        """Largest log B at log N: b_range, memory, and K >= min_steps under every cap."""
        c = lambda a: a.reshape(a.shape + (1,) * (log_n.ndim - 1))  # noqa: E731
        caps = self.log_caps()
        log_k_min = c(np.log(self.min_steps))
        return _log_b_high(log_n, *(c(v) for v in caps), log_k_min, math.log(self.b_range[1]),
                           c(self.max_memory), self.hardware, xp)

    def log_n_range(self, log_b_low: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
        """[a, b] in log N where some B in [B_low, B_high(N)] is feasible; and the sources."""
        hw = self.hardware
        log_c, log_d, log_tf, log_tau, log_s = self.log_caps()
        log_k_min = np.log(self.min_steps)
        with np.errstate(divide="ignore"):
            lows = {"n_range": np.full(self.size, math.log(self.n_range[0]))}
            b_low = np.exp(log_b_low)
            highs = {
                "n_range": np.full(self.size, math.log(self.n_range[1])),
                "min_steps": log_c - log_k_min - log_b_low,
                "max_time": log_tf - log_k_min - np.minimum(log_b_low + log_s, log_tau),
                "max_memory": np.log(
                    self.max_memory / (hw.bytes_per_param + hw.activation_bytes * b_low * self.seq_len)
                ),
                # tokens: B_low l K_min <= D_max, or nothing is feasible
                "max_tokens": np.where(log_d - log_k_min >= log_b_low, np.inf, -np.inf),
            }
        a = np.max(np.stack(list(lows.values())), axis=0)
        b = np.min(np.stack(list(highs.values())), axis=0)
        return a, b, [lows, highs]

    def metrics(self, N, B, K) -> dict[str, np.ndarray]:
        """Tokens, compute, memory and time of plans (arrays broadcasting with (M,))."""
        s = self.seq_len.reshape(self.seq_len.shape + (1,) * (np.ndim(N) - 1))
        return {
            "tokens": B * K * s,
            "compute": 6 * N * B * K * s,
            "memory": self.hardware.memory(N, B, s),
            "time": self.hardware.time(N, B, K, s),
        }

    def binding(self, N, B, K) -> list[tuple[str, ...]]:
        """Names of the limits each budget's plan (N, B, K of shape (M,)) meets."""
        m = self.metrics(N, B, K)
        rel = {
            "compute": 1 - m["compute"] / self.compute,
            "max_tokens": 1 - m["tokens"] / self.max_tokens,
            "max_memory": 1 - m["memory"] / self.max_memory,
            "max_time": 1 - m["time"] / self.max_time,
            "min_steps": K / self.min_steps - 1,
            "n_range": np.minimum(N / self.n_range[0] - 1, 1 - N / self.n_range[1]),
            "b_range": np.minimum(B / self.b_range[0] - 1, 1 - B / self.b_range[1]),
        }
        return [tuple(k for k, v in rel.items() if v[i] < _BINDING) for i in range(self.size)]


def _describe(name: str, value: float) -> str:
    return f"{name}={value:.4g}"


def _infeasible_message(budgets: _Budgets, i: int, a, b, sources, log_b_low) -> str:
    """Why budget i has no feasible plan, naming the limits in conflict."""
    _, highs = sources
    b_lo = math.exp(log_b_low[i])
    n_lo = math.exp(a[i])
    high_name = min(highs, key=lambda k: highs[k][i])
    why = {
        "n_range": lambda: f"the largest model size allowed (n_range) is N = {budgets.n_range[1]:.4g}",
        "min_steps": lambda: f"compute={budgets.compute[i]:.4g} FLOPs buys fewer than "
        f"{_describe('min_steps', budgets.min_steps[i])} steps of B = {b_lo:.4g} at N = {n_lo:.4g}",
        "max_time": lambda: f"{_describe('max_time', budgets.max_time[i])} s allows fewer than "
        f"{_describe('min_steps', budgets.min_steps[i])} steps of B = {b_lo:.4g} at N = {n_lo:.4g}",
        "max_memory": lambda: f"{_describe('max_memory', budgets.max_memory[i])} bytes does not hold "
        f"N = {n_lo:.4g} at B = {b_lo:.4g}",
        "max_tokens": lambda: f"{_describe('max_tokens', budgets.max_tokens[i])} is fewer than "
        f"{_describe('min_steps', budgets.min_steps[i])} steps of B = {b_lo:.4g} sequences",
    }[high_name]()
    return (f"infeasible budget at compute={budgets.compute[i]:.4g}: no run with N >= {n_lo:.4g} "
            f"(n_range) and B >= {b_lo:.4g} (b_range) fits: {why}")


def _as_budget_array(value, name: str, size: int, default: float, positive: bool = True):
    arr = np.asarray(default if value is None else value, dtype=float)
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a number or a 1-D array, got shape {arr.shape}")
    bad = ~(arr > 0) if positive else ~(arr >= 0)
    bad = bad | np.isnan(arr) | (arr == -np.inf)
    if np.any(bad):
        v = float(np.atleast_1d(arr)[np.argmax(np.atleast_1d(bad))])
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {v:g}")
    try:
        return np.broadcast_to(arr, (size,)).astype(float)
    except ValueError:
        raise ValueError(f"{name} has {arr.size} values but compute has {size}") from None


def _range(value, name: str, default: tuple[float, float]) -> tuple[float, float]:
    lo, hi = default if value is None else value
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, finite; got {value!r}")
    return lo, hi


# ---------------------------------------------------------------------------
# The loss along the search coordinates (JAX)
# ---------------------------------------------------------------------------


class _Space(eqx.Module):
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
        high = _log_b_high(log_n, *self.caps, self.log_k_min, self.b_max, self.max_memory,
                           self.hardware, jnp)
        high = jnp.maximum(high, self.b_low)  # rounding at the corner of the region
        return log_n, self.b_low + (high - self.b_low) * t_b


class _Line(eqx.Module):
    """Per-(budget, line) data of the 1-D map t in [0, 1] -> log N, with B = c N^e."""

    a: jax.Array
    b: jax.Array
    log_c: jax.Array
    exponent: jax.Array
    caps: tuple

    def point(self, t):
        log_n = self.a + (self.b - self.a) * t
        return log_n, self.log_c + self.exponent * log_n


def _search_loss(z, data, where):
    """The loss at the plan that z (in R^1 or R^2) maps to on a _Line or a _Space."""
    theta, lr, rule = data
    log_n, log_b = where.point(*jax.nn.sigmoid(z))
    log_k = _log_steps(log_n, log_b, *where.caps, jnp)
    return plain_loss(theta, jnp.exp(log_n), jnp.exp(log_b), jnp.exp(log_k), lr, rule)


def _logit(t):
    t = np.clip(t, 1e-12, 1 - 1e-12)
    return np.log(t) - np.log1p(-t)


# ---------------------------------------------------------------------------
# Scoring many candidates
# ---------------------------------------------------------------------------


class _Scorer:
    """Loss of flat candidate arrays (N, B, K) under one parameter set and predictor."""

    def __init__(self, params, lr, variant, rule, dtype):
        self.params, self.lr, self.variant, self.rule = params, lr, variant, rule
        self.theta = theta_of(params, dtype)
        self.dtype = dtype
        self.evaluations = 0

    def __call__(self, N, B, K) -> np.ndarray:
        shape = np.shape(N)
        N, B, K = (np.asarray(v, dtype=float).reshape(-1) for v in (N, B, K))
        self.evaluations += N.size
        if self.variant == "weight-norm":
            from ._trajectory import weight_norm_risk

            out = weight_norm_risk(self.params, N, Schedule.constant(K, B), lr=self.lr).total
            return np.asarray(out, dtype=float).reshape(shape)
        # Pad to a multiple of 4096 so that repeated searches share compiled shapes.
        size = max(4096, -(-N.size // 4096) * 4096)
        pad = lambda v, fill: np.concatenate([v, np.full(size - v.size, fill)])  # noqa: E731
        out = losses(
            self.theta, *(jnp.asarray(pad(v, f), self.dtype) for v, f in ((N, 1e6), (B, 1.0), (K, 1.0))),
            jnp.asarray(self.lr, self.dtype), self.rule,
        )
        return np.asarray(out, dtype=float)[: N.size].reshape(shape)


def _grid_lines(score, lines: dict, n: int):
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


def _grid_space(score, space: dict, n_n: int, n_b: int):
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


def _line_feasible(budgets: _Budgets, log_b_low, log_n, log_c, exponent):
    """Feasibility of points on lines; arrays shaped (M, L, P) (or broadcasting)."""
    c = lambda v: v.reshape(v.shape + (1,) * (log_n.ndim - v.ndim))  # noqa: E731
    log_b = log_c + exponent * log_n
    ok = (log_n >= math.log(budgets.n_range[0])) & (log_n <= math.log(budgets.n_range[1]))
    ok &= log_b >= c(log_b_low)
    ok &= log_b <= budgets.log_b_high(log_n)
    return ok


def _line_intervals(budgets: _Budgets, log_b_low, log_c, exponent):
    """Feasible [a, b] in log N of each (budget, line); `valid` False where empty.

    The feasible set of a line is an interval when exponent > -1 (every limit
    is monotone along it). It is located on a dense grid in log N, then each
    end is refined by bisection to float64 precision.
    """
    M, Lc = budgets.size, log_c.shape[-1]
    lo_n, hi_n = math.log(budgets.n_range[0]), math.log(budgets.n_range[1])
    grid = np.linspace(lo_n, hi_n, _DENSE)
    log_c3, e3 = log_c[..., None], exponent[..., None]
    ok = _line_feasible(budgets, log_b_low, np.broadcast_to(grid, (M, Lc, _DENSE)), log_c3, e3)
    valid = ok.any(axis=-1)
    first = np.argmax(ok, axis=-1)
    last = _DENSE - 1 - np.argmax(ok[..., ::-1], axis=-1)

    def refine(inside_idx, outside_idx):
        inside, outside = grid[inside_idx], grid[np.clip(outside_idx, 0, _DENSE - 1)]
        edge = (outside_idx < 0) | (outside_idx >= _DENSE)
        for _ in range(_BISECT):
            mid = 0.5 * (inside + outside)
            good = _line_feasible(budgets, log_b_low, mid[..., None], log_c3, e3)[..., 0]
            inside, outside = np.where(good, mid, inside), np.where(good, outside, mid)
        return np.where(edge, grid[inside_idx], inside)

    a = refine(first, first - 1)
    b = refine(last, last + 1)
    return a, b, valid


# ---------------------------------------------------------------------------
# Gradient refinement (optax L-BFGS under vmap, through the model)
# ---------------------------------------------------------------------------


def _polish(fun, per_start, z0, theta, lr, rule, max_steps):
    """L-BFGS from every start; the batch is padded to a power of two (>= 8) so
    that plans of different sizes share compiled programs."""
    n = z0.shape[0]
    size = max(8, 1 << (n - 1).bit_length())
    take = np.minimum(np.arange(size), n - 1)
    z0 = np.asarray(z0)[take]
    per_start = jax.tree.map(lambda v: v[take], per_start)
    out = minimize(
        fun, jnp.asarray(z0, theta.dtype), (theta, jnp.asarray(lr, theta.dtype), rule),
        per_start=per_start, max_steps=max_steps, gtol=1e-10, ftol=1e-14, block=50,
    )
    x, value, conv = (np.asarray(v)[:n] for v in (out.x, out.value, out.converged))
    return x.astype(float), value.astype(float), conv


# ---------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------


class Plan(eqx.Module):
    r"""The outcome of [`plan`][] for $M$ budgets (leading axis; none for a scalar budget).

    **Fields:**

    - `N`, `B`, `K`: the chosen run; `B` a whole number of sequences, `K` whole
      steps (rounded down, so that compute never exceeds the budget).
    - `loss`: predicted loss of that run with the default
      [`nqs_engine.SumRule`][] (the `variant`'s predictor).
    - `tokens` $= B K \ell$, `compute` $= 6 N B K \ell$ (at most the budget),
      `memory` (bytes) and `time` (seconds) under `hardware`.
    - `N_exact`, `B_exact`, `K_exact`, `loss_exact`: the continuous optimum,
      which meets its binding caps exactly.
    - `binding`: for each budget, the names of the limits the optimum meets
      (`compute`, `max_tokens`, `max_memory`, `max_time`, `min_steps`, `n_range`,
      `b_range`).
    - `alt_N`, `alt_B`, `alt_K`, `alt_loss`: next-best alternatives, shape
      (..., `alternatives`), best first: the optimum at each other allowed
      power-of-two batch size (`nan` where fewer exist).
    - `converged`: the gradient refinement met its tolerance (True for `grid`).
      It may be False where two step caps meet at the optimum (say compute and
      `max_tokens`): the loss has a kink there, and no zero gradient.
    - `evaluations`: loss evaluations spent; `method`, `variant`, `batch`: as asked.
    """

    N: np.ndarray
    B: np.ndarray
    K: np.ndarray
    loss: np.ndarray
    tokens: np.ndarray
    compute: np.ndarray
    memory: np.ndarray
    time: np.ndarray
    N_exact: np.ndarray
    B_exact: np.ndarray
    K_exact: np.ndarray
    loss_exact: np.ndarray
    alt_N: np.ndarray
    alt_B: np.ndarray
    alt_K: np.ndarray
    alt_loss: np.ndarray
    converged: np.ndarray
    binding: tuple = eqx.field(static=True)
    evaluations: int = eqx.field(static=True)
    method: str = eqx.field(static=True)
    variant: str = eqx.field(static=True)
    batch: str = eqx.field(static=True)
    seq_len: float = eqx.field(static=True)

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per budget: the plan, its limits and its alternatives."""
        flat = lambda v: np.atleast_1d(np.asarray(v))  # noqa: E731
        alt = lambda v: np.asarray(v).reshape(flat(self.N).size, -1)  # noqa: E731
        out = []
        binding = self.binding if np.ndim(self.N) else (self.binding,)
        for i in range(flat(self.N).size):
            row = {k: float(flat(getattr(self, k))[i]) for k in (
                "N", "B", "K", "loss", "tokens", "compute", "memory", "time",
                "N_exact", "B_exact", "K_exact", "loss_exact")}
            row["K"] = int(row["K"])
            row["B"] = int(row["B"])
            row["tokens_per_parameter"] = row["tokens"] / row["N"]
            row["binding"] = list(binding[i])
            row["converged"] = bool(flat(self.converged)[i])
            row["alternatives"] = [
                {"N": float(n), "B": int(b), "K": int(k), "loss": float(l)}
                for n, b, k, l in zip(alt(self.alt_N)[i], alt(self.alt_B)[i],
                                      alt(self.alt_K)[i], alt(self.alt_loss)[i])
                if np.isfinite(l)
            ]
            out.append(row)
        return out


def plan(
    params: NQSParams,
    compute: RealLike,
    *,
    seq_len: RealLike,
    lr: float = DEFAULT_LR,
    max_tokens: RealLike | None = None,
    max_memory: RealLike | None = None,
    max_time: RealLike | None = None,
    hardware: Hardware = Hardware(),
    batch: str = "pow2",
    batch_size: float | None = None,
    batch_rule: tuple[float, float] | None = None,
    min_steps: RealLike = 1.0,
    n_range: tuple[float, float] = (1e5, 1e12),
    b_range: tuple[float, float] = (1.0, 2.0**24),
    method: str = "grid+gradient",
    variant: str = "plain",
    grid: tuple[int, int] | None = None,
    alternatives: int = 4,
    rule: SumRule = PLAN_RULE,
    max_steps: int = 300,
) -> Plan:
    r"""The run $(N, B, K)$ of least predicted loss that a compute budget allows.

    Minimises $L(N, B, K)$ subject to $6 N B K \ell \le C$ and the optional
    limits of the module docstring, with $K$ the most steps the caps allow:
    tokens $B K \ell \le$ `max_tokens`, memory $N(m_{state} + m_{act} B\ell) \le$
    `max_memory` (bytes), time $6 N K \min(B\ell, \tau)/F \le$ `max_time`
    (seconds), $K \ge$ `min_steps`, $N \in$ `n_range`, $B \in$ `b_range`.

    The search maps the feasible set onto the unit square (see the module
    docstring), so every candidate meets every limit:

    - `method="grid"`: a vectorised grid of `grid` $= (n_N, n_B)$ candidates per
      budget (default (1024, 1024) for `batch="free"`, 2048 sizes per batch
      size otherwise), then a second grid of as many over a window of $\pm 2$
      cells around the best;
    - `method="gradient"`: L-BFGS (optax) through the model from a few fixed
      starts, in log space, vmapped over starts, budgets and batch sizes;
    - `method="grid+gradient"` (default): the grid, then L-BFGS from its best.

    Batch sizes: `batch="pow2"` searches each power of two in `b_range` (the
    others become the alternatives); `batch="free"` any real $B$ (rounded to a
    whole number at the end); `batch_size=b` fixes $B$; `batch_rule=(c, e)` ties
    it to the model size by $B = c N^{e}$ ($e > -1$), e.g. a team's batch-size
    policy.

    **Arguments:**

    - `params`, `lr`: the fitted model and its peak step size.
    - `compute`: the budget in FLOPs, a number or a 1-D array of budgets
      (planned together; the limits broadcast against it).
    - `seq_len`: tokens per sequence $\ell$.
    - `variant`: `"plain"`, or `"weight-norm"` (its stairs make the loss piecewise
      in $K$, so it is searched by grid only, with a default grid of (256, 128)).
    - `alternatives`: how many next-best batch sizes to report.
    - `rule`: quadrature used during the search (the chosen plans are
      re-scored with the default rule); `max_steps`: L-BFGS iterations.

    **Returns:** a [`Plan`][]. Raises `ValueError` naming the limits in conflict
    when a budget admits no run, before any loss is evaluated.

    **Example:**

    >>> import nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> p = nqs.plan(params, 1e19, seq_len=128, lr=lr, method="grid")
    >>> int(p.B) & (int(p.B) - 1) == 0          # a power of two
    True
    >>> bool(abs(p.compute - 1e19) < 1e-3 * 1e19), bool(p.loss < 2.3)
    (True, True)
    >>> q = nqs.plan(params, 1e19, seq_len=128, lr=lr, method="grid", max_tokens=1e9)
    >>> q.binding, bool(q.tokens <= 1e9), bool(q.loss > p.loss)
    (('compute', 'max_tokens'), True, True)
    """
    if not isinstance(params, NQSParams):
        raise TypeError(f"params must be an NQSParams, got {type(params).__name__}")
    if not isinstance(hardware, Hardware):
        raise TypeError(f"hardware must be a Hardware, got {type(hardware).__name__}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if batch not in BATCH_MODES:
        raise ValueError(f"batch must be one of {', '.join(BATCH_MODES)}, got {batch!r}")
    if batch_size is not None and batch_rule is not None:
        raise ValueError("give batch_size or batch_rule, not both")
    if variant == "weight-norm" and method != "grid":
        method = "grid"
    check_rule(params, lr, rule)
    C = np.asarray(compute, dtype=float)
    scalar = C.ndim == 0
    if C.ndim > 1 or C.size == 0:
        raise ValueError(f"compute must be a number or a non-empty 1-D array, got shape {C.shape}")
    C = np.atleast_1d(C)
    M = C.size
    budgets = _Budgets(
        compute=_as_budget_array(C, "compute", M, 0.0),
        seq_len=_as_budget_array(seq_len, "seq_len", M, 0.0),
        max_tokens=_as_budget_array(max_tokens, "max_tokens", M, np.inf),
        max_memory=_as_budget_array(max_memory, "max_memory", M, np.inf),
        max_time=_as_budget_array(max_time, "max_time", M, np.inf),
        min_steps=_as_budget_array(min_steps, "min_steps", M, 1.0),
        n_range=_range(n_range, "n_range", (1e5, 1e12)),
        b_range=_range(b_range, "b_range", (1.0, 2.0**24)),
        hardware=hardware,
    )
    if np.any(~np.isfinite(budgets.compute)):
        raise ValueError("compute must be finite")
    if alternatives < 0:
        raise ValueError(f"alternatives must be >= 0, got {alternatives}")

    # The feasible set of a free batch size; infeasible budgets fail here, eagerly.
    b_low = budgets.log_b_low()
    a, b, sources = budgets.log_n_range(b_low)
    b_high_max = math.log(budgets.b_range[1])
    for i in range(M):
        if not a[i] <= b[i]:
            raise ValueError(_infeasible_message(budgets, i, a, b, sources, b_low))

    # Lines: the batch sizes searched one by one.
    if batch_rule is not None:
        c, e = (float(v) for v in batch_rule)
        if not (c > 0 and math.isfinite(c) and math.isfinite(e) and e > -1):
            raise ValueError(f"batch_rule must be (c, e) with c > 0 and e > -1, got {batch_rule!r}")
        log_c, expo, mode = np.array([math.log(c)]), np.array([e]), "rule"
    elif batch_size is not None:
        bs = float(batch_size)
        if not (bs > 0 and math.isfinite(bs)):
            raise ValueError(f"batch_size must be a positive number, got {batch_size!r}")
        log_c, expo, mode = np.array([math.log(bs)]), np.array([0.0]), "fixed"
    else:
        lo2 = math.ceil(math.log2(budgets.b_range[0]) - 1e-12)
        hi2 = math.floor(math.log2(budgets.b_range[1]) + 1e-12)
        if hi2 < lo2:
            raise ValueError(f"b_range {budgets.b_range} contains no power of two")
        powers = np.arange(lo2, hi2 + 1, dtype=float)
        log_c, expo, mode = powers * math.log(2.0), np.zeros_like(powers), batch
    L_lines = log_c.size
    log_c2 = np.broadcast_to(log_c, (M, L_lines)).copy()
    expo2 = np.broadcast_to(expo, (M, L_lines)).copy()
    la, lb, valid = _line_intervals(budgets, b_low, log_c2, expo2)
    if mode != "free":
        for i in range(M):
            if not valid[i].any():
                what = {"rule": f"the batch rule B = {math.exp(log_c[0]):.4g} N^{expo[0]:g}",
                        "fixed": f"batch_size={math.exp(log_c[0]):.4g}",
                        "pow2": "no power-of-two batch size"}[mode]
                b_hi_at_a = math.exp(float(budgets.log_b_high(np.array([[a[i]]]))[i, 0]))
                raise ValueError(
                    f"infeasible budget at compute={budgets.compute[i]:.4g}: {what} meets the "
                    f"limits; they allow B in [{math.exp(b_low[i]):.4g}, {b_hi_at_a:.4g}] "
                    f"(at N = {math.exp(a[i]):.4g}) and N in [{math.exp(a[i]):.4g}, {math.exp(b[i]):.4g}]"
                )

    dtype = jnp.result_type(float)
    score_rule = rule if variant == "plain" else None
    scorer = _Scorer(params, lr, variant, score_rule, dtype)
    theta = scorer.theta
    line_data = dict(a=la, b=lb, log_c=log_c2, exponent=expo2, budgets=budgets)
    caps_lines = [np.broadcast_to(v[:, None], (M, L_lines)) for v in budgets.log_caps()]

    # 1. Lines (every mode: for "free" they are the power-of-two alternatives).
    n_line = (grid[0] if grid else (2048 if variant == "plain" else 256))
    if method in ("grid", "grid+gradient"):
        t_line, loss_line = _grid_lines(scorer, line_data, n_line)
        conv_line = np.ones_like(valid)
    if method in ("gradient", "grid+gradient"):
        starts = (t_line[..., None] if method == "grid+gradient"
                  else np.broadcast_to(np.array([0.1, 0.3, 0.5, 0.7, 0.9]), (M, L_lines, 5)))
        S = starts.shape[-1]
        rep = lambda v: jnp.asarray(np.repeat(np.minimum(v, 1e30).reshape(-1), S), dtype)  # noqa: E731
        per = _Line(*(rep(line_data[k]) for k in ("a", "b", "log_c", "exponent")),
                    caps=tuple(rep(v) for v in caps_lines))
        z, value, conv = _polish(_search_loss, per, _logit(starts.reshape(-1, 1)), theta, lr, rule, max_steps)
        value = value.reshape(M, L_lines, S)
        k = np.argmin(np.where(np.isfinite(value), value, np.inf), axis=-1)
        t_line = 1 / (1 + np.exp(-np.take_along_axis(z.reshape(M, L_lines, S), k[..., None], -1)[..., 0]))
        loss_line = np.take_along_axis(value, k[..., None], -1)[..., 0]
        conv_line = np.take_along_axis(conv.reshape(M, L_lines, S), k[..., None], -1)[..., 0]
    loss_line = np.where(valid, loss_line, np.inf)
    line_n = la + (lb - la) * t_line
    line_N = np.exp(line_n)
    line_B = np.exp(log_c2 + expo2 * line_n)

    rows = np.arange(M)
    order = np.argsort(loss_line, axis=-1)
    if mode == "free":
        space = dict(a=a, b=b, b_low=b_low, budgets=budgets)
        n_n, n_b = grid if grid else ((1024, 1024) if variant == "plain" else (256, 128))
        if method in ("grid", "grid+gradient"):
            t_sp, loss_sp = _grid_space(scorer, space, n_n, n_b)
            conv_sp = np.ones(M, bool)
        if method in ("gradient", "grid+gradient"):
            if method == "grid+gradient":
                starts = t_sp[:, None, :]
            else:
                g = np.array([0.2, 0.5, 0.8])
                starts = np.broadcast_to(np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2), (M, 9, 2))
            S = starts.shape[1]
            rep = lambda v: jnp.asarray(np.repeat(np.minimum(v, 1e30), S), dtype)  # noqa: E731
            per = _Space(
                rep(a), rep(b), rep(b_low), tuple(rep(v) for v in budgets.log_caps()),
                rep(np.log(budgets.min_steps)), rep(budgets.max_memory), rep(np.full(M, b_high_max)),
                hardware=hardware,
            )
            z, value, conv = _polish(_search_loss, per, _logit(starts.reshape(-1, 2)), theta, lr, rule, max_steps)
            value = value.reshape(M, S)
            k = np.argmin(np.where(np.isfinite(value), value, np.inf), axis=-1)
            t_sp = 1 / (1 + np.exp(-z.reshape(M, S, 2)[rows, k]))
            loss_sp = value[rows, k]
            conv_sp = conv.reshape(M, S)[rows, k]
        log_n = a + (b - a) * t_sp[:, 0]
        high = np.maximum(budgets.log_b_high(log_n[:, None])[:, 0], b_low)
        N_x, B_x = np.exp(log_n), np.exp(b_low + (high - b_low) * t_sp[:, 1])
        loss_x, conv_x = loss_sp, conv_sp
        alt_idx = order[:, :alternatives]
    else:
        best = order[:, 0]
        N_x, B_x = line_N[rows, best], line_B[rows, best]
        loss_x, conv_x = loss_line[rows, best], conv_line[rows, best]
        alt_idx = order[:, 1 : 1 + alternatives]
    K_x = budgets.steps(N_x[:, None], B_x[:, None])[:, 0]

    # Whole batches and steps; re-scored with the default rule.
    if mode == "pow2":
        B_r = np.round(B_x)
    else:
        high = np.exp(budgets.log_b_high(np.log(N_x)[:, None])[:, 0])
        B_r = np.clip(np.round(B_x), np.ceil(np.exp(b_low) - 1e-9), np.maximum(np.floor(high + 1e-9), 1.0))
    K_r = np.maximum(np.floor(budgets.steps(N_x[:, None], B_r[:, None])[:, 0] * (1 + 1e-12)), 1.0)
    alt_N = line_N[rows[:, None], alt_idx]
    alt_B = np.round(line_B[rows[:, None], alt_idx])
    alt_K = np.maximum(np.floor(budgets.steps(alt_N, alt_B) * (1 + 1e-12)), 1.0)
    alt_ok = np.isfinite(loss_line[rows[:, None], alt_idx])
    final = _Scorer(params, lr, variant, SumRule(), dtype)
    scored = final(np.concatenate([N_x, np.where(alt_ok, alt_N, 1e6).ravel()]),
                   np.concatenate([B_r, np.where(alt_ok, alt_B, 1.0).ravel()]),
                   np.concatenate([K_r, np.where(alt_ok, alt_K, 1.0).ravel()]))
    loss_r, alt_loss = scored[:M], np.where(alt_ok, scored[M:].reshape(alt_N.shape), np.nan)
    pad = alternatives - alt_N.shape[1]
    if pad > 0:
        fill = lambda v: np.concatenate([v, np.full((M, pad), np.nan)], axis=1)  # noqa: E731
        alt_N, alt_B, alt_K, alt_loss = map(fill, (alt_N, alt_B, alt_K, alt_loss))
    alt_mask = np.isfinite(alt_loss)
    alt_N, alt_B, alt_K = (np.where(alt_mask, v, np.nan) for v in (alt_N, alt_B, alt_K))

    m = budgets.metrics(N_x, B_r, K_r)
    binding = budgets.binding(N_x, B_x, K_x)
    out = dict(
        N=N_x, B=B_r, K=K_r, loss=loss_r, tokens=m["tokens"], compute=m["compute"],
        memory=m["memory"], time=m["time"], N_exact=N_x, B_exact=B_x, K_exact=K_x,
        loss_exact=loss_x, alt_N=alt_N, alt_B=alt_B, alt_K=alt_K, alt_loss=alt_loss,
        converged=np.asarray(conv_x, bool),
    )
    if scalar:
        out = {k: (v[0] if v.ndim == 1 else v[0]) for k, v in out.items()}
        binding = binding[0]
    else:
        binding = tuple(binding)
    return Plan(**out, binding=binding, evaluations=scorer.evaluations, method=method,
                variant=variant, batch=mode, seq_len=float(budgets.seq_len[0]))


class Frontier(eqx.Module):
    r"""The compute-optimal frontier of [`frontier`][]: NQS plans beside Chinchilla's allocation.

    **Fields** (one entry per budget): `compute`; the NQS [`Plan`][] `plan`;
    and, when Chinchilla parameters were given, `chinchilla_N`, `chinchilla_D`
    (tokens), its predicted `chinchilla_loss`, and `nqs_loss_at_chinchilla`: the
    NQS loss of Chinchilla's $(N, D)$ run at NQS's best batch size for that $N$
    (`nan` if that run is infeasible), i.e. what NQS predicts Chinchilla's
    choice costs.
    """

    compute: np.ndarray
    plan: Plan
    chinchilla_N: np.ndarray | None = None
    chinchilla_D: np.ndarray | None = None
    chinchilla_loss: np.ndarray | None = None
    nqs_loss_at_chinchilla: np.ndarray | None = None


def frontier(
    params: NQSParams,
    compute: RealLike,
    *,
    seq_len: RealLike,
    lr: float = DEFAULT_LR,
    chinchilla: Any = None,
    **plan_options: Any,
) -> Frontier:
    r"""The compute-optimal $(N, B, K)$ and loss against compute $C$, beside Chinchilla's.

    Plans every budget in `compute` at once with [`plan`][] (keyword
    `plan_options` are passed on). With `chinchilla` (a
    [`nqs_engine.ChinchillaParams`][]), also Chinchilla's allocation
    $N_{opt}(C) = G (C/6)^{\beta/(\alpha+\beta)}$, $D_{opt} = C/(6 N_{opt})$, which has
    no batch size; NQS then scores that allocation at the batch size it would
    choose for that $N$ (a plan with $N$ fixed), so the two choices are
    compared on one model.

    **Example:**

    >>> import numpy as np, nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> ch = nqs.ChinchillaParams(E=2.186, A=245.8, B=451.3, alpha=0.404, beta=0.353)
    >>> f = nqs.frontier(params, np.geomspace(1e18, 1e21, 4), seq_len=128, lr=lr,
    ...                  chinchilla=ch, method="grid")
    >>> bool(np.all(np.diff(f.plan.N) > 0)), bool(np.all(np.diff(f.plan.loss) < 0))
    (True, True)
    >>> bool(np.all(f.plan.loss_exact <= f.nqs_loss_at_chinchilla + 1e-9))
    True
    """
    C = np.atleast_1d(np.asarray(compute, dtype=float))
    if C.ndim != 1:
        raise ValueError(f"compute must be a number or a 1-D array, got shape {C.shape}")
    best = plan(params, C, seq_len=seq_len, lr=lr, **plan_options)
    if chinchilla is None:
        return Frontier(compute=C, plan=best)
    from ._chinchilla import ChinchillaParams, chinchilla_compute_optimal, chinchilla_loss

    if not isinstance(chinchilla, ChinchillaParams):
        raise TypeError(f"chinchilla must be a ChinchillaParams, got {type(chinchilla).__name__}")
    n_opt, d_opt = (np.asarray(v, dtype=float) for v in chinchilla_compute_optimal(chinchilla, C))
    ch_loss = np.asarray(chinchilla_loss(chinchilla, n_opt, d_opt), dtype=float)
    # NQS's best run at Chinchilla's N: a plan with n_range pinned to that N.
    nqs_at = np.full(C.size, np.nan)
    options = {k: v for k, v in plan_options.items() if k != "n_range"}
    for i in range(C.size):  # one small plan per budget (its own pinned N range)
        try:
            at = plan(params, C[i], seq_len=seq_len, lr=lr, n_range=(n_opt[i], n_opt[i]),
                      **options)
        except ValueError:
            continue
        nqs_at[i] = float(at.loss_exact)
    return Frontier(compute=C, plan=best, chinchilla_N=n_opt, chinchilla_D=d_opt,
                    chinchilla_loss=ch_loss, nqs_loss_at_chinchilla=nqs_at)
