r"""The Chinchilla baseline: $L(N, D) = E + A/N^\alpha + B/D^\beta$ (Hoffmann et al. 2022).

Approach 3 of Hoffmann et al. fits the five parameters by minimising a Huber
loss ($\delta = 10^{-3}$) between the predicted and the measured log loss, the
prediction written as a log-sum-exp of the three terms so that it is accurate
over many orders of magnitude of $N$ and $D$, with L-BFGS from a grid of
starting points (SPEC section 4). Here every start runs in one batched
[`nqs_engine._optimize.minimize`][] call, and a nonparametric bootstrap refits
all resamples together.

The model has no batch-size term; it is the baseline the NQS is compared with.

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

import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import FloatArray, RealLike
from ._optimize import bootstrap_weights, huber_loss, minimize, percentile_interval

#: Names of the five Chinchilla parameters, in the order of [`ChinchillaParams`][].
CHINCHILLA_PARAM_NAMES = ("E", "A", "B", "alpha", "beta")

#: The loss functions [`fit_chinchilla`][] accepts for the log-space residuals.
CHINCHILLA_OBJECTIVES = ("huber", "mse")

# The grid of starting points of Hoffmann et al. as replicated by Epoch AI,
# in the fitted coordinates x = (a, b, e, alpha, beta) = (log A, log B, log E, alpha, beta).
_GRID_A = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
_GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
_GRID_EXPONENT = (0.0, 0.5, 1.0, 1.5, 2.0)

#: How many starts [`fit_chinchilla`][] optimises by default: the ones with the
#: lowest objective before optimisation, among the 5400 grid points.
DEFAULT_SCREEN = 32


#: Named Chinchilla parameter sets (see [`chinchilla_preset`][]).
CHINCHILLA_PRESETS: dict[str, dict[str, float]] = {
    # Hoffmann et al. (2022), approach 3, as published.
    "hoffmann": {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28},
    # Epoch AI's refit of the points extracted from Hoffmann et al.'s figure.
    "epoch": {"E": 1.8169, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658},
    # fit_chinchilla (Huber, default starts) on the 64 unfiltered training runs of
    # the Pythia / OpenWebText2 ladder, D = B K 128 tokens (benchmarks/bench_fit.py):
    # the baseline beside the NQS preset "pythia-owt2".
    "pythia-owt2": {"E": 2.186196, "A": 245.8121, "B": 451.3163, "alpha": 0.403985,
                    "beta": 0.352975},
}


class ChinchillaParams(eqx.Module):
    r"""The parameters $(E, A, B, \alpha, \beta)$ of the Chinchilla loss model.

    $$L(N, D) = E + \frac{A}{N^\alpha} + \frac{B}{D^\beta},$$

    with $N$ the parameter count and $D$ the number of training tokens; $E$ is
    the irreducible loss. The model is meant for $E, A, B > 0$ and
    $\alpha, \beta > 0$. Every field is an array leaf, so a batch of parameter
    sets (a bootstrap, say) is one `ChinchillaParams` whose leaves carry a
    leading batch shape; `jax.vmap` and `jax.grad` reach every field.

    **Arguments:** `E, A, B, alpha, beta`, each a real number or array.

    **Example:** the values published by Hoffmann et al. (2022).

    >>> import nqs_engine._chinchilla as ch
    >>> theta = ch.ChinchillaParams(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    >>> theta.shape, round(float(theta.A), 1)
    ((), 406.4)
    >>> sorted(theta.to_dict())
    ['A', 'B', 'E', 'alpha', 'beta']
    """

    E: FloatArray = eqx.field(converter=jnp.asarray)
    A: FloatArray = eqx.field(converter=jnp.asarray)
    B: FloatArray = eqx.field(converter=jnp.asarray)
    alpha: FloatArray = eqx.field(converter=jnp.asarray)
    beta: FloatArray = eqx.field(converter=jnp.asarray)

    def __check_init__(self):
        shapes = []
        for name in CHINCHILLA_PARAM_NAMES:
            value = getattr(self, name)
            if not (
                jnp.issubdtype(value.dtype, jnp.floating)
                or jnp.issubdtype(value.dtype, jnp.integer)
            ):
                raise ValueError(
                    f"ChinchillaParams.{name} must be real-valued, got dtype {value.dtype}"
                )
            shapes.append(value.shape)
        try:
            np.broadcast_shapes(*shapes)
        except ValueError:
            desc = ", ".join(f"{n}{s}" for n, s in zip(CHINCHILLA_PARAM_NAMES, shapes))
            raise ValueError(
                f"ChinchillaParams fields must broadcast against each other; got shapes {desc}"
            ) from None

    @property
    def shape(self) -> tuple[int, ...]:
        """The broadcast batch shape of the five fields (`()` for one parameter set)."""
        return np.broadcast_shapes(*(getattr(self, n).shape for n in CHINCHILLA_PARAM_NAMES))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict of Python floats (scalar) or nested lists (batched).

        **Example:**

        >>> import nqs_engine._chinchilla as ch
        >>> ch.ChinchillaParams(1.69, 406.4, 410.7, 0.34, 0.28).to_dict()["E"]
        1.69
        """
        return {n: np.asarray(getattr(self, n)).tolist() for n in CHINCHILLA_PARAM_NAMES}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "ChinchillaParams":
        """Build from a mapping holding the five keys `E, A, B, alpha, beta`.

        Extra keys are ignored; a missing or non-numeric key raises `ValueError`
        naming it.

        **Example:**

        >>> import nqs_engine._chinchilla as ch
        >>> d = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, note="Hoffmann")
        >>> float(ch.ChinchillaParams.from_dict(d).alpha)
        0.34
        """
        missing = [n for n in CHINCHILLA_PARAM_NAMES if n not in values]
        if missing:
            raise ValueError(
                f"missing Chinchilla parameter(s) {', '.join(missing)}; "
                f"expected all of {', '.join(CHINCHILLA_PARAM_NAMES)}"
            )
        kwargs = {}
        for name in CHINCHILLA_PARAM_NAMES:
            value = values[name]
            if isinstance(value, bool) or value is None:
                raise ValueError(f"Chinchilla parameter {name!r} must be a number, got {value!r}")
            try:
                kwargs[name] = np.asarray(value, dtype=float)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Chinchilla parameter {name!r} must be a number, got {value!r}"
                ) from None
        return cls(**kwargs)


