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

import math
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._custom_types import RealLike
from .._misc import check_choice
from .._model import as_model
from .._quadrature import SumRule
from ._budgets import Budgets, Hardware, budget_array, checked_range, infeasible_message
from ._search import Line, Scorer, Space, grid_lines, grid_space, line_intervals, logit, polish

#: How a plan may choose its batch size.
BATCH_MODES = ("pow2", "free")
#: Search methods of [`plan`][].
METHODS = ("grid+gradient", "grid", "gradient")


class Plan(eqx.Module):
    r"""The outcome of [`plan`][] for $M$ budgets (leading axis; none for a scalar budget).

    **Fields:**

    - `N`, `B`, `K`: the chosen run; `B` a whole number of sequences, `K` whole
      steps (rounded down, so that compute never exceeds the budget).
    - `loss`: predicted loss of that run by the model (its accurate quadrature).
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
    - `evaluations`: loss evaluations spent; `method`, `batch`: as asked;
      `variant`: the model planned with (its label: `plain`, `weight-norm`, `chinchilla`, ...).
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


def _budgets_of(compute, seq_len, max_tokens, max_memory, max_time, min_steps, n_range, b_range,
                hardware) -> tuple[Budgets, bool]:
    """Stage 1: the limits of every budget as arrays; whether `compute` was a scalar."""
    C = np.asarray(compute, dtype=float)
    scalar = C.ndim == 0
    if C.ndim > 1 or C.size == 0:
        raise ValueError(f"compute must be a number or a non-empty 1-D array, got shape {C.shape}")
    C = np.atleast_1d(C)
    M = C.size
    budgets = Budgets(
        compute=budget_array(C[0] if scalar else C, "compute", M, 0.0),
        seq_len=budget_array(seq_len, "seq_len", M, 0.0),
        max_tokens=budget_array(max_tokens, "max_tokens", M, np.inf),
        max_memory=budget_array(max_memory, "max_memory", M, np.inf),
        max_time=budget_array(max_time, "max_time", M, np.inf),
        min_steps=budget_array(min_steps, "min_steps", M, 1.0),
        n_range=checked_range(n_range, "n_range", (1e5, 1e12)),
        b_range=checked_range(b_range, "b_range", (1.0, 2.0**24)),
        hardware=hardware,
    )
    if np.any(~np.isfinite(budgets.compute)):
        raise ValueError("compute must be finite")
    return budgets, scalar


def _free_region(budgets: Budgets):
    """Stage 2: the region of a free batch size, (a, b, log B_low); infeasible budgets raise."""
    b_low = budgets.log_b_low()
    a, b, sources = budgets.log_n_range(b_low)
    for i in range(budgets.size):
        if not a[i] <= b[i]:
            raise ValueError(infeasible_message(budgets, i, a, b, sources, b_low))
    return a, b, b_low


def _batch_lines(budgets: Budgets, batch, batch_size, batch_rule, region):
    """Stage 3: the batch sizes searched one by one, as lines log B = log c + e log N.

    Returns (log_c, exponent, mode, line data); a budget with no feasible line raises.
    """
    a, _, b_low = region
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
    M, L = budgets.size, log_c.size
    log_c2 = np.broadcast_to(log_c, (M, L)).copy()
    expo2 = np.broadcast_to(expo, (M, L)).copy()
    la, lb, valid = line_intervals(budgets, b_low, log_c2, expo2)
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
                    f"(at N = {math.exp(a[i]):.4g}) and N in [{math.exp(a[i]):.4g}, "
                    f"{math.exp(region[1][i]):.4g}]"
                )
    lines = dict(a=la, b=lb, log_c=log_c2, exponent=expo2, budgets=budgets, valid=valid)
    return mode, lines


def _search_lines(scorer, model, method, lines, n_line, max_steps):
    """Stage 4: the best point of every (budget, line): t in [0, 1], its loss and convergence."""
    budgets = lines["budgets"]
    M, L = lines["a"].shape
    caps = [np.broadcast_to(v[:, None], (M, L)) for v in budgets.log_caps()]
    if method in ("grid", "grid+gradient"):
        t, loss = grid_lines(scorer, lines, n_line)
        conv = np.ones((M, L), bool)
    if method in ("gradient", "grid+gradient"):
        starts = (t[..., None] if method == "grid+gradient"
                  else np.broadcast_to(np.array([0.1, 0.3, 0.5, 0.7, 0.9]), (M, L, 5)))
        S = starts.shape[-1]
        dtype = jnp.result_type(float)
        rep = lambda v: jnp.asarray(np.repeat(np.minimum(v, 1e30).reshape(-1), S), dtype)  # noqa: E731
        per = Line(*(rep(lines[k]) for k in ("a", "b", "log_c", "exponent")),
                   caps=tuple(rep(v) for v in caps))
        z, value, converged = polish(per, logit(starts.reshape(-1, 1)), model, max_steps)
        value = value.reshape(M, L, S)
        k = np.argmin(np.where(np.isfinite(value), value, np.inf), axis=-1)[..., None]
        t = 1 / (1 + np.exp(-np.take_along_axis(z.reshape(M, L, S), k, -1)[..., 0]))
        loss = np.take_along_axis(value, k, -1)[..., 0]
        conv = np.take_along_axis(converged.reshape(M, L, S), k, -1)[..., 0]
    return t, np.where(lines["valid"], loss, np.inf), conv


def _search_free(scorer, model, method, budgets, region, grid, max_steps):
    """Stage 5 (free batch size): the best (N, B) of each budget, its loss and convergence."""
    a, b, b_low = region
    M = budgets.size
    space = dict(a=a, b=b, b_low=b_low, budgets=budgets)
    n_n, n_b = grid if grid else ((1024, 1024) if model.smooth_in_steps else (256, 128))
    if method in ("grid", "grid+gradient"):
        t, loss = grid_space(scorer, space, n_n, n_b)
        conv = np.ones(M, bool)
    if method in ("gradient", "grid+gradient"):
        if method == "grid+gradient":
            starts = t[:, None, :]
        else:
            g = np.array([0.2, 0.5, 0.8])
            grid2 = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
            starts = np.broadcast_to(grid2, (M, 9, 2))
        S = starts.shape[1]
        dtype = jnp.result_type(float)
        rep = lambda v: jnp.asarray(np.repeat(np.minimum(v, 1e30), S), dtype)  # noqa: E731
        per = Space(
            rep(a), rep(b), rep(b_low), tuple(rep(v) for v in budgets.log_caps()),
            rep(np.log(budgets.min_steps)), rep(budgets.max_memory),
            rep(np.full(M, math.log(budgets.b_range[1]))), hardware=budgets.hardware,
        )
        z, value, converged = polish(per, logit(starts.reshape(-1, 2)), model, max_steps)
        value = value.reshape(M, S)
        rows = np.arange(M)
        k = np.argmin(np.where(np.isfinite(value), value, np.inf), axis=-1)
        t = 1 / (1 + np.exp(-z.reshape(M, S, 2)[rows, k]))
        loss, conv = value[rows, k], converged.reshape(M, S)[rows, k]
    log_n = a + (b - a) * t[:, 0]
    high = np.maximum(budgets.log_b_high(log_n[:, None])[:, 0], b_low)
    return np.exp(log_n), np.exp(b_low + (high - b_low) * t[:, 1]), loss, conv


def _whole_runs(model, budgets, mode, N_x, B_x, alt_N, alt_B, alt_ok, b_low):
    """Stage 6: whole batches and steps (compute never above budget), scored accurately."""
    M = budgets.size
    if mode == "pow2":
        B_r = np.round(B_x)
    else:
        high = np.exp(budgets.log_b_high(np.log(N_x)[:, None])[:, 0])
        B_r = np.clip(np.round(B_x), np.ceil(np.exp(b_low) - 1e-9),
                      np.maximum(np.floor(high + 1e-9), 1.0))
    K_r = np.maximum(np.floor(budgets.steps(N_x[:, None], B_r[:, None])[:, 0] * (1 + 1e-12)), 1.0)
    alt_K = np.maximum(np.floor(budgets.steps(alt_N, alt_B) * (1 + 1e-12)), 1.0)
    N_all = np.concatenate([N_x, np.where(alt_ok, alt_N, 1e6).ravel()])
    B_all = np.concatenate([B_r, np.where(alt_ok, alt_B, 1.0).ravel()])
    K_all = np.concatenate([K_r, np.where(alt_ok, alt_K, 1.0).ravel()])
    scored = np.asarray(model(N_all, B_all, K_all).total, dtype=float)
    loss_r = scored[:M]
    alt_loss = np.where(alt_ok, scored[M:].reshape(alt_N.shape), np.nan)
    return B_r, K_r, loss_r, alt_K, alt_loss


def plan(
    params: Any,
    compute: RealLike,
    *,
    seq_len: RealLike,
    lr: float | None = None,
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
    variant: str | None = None,
    grid: tuple[int, int] | None = None,
    alternatives: int = 4,
    rule: SumRule | None = None,
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

    - `params`: the fitted loss model (any [`nqs_engine.AbstractLossModel`][]: the
      NQS, its weight-norm variant, Chinchilla, ...), or `NQSParams` with `lr`
      (its peak step size) and `variant` (`"plain"` or `"weight-norm"`).
    - `compute`: the budget in FLOPs, a number or a 1-D array of budgets
      (planned together; the limits broadcast against it).
    - `seq_len`: tokens per sequence $\ell$.
    - Models whose loss is not smooth in $K$ (the weight-norm variant: its stairs)
      are searched by grid only, with a default grid of (256, 128).
    - `alternatives`: how many next-best batch sizes to report.
    - `rule`: with `NQSParams`, the quadrature used during the search (the chosen
      plans are re-scored with the model's accurate rule); `max_steps`: L-BFGS
      iterations.

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
    model = as_model(params, lr, variant, rule)
    if not isinstance(hardware, Hardware):
        raise TypeError(f"hardware must be a Hardware, got {type(hardware).__name__}")
    check_choice("method", method, METHODS)
    check_choice("batch", batch, BATCH_MODES)
    if batch_size is not None and batch_rule is not None:
        raise ValueError("give batch_size or batch_rule, not both")
    if isinstance(alternatives, bool) or int(alternatives) != alternatives or alternatives < 0:
        raise ValueError(f"alternatives must be an integer >= 0, got {alternatives}")
    if not model.smooth_in_steps:
        method = "grid"  # a loss piecewise in K has no useful gradient
    budgets, scalar = _budgets_of(compute, seq_len, max_tokens, max_memory, max_time, min_steps,
                                  n_range, b_range, hardware)
    M = budgets.size
    region = _free_region(budgets)
    mode, lines = _batch_lines(budgets, batch, batch_size, batch_rule, region)
    scorer = Scorer(model, budgets.seq_len[0], jnp.result_type(float))

    # Lines (every mode: for "free" they are the power-of-two alternatives).
    n_line = grid[0] if grid else (2048 if model.smooth_in_steps else 256)
    t_line, loss_line, conv_line = _search_lines(scorer, model, method, lines, n_line, max_steps)
    line_n = lines["a"] + (lines["b"] - lines["a"]) * t_line
    line_N = np.exp(line_n)
    line_B = np.exp(lines["log_c"] + lines["exponent"] * line_n)
    rows = np.arange(M)
    order = np.argsort(loss_line, axis=-1)
    if mode == "free":
        N_x, B_x, loss_x, conv_x = _search_free(scorer, model, method, budgets, region, grid,
                                                max_steps)
        alt_idx = order[:, :alternatives]
    else:
        best = order[:, 0]
        N_x, B_x = line_N[rows, best], line_B[rows, best]
        loss_x, conv_x = loss_line[rows, best], conv_line[rows, best]
        alt_idx = order[:, 1 : 1 + alternatives]
    K_x = budgets.steps(N_x[:, None], B_x[:, None])[:, 0]

    alt_N = line_N[rows[:, None], alt_idx]
    alt_B = np.round(line_B[rows[:, None], alt_idx])
    alt_ok = np.isfinite(loss_line[rows[:, None], alt_idx])
    B_r, K_r, loss_r, alt_K, alt_loss = _whole_runs(model, budgets, mode, N_x, B_x, alt_N, alt_B,
                                                    alt_ok, region[2])
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
        out = {k: v[0] for k, v in out.items()}
        binding = binding[0]
    else:
        binding = tuple(binding)
    return Plan(**out, binding=binding, evaluations=scorer.evaluations, method=method,
                variant=model.label, batch=mode, seq_len=float(budgets.seq_len[0]))


__all__ = ["BATCH_MODES", "METHODS", "Plan", "plan"]
