r"""Batched minimisation with optax: many independent starts optimised together.

Every fit in nqs-engine (NQS multistart, Chinchilla grid of starts, bootstrap
refits) is the same problem: minimise a smooth scalar $f(x; \text{data})$ from a
batch of starting points $x_0^{(1)}, \ldots, x_0^{(M)}$. [`minimize`][] runs the
optax optimiser of each start under `jax.vmap`, in compiled blocks of
iterations; between blocks Python only reports progress and stops early once
every start has converged, so no Python loop touches starts or data points.

A start that produces a non-finite value or gradient is frozen at its last
finite point and flagged `failed`; it never spreads NaNs to the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._custom_types import FloatArray

#: Optimisers [`minimize`][] accepts: L-BFGS with a zoom line search (strong
#: Wolfe conditions) or Adam with a fixed learning rate.
METHODS = ("lbfgs", "adam")


class OptimizeResult(eqx.Module):
    """The outcome of [`minimize`][] for a batch of $M$ starts.

    **Fields** (leading axis: the start):

    - `x`: `(M, d)` final points (the last finite iterate of a failed start).
    - `value`: `(M,)` objective there (`inf` if the start failed at once).
    - `grad_norm`: `(M,)` Euclidean norm of the gradient there.
    - `steps`: `(M,)` iterations taken.
    - `converged`: `(M,)` met the tolerance within `max_steps`.
    - `failed`: `(M,)` hit a non-finite value or gradient.
    - `pruned`: `(M,)` stopped early as hopeless (see `prune_after` of [`minimize`][]).
    - `wall_time`: seconds spent, compilation included.
    - `residuals`: `(M, n)` the residual vectors at `x` ([`least_squares`][] only; `None`
      from [`minimize`][]).
    """

    x: FloatArray
    value: FloatArray
    grad_norm: FloatArray
    steps: jax.Array
    converged: jax.Array
    failed: jax.Array
    pruned: jax.Array
    wall_time: float = eqx.field(static=True)
    residuals: FloatArray | None = None


class _State(eqx.Module):
    x: FloatArray
    opt_state: Any
    value: FloatArray
    grad: FloatArray
    steps: jax.Array
    converged: jax.Array
    failed: jax.Array
    pruned: jax.Array


def _optimizer(method: str, learning_rate: float):
    if method == "lbfgs":
        return optax.lbfgs(
            memory_size=10,
            linesearch=optax.scale_by_zoom_linesearch(
                max_linesearch_steps=20, initial_guess_strategy="one"
            ),
        )
    return optax.adam(learning_rate)


def _bind(fun, data, per):
    """`fun` as a function of x alone, for one start (`per` = that start's own data)."""
    if per is None:
        return lambda x: fun(x, data)
    return lambda x: fun(x, data, per)


@eqx.filter_jit
def _init(fun, x0, data, per_start, method, learning_rate):
    opt = _optimizer(method, learning_rate)

    def one(x, per):
        value, grad = jax.value_and_grad(_bind(fun, data, per))(x)
        bad = ~(jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)))
        return _State(
            x=x,
            opt_state=opt.init(x),
            value=jnp.where(bad, jnp.inf, value),
            grad=jnp.where(bad, 0.0, grad),
            steps=jnp.zeros((), jnp.int32),
            converged=jnp.zeros((), bool),
            failed=bad,
            pruned=jnp.zeros((), bool),
        )

    state = jax.vmap(one)(x0, per_start)
    # optax's initial line-search info is weakly typed, its updates are not; strip
    # weak types so that every block call reuses one compiled program.
    return jax.tree.map(lambda a: jnp.asarray(a, dtype=a.dtype), state)


