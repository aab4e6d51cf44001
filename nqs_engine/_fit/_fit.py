r"""Fitting any loss model to observed runs: multistart L-BFGS under `vmap`.

The objective (SPEC section 5) over observed losses $y_i$ with predictions
$\hat y_i(\theta)$ and case weights $w_i$ (1 unless given, or bootstrapping) is

$$J(\theta) = \sum_i w_i\, \ell(\log y_i - \log \hat y_i(\theta)), \qquad
  \ell(e) = \tfrac12 e^2 \ \text{(mse)} \quad\text{or}\quad
  \ell(e) = \begin{cases} \tfrac12 e^2 & |e| \le \delta \\ \delta(|e| - \delta/2) & \text{else}
            \end{cases} \ \text{(huber)}.$$

It is minimised in the model's unconstrained coordinates $u \in \mathbb{R}^d$
([`nqs_engine.AbstractLossModel.fit_space`][]), where every point is a valid
model. The same pipeline serves every model:

1. *candidates*: the model family proposes starting points (the NQS a Latin
   hypercube over its ranges, Chinchilla the grid of Hoffmann et al.), to
   which explicit starting models (`init`) are added;
2. *screening*: every candidate's objective, in one vectorised pass;
3. *refinement*: the best `refine` (and every `init`) optimised together by
   L-BFGS (optax, zoom line search) under `vmap`, optionally after Adam steps;
4. *report*: the best end point, its objective, residuals and predictions with
   the model's accurate quadrature, and what sits on a bound.

Everything is deterministic for a given seed. A fit whose every start fails
(non-finite values or gradients) raises, naming why.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._chunk import chunked_map
from .._custom_types import FloatArray
from .._misc import check_choice, vector
from .._model import AbstractFitSpace, AbstractLossModel, AbstractNQS, nqs_model
from .._params import DEFAULT_LR, PRESETS, NQSParams
from .._quadrature import SumRule
from .._runs import Runs
from ._optimize import huber_loss, least_squares, minimize

#: The per-point losses of the objective.
LOSSES = ("mse", "huber")

#: The optimisers of the refinement.
METHODS = ("lm", "lbfgs")


def pointwise(res: FloatArray, loss: str, delta: Any) -> FloatArray:
    """The per-point loss of log residuals `res`: half squares (mse) or Huber."""
    return 0.5 * res**2 if loss == "mse" else huber_loss(res, delta)


class Objective(eqx.Module):
    """The data of the objective: the space, the prepared runs, log losses and weights."""

    space: AbstractFitSpace
    prepared: Any
    log_y: FloatArray
    weights: FloatArray
    delta: FloatArray
    loss: str = eqx.field(static=True)

    def residuals(self, u):
        """log y - log y_hat at coordinates `u`."""
        model = self.space.to_model(u)
        return self.log_y - jnp.log(model.predict_prepared(self.prepared))


def objective(u, data: Objective, weights=None):
    """J(u) with the data's weights, or with `weights` (one bootstrap resample's)."""
    per = pointwise(data.residuals(u), data.loss, data.delta)
    return jnp.sum((data.weights if weights is None else weights) * per)


def residual_vector(u, data: Objective, weights=None):
    r"""The residuals $\rho_i$ with $\tfrac12 \sum_i \rho_i^2 = J(u)$, for Levenberg-Marquardt.

    $\rho_i = \sqrt{w_i}\, e_i$ for mse, and for Huber the pseudo-residual
    $\sqrt{w_i}\,\mathrm{sign}(e_i) \sqrt{2 H_\delta(e_i)}$, which is $e_i$ itself for
    $|e_i| \le \delta$ (continuously differentiable, slope at most 1).
    """
    return _pseudo_residuals(data.residuals(u), data.weights if weights is None else weights,
                            data.loss, data.delta)


def _pseudo_residuals(e, w, loss: str, delta):
    """The residuals $\rho_i$ of [`residual_vector`][] from the log residuals `e`."""
    if loss == "mse":
        return jnp.sqrt(w) * e
    a = jnp.abs(e)
    outer = jnp.sqrt(jnp.maximum(2 * delta * (a - 0.5 * delta), delta**2))
    return jnp.sqrt(w) * jnp.where(a <= delta, e, jnp.sign(e) * outer)


@eqx.filter_jit
def _objective_many(U, data: Objective):
    """Objective of each row of U, evaluated in chunks (no gradient)."""
    return chunked_map(lambda u: objective(u, data), U, 64)


class FitResult(eqx.Module):
    r"""The outcome of [`fit`][].

    **Fields:**

    - `model`: the fitted loss model (an [`nqs_engine.AbstractLossModel`][]).
    - `objective`: $J$ at `model` (its accurate quadrature rule).
    - `residuals`, `predictions`: per row of the runs, $\log y - \log\hat y$ and $\hat y$.
    - `converged`: whether the best start met the tolerance; `num_converged` how
      many refined starts did, `num_failed` how many hit non-finite values, and
      `num_pruned` how many were dropped halfway through `max_steps` at more than
      twice the best objective.
    - `start_objectives`: final $J$ of every refined start (ascending), and
      `start_models` their models (a batch: the spread shows what the data pin down).
    - `num_starts` (candidates screened), `num_refined`, `steps` (iterations of the
      best start), `wall_time` (seconds, compilation included), and the settings
      `loss`, `delta`, `seed`, `weights` (the case weights, `None` for all ones).
    - `notes`: what the data could not identify and which parameters sit on a
      bound of the search space (also in [`summary`][]).

    `params`, `lr` and `variant` are the fitted model's (for the NQS), and
    `start_params`, `start_values` the starts' parameters and objectives.
    """

    model: AbstractLossModel
    objective: float
    residuals: FloatArray
    predictions: FloatArray
    converged: bool
    num_converged: int
    num_failed: int
    num_pruned: int
    start_objectives: FloatArray
    start_models: AbstractLossModel
    steps: int
    num_starts: int
    num_refined: int
    wall_time: float
    loss: str
    delta: float
    seed: int
    weights: FloatArray | None = None
    notes: tuple[str, ...] = ()

    @property
    def params(self):
        """The fitted model's parameters (`NQSParams`, `ChinchillaParams`, ...)."""
        return self.model.params

    @property
    def lr(self) -> float:
        """The NQS step size the fitted model goes with."""
        return float(np.asarray(self.model.lr))

    @property
    def variant(self) -> str:
        """The NQS variant fitted (`"plain"` or `"weight-norm"`)."""
        return self.model.variant

    @property
    def start_params(self):
        """The parameters of every refined start (a batch, best first)."""
        return self.start_models.params

    @property
    def start_values(self) -> FloatArray:
        """The objectives of every refined start (ascending): `start_objectives`."""
        return self.start_objectives

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
            "loss": self.loss,
            "delta": float(self.delta),
            "seed": int(self.seed),
            "num_rows": int(self.residuals.shape[0]),
            "notes": list(self.notes),
        }


