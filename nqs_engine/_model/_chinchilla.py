r"""The Chinchilla baseline: $L(N, D) = E + A/N^\alpha + B/D^\beta$ (Hoffmann et al. 2022).

Approach 3 of Hoffmann et al. fits the five parameters by minimising a Huber
loss ($\delta = 10^{-3}$) between the predicted and the measured log loss, the
prediction written as a log-sum-exp of the three terms so that it is accurate
over many orders of magnitude of $N$ and $D$, with L-BFGS from a grid of
starting points (SPEC section 4). This module holds what is Chinchilla's own:
its parameters and presets, its loss, its grid of starting points (the
[`Chinchilla`][] model's fit space) and its compute-optimal allocation; the
fit and the bootstrap are the package's one [`nqs_engine.fit`][] and
[`nqs_engine.bootstrap`][], which serve every loss model.

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
from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._breakdown import AbstractBreakdown
from .._custom_types import FloatArray, RealLike
from .._misc import suggest
from .._runs import Runs
from ._base import AbstractFitSpace, AbstractLossModel, FitDefaults, read_values

#: Names of the five Chinchilla parameters, in the order of [`ChinchillaParams`][].
CHINCHILLA_PARAM_NAMES = ("E", "A", "B", "alpha", "beta")


# The grid of starting points of Hoffmann et al. as replicated by Epoch AI,
# in the fitted coordinates x = (a, b, e, alpha, beta) = (log A, log B, log E, alpha, beta).
_GRID_A = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
_GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)
_GRID_EXPONENT = (0.0, 0.5, 1.0, 1.5, 2.0)

#: How many starts a Chinchilla fit optimises by default: the ones with the
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

    >>> import nqs_engine._model._chinchilla as ch
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

        >>> import nqs_engine._model._chinchilla as ch
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

        >>> import nqs_engine._model._chinchilla as ch
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
        raise ValueError(f"unknown Chinchilla preset {name!r}{suggest(name, CHINCHILLA_PRESETS)}; "
                         "available: "
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

    >>> import nqs_engine._model._chinchilla as ch
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

    >>> import nqs_engine._model._chinchilla as ch
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


def default_starts() -> np.ndarray:
    r"""The grid of starting points of Hoffmann et al. (as replicated by Epoch AI).

    All $6 \times 6 \times 6 \times 5 \times 5 = 5400$ combinations of
    $a, b \in \{0, 5, \ldots, 25\}$, $e \in \{-1, -0.5, \ldots, 1.5\}$ and
    $\alpha, \beta \in \{0, 0.5, \ldots, 2\}$, as rows $(a, b, e, \alpha, \beta)$
    with $A = e^a$, $B = e^b$, $E = e^e$.

    **Example:**

    >>> import nqs_engine._model._chinchilla as ch
    >>> grid = ch.default_starts()
    >>> grid.shape, grid[0].tolist()
    ((5400, 5), [0.0, 0.0, -1.0, 0.0, 0.0])
    """
    rows = itertools.product(_GRID_A, _GRID_A, _GRID_E, _GRID_EXPONENT, _GRID_EXPONENT)
    return np.array(list(rows), dtype=np.float64)


# ---------------------------------------------------------------------------
# The loss model
# ---------------------------------------------------------------------------


class ChinchillaBreakdown(AbstractBreakdown):
    r"""Chinchilla's loss and its three terms: `E`, `param_term` $= A/N^\alpha$ and
    `data_term` $= B/D^\beta$; `total` their sum."""

    E: FloatArray
    param_term: FloatArray
    data_term: FloatArray
    total: FloatArray
    TERMS: ClassVar[tuple[str, ...]] = ("E", "param_term", "data_term")


class ChinchillaData(eqx.Module):
    """Runs laid out for Chinchilla: log N and log D."""

    log_n: FloatArray
    log_d: FloatArray


class Chinchilla(AbstractLossModel):
    r"""Chinchilla's law $L(N, D) = E + A/N^\alpha + B/D^\beta$ as a loss model.

    $D$ is the tokens a run has seen, $B K \ell$ for $K$ steps of $B$ sequences of
    `seq_len` $= \ell$ tokens (the runs' own tokens when fitting or predicting
    [`nqs_engine.Runs`][]). It has no batch-size or schedule term. Fitted (by
    [`nqs_engine.fit`][]) in the centred coordinates
    $(a - \alpha \overline{\log N},\ b - \beta \overline{\log D},\ e, \alpha, \beta)$,
    $A = e^a$, $B = e^b$, $E = e^e$, from the 5400-point grid of Hoffmann et al.
    ([`default_starts`][]), Huber loss on log loss by default.

    **Example:**

    >>> import nqs_engine as nqs
    >>> model = nqs.Chinchilla(nqs.chinchilla_preset("hoffmann"), seq_len=2048)
    >>> out = model(70e9, B=1024, K=1.4e12 / (1024 * 2048))   # 1.4T tokens
    >>> round(float(out.total), 3), sorted(out.terms())
    (1.937, ['E', 'data_term', 'param_term'])
    """

    params: ChinchillaParams = eqx.field(default_factory=lambda: chinchilla_preset("hoffmann"))
    seq_len: float = eqx.field(static=True, default=128.0)
    kind: ClassVar[str] = "chinchilla"
    label: ClassVar[str] = "chinchilla"
    terms: ClassVar[tuple[str, ...]] = ChinchillaBreakdown.TERMS
    fit_defaults: ClassVar[FitDefaults] = FitDefaults(
        loss="huber", starts=None, refine=DEFAULT_SCREEN, max_steps=1000, prune=False,
        warm_starts=2, bootstrap_steps=1000, method="lbfgs")

    def __check_init__(self):
        if not isinstance(self.params, ChinchillaParams):
            raise TypeError(f"params must be a ChinchillaParams, got {type(self.params).__name__}")
        if not (np.isfinite(self.seq_len) and self.seq_len > 0):
            raise ValueError(f"seq_len must be finite and > 0, got {self.seq_len}")

    @classmethod
    def preset(cls, name: str, seq_len: float = 128.0) -> "Chinchilla":
        """The named preset ([`chinchilla_preset`][]) as a model."""
        return cls(chinchilla_preset(name), seq_len=seq_len)

    def __call__(self, N, B=None, K=None, *, schedule=None, D=None, **inputs):
        if inputs:
            raise ValueError(f"Chinchilla does not take the input(s) {', '.join(inputs)}; it "
                             "takes N and D (or B and K, or a schedule)")
        given = sum(v is not None for v in (B if B is not None else K, schedule, D))
        if given != 1:
            raise ValueError("give B and K, a schedule, or D (tokens)")
        if D is None:
            if schedule is not None:
                D = self.seq_len * jnp.sum(schedule.batch * schedule.steps, axis=-1)
            else:
                if B is None or K is None:
                    raise ValueError("give both B and K")
                D = self.seq_len * jnp.asarray(B) * jnp.asarray(K)
        N = jnp.asarray(N)
        D = jnp.asarray(D)
        total = chinchilla_loss(self.params, N, D)
        p = self.params
        param_term = p.A * jnp.exp(-p.alpha * jnp.log(N))
        data_term = p.B * jnp.exp(-p.beta * jnp.log(D))
        E, param_term, data_term, total = jnp.broadcast_arrays(p.E, param_term, data_term, total)
        return ChinchillaBreakdown(E=E, param_term=param_term, data_term=data_term, total=total)

    def check(self) -> None:
        for name in CHINCHILLA_PARAM_NAMES:
            v = np.asarray(getattr(self.params, name), float)
            low = 0.0
            bad = ~np.isfinite(v) | ((v < low) if name in ("E", "A", "B") else False)
            if np.any(bad):
                raise ValueError(f"Chinchilla parameter {name} = {float(np.ravel(v)[0]):g} must "
                                 "be finite" + (" and >= 0" if name in ("E", "A", "B") else ""))

    def check_peak(self, peak: float) -> None:
        """Chinchilla has no step size: any schedule runs."""

    def parameters(self) -> dict[str, FloatArray]:
        return {name: getattr(self.params, name) for name in CHINCHILLA_PARAM_NAMES}

    def options(self) -> dict[str, Any]:
        return {"seq_len": float(self.seq_len)}

    @classmethod
    def from_values(cls, values: Mapping[str, Any], source: str) -> "Chinchilla":
        out = read_values(values, source, CHINCHILLA_PARAM_NAMES, {"seq_len": 128.0})
        params = ChinchillaParams(**{k: np.asarray(out[k]) for k in CHINCHILLA_PARAM_NAMES})
        return cls(params, seq_len=out["seq_len"])

    def prepare(self, runs: Runs, *, search: bool = False) -> ChinchillaData:
        return ChinchillaData(log_n=jnp.log(runs.N), log_d=jnp.log(runs.tokens))

    def predict_prepared(self, data: ChinchillaData) -> FloatArray:
        return jnp.exp(_log_loss(_to_x(self.params), data.log_n, data.log_d))

    def planning_loss(self, N, B, K, seq_len):
        D = jnp.asarray(B) * jnp.asarray(K) * seq_len
        x = _to_x(self.params)
        return jnp.exp(_log_loss(x, jnp.log(jnp.asarray(N)), jnp.log(D)))

    def fit_space(self, runs: Runs, weights: np.ndarray | None = None) -> "ChinchillaSpace":
        N, D = np.asarray(runs.N, float), np.asarray(runs.tokens, float)
        used = np.ones(N.shape, bool) if weights is None else np.asarray(weights) > 0
        if np.sum(used) < 5:
            raise ValueError(
                f"need at least 5 data points (with positive weight) to fit the 5 Chinchilla "
                f"parameters, got {int(np.sum(used))}"
            )
        for name, values, what in (("N", N, "model sizes"), ("D", D, "token counts")):
            distinct = np.unique(values[used]).size
            if distinct < 3:
                raise ValueError(
                    f"degenerate design: {name} takes only {distinct} distinct value(s) among "
                    f"the points used; E + A/N^alpha + B/D^beta needs at least 3 distinct "
                    f"{what} to identify its parameters"
                )
        return ChinchillaSpace(template=self, m_n=float(np.mean(np.log(N))),
                               m_d=float(np.mean(np.log(D))))


class ChinchillaSpace(AbstractFitSpace):
    r"""Centred coordinates $z = (a - \alpha m_N,\ b - \beta m_D,\ e, \alpha, \beta)$,
    $m_N, m_D$ the means of $\log N$ and $\log D$ over the data: the same objective as
    in $(a, b, e, \alpha, \beta)$, far better conditioned ($\log N \approx 20$
    otherwise ties $a$ to $\alpha$), which float32 in particular needs."""

    template: Chinchilla
    m_n: float = eqx.field(static=True)
    m_d: float = eqx.field(static=True)

    def to_model(self, u):
        x = jnp.stack([u[0] + u[3] * self.m_n, u[1] + u[4] * self.m_d, u[2], u[3], u[4]])
        return eqx.tree_at(lambda m: m.params, self.template, _from_x(x))

    def to_flat(self, model) -> np.ndarray:
        x = np.moveaxis(np.asarray(_to_x(model.params), dtype=np.float64), 0, -1)
        return _centre(x, self.m_n, self.m_d)

    def candidates(self, num, seed, ranges) -> np.ndarray:
        if ranges:
            raise ValueError("Chinchilla's starts are the grid of Hoffmann et al.; ranges "
                             "do not apply")
        grid = default_starts()
        if num is not None and num < grid.shape[0]:
            grid = grid[np.random.default_rng(seed).choice(grid.shape[0], num, replace=False)]
        return _centre(grid, self.m_n, self.m_d)

    def describe_bounds(self, model) -> list[str]:
        return []
