r"""Fitting the NQS to training runs: multistart L-BFGS under `vmap`, and the bootstrap.

The objective (SPEC section 5) over observed losses $y_i$ with predictions
$\hat y_i(\theta)$ and case weights $w_i$ (1 unless bootstrapping) is

$$J(\theta) = \sum_i w_i\, \ell(\log y_i - \log \hat y_i(\theta)), \qquad
  \ell(e) = \tfrac12 e^2 \ \text{(mse)} \quad\text{or}\quad
  \ell(e) = \begin{cases} \tfrac12 e^2 & |e| \le \delta \\ \delta(|e| - \delta/2) & \text{else}
            \end{cases} \ \text{(huber)}.$$

It is minimised in an unconstrained parametrisation $u \in \mathbb{R}^7$:

$$p = 1 + \mathrm{softplus}(u_1),\ q = q_{min} + \mathrm{softplus}(u_2),\ P = e^{u_3},\
  Q = \frac{2}{\gamma_{max}}\,\sigma(u_4),\ e_{irr} = e^{u_5},\ R = e^{u_6},\ r = u_7,$$

so every point is a valid model: $p > 1$; $\gamma_{max} Q < 2$ (SGD is stable at
the largest step size any run uses); and $q > q_{min} = \log 2 / \log n_0$, which
keeps the kink of the summand at $\gamma\lambda_n = 1$ inside the exactly summed
head of the quadrature rule ($n_0$ = `rule.smooth_from`). $P, Q, e_{irr}, R$ are
thus searched in log space and $p, q, r$ nearly directly, as SPEC section 5 asks.

Search: `starts` points of a scrambled Latin hypercube (`scipy.stats.qmc`) over
the SPEC ranges are scored in one vectorised pass, and the best `refine` of
them are optimised together by L-BFGS (optax, zoom line search) under `vmap`
(optionally after some Adam steps). Everything is deterministic for a given seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import qmc

from ._chunk import chunked_map
from ._custom_types import FloatArray, RealLike
from ._optimize import bootstrap_weights, huber_loss, minimize, percentile_interval
from ._params import DEFAULT_LR, PARAM_NAMES, NQSParams
from ._quadrature import SumRule
from ._risk import _prepare, _risk_segments, schedule_risk
from ._schedule import Schedule
from ._trajectory import WEIGHT_NORM_RULE, _weight_norm_flat, weight_norm_risk

#: Latin-hypercube ranges of the starting points (SPEC section 5); P, Q, e_irr and
#: R are sampled log-uniformly, p, q and r uniformly.
START_RANGES: dict[str, tuple[float, float]] = {
    "p": (1.05, 2.5),
    "q": (0.6, 2.5),
    "P": (10.0, 100.0),
    "Q": (0.05, 20.0),
    "e_irr": (1.0, 1.5),
    "R": (0.01, 100.0),
    "r": (0.6, 2.5),
}
_LOG_SPACE = ("P", "Q", "e_irr", "R")

VARIANTS = ("plain", "weight-norm")
LOSSES = ("mse", "huber")

#: The quadrature rule used while fitting (the weight-norm default rule, shared by
#: both predictors): 171 summand evaluations per sum instead of 461. On the Pythia ladder it changes the objective by ~1e-13 (relative), far
#: below anything that moves the optimum; the reported objective and residuals
#: are recomputed with the full rule.
FIT_RULE = WEIGHT_NORM_RULE


# ---------------------------------------------------------------------------
# The data
# ---------------------------------------------------------------------------


class Runs(eqx.Module):
    r"""Observed losses to fit: one row per observation (a final loss or a checkpoint).

    Row $i$ is a run of model size $N_i$ under a piecewise-constant schedule,
    observed after `step[i]` steps with loss `loss[i]`; `run[i]` labels the run it
    belongs to (several checkpoints of one run share a label, and the bootstrap
    resamples whole runs). Build it with [`Runs.from_arrays`][].

    **Fields:** `N (n,)`, `schedule` (a [`nqs_engine.Schedule`][] with batch shape
    `(n,)`, already cut at the observed step), `loss (n,)`, `run (n,)` integer
    labels, `step (n,)`, `C (n,)` compute $6 N \sum_s B_s k_s \cdot$ `seq_len` of
    the observed part, and `seq_len` (static).
    """

    N: FloatArray
    schedule: Schedule
    loss: FloatArray
    run: jax.Array
    step: FloatArray
    C: FloatArray
    seq_len: float = eqx.field(static=True)

    @property
    def size(self) -> int:
        """Number of observations (rows)."""
        return int(self.N.shape[0])

    @property
    def num_runs(self) -> int:
        """Number of distinct runs."""
        return int(np.unique(np.asarray(self.run)).size)

    @property
    def tokens(self) -> FloatArray:
        r"""Tokens seen by each observation, $D = \mathrm{seq\_len} \sum_s B_s k_s$."""
        return self.seq_len * jnp.sum(self.schedule.batch * self.schedule.steps, axis=-1)

    def subset(self, mask: Any) -> "Runs":
        """The rows where the boolean `mask` is true (run labels are kept).

        **Example:**

        >>> import numpy as np
        >>> import nqs_engine as nqs
        >>> runs = nqs.Runs.from_arrays(N=[1e6, 1e7, 1e8], B=64, K=1000, loss=[4.0, 3.5, 3.2])
        >>> runs.subset(np.array([True, False, True])).size
        2
        """
        keep = np.asarray(mask, dtype=bool)
        if keep.shape != (self.size,):
            raise ValueError(f"mask must have shape ({self.size},), got {keep.shape}")
        idx = np.flatnonzero(keep)
        return jax.tree.map(lambda a: a[idx], self)

    @classmethod
    def from_arrays(
        cls,
        N: Any,
        B: Any = None,
        K: Any = None,
        loss: Any = None,
        *,
        schedule: Schedule | None = None,
        step: Any = None,
        run: Any = None,
        seq_len: float = 128,
    ) -> "Runs":
        r"""Validate and assemble runs from arrays (eagerly; errors name the row).

        **Arguments:**

        - `N`: model sizes, `(n,)`.
        - `B`, `K`: batch sizes and total steps of constant-schedule runs
          (broadcast to `(n,)`); leave them out when `schedule` is given.
        - `loss`: observed losses, `(n,)`, all $> 0$.
        - `schedule`: a [`nqs_engine.Schedule`][] of each run (batch shape `(n,)`
          or broadcastable), instead of `B` and `K`.
        - `step`: the step at which each loss was observed (a checkpoint); default
          the end of the run. The schedule is cut there ([`Schedule.truncate`][]).
        - `run`: a label per row grouping checkpoints of the same run (default:
          every row its own run).
        - `seq_len`: tokens per sequence, for compute $C = 6 N D$.

        **Example:**

        >>> import nqs_engine as nqs
        >>> runs = nqs.Runs.from_arrays(N=[1e6, 1e6], B=64, K=1000, loss=[4.0, 3.6],
        ...                             step=[500, 1000], run=["a", "a"])
        >>> runs.size, runs.num_runs, runs.step.tolist()
        (2, 1, [500.0, 1000.0])
        """
        N = _vector(N, "N")
        n = N.shape[0]
        if loss is None:
            raise ValueError("loss is required")
        loss = _vector(loss, "loss", n)
        _check_rows(N, "N", N >= 1, "must be >= 1")
        _check_rows(loss, "loss", loss > 0, "must be > 0 (the fit works on log loss)")
        if schedule is None:
            if B is None or K is None:
                raise ValueError("give either B and K (constant schedules) or schedule")
            B = _vector(B, "B", n)
            K = _vector(K, "K", n)
            _check_rows(B, "B", B > 0, "must be > 0")
            _check_rows(K, "K", K >= 0, "must be >= 0")
            schedule = Schedule.constant(jnp.asarray(K), jnp.asarray(B))
        else:
            if B is not None or K is not None:
                raise ValueError("give either B and K or schedule, not both")
            if not isinstance(schedule, Schedule):
                raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
            S = schedule.num_segments
            try:
                arrays = [np.broadcast_to(np.asarray(a, float), (n, S)) for a in
                          (schedule.lr, schedule.batch, schedule.steps)]
            except ValueError:
                raise ValueError(
                    f"schedule's batch shape {schedule.shape} does not broadcast to ({n},)"
                ) from None
            for a, name, ok, rule in zip(
                arrays, ("lr", "batch", "steps"),
                (lambda v: v >= 0, lambda v: v > 0, lambda v: v >= 0),
                (">= 0", "> 0", ">= 0"),
            ):
                bad = ~(np.isfinite(a) & ok(a))
                if bad.any():
                    i, s = np.argwhere(bad)[0]
                    raise ValueError(
                        f"schedule.{name}[{i}, {s}] = {a[i, s]:g} must be finite and {rule}"
                    )
            schedule = Schedule(*(jnp.asarray(a) for a in arrays))
        total = np.asarray(schedule.total_steps, float)
        if step is None:
            step = total
        else:
            step = _vector(step, "step", n)
            _check_rows(step, "step", (step >= 0) & (step <= total * (1 + 1e-12)),
                        "must lie in [0, total steps of the run]")
            schedule = schedule.truncate(jnp.asarray(np.minimum(step, total)))
        if run is None:
            labels = np.arange(n)
        else:
            raw = np.asarray(run)
            if raw.shape != (n,):
                raise ValueError(f"run must have shape ({n},), got {raw.shape}")
            labels = np.unique(raw, return_inverse=True)[1].reshape(n)
        if not (np.isfinite(seq_len) and seq_len > 0):
            raise ValueError(f"seq_len must be finite and > 0, got {seq_len}")
        tokens = seq_len * np.sum(np.asarray(schedule.batch) * np.asarray(schedule.steps), -1)
        return cls(
            N=jnp.asarray(N),
            schedule=schedule,
            loss=jnp.asarray(loss),
            run=jnp.asarray(labels, dtype=jnp.int32),
            step=jnp.asarray(np.asarray(step, float)),
            C=jnp.asarray(6 * N * tokens),
            seq_len=float(seq_len),
        )


def _vector(x, name, n=None):
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric") from None
    if n is None:
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
        return a
    try:
        return np.broadcast_to(a, (n,)).copy()
    except ValueError:
        raise ValueError(f"{name} must have shape ({n},) or broadcast to it, got {a.shape}") from None


def _check_rows(values, name, ok, rule):
    bad = ~(np.isfinite(values) & ok)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}] = {values[i]:g} {rule} (and finite)")


# ---------------------------------------------------------------------------
# The parametrisation
# ---------------------------------------------------------------------------


def _q_min(rule: SumRule) -> float:
    # lr*Q < 2 and q >= log 2 / log n0 give lr * Q * n0^-q < 1 (kink in the head);
    # 5% margin keeps the ratio visibly below 1.
    return 1.05 * float(np.log(2.0) / np.log(rule.smooth_from))


class _Transform(eqx.Module):
    """u in R^7 <-> NQS parameters (see the module docstring)."""

    lr_max: float = eqx.field(static=True)
    q_min: float = eqx.field(static=True)

    def params(self, u):
        u = jnp.clip(u, -50.0, 50.0)  # keeps far line-search probes finite
        sp = jax.nn.softplus
        return (
            1.0 + sp(u[0]),
            self.q_min + sp(u[1]),
            jnp.exp(u[2]),
            (2.0 / self.lr_max) * jax.nn.sigmoid(u[3]),
            jnp.exp(u[4]),
            jnp.exp(u[5]),
            u[6],
        )

    def inverse(self, theta: np.ndarray) -> np.ndarray:
        """theta (..., 7) -> u (..., 7); values outside the domain are clipped into it."""
        t = np.asarray(theta, dtype=np.float64)
        tiny = 1e-12

        def inv_softplus(v):
            v = np.maximum(v, tiny)
            return v + np.log(-np.expm1(-v))

        s = np.clip(t[..., 3] * self.lr_max / 2, tiny, 1 - 1e-9)
        return np.stack(
            [
                inv_softplus(t[..., 0] - 1),
                inv_softplus(t[..., 1] - self.q_min),
                np.log(np.maximum(t[..., 2], tiny)),
                np.log(s) - np.log1p(-s),
                np.log(np.maximum(t[..., 4], tiny)),
                np.log(np.maximum(t[..., 5], tiny)),
                t[..., 6],
            ],
            axis=-1,
        )


def latin_hypercube_starts(
    num: int,
    seed: int = 0,
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> NQSParams:
    r"""`num` starting points from a scrambled Latin hypercube over `ranges`.

    Each parameter's range (default [`START_RANGES`][], SPEC section 5) is cut
    into `num` equal strata (in log space for $P, Q, e_{irr}, R$), and each
    stratum is used exactly once per parameter (`scipy.stats.qmc.LatinHypercube`).

    **Example:**

    >>> import nqs_engine as nqs
    >>> starts = nqs.latin_hypercube_starts(8, seed=0)
    >>> starts.shape, bool(((starts.p > 1.05) & (starts.p < 2.5)).all())
    ((8,), True)
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    bounds = dict(START_RANGES)
    if ranges is not None:
        unknown = set(ranges) - set(PARAM_NAMES)
        if unknown:
            raise ValueError(f"unknown parameter(s) in ranges: {', '.join(sorted(unknown))}")
        bounds.update(ranges)
    lo, hi = [], []
    for name in PARAM_NAMES:
        a, b = (float(v) for v in bounds[name])
        if not (np.isfinite(a) and np.isfinite(b) and a < b):
            raise ValueError(f"range of {name} must be finite with low < high, got ({a}, {b})")
        if name in _LOG_SPACE:
            if a <= 0:
                raise ValueError(f"range of {name} must be positive (sampled in log space)")
            a, b = np.log(a), np.log(b)
        lo.append(a)
        hi.append(b)
    sample = qmc.LatinHypercube(d=7, seed=np.random.default_rng(seed)).random(num)
    points = qmc.scale(sample, lo, hi)
    cols = {}
    for j, name in enumerate(PARAM_NAMES):
        cols[name] = np.exp(points[:, j]) if name in _LOG_SPACE else points[:, j]
    return NQSParams(**cols)