# ---------------------------------------------------------------------------
# The model.
# ---------------------------------------------------------------------------


def chinchilla_preset(name: str) -> "ChinchillaParams":
    r"""The named Chinchilla parameters $(E, A, B, \alpha, \beta)$.

    Presets: `"hoffmann"` (Hoffmann et al. 2022, as published), `"epoch"`
    (Epoch AI's refit of the points extracted from Hoffmann et al.'s figure) and
    `"pythia-owt2"` (fitted here to the 64 training runs of the Pythia /
    OpenWebText2 ladder, $D = B K \cdot 128$ tokens; the baseline that goes with
    the NQS preset of the same name).

    **Example:**

    >>> import nqs_engine as nqs
    >>> ch = nqs.chinchilla_preset("hoffmann")
    >>> round(float(nqs.chinchilla_loss(ch, 70e9, 1.4e12)), 3)
    1.937
    """
    if name not in CHINCHILLA_PRESETS:
        raise ValueError(f"unknown Chinchilla preset {name!r}; available: "
                         f"{', '.join(sorted(CHINCHILLA_PRESETS))}")
    return ChinchillaParams(**CHINCHILLA_PRESETS[name])


def _log_loss(x: FloatArray, log_n: FloatArray, log_d: FloatArray) -> FloatArray:
    """log L for x = (a, b, e, alpha, beta) (leading axis), as a log-sum-exp."""
    a, b, e, alpha, beta = x[0], x[1], x[2], x[3], x[4]
    terms = jnp.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e)
    return jax.nn.logsumexp(jnp.stack(terms), axis=0)