@eqx.filter_jit
def _block(fun, state, data, per_start, method, learning_rate, num_steps, max_steps, gtol, ftol):
    """Run up to `num_steps` iterations of every unfinished start."""
    opt = _optimizer(method, learning_rate)

    def one(s: _State, per) -> _State:
        f = _bind(fun, data, per)

        def step(s: _State) -> _State:
            if method == "lbfgs":
                updates, opt_state = opt.update(
                    s.grad, s.opt_state, s.x, value=s.value, grad=s.grad, value_fn=f
                )
                x = optax.apply_updates(s.x, updates)
                # The line search stores the value and gradient at its accepted point.
                # (`optax.value_and_grad_from_state` would recompute them where that
                # value is not finite: under vmap its `cond` becomes a select that
                # evaluates the function and its gradient every step, and a third copy
                # of the model makes the program much slower to compile. A point whose
                # value is not finite fails the start below either way.)
                value = optax.tree.get(opt_state, "value")
                grad = optax.tree.get(opt_state, "grad")
            else:
                updates, opt_state = opt.update(s.grad, s.opt_state, s.x)
                x = optax.apply_updates(s.x, updates)
                value, grad = jax.value_and_grad(f)(x)
            bad = ~(jnp.isfinite(value) & jnp.all(jnp.isfinite(grad)) & jnp.all(jnp.isfinite(x)))
            scale = jnp.maximum(jnp.abs(value), 1.0)
            small_grad = jnp.linalg.norm(grad) <= gtol * scale
            stalled = jnp.abs(s.value - value) <= ftol * scale
            # Adam's value may rise or stall between steps without being done.
            converged = small_grad | (stalled if method == "lbfgs" else False)
            keep = lambda new, old: jnp.where(bad, old, new)  # noqa: E731
            return _State(
                x=keep(x, s.x),
                opt_state=jax.tree.map(keep, opt_state, s.opt_state),
                value=keep(value, s.value),
                grad=keep(grad, s.grad),
                steps=s.steps + 1,
                converged=~bad & converged,
                failed=bad,
                pruned=s.pruned,
            )

        def cond(carry):
            i, s = carry
            active = ~s.converged & ~s.failed & ~s.pruned
            return (i < num_steps) & (s.steps < max_steps) & active

        def body(carry):
            i, s = carry
            return i + 1, step(s)

        _, s = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), s))
        return s

    return jax.vmap(one)(state, per_start)