# ---------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------


class _FitData(eqx.Module):
    log_y: FloatArray
    N: FloatArray
    lrs: FloatArray
    batches: FloatArray
    steps: FloatArray
    lr: FloatArray
    s0: FloatArray
    transform: _Transform
    variant: str = eqx.field(static=True)
    loss: str = eqx.field(static=True)
    delta: float = eqx.field(static=True)
    rule: SumRule = eqx.field(static=True)
    chunk: int = eqx.field(static=True)


def _predict_flat(theta, d: _FitData):
    n = d.N.shape[0]
    th = jnp.broadcast_to(jnp.stack(theta)[:, None], (7, n))
    if d.variant == "plain":
        e, a, b, v = _risk_segments(th, d.N, d.lrs, d.batches, d.steps, d.rule, d.chunk,
                                    check=False)
    else:
        b, v, a = _weight_norm_flat(th, d.N, d.lrs, d.batches, d.steps, d.lr, d.s0, d.rule,
                                    min(d.chunk, 16), check=False)
        e = th[4]
    return e + a + b + v


def _residuals(u, d: _FitData):
    """log y - log y_hat at the parameters u (unconstrained)."""
    return d.log_y - jnp.log(_predict_flat(d.transform.params(u), d))


def _pointwise(res, loss, delta):
    return 0.5 * res**2 if loss == "mse" else huber_loss(res, delta)