def _template(runs, model, variant, lr, rule) -> AbstractLossModel:
    """The model family to fit: `model`, or the NQS of `variant` and `lr` (compat)."""
    if model is None:
        params = NQSParams.from_dict(PRESETS["pythia-owt2"])
        model = nqs_model(variant or "plain", params, DEFAULT_LR if lr is None else lr)
        if rule is not None:
            model = dataclasses.replace(model, search_rule=rule)
        return model
    if isinstance(model, type):
        raise TypeError(f"model must be a loss model instance, e.g. {model.__name__}(), "
                        "not the class")
    if not isinstance(model, AbstractLossModel):
        raise TypeError(f"model must be a loss model (an AbstractLossModel), got "
                        f"{type(model).__name__}")
    if variant is not None or lr is not None or rule is not None:
        raise ValueError("variant, lr and rule describe the default NQS model; with model= "
                         "give them to the model itself")
    return model


def _weights(weights, n) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = vector(weights, "weights", size=n, check=lambda v: v >= 0,
               requirement="must be finite and >= 0")
    if not np.sum(w) > 0:
        raise ValueError("weights must have a positive sum")
    return w


def _starting_points(space, starts, init, seed, ranges, template):
    """Candidates to screen (M, d) and the explicit starts always refined (k, d)."""
    if isinstance(starts, AbstractLossModel):
        U = np.atleast_2d(space.to_flat(starts))
    else:
        U = np.atleast_2d(space.candidates(starts, seed, ranges))
    if init is None:
        return U, np.zeros((0, U.shape[1]))
    if isinstance(init, NQSParams) and isinstance(template, AbstractNQS):
        init = template.with_params(init)
    return U, np.atleast_2d(space.to_flat(init)).reshape(-1, U.shape[1])