def _to_x(params: ChinchillaParams) -> FloatArray:
    """(5, *shape) unconstrained coordinates (log A, log B, log E, alpha, beta)."""
    p = params
    return jnp.stack(
        jnp.broadcast_arrays(jnp.log(p.A), jnp.log(p.B), jnp.log(p.E), p.alpha, p.beta)
    )


def _from_x(x: FloatArray) -> ChinchillaParams:
    """Inverse of `_to_x`; the coordinates on the last axis of `x`."""
    x = jnp.moveaxis(jnp.asarray(x), -1, 0)
    return ChinchillaParams(
        E=jnp.exp(x[2]), A=jnp.exp(x[0]), B=jnp.exp(x[1]), alpha=x[3], beta=x[4]
    )


def _centre(x: np.ndarray, m_n: float, m_d: float) -> np.ndarray:
    """(a, b, e, alpha, beta) -> (a - alpha m_n, b - beta m_d, e, alpha, beta), on the last axis."""
    z = np.array(x, dtype=np.float64)
    z[..., 0] -= z[..., 3] * m_n
    z[..., 1] -= z[..., 4] * m_d
    return z


def _uncentre(z: np.ndarray, m_n: float, m_d: float) -> np.ndarray:
    """Inverse of `_centre`."""
    x = np.array(z, dtype=np.float64)
    x[..., 0] += x[..., 3] * m_n
    x[..., 1] += x[..., 4] * m_d
    return x


def chinchilla_loss(params: ChinchillaParams, N: RealLike, D: RealLike) -> FloatArray:
    r"""The Chinchilla prediction $L(N, D) = E + A/N^\alpha + B/D^\beta$.

    Evaluated as $\exp \operatorname{LSE}(a - \alpha \log N,\ b - \beta \log D,\ e)$
    with $A = e^a$, $B = e^b$, $E = e^e$, which is accurate whatever the size of
    each term. `N`, `D` and the fields of `params` broadcast against each other
    (give a batch of parameters trailing unit axes to evaluate it on a grid).
    Works under `jit`, `vmap` and `grad` (with respect to the parameters and to
    `N`, `D`). Under `jit` too, `eqx.error_if` rejects $N \le 0$, $D \le 0$ and
    negative (or NaN) $E, A, B$.

    **Arguments:**

    - `params`: a [`ChinchillaParams`][].
    - `N`: parameter count(s); `D`: training tokens.

    **Returns:** the predicted loss, of the broadcast shape.

    **Example:** Chinchilla itself (70B parameters, 1.4T tokens) under the
    published fit.

    >>> import nqs_engine._chinchilla as ch
    >>> theta = ch.ChinchillaParams(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    >>> round(float(ch.chinchilla_loss(theta, 70e9, 1.4e12)), 3)
    1.937
    """
    N = jnp.asarray(N)
    D = jnp.asarray(D)
    N = eqx.error_if(N, N <= 0, "chinchilla_loss: N must be > 0")
    D = eqx.error_if(D, D <= 0, "chinchilla_loss: D must be > 0")
    x = _to_x(params)
    x = eqx.error_if(
        x, jnp.isnan(x[:3]).any(axis=0), "chinchilla_loss: E, A and B must be >= 0"
    )
    return jnp.exp(_log_loss(x, jnp.log(N), jnp.log(D)))