def minimize(
    fun: Callable[[FloatArray, Any], FloatArray],
    x0: Any,
    data: Any = None,
    *,
    per_start: Any = None,
    method: str = "lbfgs",
    max_steps: int = 500,
    learning_rate: float = 0.05,
    gtol: float = 1e-9,
    ftol: float = 1e-14,
    block: int = 25,
    prune_after: int | None = None,
    prune_ratio: float = 2.0,
    progress: Callable[[int, int, np.ndarray], None] | None = None,
) -> OptimizeResult:
    r"""Minimise `fun(x, data)` from each row of `x0`, all starts together.

    Each start $x_0^{(m)} \in \mathbb{R}^d$ runs its own optimiser (L-BFGS with a
    zoom line search, or Adam) until $\|\nabla f\| \le$ `gtol` $\max(1, |f|)$ or,
    for L-BFGS, until one step changes $f$ by at most `ftol` $\max(1, |f|)$, or
    `max_steps` iterations. Starts are vmapped; iterations run in compiled blocks
    of `block` steps, after which `progress(done_steps, max_steps, best_value)`
    is called (if given) and the loop ends early once every start is finished.

    **Arguments:**

    - `fun`: scalar objective `fun(x, data)`, differentiable in `x` (a 1-D array).
      Pass the same function object each time to reuse the compiled program.
    - `x0`: `(M, d)` starting points.
    - `data`: a pytree of arrays shared by all starts (not differentiated).
    - `per_start`: optional pytree of arrays with leading axis $M$, one slice per
      start (a bootstrap sample's case weights, say); `fun` is then called as
      `fun(x, data, per_start_m)`.
    - `method`: `"lbfgs"` or `"adam"`; `learning_rate` is Adam's.
    - `max_steps`, `gtol`, `ftol`, `block`: see above.
    - `prune_after`, `prune_ratio`: racing for multistart. From `prune_after`
      iterations on, a start whose value exceeds `prune_ratio` times the best
      value so far (for a non-negative objective) is stopped and flagged
      `pruned`, so that hopeless starts crawling along flat valleys do not hold
      the whole batch to `max_steps`. `None` (default) never prunes.

    **Returns:** an [`OptimizeResult`][].

    **Example:** a batch of Rosenbrock valleys.

    >>> import jax.numpy as jnp
    >>> from nqs_engine._fit._optimize import minimize
    >>> def rosen(x, a):
    ...     return (a - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    >>> out = minimize(rosen, jnp.array([[-1.0, 1.0], [0.0, 0.0]]), 1.0)
    >>> [round(float(v), 4) for v in out.x[:, 0]], bool(out.converged.all())
    ([1.0, 1.0], True)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if max_steps < 0 or block < 1:
        raise ValueError("max_steps must be >= 0 and block >= 1")
    started = time.perf_counter()
    x0 = jnp.asarray(x0)
    if x0.ndim != 2:
        raise ValueError(f"x0 must be a 2-D array (starts, dimensions), got shape {x0.shape}")
    if per_start is not None:
        sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(per_start)}
        if sizes != {x0.shape[0]}:
            raise ValueError(f"every leaf of per_start must have leading axis {x0.shape[0]} (starts)")
    # Scalars go in as arrays, so that changing them never recompiles.
    dyn = lambda v, dt: jnp.asarray(v, dtype=dt)  # noqa: E731
    lr_, gtol_, ftol_ = (dyn(v, x0.dtype) for v in (learning_rate, gtol, ftol))
    state = _init(fun, x0, data, per_start, method, lr_)
    done = 0
    while done < max_steps:
        n = min(block, max_steps - done)
        state = _block(
            fun, state, data, per_start, method, lr_, dyn(n, jnp.int32),
            dyn(max_steps, jnp.int32), gtol_, ftol_,
        )
        done += n
        if progress is not None:
            progress(done, max_steps, np.asarray(state.value))
        if prune_after is not None and done >= prune_after:
            value = np.asarray(state.value)
            best = np.min(np.where(np.asarray(state.failed), np.inf, value))
            hopeless = np.isfinite(best) & (value > prune_ratio * max(best, 0.0))
            hopeless &= ~np.asarray(state.converged) & ~np.asarray(state.failed)
            if hopeless.any():
                state = eqx.tree_at(lambda st: st.pruned, state, state.pruned | hopeless)
        if bool(jnp.all(state.converged | state.failed | state.pruned)):
            break
    return OptimizeResult(
        x=state.x,
        value=state.value,
        grad_norm=jnp.linalg.norm(state.grad, axis=-1),
        steps=state.steps,
        converged=state.converged,
        failed=state.failed,
        pruned=state.pruned,
        wall_time=time.perf_counter() - started,
    )


class _LMState(eqx.Module):
    x: FloatArray
    r: FloatArray
    J: FloatArray
    value: FloatArray
    mu: FloatArray
    steps: jax.Array
    converged: jax.Array
    failed: jax.Array
    pruned: jax.Array


def _bind_residuals(fun, data, per):
    if per is None:
        return lambda x: fun(x, data)
    return lambda x: fun(x, data, per)


def _lm_point(res, x, reverse=False):
    """Residuals, Jacobian and 0.5 |r|^2 at x.

    Forward mode: one pass per coordinate; reverse mode (for residuals that only
    support it, such as a checkpointed loop): one pass per residual.
    """
    if reverse:
        r, pull = jax.vjp(res, x)
        J = jax.vmap(lambda c: pull(c)[0])(jnp.eye(r.shape[0], dtype=r.dtype))
    else:
        r, J = jax.vmap(lambda t: jax.jvp(res, (x,), (t,)), out_axes=(None, 1))(
            jnp.eye(x.shape[0], dtype=x.dtype))
    value = 0.5 * jnp.sum(r * r)
    bad = ~(jnp.isfinite(value) & jnp.all(jnp.isfinite(J)))
    return r, J, jnp.where(bad, jnp.inf, value), bad


def _lm_start(fun, x0, data, per_start, mu0):
    """The state before the first iteration: `steps = -1`, residuals not yet evaluated (the
    first pass of [`_lm_block`][] evaluates them, so that one program serves both)."""
    x0 = jnp.asarray(x0)
    per = None if per_start is None else jax.tree.map(lambda a: a[0], per_start)
    shape = jax.eval_shape(_bind_residuals(fun, data, per), x0[0]).shape
    m, d = x0.shape
    full = lambda v, *sh, dt=x0.dtype: jnp.full((m, *sh), v, dt)  # noqa: E731
    return _LMState(x=x0, r=full(0.0, *shape), J=full(0.0, *shape, d), value=full(jnp.inf),
                    mu=full(mu0), steps=full(-1, dt=jnp.int32), converged=full(False, dt=bool),
                    failed=full(False, dt=bool), pruned=full(False, dt=bool))


@eqx.filter_jit
def _lm_block(fun, state, data, per_start, num_steps, max_steps, gtol, ftol, reverse):
    """Up to `num_steps` Levenberg-Marquardt iterations of every unfinished start."""

    def one(s: _LMState, per) -> _LMState:
        res = _bind_residuals(fun, data, per)

        def step(s: _LMState) -> _LMState:
            first = s.steps < 0  # evaluate at the start point: delta = 0
            A = s.J.T @ s.J
            g = s.J.T @ s.r
            scale = jnp.diag(A) + 1e-12 * jnp.max(jnp.diag(A)) + jnp.finfo(s.x.dtype).tiny
            delta = jnp.linalg.solve(A + s.mu * jnp.diag(scale), -g)
            delta = jnp.where(first, 0.0, delta)
            x = s.x + delta
            r, J, value, bad = _lm_point(res, x, reverse)
            ok = ~bad & jnp.all(jnp.isfinite(delta)) & (value < s.value)
            keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
            small = ~first & (jnp.abs(s.value - value) <= ftol * jnp.maximum(s.value, 1e-300))
            grad = jnp.linalg.norm(keep(J, s.J).T @ keep(r, s.r))
            done = (ok & small) | (ok & (grad <= gtol * jnp.maximum(keep(value, s.value), 1.0)))
            stuck = s.mu > 1e12
            mu = jnp.where(first, s.mu, jnp.where(ok, s.mu / 3.0, s.mu * 4.0))
            return _LMState(
                x=keep(x, s.x), r=keep(r, s.r), J=keep(J, s.J), value=keep(value, s.value),
                mu=jnp.clip(mu, 1e-12, 1e16), steps=s.steps + 1, converged=done | stuck,
                failed=s.failed | (first & bad), pruned=s.pruned)

        def cond(carry):
            i, s = carry
            return (i < num_steps) & (s.steps < max_steps) & ~s.converged & ~s.failed & ~s.pruned

        def body(carry):
            i, s = carry
            return i + 1, step(s)

        _, s = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), s))
        return s

    return jax.vmap(one)(state, per_start)


def least_squares(
    fun: Callable[..., FloatArray],
    x0: Any,
    data: Any = None,
    *,
    per_start: Any = None,
    max_steps: int = 200,
    gtol: float = 1e-10,
    ftol: float = 1e-10,
    block: int = 10,
    prune_after: int | None = None,
    prune_ratio: float = 2.0,
    progress: Callable[[int, int, np.ndarray], None] | None = None,
    jacobian: str = "forward",
) -> OptimizeResult:
    r"""Minimise $\tfrac12 \|r(x)\|^2$ by Levenberg-Marquardt from each row of `x0`, all together.

    `fun(x, data)` (or `fun(x, data, per_start_m)`) returns the residual vector
    $r(x) \in \mathbb{R}^n$. Each iteration forms the Jacobian $J$ in forward
    mode ($d$ passes; `jacobian="reverse"`: $n$ reverse passes, for residuals
    that cannot be differentiated forward) and tries the damped Gauss-Newton step

    $$\delta = -\left(J^\top J + \mu\,\mathrm{diag}(J^\top J)\right)^{-1} J^\top r,$$

    accepted when it lowers the objective ($\mu \leftarrow \mu/3$), else refused
    ($\mu \leftarrow 4\mu$). A start has converged when an accepted step changes
    the objective by at most `ftol` relative, when $\|J^\top r\| \le$ `gtol`
    $\max(1, f)$, or when $\mu$ grows past $10^{12}$ (no step helps). On the
    curved, nearly degenerate valleys of loss-model fits it needs tens of
    iterations where a quasi-Newton method needs hundreds. Starts are vmapped and
    iterated in compiled blocks, with progress and pruning as in [`minimize`][],
    whose [`OptimizeResult`][] it returns (`grad_norm` is $\|J^\top r\|$).

    **Example:** an exponential decay fitted to noiseless points.

    >>> import jax.numpy as jnp
    >>> from nqs_engine._fit._optimize import least_squares
    >>> t = jnp.linspace(0.0, 3.0, 20)
    >>> def residuals(x, y):
    ...     return x[0] * jnp.exp(-x[1] * t) - y
    >>> out = least_squares(residuals, jnp.array([[1.0, 0.1], [3.0, 3.0]]), 2.0 * jnp.exp(-0.7 * t))
    >>> [round(float(v), 6) for v in out.x[0]], bool(out.converged.all())
    ([2.0, 0.7], True)
    """
    if max_steps < 0 or block < 1:
        raise ValueError("max_steps must be >= 0 and block >= 1")
    if jacobian not in ("forward", "reverse"):
        raise ValueError(f"jacobian must be 'forward' or 'reverse', got {jacobian!r}")
    reverse = jacobian == "reverse"
    started = time.perf_counter()
    x0 = jnp.asarray(x0)
    if x0.ndim != 2:
        raise ValueError(f"x0 must be a 2-D array (starts, dimensions), got shape {x0.shape}")
    dyn = lambda v, dt: jnp.asarray(v, dtype=dt)  # noqa: E731
    state = _lm_start(fun, x0, data, per_start, 1e-2)
    done, first = 0, True
    while done < max_steps or first:
        n = min(block, max_steps - done)
        extra, first = (1 if first else 0), False  # the first block evaluates the starts too
        state = _lm_block(fun, state, data, per_start, dyn(n + extra, jnp.int32),
                          dyn(max_steps, jnp.int32), dyn(gtol, x0.dtype), dyn(ftol, x0.dtype),
                          reverse)
        done += n
        if progress is not None:
            progress(done, max_steps, np.asarray(state.value))
        if prune_after is not None and done >= prune_after:
            value = np.asarray(state.value)
            best = np.min(np.where(np.asarray(state.failed), np.inf, value))
            hopeless = np.isfinite(best) & (value > prune_ratio * max(best, 0.0))
            hopeless &= ~np.asarray(state.converged) & ~np.asarray(state.failed)
            if hopeless.any():
                state = eqx.tree_at(lambda st: st.pruned, state, state.pruned | hopeless)
        if bool(jnp.all(state.converged | state.failed | state.pruned)):
            break
    grad = jnp.linalg.norm(jnp.einsum("mnd,mn->md", state.J, state.r), axis=-1)
    return OptimizeResult(
        x=state.x, value=state.value, grad_norm=grad, steps=state.steps,
        converged=state.converged & ~state.failed, failed=state.failed, pruned=state.pruned,
        wall_time=time.perf_counter() - started, residuals=state.r,
    )


def huber_loss(r: Any, delta: Any) -> FloatArray:
    r"""Huber function $\tfrac12 r^2$ for $|r| \le \delta$, else $\delta(|r| - \delta/2)$ (in JAX).

    The robust per-point loss of every fit (SPEC sections 4 and 5), on log-loss
    residuals. [`nqs_engine._metrics.huber`][] is its eager float64 NumPy twin
    used for reporting metrics.

    **Example:**

    >>> from nqs_engine._fit._optimize import huber_loss
    >>> [float(v) for v in huber_loss(jnp.array([0.0, 1e-3, -3e-3]), 1e-3)]
    [0.0, 5e-07, 2.5e-06]
    """
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))


def bootstrap_weights(groups: Any, num_samples: int, seed: int = 0) -> np.ndarray:
    r"""Case weights of a nonparametric bootstrap that resamples whole groups.

    With $G$ distinct labels in `groups` (one label per data point, e.g. the run
    a checkpoint belongs to), each bootstrap sample draws $G$ groups uniformly
    with replacement; a point's weight is the number of times its group was
    drawn. Weighted refits (the objective $\sum_i w_i \ell_i$) then give the
    bootstrap distribution without copying data, and all samples can be
    refitted at once under `vmap`. Deterministic for a given `seed`.

    **Arguments:** `groups`, a 1-D array of labels (any hashable values);
    `num_samples` $\ge 1$; `seed`.

    **Returns:** a `(num_samples, len(groups))` float64 NumPy array of counts.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._fit._optimize import bootstrap_weights
    >>> w = bootstrap_weights(np.array([0, 0, 1, 2]), num_samples=3, seed=1)
    >>> w.shape, bool(np.all(w[:, 0] == w[:, 1]))   # both points of group 0 move together
    ((3, 4), True)
    >>> w[:, [0, 2, 3]].sum(axis=1).tolist()             # three groups drawn per sample
    [3.0, 3.0, 3.0]
    """
    labels = np.asarray(groups)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"groups must be a non-empty 1-D array, got shape {labels.shape}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    _, index = np.unique(labels, return_inverse=True)
    G = int(index.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, G, size=(num_samples, G))
    counts = np.zeros((num_samples, G))
    np.add.at(counts, (np.arange(num_samples)[:, None], draws), 1.0)
    return counts[:, index]


def percentile_interval(samples: Any, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r"""Equal-tailed percentile interval $[q_{(1-\ell)/2}, q_{(1+\ell)/2}]$ of `samples`.

    Non-finite samples (failed refits) are ignored; an all-NaN slice gives NaN.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._fit._optimize import percentile_interval
    >>> lo, hi = percentile_interval(np.arange(101.0), level=0.9)
    >>> float(lo), float(hi)
    (5.0, 95.0)
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    values = np.asarray(samples, dtype=float)
    values = np.where(np.isfinite(values), values, np.nan)
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(values, [tail, 100 - tail], axis=axis)
    return lo, hi
