r"""The nonparametric bootstrap of any fit: every resample refitted at once.

Resample $s$ draws the $G$ distinct runs of the data with replacement
(checkpoints of one run move together), which gives case weights $w^{(s)}_i$
([`nqs_engine._fit._optimize.bootstrap_weights`][]), multiplied by the fit's own
weights; its estimate minimises $\sum_i w^{(s)}_i \ell(\log y_i - \log\hat y_i)$,
the objective of [`nqs_engine.fit`][]. All resamples are refitted together under
`vmap` (with the model's optimiser), each warm-started from the fit's optimum and, for families whose
objective has several close minima (the model's `fit_defaults.warm_starts`),
from the best other distinct local minima the fit found within 10% of the best;
the better end point wins.

**Intervals.** For a quantity $q(\theta)$ (a parameter, a predicted loss), the
confidence interval at level $1 - \alpha$ is the equal-tailed percentile interval
of $q(\hat\theta^{(s)})$ over the resamples. The *prediction* interval of a new
run's loss adds the scatter of runs about the model: each resample's
prediction is multiplied by $e^{\varepsilon}$, $\varepsilon$ drawn from the fit's
log residuals (recentred at their median and inflated by $\sqrt{n/(n-k)}$ for
$n$ residuals and $k$ fitted coordinates, since residuals at the optimum
understate the scatter about the true law), so the interval covers both the
uncertainty of $\theta$ and the noise of a single run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import FloatArray
from .._misc import suggest
from .._model import AbstractLossModel, model_from_dict
from .._runs import Runs
from ._fit import FitResult, Objective, objective, residual_vector
from ._optimize import bootstrap_weights, least_squares, minimize, percentile_interval


class BootstrapResult(eqx.Module):
    r"""Bootstrap distribution of a fitted model (from [`bootstrap`][]).

    **Fields:** `samples` (the model with batch shape `(S,)`: one refit per
    successful resample), `objectives (S,)`, `ok (num_samples,)` (which resamples
    succeeded), `num_failed`, `level`, `num_samples`, `residuals` (the fit's log
    residuals, for prediction intervals), `wall_time` and `inflation`
    ($\sqrt{n/(n-k)}$, the residuals' scale-up in prediction intervals).
    """

    samples: AbstractLossModel
    objectives: FloatArray
    ok: np.ndarray
    num_failed: int
    level: float
    num_samples: int
    residuals: FloatArray
    wall_time: float
    inflation: float = 1.0

    @property
    def lr(self) -> float:
        """The NQS step size of the samples."""
        return float(np.asarray(self.samples.lr))

    @property
    def variant(self) -> str:
        """The NQS variant of the samples."""
        return self.samples.variant

    def intervals(self, level: float | None = None) -> dict[str, tuple[float, float]]:
        """Percentile intervals of each parameter (default: the bootstrap's `level`).

        **Example:** see [`bootstrap`][].
        """
        lvl = self.level if level is None else level
        out = {}
        for name, values in self.samples.parameters().items():
            lo, hi = percentile_interval(np.asarray(values), lvl)
            out[name] = (float(lo), float(hi))
        return out

    def predictions(self, runs: Runs) -> np.ndarray:
        """`(S, n)` predicted losses of every sample for every row of `runs`."""
        return np.asarray(self.samples.predict(runs), dtype=np.float64)

    def predict_interval(self, runs: Runs, level: float | None = None, *,
                         prediction: bool = False, seed: int = 0,
                         draws: int = 4) -> tuple[np.ndarray, np.ndarray]:
        r"""Percentile interval of the predicted loss of each row of `runs`: `(lo, hi)`, `(n,)`.

        A confidence interval of the model's prediction by default; with
        `prediction=True`, a prediction interval of a run's measured loss (the
        module docstring): each sample's prediction times $e^\varepsilon$ for
        `draws` residuals $\varepsilon$ per sample, drawn with `seed`.
        """
        lvl = self.level if level is None else level
        pred = self.predictions(runs)
        if prediction:
            pred = _with_residuals(pred, self.inflation * np.asarray(self.residuals, float),
                                   draws, seed)
        return percentile_interval(pred, lvl)


    def to_dict(self) -> dict[str, Any]:
        """The bootstrap as a JSON-ready mapping (what `nqs-engine fit --bootstrap` stores).

        Keys: `level`, `num_samples`, `num_failed`, `inflation`, `residuals` (the
        fit's log residuals, non-finite ones as `null`) and `samples` (one mapping
        of parameters per successful refit; the options are the fitted model's).
        [`BootstrapResult.from_dict`][] reads it back.

        **Example:** see [`BootstrapResult.from_dict`][].
        """
        params = {name: np.atleast_1d(np.asarray(v, dtype=np.float64))
                  for name, v in self.samples.parameters().items()}
        count = int(self.samples.shape[0]) if self.samples.shape else 1
        samples = [{name: float(v[i]) for name, v in params.items()} for i in range(count)]
        residuals = [float(e) if np.isfinite(e) else None
                     for e in np.asarray(self.residuals, dtype=np.float64).ravel()]
        return {"level": self.level, "num_samples": self.num_samples,
                "num_failed": self.num_failed, "inflation": self.inflation,
                "residuals": residuals, "samples": samples}

    @classmethod
    def from_dict(cls, model: AbstractLossModel, data: Mapping[str, Any],
                  source: str = "bootstrap") -> "BootstrapResult":
        r"""The bootstrap stored by [`BootstrapResult.to_dict`][] beside `model` (the fit).

        Each sample is `model` with that sample's parameters; `ValueError` names
        `source` and the key for anything missing, unknown or malformed.

        **Example:**

        >>> import numpy as np, nqs_engine as nqs
        >>> truth, lr = nqs.preset("pythia-owt2")
        >>> N = np.repeat([3e6, 1e7, 3e7], 4)
        >>> B = np.tile([32.0, 64, 128, 256], 3)
        >>> K = np.repeat([2000.0, 4000, 8000], 4)
        >>> runs = nqs.Runs.from_arrays(N, B, K, nqs.risk(truth, N, B, K, lr=lr).total)
        >>> fitted = nqs.fit(runs, starts=64, refine=2, max_steps=50)
        >>> boot = nqs.bootstrap(runs, fitted, num_samples=4, max_steps=10)
        >>> back = nqs.BootstrapResult.from_dict(fitted.model, boot.to_dict())
        >>> bool(np.allclose(back.predictions(runs), boot.predictions(runs)))
        True
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected an object, got {type(data).__name__}")
        known = ("level", "num_samples", "num_failed", "inflation", "residuals", "samples")
        for key in data:
            if key not in known:
                raise ValueError(f"{source}: unknown key {key!r}{suggest(key, known)}")
        for key in known:
            if key not in data:
                raise ValueError(f"{source}: missing key {key!r}")
        samples = data["samples"]
        if not isinstance(samples, list) or not samples:
            raise ValueError(f"{source}: 'samples' must be a non-empty list of parameter objects")
        base = model.to_dict()
        names = set(model.parameters())
        models = []
        for i, sample in enumerate(samples):
            where = f"{source}: samples[{i}]"
            if not isinstance(sample, Mapping) or set(sample) != names:
                raise ValueError(f"{where}: expected the parameters {', '.join(sorted(names))}")
            models.append(model_from_dict({**base, **sample}, where))
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *models)
        residuals = data["residuals"]
        if not isinstance(residuals, list) or not all(
                e is None or (isinstance(e, (int, float)) and not isinstance(e, bool))
                for e in residuals):
            raise ValueError(f"{source}: 'residuals' must be a list of numbers (or null)")
        level = data["level"]
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
            raise ValueError(f"{source}: 'level' must be in (0, 1), got {level!r}")
        inflation = data["inflation"]
        if isinstance(inflation, bool) or not isinstance(inflation, (int, float)) \
                or not inflation >= 1:
            raise ValueError(f"{source}: 'inflation' must be a number >= 1, got {inflation!r}")
        num = data["num_samples"]
        failed = data["num_failed"]
        if not (isinstance(num, int) and isinstance(failed, int) and num == len(samples) + failed):
            raise ValueError(f"{source}: 'num_samples' must be the samples plus 'num_failed'")
        return cls(
            samples=stacked,
            objectives=jnp.full((len(samples),), jnp.nan),
            ok=np.r_[np.ones(len(samples), bool), np.zeros(failed, bool)],
            num_failed=failed,
            level=float(level),
            num_samples=num,
            residuals=jnp.asarray([np.nan if e is None else e for e in residuals], float),
            wall_time=0.0,
            inflation=float(inflation),
        )


def _with_residuals(pred: np.ndarray, residuals: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """(S, n) predictions -> (S * draws, n), each times exp(a residual drawn at random)."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    e = residuals[np.isfinite(residuals)]
    if e.size == 0:
        raise ValueError("no finite residuals to form a prediction interval")
    e = e - np.median(e)
    rng = np.random.default_rng(seed)
    noise = rng.choice(e, size=(pred.shape[0], draws, pred.shape[1]))
    return (pred[:, None, :] * np.exp(noise)).reshape(-1, pred.shape[1])


def _warm_starts(space, result: FitResult, limit: int) -> np.ndarray:
    """The fit's optimum and up to `limit - 1` distinct other optima within 10% of it."""
    x = np.atleast_2d(space.to_flat(result.start_models))
    values = np.asarray(result.start_objectives, dtype=np.float64)
    finite = np.isfinite(values)
    x, values = x[finite], values[finite]
    rows = [x[0]]
    for i in range(1, x.shape[0]):
        if len(rows) >= limit or not values[i] <= 1.1 * values[0]:
            break
        if all(np.max(np.abs(x[i] - r)) > 1e-3 * (1 + np.max(np.abs(r))) for r in rows):
            rows.append(x[i])
    return np.array(rows)


def bootstrap(
    runs: Runs,
    result: FitResult,
    *,
    num_samples: int = 100,
    seed: int = 0,
    level: float = 0.95,
    max_steps: int | None = None,
    warm_starts: int | None = None,
    progress: Callable[[str, float, float], None] | None = None,
) -> BootstrapResult:
    r"""Nonparametric bootstrap over runs: refit `result`'s model on `num_samples` resamples.

    See the module docstring. The resamples use `result`'s model family, loss,
    $\delta$ and case weights; refits run L-BFGS for up to `max_steps` iterations
    (default: the model's `fit_defaults.bootstrap_steps`) from `warm_starts`
    distinct optima of the fit (default: the model's). Deterministic for a given
    `seed`. A resample whose refits all fail is dropped (counted in `num_failed`).

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
    started = time.perf_counter()
    if not isinstance(result, FitResult):
        raise TypeError(f"result must be a FitResult, got {type(result).__name__}")
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be an integer >= 1, got {num_samples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if result.residuals.shape[0] != runs.size:
        raise ValueError(
            f"result was fitted to {result.residuals.shape[0]} rows but runs has {runs.size}"
        )
    y = runs.needs_loss()
    model = result.model
    defaults = model.fit_defaults
    max_steps = defaults.bootstrap_steps if max_steps is None else int(max_steps)
    limit = defaults.warm_starts if warm_starts is None else int(warm_starts)
    if limit < 1:
        raise ValueError(f"warm_starts must be >= 1, got {limit}")
    report = progress or (lambda stage, done, total: None)
    base = np.ones(runs.size) if result.weights is None else np.asarray(result.weights)
    space = model.fit_space(runs, base)
    dtype = jnp.asarray(runs.N).dtype
    data = Objective(space=space, prepared=model.prepare(runs, search=True),
                     log_y=jnp.log(y.astype(dtype)), weights=jnp.asarray(base, dtype),
                     delta=jnp.asarray(result.delta, dtype), loss=result.loss)
    warm = _warm_starts(space, result, limit)
    k = warm.shape[0]
    W = bootstrap_weights(np.asarray(runs.run), int(num_samples), seed) * base
    x0 = jnp.asarray(np.tile(warm, (int(num_samples), 1)), dtype)  # row s * k + j
    per = jnp.asarray(np.repeat(W, k, axis=0), dtype)
    if defaults.method == "lm":
        out = least_squares(residual_vector, x0, data, per_start=per, max_steps=max_steps,
                            jacobian=defaults.jacobian,
                            progress=lambda d, t, v: report("bootstrap", d, t))
    else:
        out = minimize(objective, x0, data, per_start=per, method="lbfgs", max_steps=max_steps,
                       progress=lambda d, t, v: report("bootstrap", d, t))
    values = np.asarray(out.value).reshape(int(num_samples), k)
    good = (~np.asarray(out.failed) & np.isfinite(np.asarray(out.value))).reshape(-1, k)
    choice = np.argmin(np.where(good, values, np.inf), axis=1)
    ok = good.any(axis=1)
    rows = (np.arange(int(num_samples)) * k + choice)[ok]
    samples = eqx.filter_vmap(space.to_model)(out.x[rows])
    return BootstrapResult(
        samples=samples,
        objectives=jnp.asarray(values[np.arange(int(num_samples)), choice][ok]),
        ok=ok,
        num_failed=int(np.sum(~ok)),
        level=float(level),
        num_samples=int(num_samples),
        residuals=result.residuals,
        wall_time=time.perf_counter() - started,
        inflation=_inflation(np.asarray(result.residuals), int(x0.shape[1])),
    )


def _inflation(residuals: np.ndarray, k: int) -> float:
    """sqrt(n / (n - k)) for n finite residuals and k fitted coordinates (1 if n <= k)."""
    n = int(np.isfinite(residuals).sum())
    return float(np.sqrt(n / (n - k))) if n > k else 1.0


__all__ = ["BootstrapResult", "bootstrap"]