def fit(
    runs: Runs,
    model: AbstractLossModel | None = None,
    *,
    weights: Any = None,
    loss: str | None = None,
    delta: float = 1e-3,
    starts: int | AbstractLossModel | None = None,
    refine: int | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    adam_steps: int = 0,
    method: str | None = None,
    ranges: Mapping[str, tuple[float, float]] | None = None,
    init: Any = None,
    variant: str | None = None,
    lr: float | None = None,
    rule: SumRule | None = None,
    progress: Callable[[str, float, float], None] | None = None,
) -> FitResult:
    r"""Fit a loss model to observed losses by multistart L-BFGS (module docstring).

    Minimises $J(\theta) = \sum_i w_i \ell(\log y_i - \log \hat y_i(\theta))$ over the
    model's family: candidates are screened at once, the best `refine` (plus any
    `init` points) optimised together with optax L-BFGS under `vmap` for up to
    `max_steps` iterations (after `adam_steps` Adam steps, if any), and the best
    returned with its diagnostics. Deterministic for a given `seed`.

    **Arguments:**

    - `runs`: the observations ([`nqs_engine.Runs`][]), with losses.
    - `model`: the model family to fit, as an instance whose settings (step
      size, quadrature rules, ...) the fit keeps and whose parameters it
      replaces: [`nqs_engine.NQS`][] (default), [`nqs_engine.WeightNormNQS`][],
      [`nqs_engine.Chinchilla`][], or any other [`nqs_engine.AbstractLossModel`][].
    - `weights`: case weights $w_i \ge 0$ (default 1); rows of weight 0 are ignored.
    - `loss`: `"mse"` or `"huber"` (`delta`); default the model's (mse for the
      NQS, Huber for Chinchilla).
    - `starts`: how many candidates the family proposes (the NQS: Latin-hypercube
      points, default 4096; Chinchilla: all 5400 grid points by default), or a
      batch of models to use as the candidates; `seed`, `ranges` (the NQS's
      overrides of [`nqs_engine.START_RANGES`][]).
    - `refine`, `max_steps`, `adam_steps`: optimised starts, iterations and Adam
      steps before L-BFGS (defaults: the model's [`nqs_engine.FitDefaults`][]).
    - `method`: `"lm"` (Levenberg-Marquardt on the residuals: the NQS's default,
      since its valleys are long and curved) or `"lbfgs"` (Chinchilla's default).
    - `init`: extra starting models (or `NQSParams`, e.g. a previous fit), always refined.
    - `variant`, `lr`, `rule`: without `model`, the NQS variant, its step size
      and the search's quadrature rule (as in earlier versions).
    - `progress`: called as `progress(stage, done, total)` between compiled blocks.

    **Returns:** a [`FitResult`][]; `ValueError` for bad input, too few or
    degenerate runs, or when every refined start fails.

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
    >>> chin = nqs.fit(runs, nqs.Chinchilla(), starts=200, refine=4)
    >>> type(chin.model).__name__, chin.loss
    ('Chinchilla', 'huber')
    """
    started = time.perf_counter()
    setup = prepare_fit(runs, model, weights=weights, loss=loss, delta=delta, variant=variant,
                        lr=lr, rule=rule)
    report = progress or (lambda stage, done, total: None)
    x0, num_candidates = screen_starts(setup, starts=starts, refine=refine, init=init,
                                       seed=seed, ranges=ranges, report=report)
    out = refine_starts(setup, x0, max_steps=max_steps, adam_steps=adam_steps, method=method,
                        on_block=lambda stage, done, total, values: report(stage, done, total))
    out = polish_best(setup, out, method=method)
    return report_fit(setup, out, num_candidates=num_candidates, seed=seed, started=started)


