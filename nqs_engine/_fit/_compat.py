r"""Chinchilla's fit and bootstrap in the arrays-in form of earlier versions.

[`fit_chinchilla`][] and [`bootstrap_chinchilla`][] take $N$, $D$ and the losses
as arrays and are [`nqs_engine.fit`][] and [`nqs_engine.bootstrap`][] applied to
the [`nqs_engine.Chinchilla`][] model, with the options those functions had.

**Replicating Epoch AI.** The Epoch AI replication (Besiroglu et al. 2024)
extracted 245 points from Hoffmann et al.'s figure. Their fit is reproduced
once the 5 points of highest loss (3.4 to 5.0 nats: models of 2 to 7 billion
parameters on the $10^{19}$ FLOP budget, so trained on under a billion tokens)
are given weight 0: [`fit_chinchilla`][] then gives $E = 1.8172$,
$A = 477.83$, $B = 2143.4$, $\alpha = 0.3473$, $\beta = 0.3672$, which agrees
to about four digits with the values quoted from their analysis notebook and
lies inside every 95% interval of the paper (point estimate $E = 1.8169$,
$A = 482.01$, $B = 2085.43$, $\alpha = 0.3478$, $\beta = 0.3658$). On all 245
points the same objective is minimised at $E \approx 1.891$, $A \approx 496$,
$B \approx 1.28 \times 10^4$, $\alpha \approx 0.349$, $\beta \approx 0.453$
(objective $1.8260 \times 10^{-3}$, below its value $1.9309 \times 10^{-3}$
at the paper's point): the outliers pull $E$, $B$ and $\beta$ along a nearly
flat ridge of the objective. SciPy's L-BFGS-B from the same grid reaches the
same minimum, so the difference is the data, not the optimiser's tolerance.
On the 240 points, [`bootstrap_chinchilla`][] (200 resamples) gives 95%
intervals $E$ 1.7749-1.8765, $A$ 297-680, $B$ 1149-6601, $\alpha$
0.3187-0.3680, $\beta$ 0.3364-0.4213, close to Epoch AI's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import RealLike
from .._misc import vector
from .._model import Chinchilla
from .._model._chinchilla import (
    CHINCHILLA_PARAM_NAMES,
    DEFAULT_SCREEN,
    ChinchillaParams,
    chinchilla_loss,
)
from .._runs import Runs
from ._bootstrap import bootstrap
from ._fit import FitResult, prepare_fit, refine_starts, report_fit, screen_starts
from ._optimize import percentile_interval

#: The outcome of [`fit_chinchilla`][]: a [`nqs_engine.FitResult`][] of the Chinchilla model.
ChinchillaFit = FitResult

#: The loss functions [`fit_chinchilla`][] accepts for the log-space residuals.
CHINCHILLA_OBJECTIVES = ("huber", "mse")


def _data(N, D, loss, weights):
    N = vector(N, "N", check=lambda v: v >= 1, requirement="must be finite and >= 1")
    n = N.shape[0]
    D = vector(D, "D", size=n, check=lambda v: v >= 1, requirement="must be finite and >= 1")
    loss = vector(loss, "loss", size=n, check=lambda v: v > 0, requirement="must be finite and > 0")
    if weights is not None:
        weights = vector(weights, "weights", size=n, check=lambda v: v >= 0,
                         requirement="must be finite and >= 0")
        if not np.sum(weights) > 0:
            raise ValueError("weights must have a positive sum")
    return Runs.from_arrays(N, D=D, loss=loss), weights


def _objective_name(objective: str, delta: float) -> float:
    if objective not in CHINCHILLA_OBJECTIVES:
        raise ValueError(
            f"objective must be one of {', '.join(CHINCHILLA_OBJECTIVES)}, got {objective!r}"
        )
    delta = float(delta)
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be finite and > 0, got {delta:g}")
    return delta


def _starts(starts: Any) -> Chinchilla | None:
    """User starts (a ChinchillaParams, or rows (log A, log B, log E, alpha, beta)) as models."""
    if starts is None:
        return None
    if isinstance(starts, ChinchillaParams):
        params = jax.tree.map(lambda a: jnp.atleast_1d(a), starts)
    else:
        x = np.asarray(starts, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != 5:
            raise ValueError(
                "starts must be a ChinchillaParams or an array of shape (M, 5) with rows "
                f"(log A, log B, log E, alpha, beta), got shape {x.shape}"
            )
        if x.shape[0] == 0 or not np.all(np.isfinite(x)):
            raise ValueError("starts must be non-empty, with finite values (A, B, E > 0)")
        params = ChinchillaParams(E=np.exp(x[:, 2]), A=np.exp(x[:, 0]), B=np.exp(x[:, 1]),
                                  alpha=x[:, 3], beta=x[:, 4])
    return Chinchilla(params)


def fit_chinchilla(
    N: RealLike,
    D: RealLike,
    loss: RealLike,
    *,
    weights: RealLike | None = None,
    objective: str = "huber",
    delta: float = 1e-3,
    starts: Any = None,
    screen: int | None = DEFAULT_SCREEN,
    max_steps: int = 1000,
    progress: Callable[[int, int, np.ndarray], None] | None = None,
) -> FitResult:
    r"""Fit $L = E + A/N^\alpha + B/D^\beta$ to measured losses (Hoffmann et al., approach 3).

    With $x = (a, b, e, \alpha, \beta)$, $A = e^a$, $B = e^b$, $E = e^e$ and
    $\log \hat L_i = \operatorname{LSE}(a - \alpha \log N_i,\ b - \beta \log D_i,\ e)$,
    minimise $f(x) = \sum_i w_i\, \rho(\log \hat L_i - \log L_i)$ with
    $\rho = \operatorname{Huber}_\delta$ (default) or $\rho(r) = r^2/2$: [`nqs_engine.fit`][]
    of the [`nqs_engine.Chinchilla`][] model on these points.

    **Starts.** By default the 5400-point grid of Hoffmann et al.
    ([`nqs_engine._model._chinchilla.default_starts`][]); every start is first
    *screened* by its objective value (one vectorised evaluation) and the
    `screen` best are optimised (32 by default); `screen=None` optimises every
    start. On the Epoch AI data more than 20 of these 32 reach the best minimum,
    and SciPy's L-BFGS-B run from all 5400 finds no better one.

    **Arguments:** `N`, `D`, `loss`: 1-D arrays of equal length $n \ge 5$
    (parameter counts and tokens, finite and $\ge 1$; losses $> 0$), with at
    least 3 distinct values of $N$ and of $D$; `weights` (optional, $\ge 0$,
    positive sum); `objective` (`"huber"` or `"mse"`) and `delta`; `starts` (a
    batched [`ChinchillaParams`][] or an `(M, 5)` array of rows
    $(a, b, e, \alpha, \beta)$, instead of the grid); `screen`; `max_steps`;
    `progress(done, total, values)`.

    **Returns:** a [`nqs_engine.FitResult`][] (`ChinchillaFit`): `params`,
    `objective`, `residuals` ($\log L_i - \log\hat L_i$), `converged`, the starts'
    `start_values` and `start_params`, and `num_refined` starts optimised.

    **Example:** noiseless losses of a 5 x 5 grid of model sizes and token
    counts, generated from Hoffmann et al.'s published values.

    >>> import numpy as np
    >>> import nqs_engine as nqs
    >>> true = nqs.ChinchillaParams(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    >>> N = np.repeat(np.geomspace(1e8, 1e10, 5), 5)
    >>> D = np.tile(np.geomspace(2e9, 2e11, 5), 5)
    >>> L = np.asarray(nqs.chinchilla_loss(true, N, D))
    >>> fit = nqs.fit_chinchilla(N, D, L)
    >>> [round(float(v), 2) for v in (fit.params.E, fit.params.alpha, fit.params.beta)]
    [1.69, 0.34, 0.28]
    >>> bool(abs(fit.params.A / 406.4 - 1) < 0.01), bool(abs(fit.residuals).max() < 1e-4)
    (True, True)
    """
    delta = _objective_name(objective, delta)
    runs, weights = _data(N, D, loss, weights)
    if screen is not None and screen < 1:
        raise ValueError(f"screen must be >= 1 or None, got {screen}")
    user = _starts(starts)
    count = 5400 if user is None else user.shape[0]
    refine = count if screen is None else min(screen, count)
    started = time.perf_counter()
    setup = prepare_fit(runs, Chinchilla(), weights=weights, loss=objective, delta=delta)
    x0, screened = screen_starts(setup, starts=user, refine=refine)
    on_block = None if progress is None else (
        lambda stage, done, total, values: progress(done, total, values))
    out = refine_starts(setup, x0, max_steps=max_steps, on_block=on_block)
    return report_fit(setup, out, num_candidates=screened, seed=0, started=started)


class ChinchillaBootstrap(eqx.Module):
    r"""The outcome of [`bootstrap_chinchilla`][].

    **Fields:**

    - `samples`: a [`ChinchillaParams`][] batched over the `num_samples`
      resamples (NaN where a refit failed).
    - `intervals`: `{name: (lo, hi)}` equal-tailed percentile intervals at `level`.
    - `failed`: how many refits failed (no start converged to a finite value).
    - `num_samples`, `level`, `wall_time` (seconds, compilation included).
    """

    samples: ChinchillaParams
    intervals: dict[str, tuple[float, float]]
    failed: int
    num_samples: int
    level: float
    wall_time: float

    def predict_interval(self, N: RealLike, D: RealLike) -> tuple[np.ndarray, np.ndarray]:
        r"""Percentile interval, at `level`, of the predicted loss $L(N, D)$ over the resamples.

        `N` and `D` broadcast against each other; failed resamples are ignored.

        **Returns:** `(lo, hi)`, NumPy arrays of the broadcast shape.
        """
        N = jnp.asarray(N)
        D = jnp.asarray(D)
        ok = np.isfinite(np.asarray(self.samples.E))
        if not np.any(ok):
            nan = np.full(np.broadcast_shapes(N.shape, D.shape), np.nan)
            return nan, nan
        # Failed resamples are NaN; give them harmless values, then mask them out.
        safe = jax.tree.map(lambda v: jnp.where(jnp.asarray(ok), v, 1.0), self.samples)
        pred = np.array(jax.vmap(lambda p: chinchilla_loss(p, N, D))(safe), dtype=np.float64)
        pred[~ok] = np.nan
        return percentile_interval(pred, self.level, axis=0)


def bootstrap_chinchilla(
    N: RealLike,
    D: RealLike,
    loss: RealLike,
    *,
    num_samples: int = 200,
    seed: int = 0,
    groups: Any = None,
    weights: RealLike | None = None,
    level: float = 0.95,
    objective: str = "huber",
    delta: float = 1e-3,
    fit: FitResult | None = None,
    max_steps: int = 1000,
) -> ChinchillaBootstrap:
    r"""Nonparametric bootstrap of the Chinchilla fit: all resamples refitted at once.

    [`nqs_engine.bootstrap`][] of [`fit_chinchilla`][]'s fit: resample $s$ draws the
    $G$ groups of `groups` (each point its own group by default) with
    replacement; its estimate minimises the weighted objective of
    [`fit_chinchilla`][], warm-started from the full-data fit and from the best
    other local minimum that fit found (when its objective is within 10% of the
    best). Intervals are equal-tailed percentiles at `level`.

    **Arguments:** `N`, `D`, `loss`, `weights`, `objective`, `delta` as in
    [`fit_chinchilla`][]; `num_samples`, `seed`; `groups` (labels resampled as
    whole groups, e.g. the isoFLOP curve of each point); `level`; `fit` (the
    full-data fit with the same data and options, fitted here otherwise);
    `max_steps` per refit.

    **Example:**

    >>> import numpy as np
    >>> import nqs_engine as nqs
    >>> true = nqs.ChinchillaParams(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    >>> N = np.repeat(np.geomspace(1e8, 1e10, 5), 5)
    >>> D = np.tile(np.geomspace(2e9, 2e11, 5), 5)
    >>> noise = np.exp(0.01 * np.random.default_rng(0).standard_normal(25))
    >>> L = np.asarray(nqs.chinchilla_loss(true, N, D)) * noise
    >>> boot = nqs.bootstrap_chinchilla(N, D, L, num_samples=100, level=0.8)
    >>> lo, hi = boot.intervals["alpha"]
    >>> bool(lo < 0.34 < hi), boot.samples.shape
    (True, (100,))
    >>> lo, hi = boot.predict_interval(1e10, 2e11)
    >>> bool(lo < hi)
    True
    """
    started = time.perf_counter()
    delta = _objective_name(objective, delta)
    runs, weights = _data(N, D, loss, weights)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = runs.size
    if groups is not None:
        labels = np.asarray(groups)
        if labels.shape != (n,):
            raise ValueError(
                f"groups must have one label per point ({n}), got shape {labels.shape}"
            )
        runs = eqx.tree_at(lambda r: r.run, runs,
                           jnp.asarray(np.unique(labels, return_inverse=True)[1].reshape(n)))
    if fit is None:
        fit = fit_chinchilla(N, D, loss, weights=weights, objective=objective, delta=delta)
    elif fit.loss != objective or fit.delta != delta:
        raise ValueError(
            f"fit used objective={fit.loss!r}, delta={fit.delta:g} but the bootstrap asks for "
            f"objective={objective!r}, delta={delta:g}; pass a matching fit or none"
        )
    boot = bootstrap(runs, fit, num_samples=num_samples, seed=seed, level=level,
                     max_steps=max_steps)
    values = {name: np.full(int(num_samples), np.nan) for name in CHINCHILLA_PARAM_NAMES}
    for name, v in boot.samples.parameters().items():
        values[name][boot.ok] = np.asarray(v, dtype=np.float64)
    samples = ChinchillaParams(**values)
    intervals = {}
    for name in CHINCHILLA_PARAM_NAMES:
        lo, hi = percentile_interval(values[name], level)
        intervals[name] = (float(lo), float(hi))
    return ChinchillaBootstrap(samples=samples, intervals=intervals, failed=boot.num_failed,
                               num_samples=int(num_samples), level=float(level),
                               wall_time=time.perf_counter() - started)


__all__ = ["CHINCHILLA_OBJECTIVES", "ChinchillaBootstrap", "ChinchillaFit", "bootstrap_chinchilla",
           "fit_chinchilla"]