def _objective(u, d: _FitData, weights=None):
    per = _pointwise(_residuals(u, d), d.loss, d.delta)
    return jnp.sum(per) if weights is None else jnp.sum(weights * per)


@eqx.filter_jit
def _objective_many(U, d: _FitData):
    """Objective of each row of U, evaluated in chunks (no gradient)."""
    return chunked_map(lambda u: _objective(u, d), U, 64)


def _fit_data(runs: Runs, variant, loss, delta, lr, rule, init_sq_norm=None) -> _FitData:
    sched = runs.schedule
    dummy = NQSParams(1.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    extras = () if init_sq_norm is None else (("init_sq_norm", init_sq_norm),)
    prepared = _prepare(dummy, runs.N, lr, (sched.lr, sched.batch, sched.steps), rule,
                        extras=extras)
    lr_max = float(np.max(np.where(np.asarray(prepared.steps) > 0, np.asarray(prepared.lrs), 0)))
    if not lr_max > 0:
        raise ValueError("no run takes a step with a positive step size; nothing to fit")
    s0 = prepared.extras[0] if extras else prepared.N * 0.02**2
    return _FitData(
        log_y=jnp.log(runs.loss.astype(prepared.N.dtype)),
        N=prepared.N,
        lrs=prepared.lrs,
        batches=prepared.batches,
        steps=prepared.steps,
        lr=prepared.lr,
        s0=s0,
        transform=_Transform(lr_max=lr_max, q_min=_q_min(rule)),
        variant=variant,
        loss=loss,
        delta=float(delta),
        rule=rule,
        chunk=max(1, min(1024, runs.size)),
    )


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


class FitResult(eqx.Module):
    r"""The outcome of [`fit`][].

    **Fields:**

    - `params`: the best [`nqs_engine.NQSParams`][] found; `lr` the step size it goes with.
    - `objective`: $J$ at `params` (full quadrature rule; see the module docstring).
    - `residuals`, `predictions`: per row of the runs, $\log y - \log\hat y$ and $\hat y$.
    - `converged`: whether the best start met the tolerance; `num_converged` how
      many refined starts did, `num_failed` how many hit non-finite values, and
      `num_pruned` how many were dropped halfway through `max_steps` at more than twice
      the best objective.
    - `start_objectives`: final $J$ of every refined start (ascending), and
      `start_params` their parameters (the spread shows what the data pin down).
    - `num_starts`, `num_refined`, `steps` (iterations of the best start),
      `wall_time` (seconds, compilation included), and the settings `variant`,
      `loss`, `delta`, `seed`.
    """

    params: NQSParams
    objective: float
    residuals: FloatArray
    predictions: FloatArray
    converged: bool
    num_converged: int
    num_failed: int
    num_pruned: int
    start_objectives: FloatArray
    start_params: NQSParams
    steps: int
    lr: float
    num_starts: int
    num_refined: int
    wall_time: float
    variant: str
    loss: str
    delta: float
    seed: int

    def summary(self) -> dict[str, Any]:
        """JSON-ready diagnostics (everything except the per-start and per-row arrays).

        **Example:** see [`fit`][].
        """
        return {
            "objective": float(self.objective),
            "converged": bool(self.converged),
            "num_converged": int(self.num_converged),
            "num_failed": int(self.num_failed),
            "num_pruned": int(self.num_pruned),
            "num_starts": int(self.num_starts),
            "num_refined": int(self.num_refined),
            "steps": int(self.steps),
            "wall_time_s": float(self.wall_time),
            "variant": self.variant,
            "loss": self.loss,
            "delta": float(self.delta),
            "seed": int(self.seed),
            "lr": float(self.lr),
            "num_rows": int(self.residuals.shape[0]),
        }


def predict_runs(
    params: NQSParams,
    runs: Runs,
    *,
    lr: RealLike = DEFAULT_LR,
    variant: str = "plain",
    rule: SumRule | None = None,
) -> FloatArray:
    r"""Predicted loss of every row of `runs` (plain or weight-norm predictor).

    `params` may be batched (shape `(M,)`, e.g. bootstrap samples): the result is
    then `(M, n)`. The plain predictor is [`nqs_engine.schedule_risk`][], the other
    [`nqs_engine.weight_norm_risk`][] (initial squared norm $N \cdot 0.02^2$).

    **Example:**

    >>> import nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> runs = nqs.Runs.from_arrays(N=[1e7, 1e8], B=256, K=5000, loss=[3.4, 3.1])
    >>> nqs.predict_runs(params, runs, lr=lr).shape
    (2,)
    """
    _check_choice("variant", variant, VARIANTS)
    batch = params.shape  # a batch of parameter sets gets a trailing axis for the rows
    p = jax.tree.map(lambda a: jnp.broadcast_to(a, batch)[..., None], params) if batch else params
    if variant == "plain":
        out = schedule_risk(p, runs.N, runs.schedule, lr=lr, rule=rule or SumRule())
    else:
        out = weight_norm_risk(p, runs.N, runs.schedule, lr=lr, rule=rule or WEIGHT_NORM_RULE)
    return out.total


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_design(runs: Runs, min_runs: int = 8):
    if runs.num_runs < min_runs:
        raise ValueError(
            f"too few runs to fit the 7 NQS parameters: {runs.num_runs} (need at least "
            f"{min_runs} distinct runs)"
        )
    N = np.asarray(runs.N)
    if np.unique(N).size < 2:
        raise ValueError(
            f"degenerate design: every run has the same model size N = {N[0]:g}; the fit "
            "needs runs at two or more sizes"
        )
    tokens = np.asarray(runs.tokens)
    if np.unique(tokens).size < 2 and np.unique(np.asarray(runs.step)).size < 2:
        raise ValueError(
            "degenerate design: every run sees the same number of tokens; the fit needs "
            "runs of different lengths or batch sizes"
        )


def fit(
    runs: Runs,
    *,
    variant: str = "plain",
    loss: str = "mse",
    delta: float = 1e-3,
    lr: float = DEFAULT_LR,
    starts: int = 4096,
    refine: int = 16,
    seed: int = 0,
    max_steps: int = 500,
    adam_steps: int = 0,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    init: NQSParams | None = None,
    rule: SumRule = FIT_RULE,
    progress: Callable[[str, float, float], None] | None = None,
) -> FitResult:
    r"""Fit the NQS parameters to observed losses by multistart L-BFGS.

    Minimises $J(\theta) = \sum_i \ell(\log y_i - \log \hat y_i(\theta))$ (module
    docstring): `starts` Latin-hypercube points ([`latin_hypercube_starts`][]) are
    scored at once, the best `refine` (plus any `init` points) are optimised
    together with optax L-BFGS under `vmap` for up to `max_steps` iterations
    (after `adam_steps` Adam steps, if any), and the best is returned with its
    diagnostics. Deterministic for a given `seed`. The predictor (`variant`) is the
    plain risk or the weight-norm variant, each row with its own schedule.

    **Arguments:**

    - `runs`: the observations ([`Runs`][]); at least 8 runs at two or more sizes.
    - `variant`: `"plain"` or `"weight-norm"`; `loss`: `"mse"` or `"huber"` (`delta`).
    - `lr`: the peak step size $\gamma_0$ the schedules multiply (default 1.999).
    - `starts`, `refine`, `seed`, `max_steps`, `adam_steps`, `ranges` (overrides of
      [`START_RANGES`][]), `init` (extra starting parameters, e.g. a previous fit).
    - `rule`: quadrature rule during the search (default [`FIT_RULE`][]).
    - `progress`: called as `progress(stage, done, total)` between compiled blocks.

    **Returns:** a [`FitResult`][].

    **Example:** a quick fit to noiseless synthetic runs (real fits use the defaults).

    >>> import numpy as np
    >>> import nqs_engine as nqs
    >>> truth, lr = nqs.preset("pythia-owt2")
    >>> N = np.repeat([3e6, 1e7, 3e7], 4)
    >>> B = np.tile([32.0, 64, 128, 256], 3)
    >>> K = np.repeat([2000.0, 4000, 8000], 4)
    >>> runs = nqs.Runs.from_arrays(N, B, K, nqs.risk(truth, N, B, K, lr=lr).total)
    >>> result = nqs.fit(runs, starts=128, refine=2, max_steps=100)
    >>> bool(result.objective < 1e-3), result.residuals.shape
    (True, (12,))
    """
    started = time.perf_counter()
    if not isinstance(runs, Runs):
        raise TypeError(f"runs must be a Runs, got {type(runs).__name__}")
    _check_choice("variant", variant, VARIANTS)
    _check_choice("loss", loss, LOSSES)
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be finite and > 0, got {delta}")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be finite and > 0, got {lr}")
    for name, value, least in (("starts", starts, 1), ("refine", refine, 1),
                               ("max_steps", max_steps, 0), ("adam_steps", adam_steps, 0)):
        if int(value) != value or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value}")
    _check_design(runs)
    report = progress or (lambda stage, done, total: None)
    data = _fit_data(runs, variant, loss, delta, lr, rule)
    tf = data.transform
    dtype = data.N.dtype

    # 1. Score the Latin hypercube (and any init points) in one vectorised pass.
    cand = latin_hypercube_starts(int(starts), seed, ranges)
    theta = np.stack([np.asarray(getattr(cand, n), float) for n in PARAM_NAMES], axis=-1)
    if init is not None:
        extra = np.stack(
            [np.broadcast_to(np.asarray(getattr(init, n), float), init.shape).ravel()
             for n in PARAM_NAMES], axis=-1)
        theta = np.concatenate([extra, theta])
    U = jnp.asarray(tf.inverse(theta), dtype=dtype)
    report("screening starts", 0, 1)
    scores = np.asarray(_objective_many(U, data))
    report("screening starts", 1, 1)
    scores = np.where(np.isfinite(scores), scores, np.inf)
    n_init = 0 if init is None else int(np.prod(init.shape, dtype=int))
    order = np.argsort(scores[n_init:], kind="stable")[: int(refine)] + n_init
    chosen = np.concatenate([np.arange(n_init), order])
    x0 = U[chosen]

    # 2. Optimise the chosen starts together.
    if adam_steps:
        out = minimize(_objective, x0, data, method="adam", max_steps=int(adam_steps),
                       learning_rate=0.02,
                       progress=lambda d, t, v: report("adam", d, t))
        x0 = out.x
    out = minimize(_objective, x0, data, method="lbfgs", max_steps=int(max_steps),
                   prune_after=int(max_steps) // 2, prune_ratio=2.0,
                   progress=lambda d, t, v: report("l-bfgs", d, t))
    values = np.asarray(out.value)
    best = int(np.argmin(np.where(np.isfinite(values), values, np.inf)))
    u_best = out.x[best]

    # 3. Report at the best point with the full rule.
    theta_best = [float(v) for v in tf.params(u_best)]
    params = NQSParams(*(jnp.asarray(v, dtype) for v in theta_best))
    final_rule = SumRule() if variant == "plain" else WEIGHT_NORM_RULE
    pred = predict_runs(params, runs, lr=lr, variant=variant, rule=final_rule)
    res = jnp.log(runs.loss.astype(dtype)) - jnp.log(pred)
    objective = float(jnp.sum(_pointwise(res, loss, delta)))
    all_theta = jax.vmap(lambda u: jnp.stack(tf.params(u)))(out.x)
    rank = np.argsort(np.where(np.isfinite(values), values, np.inf), kind="stable")
    start_params = NQSParams(*(all_theta[rank, j] for j in range(7)))
    return FitResult(
        params=params,
        objective=objective,
        residuals=res,
        predictions=pred,
        converged=bool(out.converged[best]),
        num_converged=int(np.sum(np.asarray(out.converged))),
        num_failed=int(np.sum(np.asarray(out.failed))),
        num_pruned=int(np.sum(np.asarray(out.pruned))),
        start_objectives=jnp.asarray(values[rank]),
        start_params=start_params,
        steps=int(out.steps[best]),
        lr=float(lr),
        num_starts=int(starts),
        num_refined=int(x0.shape[0]),
        wall_time=time.perf_counter() - started,
        variant=variant,
        loss=loss,
        delta=float(delta),
        seed=int(seed),
    )