#: `polish_best` skips the polish when the searched and accurate forms of the data give
#: residual vectors within this distance (Euclidean norm, in log loss) at the best start.
POLISH_SKIP = 1e-8


def _residual_gap(setup: FitSetup, out, best: int) -> tuple[float, float]:
    """|rho_accurate - rho_searched|_2 at start `best` (the pseudo-residuals of the objective;
    inf where not finite), and the accurate objective there, 0.5 |rho_accurate|^2. The
    accurate side is the fitted model's own prediction, the program `report_fit` runs
    next; the searched side is Levenberg-Marquardt's last residual vector, or (L-BFGS)
    the searched form evaluated once."""
    data = setup.data
    u = out.x[best]
    pred = setup.space.to_model(u).predict(setup.runs)
    e = data.log_y - jnp.log(jnp.asarray(pred, data.log_y.dtype))
    rho = np.asarray(_pseudo_residuals(e, data.weights, data.loss, data.delta))
    searched = out.residuals[best] if out.residuals is not None else _searched_residuals(u, data)
    d = rho - np.asarray(searched)
    gap = float(np.linalg.norm(d)) if np.isfinite(d).all() else np.inf
    value = 0.5 * float(np.sum(rho * rho))
    return gap, value if np.isfinite(value) else np.inf


@eqx.filter_jit
def _searched_residuals(u, data: Objective):
    return residual_vector(u, data)


def polish_best(setup: FitSetup, out, *, method=None, steps=None):
    """Stage 3b: the best start refined on the accurate form of the data, when the model
    searched a cheaper one (`fit_defaults.polish_steps` iterations; 0 skips it). The best
    start's end point is replaced when the polish lowers the accurate objective. Skipped
    when the two forms' residual vectors at the best start differ by at most
    `POLISH_SKIP` (a quadrature rule accurate to ~1e-13 against the model's own)."""
    template = setup.template
    steps = template.fit_defaults.polish_steps if steps is None else int(steps)
    if steps <= 0:
        return out
    values = np.asarray(out.value)
    best = int(np.argmin(np.where(np.isfinite(values), values, np.inf)))
    start = out.x[best : best + 1]
    # When the two forms agree at the best point, a polish cannot move the fit: to first
    # order it changes the residual vector by the projection of their difference onto
    # the Jacobian's range, no larger than the difference itself. Skipping it then
    # saves preparing the accurate form and compiling the refinement a second time.
    gap, before = _residual_gap(setup, out, best)
    if np.isfinite(gap) and gap <= POLISH_SKIP:
        return out
    accurate = eqx.tree_at(lambda d: d.prepared, setup.data, template.prepare(setup.runs))
    polish_setup = eqx.tree_at(lambda s: s.data, setup, accurate)
    polished = _refine(polish_setup, start, steps, 0, None,
                       check_choice("method", method or template.fit_defaults.method, METHODS))
    after = float(polished.value[0])
    if not np.isfinite(after) or (np.isfinite(before) and after >= before):
        return out
    replace = lambda full, new: full.at[best].set(new[0])  # noqa: E731
    return eqx.tree_at(
        lambda o: (o.x, o.value, o.converged), out,
        (replace(out.x, polished.x), replace(out.value, polished.value),
         replace(out.converged, polished.converged)))


class FitSetup(eqx.Module):
    """The first stage of a fit: the model family, its space and the objective's data."""

    runs: Runs
    template: AbstractLossModel
    space: AbstractFitSpace
    data: Objective
    weights: np.ndarray
    weighted: bool = eqx.field(static=True)