def chinchilla_compute_optimal(
    params: ChinchillaParams, C: RealLike
) -> tuple[FloatArray, FloatArray]:
    r"""The loss-minimising allocation $(N_{opt}, D_{opt})$ of a compute budget $C = 6ND$.

    Minimising $A N^{-\alpha} + B D^{-\beta}$ subject to $ND = C/6$ gives

    $$N_{opt}(C) = G \left(\frac{C}{6}\right)^{\beta/(\alpha+\beta)},\qquad
    G = \left(\frac{\alpha A}{\beta B}\right)^{1/(\alpha+\beta)},\qquad
    D_{opt}(C) = \frac{C/6}{N_{opt}(C)},$$

    evaluated in log space. `C` and the fields of `params` broadcast against
    each other; works under `jit`, `vmap` and `grad`.

    **Arguments:** `params`, a [`ChinchillaParams`][] with $\alpha, \beta > 0$;
    `C`, compute in FLOPs.

    **Returns:** `(N_opt, D_opt)`.

    **Example:** the Gopher budget (5.76e23 FLOPs) under the published fit.

    >>> import nqs_engine._chinchilla as ch
    >>> theta = ch.ChinchillaParams(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    >>> N, D = ch.chinchilla_compute_optimal(theta, 5.76e23)
    >>> round(float(N) / 1e9), round(float(D) / 1e12, 1)   # billions, trillions
    (32, 3.0)
    """
    C = jnp.asarray(C)
    A, B, alpha, beta = params.A, params.B, params.alpha, params.beta
    log_c6 = jnp.log(C / 6)
    log_g = (jnp.log(alpha * A) - jnp.log(beta * B)) / (alpha + beta)
    log_n = log_g + beta / (alpha + beta) * log_c6
    return jnp.exp(log_n), jnp.exp(log_c6 - log_n)


# ---------------------------------------------------------------------------
# Fitting.
# ---------------------------------------------------------------------------


# The objectives are module-level functions so that `minimize` reuses its
# compiled program across calls (a new function object would recompile).
def _huber_objective(x: FloatArray, data: dict) -> FloatArray:
    r = _log_loss(x, data["log_n"], data["log_d"]) - data["log_y"]
    return jnp.sum(data["w"] * huber_loss(r, data["delta"]))


def _mse_objective(x: FloatArray, data: dict) -> FloatArray:
    r = _log_loss(x, data["log_n"], data["log_d"]) - data["log_y"]
    return jnp.sum(data["w"] * 0.5 * r**2)


# Bootstrap versions: x = (a, b, e, alpha, beta, k) carries the index k of its
# resample, which selects a row of the weight matrix `data["W"]`. k only enters
# through an integer cast, so its gradient is exactly zero and L-BFGS never
# moves it: each start keeps its own weights while all resamples share one
# `minimize` call.
def _resample_weights(x: FloatArray, data: dict) -> FloatArray:
    k = jax.lax.stop_gradient(x[5]).astype(jnp.int32)
    return data["W"][k]


def _huber_objective_resampled(x: FloatArray, data: dict) -> FloatArray:
    r = _log_loss(x[:5], data["log_n"], data["log_d"]) - data["log_y"]
    return jnp.sum(_resample_weights(x, data) * huber_loss(r, data["delta"]))


def _mse_objective_resampled(x: FloatArray, data: dict) -> FloatArray:
    r = _log_loss(x[:5], data["log_n"], data["log_d"]) - data["log_y"]
    return jnp.sum(_resample_weights(x, data) * 0.5 * r**2)


_OBJECTIVES = {"huber": _huber_objective, "mse": _mse_objective}
_OBJECTIVES_RESAMPLED = {"huber": _huber_objective_resampled, "mse": _mse_objective_resampled}


def default_starts() -> np.ndarray:
    r"""The grid of starting points of Hoffmann et al. (as replicated by Epoch AI).

    All $6 \times 6 \times 6 \times 5 \times 5 = 5400$ combinations of
    $a, b \in \{0, 5, \ldots, 25\}$, $e \in \{-1, -0.5, \ldots, 1.5\}$ and
    $\alpha, \beta \in \{0, 0.5, \ldots, 2\}$, as rows $(a, b, e, \alpha, \beta)$
    with $A = e^a$, $B = e^b$, $E = e^e$.

    **Example:**

    >>> import nqs_engine._chinchilla as ch
    >>> grid = ch.default_starts()
    >>> grid.shape, grid[0].tolist()
    ((5400, 5), [0.0, 0.0, -1.0, 0.0, 0.0])
    """
    rows = itertools.product(_GRID_A, _GRID_A, _GRID_E, _GRID_EXPONENT, _GRID_EXPONENT)
    return np.array(list(rows), dtype=np.float64)


def _check_vector(name: str, values: Any, n: int | None) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D array of real numbers") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but N has {n}; they must match")
    return arr