# ---------------------------------------------------------------------------
# The bootstrap
# ---------------------------------------------------------------------------


class BootstrapResult(eqx.Module):
    r"""Bootstrap distribution of the NQS parameters (from [`bootstrap`][]).

    **Fields:** `samples` ([`nqs_engine.NQSParams`][] with batch shape `(S,)`, one
    refit per resample; failed refits are dropped), `objectives (S,)`,
    `num_failed`, `level`, `lr`, `variant`, `num_samples`.
    """

    samples: NQSParams
    objectives: FloatArray
    num_failed: int
    level: float
    lr: float
    variant: str
    num_samples: int

    def intervals(self, level: float | None = None) -> dict[str, tuple[float, float]]:
        """Percentile intervals of each parameter (default: the bootstrap's `level`).

        **Example:** see [`bootstrap`][].
        """
        lvl = self.level if level is None else level
        out = {}
        for name in PARAM_NAMES:
            lo, hi = percentile_interval(np.asarray(getattr(self.samples, name)), lvl)
            out[name] = (float(lo), float(hi))
        return out

    def predict_interval(self, runs: Runs, level: float | None = None):
        r"""Percentile interval of the predicted loss of each row of `runs`.

        All samples are evaluated in one vectorised call; returns `(lo, hi)`,
        each of shape `(n,)`.
        """
        pred = predict_runs(self.samples, runs, lr=self.lr, variant=self.variant)
        return percentile_interval(np.asarray(pred), self.level if level is None else level)