def prepare_fit(runs, model=None, *, weights=None, loss=None, delta=1e-3, variant=None,
                lr=None, rule=None) -> FitSetup:
    """Stage 1: validate the runs and options, build the fit space and the objective."""
    if not isinstance(runs, Runs):
        raise TypeError(f"runs must be a Runs, got {type(runs).__name__}")
    y = runs.needs_loss()
    template = _template(runs, model, variant, lr, rule)
    loss = check_choice("loss", template.fit_defaults.loss if loss is None else loss, LOSSES)
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be finite and > 0, got {delta}")
    w = _weights(weights, runs.size)
    space = template.fit_space(runs, w)
    dtype = jnp.asarray(runs.N).dtype
    data = Objective(space=space, prepared=template.prepare(runs, search=True),
                     log_y=jnp.log(y.astype(dtype)), weights=jnp.asarray(w, dtype),
                     delta=jnp.asarray(delta, dtype), loss=loss)
    return FitSetup(runs=runs, template=template, space=space, data=data, weights=w,
                    weighted=weights is not None)


def _count(name, value, least):
    if isinstance(value, bool) or int(value) != value or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value}")
    return int(value)


def screen_starts(setup: FitSetup, *, starts=None, refine=None, init=None, seed=0, ranges=None,
                  report=None) -> tuple[jax.Array, int]:
    """Stage 2: the candidates' objectives in one pass; returns the starts to refine
    (every `init` point, then the best `refine` candidates) and the number screened."""
    defaults = setup.template.fit_defaults
    refine = _count("refine", defaults.refine if refine is None else refine, 1)
    if not isinstance(starts, AbstractLossModel):
        starts = defaults.starts if starts is None else starts
        if starts is not None:
            starts = _count("starts", starts, 1)
    report = report or (lambda stage, done, total: None)
    U, U_init = _starting_points(setup.space, starts, init, seed, ranges, setup.template)
    dtype = setup.data.log_y.dtype
    report("screening starts", 0, 1)
    scores = np.asarray(_objective_many(jnp.asarray(U, dtype), setup.data))
    report("screening starts", 1, 1)
    scores = np.where(np.isfinite(scores), scores, np.inf)
    if not np.isfinite(scores).any() and U_init.shape[0] == 0:
        raise ValueError(f"every one of the {U.shape[0]} starting points gives a non-finite "
                         "objective (predicted loss not positive and finite)")
    order = diverse_best(U, scores, refine)
    return jnp.asarray(np.concatenate([U_init, U[order]]), dtype), int(U.shape[0])


#: The pool the refined starts are chosen from: this many times `refine` of the best.
POOL = 8