def _first_bad(name: str, values: np.ndarray, bad: np.ndarray, requirement: str) -> None:
    if np.any(bad):
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] = {values[i]:g} {requirement}")


def _validate(N, D, loss, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Eager checks of the data; returns float64 NumPy copies (weights filled in)."""
    N = _check_vector("N", N, None)
    n = N.shape[0]
    D = _check_vector("D", D, n)
    loss = _check_vector("loss", loss, n)
    for name, values in (("N", N), ("D", D)):
        _first_bad(name, values, ~np.isfinite(values) | ~(values >= 1), "must be finite and >= 1")
    _first_bad("loss", loss, ~np.isfinite(loss) | ~(loss > 0), "must be finite and > 0")
    if weights is None:
        w = np.ones(n)
    else:
        w = _check_vector("weights", weights, n)
        _first_bad("weights", w, ~np.isfinite(w) | ~(w >= 0), "must be finite and >= 0")
        if not np.sum(w) > 0:
            raise ValueError("weights must have a positive sum")
    used = w > 0
    if np.sum(used) < 5:
        raise ValueError(
            f"need at least 5 data points (with positive weight) to fit the 5 Chinchilla "
            f"parameters, got {int(np.sum(used))}"
        )
    for name, values, what in (("N", N, "model sizes"), ("D", D, "token counts")):
        distinct = np.unique(values[used]).size
        if distinct < 3:
            raise ValueError(
                f"degenerate design: {name} takes only {distinct} distinct value(s) among the "
                f"points used; E + A/N^alpha + B/D^beta needs at least 3 distinct {what} "
                "to identify its parameters"
            )
    return N, D, loss, w


def _check_objective(objective: str, delta: float) -> float:
    if objective not in CHINCHILLA_OBJECTIVES:
        raise ValueError(
            f"objective must be one of {', '.join(CHINCHILLA_OBJECTIVES)}, got {objective!r}"
        )
    delta = float(delta)
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be finite and > 0, got {delta:g}")
    return delta


def _starts_array(starts: Any) -> np.ndarray:
    if starts is None:
        return default_starts()
    if isinstance(starts, ChinchillaParams):
        x = np.moveaxis(np.asarray(_to_x(starts), dtype=np.float64), 0, -1).reshape(-1, 5)
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
    return x


class ChinchillaFit(eqx.Module):
    r"""The outcome of [`fit_chinchilla`][].

    **Fields:**

    - `params`: the best [`ChinchillaParams`][] found.
    - `objective`: $\sum_i w_i \rho(\log \hat L_i - \log L_i)$ there ($\rho$ the
      Huber or half-squared loss).
    - `residuals`: `(n,)` $\log L_i - \log \hat L_i$ at the best fit.
    - `converged`: whether the best start met the optimiser's tolerance.
    - `num_converged`: how many of the optimised starts did.
    - `num_starts`: how many starts were optimised.
    - `start_values`: `(num_starts,)` the objective each start ended at.
    - `start_params`: the end points of all optimised starts, a
      [`ChinchillaParams`][] batched over starts (the local minima found).
    - `wall_time`: seconds, compilation included.
    - `loss`: `"huber"` or `"mse"`; `delta`: the Huber threshold.
    """

    params: ChinchillaParams
    objective: float
    residuals: FloatArray
    converged: bool
    num_converged: int
    num_starts: int
    start_values: FloatArray
    start_params: ChinchillaParams
    wall_time: float
    loss: str = eqx.field(static=True)
    delta: float


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
) -> ChinchillaFit:
    r"""Fit $L = E + A/N^\alpha + B/D^\beta$ to measured losses (Hoffmann et al., approach 3).

    With $x = (a, b, e, \alpha, \beta)$, $A = e^a$, $B = e^b$, $E = e^e$ and
    $\log \hat L_i = \operatorname{LSE}(a - \alpha \log N_i,\ b - \beta \log D_i,\ e)$,
    minimise

    $$f(x) = \sum_i w_i\, \rho\big(\log \hat L_i - \log L_i\big),\qquad
    \rho = \operatorname{Huber}_\delta \text{ (default) or } \rho(r) = r^2/2,$$

    with $\operatorname{Huber}_\delta(r) = r^2/2$ for $|r| \le \delta$ and
    $\delta(|r| - \delta/2)$ beyond, by L-BFGS from many starts at once
    ([`nqs_engine._optimize.minimize`][]), run to a tight tolerance; the start
    with the lowest $f$ wins (ties go to the earliest start).

    **Starts.** By default the 5400-point grid of Hoffmann et al.
    ([`default_starts`][]). L-BFGS under `vmap` costs about as much per start
    as its slowest line search, so optimising all 5400 takes minutes; instead
    every start is first *screened* by its objective value (one vectorised
    evaluation) and the `screen` best are optimised (32 by default). On the
    Epoch AI data more than 20 of these 32 reach the best minimum, and SciPy's
    L-BFGS-B run from all 5400 finds no better one. `screen=None` optimises
    every start. The optimiser works in the centred coordinates
    $(a - \alpha \overline{\log N},\ b - \beta \overline{\log D},\ e, \alpha, \beta)$:
    the same objective, but far better conditioned ($\log N \approx 20$ otherwise
    ties $a$ to $\alpha$), which float32 in particular needs. On a 2-core CPU a
    fit to the 245 Epoch AI points takes about 10 s, nearly all of it
    compilation; a second fit of data of the same size, under 1 s.

    **Arguments:**

    - `N`, `D`, `loss`: 1-D arrays of equal length $n \ge 5$: parameter counts
      and tokens (finite, $\ge 1$) and the measured losses ($> 0$). At least 3
      distinct values of $N$ and of $D$ are needed to identify the model.
    - `weights`: optional per-point weights $w_i \ge 0$ with a positive sum
      (default 1); points of weight 0 are ignored.
    - `objective`: `"huber"` or `"mse"`; `delta`: the Huber threshold.
    - `starts`: a batched [`ChinchillaParams`][], or an `(M, 5)` array of rows
      $(a, b, e, \alpha, \beta)$; default the grid above.
    - `screen`: how many of the starts with the lowest initial objective to
      optimise (`None`: all).
    - `max_steps`, `progress`: passed to `minimize`.

    **Returns:** a [`ChinchillaFit`][].

    Precision follows JAX's setting (float64 when `jax_enable_x64` is on; the
    fit is reliable in float64, approximate in float32). Deterministic: the same
    inputs give the same result.

    **Example:** noiseless losses of a 5 x 5 grid of model sizes and token
    counts, generated from Hoffmann et al.'s published values.

    >>> import numpy as np
    >>> import nqs_engine._chinchilla as ch
    >>> true = ch.ChinchillaParams(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    >>> N = np.repeat(np.geomspace(1e8, 1e10, 5), 5)
    >>> D = np.tile(np.geomspace(2e9, 2e11, 5), 5)
    >>> L = np.asarray(ch.chinchilla_loss(true, N, D))
    >>> fit = ch.fit_chinchilla(N, D, L)
    >>> [round(float(v), 2) for v in (fit.params.E, fit.params.alpha, fit.params.beta)]
    [1.69, 0.34, 0.28]
    >>> bool(abs(fit.params.A / 406.4 - 1) < 0.01), bool(abs(fit.residuals).max() < 1e-4)
    (True, True)
    """
    started = time.perf_counter()
    delta = _check_objective(objective, delta)
    N, D, loss_values, w = _validate(N, D, loss, weights)
    x0 = _starts_array(starts)
    if screen is not None and screen < 1:
        raise ValueError(f"screen must be >= 1 or None, got {screen}")
    fun = _OBJECTIVES[objective]
    data, m_n, m_d = _data(N, D, loss_values, delta, w=w)
    dtype = data["log_n"].dtype
    z0 = jnp.asarray(_centre(x0, m_n, m_d), dtype=dtype)
    if screen is not None and z0.shape[0] > screen:
        initial = np.asarray(_screen(fun, z0, data))
        initial = np.where(np.isfinite(initial), initial, np.inf)
        z0 = z0[np.argsort(initial, kind="stable")[:screen]]
    out = minimize(fun, z0, data, method="lbfgs", max_steps=max_steps, progress=progress)
    values = np.asarray(out.value)
    best = int(np.argmin(np.where(np.isfinite(values), values, np.inf)))
    residuals = data["log_y"] - _log_loss(out.x[best], data["log_n"], data["log_d"])
    x_end = jnp.asarray(_uncentre(np.asarray(out.x), m_n, m_d), dtype=dtype)
    return ChinchillaFit(
        params=_from_x(x_end[best]),
        objective=float(values[best]),
        residuals=residuals,
        converged=bool(out.converged[best]),
        num_converged=int(jnp.sum(out.converged)),
        num_starts=int(z0.shape[0]),
        start_values=out.value,
        start_params=_from_x(x_end),
        wall_time=time.perf_counter() - started,
        loss=objective,
        delta=delta,
    )


def _data(N, D, loss, delta, **extra) -> tuple[dict, float, float]:
    """The objective's data, with log N and log D centred (returns the centres too).

    Centring replaces the coordinates (a, alpha) by (a - alpha m_N, alpha), with
    m_N the mean of log N (likewise for b, beta): the same objective, but its
    Hessian is far better conditioned (log N ~ 20 otherwise couples a and alpha
    tightly), which L-BFGS, float32 above all, needs.
    """
    log_n, log_d = np.log(N), np.log(D)
    m_n, m_d = float(np.mean(log_n)), float(np.mean(log_d))
    data = dict(
        log_n=jnp.asarray(log_n - m_n),
        log_d=jnp.asarray(log_d - m_d),
        log_y=jnp.asarray(np.log(loss)),
        delta=jnp.asarray(delta),
        **{k: jnp.asarray(v) for k, v in extra.items()},
    )
    return data, m_n, m_d


@eqx.filter_jit
def _screen(fun, x0, data):
    return jax.vmap(fun, in_axes=(0, None))(x0, data)


# ---------------------------------------------------------------------------
# Bootstrap.
# ---------------------------------------------------------------------------


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

        **Example:** see [`bootstrap_chinchilla`][].
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
    fit: ChinchillaFit | None = None,
    max_steps: int = 1000,
) -> ChinchillaBootstrap:
    r"""Nonparametric bootstrap of the Chinchilla fit: all resamples refitted at once.

    Resample $s$ draws the $G$ groups of `groups` (each point its own group by
    default) with replacement, which gives case weights
    $w^{(s)}_i$ ([`nqs_engine._optimize.bootstrap_weights`][]); its estimate
    minimises $\sum_i w^{(s)}_i \rho(\log \hat L_i - \log L_i)$, the objective of
    [`fit_chinchilla`][]. Every resample is warm-started from the full-data fit
    and, in the same batched L-BFGS call, from the best other local minimum that
    fit found (when its objective is within 10% of the best); the better end
    point wins. Intervals are equal-tailed percentiles at `level`
    ([`nqs_engine._optimize.percentile_interval`][]).

    **Arguments:**

    - `N`, `D`, `loss`: as in [`fit_chinchilla`][].
    - `num_samples`: resamples; `seed`: seed of the resampling.
    - `groups`: optional labels, one per point, resampled as whole groups
      (e.g. the isoFLOP curve a point belongs to).
    - `weights`: optional fixed per-point weights, as in [`fit_chinchilla`][];
      they multiply the resampling weights (a point of weight 0 stays out).
    - `level`: the interval's coverage, in (0, 1).
    - `objective`, `delta`: as in [`fit_chinchilla`][].
    - `fit`: the full-data fit, if already computed (with the same data,
      `weights`, `objective` and `delta`); fitted here otherwise.
    - `max_steps`: L-BFGS iterations per refit.

    **Returns:** a [`ChinchillaBootstrap`][].

    **Example:**

    >>> import numpy as np
    >>> import nqs_engine._chinchilla as ch
    >>> true = ch.ChinchillaParams(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
    >>> N = np.repeat(np.geomspace(1e8, 1e10, 5), 5)
    >>> D = np.tile(np.geomspace(2e9, 2e11, 5), 5)
    >>> noise = np.exp(0.01 * np.random.default_rng(0).standard_normal(25))
    >>> L = np.asarray(ch.chinchilla_loss(true, N, D)) * noise
    >>> boot = ch.bootstrap_chinchilla(N, D, L, num_samples=100, level=0.8)
    >>> lo, hi = boot.intervals["alpha"]
    >>> bool(lo < 0.34 < hi), boot.samples.shape
    (True, (100,))
    >>> lo, hi = boot.predict_interval(1e10, 2e11)
    >>> bool(lo < hi)
    True
    """
    started = time.perf_counter()
    delta = _check_objective(objective, delta)
    N, D, loss_values, w = _validate(N, D, loss, weights)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = N.shape[0]
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ValueError(
                f"groups must have one label per point ({n}), got shape {groups.shape}"
            )
    if fit is None:
        fit = fit_chinchilla(N, D, loss_values, weights=w, objective=objective, delta=delta)
    elif fit.loss != objective or fit.delta != delta:
        raise ValueError(
            f"fit used objective={fit.loss!r}, delta={fit.delta:g} but the bootstrap asks for "
            f"objective={objective!r}, delta={delta:g}; pass a matching fit or none"
        )
    W = bootstrap_weights(np.arange(n) if groups is None else groups, num_samples, seed) * w
    data, m_n, m_d = _data(N, D, loss_values, delta, W=W)
    dtype = data["log_n"].dtype
    warm = _centre(_warm_starts(fit), m_n, m_d)  # (k, 5)
    k = warm.shape[0]
    # Rows: resample s, start j -> (x_j, s); resample-major so that row s*k + j.
    index = np.repeat(np.arange(num_samples, dtype=np.float64), k)
    x0 = np.concatenate([np.tile(warm, (num_samples, 1)), index[:, None]], axis=1)
    fun = _OBJECTIVES_RESAMPLED[objective]
    out = minimize(fun, jnp.asarray(x0, dtype=dtype), data, method="lbfgs", max_steps=max_steps)
    values = np.asarray(out.value).reshape(num_samples, k)
    ok = (np.asarray(out.converged) & np.isfinite(np.asarray(out.value))).reshape(num_samples, k)
    # The better converged end point of each resample (the first on ties).
    ranked = np.where(ok, values, np.inf)
    choice = np.argmin(ranked, axis=1)
    x_end = _uncentre(np.asarray(out.x[:, :5]), m_n, m_d).reshape(num_samples, k, 5)
    x_best = x_end[np.arange(num_samples), choice]
    failed = ~np.any(ok, axis=1)
    x_best[failed] = np.nan
    samples = _from_x(jnp.asarray(x_best, dtype=dtype))
    intervals = {}
    for name in CHINCHILLA_PARAM_NAMES:
        lo, hi = percentile_interval(np.asarray(getattr(samples, name)), level)
        intervals[name] = (float(lo), float(hi))
    return ChinchillaBootstrap(
        samples=samples,
        intervals=intervals,
        failed=int(np.sum(failed)),
        num_samples=int(num_samples),
        level=float(level),
        wall_time=time.perf_counter() - started,
    )


def _warm_starts(fit: ChinchillaFit) -> np.ndarray:
    """The full-data optimum and, if close in objective, the best distinct other local minimum."""
    x = np.moveaxis(np.asarray(_to_x(fit.start_params), dtype=np.float64), 0, -1).reshape(-1, 5)
    values = np.asarray(fit.start_values, dtype=np.float64)
    order = np.argsort(np.where(np.isfinite(values), values, np.inf), kind="stable")
    best = x[order[0]]
    rows = [best]
    for i in order[1:]:
        if not values[i] <= 1.1 * values[order[0]]:
            break
        if np.max(np.abs(x[i] - best)) > 1e-3 * (1 + np.max(np.abs(best))):
            rows.append(x[i])
            break
    return np.array(rows)