def bootstrap(
    runs: Runs,
    result: FitResult,
    *,
    num_samples: int = 100,
    seed: int = 0,
    level: float = 0.95,
    max_steps: int = 300,
    progress: Callable[[str, float, float], None] | None = None,
) -> BootstrapResult:
    r"""Nonparametric bootstrap over runs: refit on `num_samples` resamples at once.

    Each resample draws the distinct runs of `runs` with replacement (checkpoints
    of a run move together); its case weights $w_i$ enter the objective
    $\sum_i w_i \ell_i$. All resamples are refitted together under `vmap`, each by
    L-BFGS warm-started at `result`'s optimum, with `result`'s predictor, loss and
    step size. Intervals are equal-tailed percentiles at `level`.

    **Example:**

    >>> import numpy as np
    >>> import nqs_engine as nqs
    >>> truth, lr = nqs.preset("pythia-owt2")
    >>> N = np.repeat([3e6, 1e7, 3e7], 4)
    >>> B = np.tile([32.0, 64, 128, 256], 3)
    >>> K = np.repeat([2000.0, 4000, 8000], 4)
    >>> runs = nqs.Runs.from_arrays(N, B, K, nqs.risk(truth, N, B, K, lr=lr).total)
    >>> fitted = nqs.fit(runs, starts=64, refine=2, max_steps=50)
    >>> boot = nqs.bootstrap(runs, fitted, num_samples=4, max_steps=10)
    >>> boot.samples.shape[0] + boot.num_failed, sorted(boot.intervals())[:2]
    (4, ['P', 'Q'])
    """
    if not isinstance(result, FitResult):
        raise TypeError(f"result must be a FitResult, got {type(result).__name__}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if result.residuals.shape[0] != runs.size:
        raise ValueError(
            f"result was fitted to {result.residuals.shape[0]} rows but runs has {runs.size}"
        )
    report = progress or (lambda stage, done, total: None)
    data = _fit_data(runs, result.variant, result.loss, result.delta, result.lr, FIT_RULE)
    theta = np.array([float(getattr(result.params, n)) for n in PARAM_NAMES])
    u0 = jnp.asarray(data.transform.inverse(theta), dtype=data.N.dtype)
    weights = jnp.asarray(bootstrap_weights(np.asarray(runs.run), num_samples, seed),
                          dtype=data.N.dtype)
    x0 = jnp.broadcast_to(u0, (num_samples, 7))
    out = minimize(_objective, x0, data, per_start=weights, method="lbfgs",
                   max_steps=int(max_steps), progress=lambda d, t, v: report("bootstrap", d, t))
    ok = ~np.asarray(out.failed) & np.isfinite(np.asarray(out.value))
    thetas = jax.vmap(lambda u: jnp.stack(data.transform.params(u)))(out.x[np.flatnonzero(ok)])
    return BootstrapResult(
        samples=NQSParams(*(thetas[:, j] for j in range(7))),
        objectives=out.value[np.flatnonzero(ok)],
        num_failed=int(np.sum(~ok)),
        level=float(level),
        lr=result.lr,
        variant=result.variant,
        num_samples=int(num_samples),
    )