def diverse_best(U: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    r"""Indices of `k` good and spread-out candidates: from the `POOL * k` of lowest score,
    greedily the one farthest (in coordinates scaled by the pool's spread) from those
    already chosen, starting with the best.

    The best screened objectives often sit in one basin (a loss model's valleys are
    long), so the `k` lowest scores alone can all refine to the same local minimum;
    spreading them over the good candidates keeps several basins in the race.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._fit._fit import diverse_best
    >>> U = np.array([[0.0], [0.01], [0.02], [5.0]])
    >>> diverse_best(U, np.array([1.0, 1.1, 1.2, 1.3]), 2).tolist()
    [0, 3]
    """
    ranked = np.argsort(scores, kind="stable")
    ranked = ranked[np.isfinite(scores[ranked])]
    if ranked.size <= k:
        return ranked
    pool = ranked[: max(k, POOL * k)]
    X = U[pool]
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    chosen = [0]
    dist = np.linalg.norm(X - X[0], axis=1)
    for _ in range(k - 1):  # k greedy picks over the pool (vectorised distances)
        j = int(np.argmax(dist))
        chosen.append(j)
        dist = np.minimum(dist, np.linalg.norm(X - X[j], axis=1))
    return pool[np.array(chosen)]


def refine_starts(setup: FitSetup, x0, *, max_steps=None, adam_steps=0, on_block=None,
                  method=None):
    """Stage 3: Levenberg-Marquardt, or L-BFGS after optional Adam steps, from every start
    at once, under vmap (`method`: default the model's)."""
    return _refine(setup, x0, max_steps, adam_steps, on_block,
                   check_choice("method", method or setup.template.fit_defaults.method,
                                METHODS))


def _refine(setup, x0, max_steps, adam_steps, on_block, method):
    """The refinement of `refine_starts`.

    `on_block(stage, done, total, values)` is called between compiled blocks.
    Raises `ValueError` when every start fails (non-finite objective or gradient).
    """
    defaults = setup.template.fit_defaults
    max_steps = _count("max_steps", defaults.max_steps if max_steps is None else max_steps, 0)
    adam_steps = _count("adam_steps", adam_steps, 0)
    block = on_block or (lambda stage, done, total, values: None)
    prune = max_steps // 2 if defaults.prune else None
    if method == "lm":
        out = least_squares(residual_vector, x0, setup.data, max_steps=max_steps,
                            jacobian=defaults.jacobian,
                            prune_after=prune, prune_ratio=2.0,
                            progress=lambda d, t, v: block("levenberg-marquardt", d, t, v))
        if not np.isfinite(np.asarray(out.value)).any():
            raise ValueError(
                f"every one of the {x0.shape[0]} refined starts failed: the objective or its "
                "Jacobian is not finite at the starting points")
        return out
    if adam_steps:
        out = minimize(objective, x0, setup.data, method="adam", max_steps=adam_steps,
                       learning_rate=0.02, progress=lambda d, t, v: block("adam", d, t, v))
        x0 = out.x
    out = minimize(objective, x0, setup.data, method="lbfgs", max_steps=max_steps,
                   prune_after=prune, prune_ratio=2.0,
                   progress=lambda d, t, v: block("l-bfgs", d, t, v))
    if not np.isfinite(np.asarray(out.value)).any():
        raise ValueError(
            f"every one of the {x0.shape[0]} refined starts failed: the objective or its "
            "gradient is not finite at the starting points (a schedule, run or parameter "
            "range the model cannot evaluate)"
        )
    return out


def report_fit(setup: FitSetup, out, *, num_candidates: int, seed: int, started: float
               ) -> FitResult:
    """Stage 4: the best end point, scored with the model's accurate rule, and its notes."""
    runs, space, data = setup.runs, setup.space, setup.data
    values = np.asarray(out.value)
    failed = np.asarray(out.failed)
    finite = np.isfinite(values)
    best = int(np.argmin(np.where(finite, values, np.inf)))
    fitted = space.to_model(out.x[best])
    pred = fitted.predict(runs)
    dtype = data.log_y.dtype
    res = jnp.log(runs.loss.astype(dtype)) - jnp.log(pred)
    J = float(jnp.sum(jnp.asarray(setup.weights, dtype) * pointwise(res, data.loss, data.delta)))
    rank = np.argsort(np.where(finite, values, np.inf), kind="stable")
    notes = tuple(space.describe_bounds(fitted))
    if failed.any():
        notes += (f"{int(failed.sum())} of {failed.size} refined starts failed (non-finite "
                  "objective or gradient)",)
    return FitResult(
        model=fitted,
        objective=J,
        residuals=res,
        predictions=pred,
        converged=bool(out.converged[best]),
        num_converged=int(np.sum(np.asarray(out.converged))),
        num_failed=int(np.sum(failed)),
        num_pruned=int(np.sum(np.asarray(out.pruned))),
        start_objectives=jnp.asarray(values[rank]),
        start_models=eqx.filter_vmap(space.to_model)(out.x[rank]),
        steps=int(out.steps[best]),
        num_starts=num_candidates,
        num_refined=int(out.x.shape[0]),
        wall_time=time.perf_counter() - started,
        loss=data.loss,
        delta=float(data.delta),
        seed=int(seed),
        weights=jnp.asarray(setup.weights) if setup.weighted else None,
        notes=notes,
    )


__all__ = ["FitResult", "FitSetup", "LOSSES", "Objective", "fit", "objective", "pointwise",
           "prepare_fit", "refine_starts", "report_fit", "screen_starts"]
