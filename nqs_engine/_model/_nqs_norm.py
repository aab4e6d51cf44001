r"""The sized NQS whose step size shrinks as the weights grow: norm growth under weight decay.

In a network with normalised layers the loss is invariant to the scale of the
weights, and a step of size $\eta$ moves them by an angle $\propto \eta /
\|w\|^2$: the *effective* step size falls as the squared weight norm grows.
The gradient noise each step injects grows the norm, and weight decay pulls it
back, so the norm relaxes towards an equilibrium. (The weight-norm variant of
SPEC section 2 computes the same effect from the quadratic's own state, for
final losses only.) [`NormSizedNQS`][] adds this to [`nqs_engine.SizedNQS`][]
with three parameters: the step size of a run whose schedule multiplier is
$m_t$ at batch size $B_t$ becomes $\gamma_0 \tilde m_t$ with

$$\tilde m_t = \frac{m_t}{1 + h_N\, G_t},\qquad
  \frac{dG}{dt} = \frac{m_t^2}{B_t} - \frac{G}{T},\quad G_0 = 0,\qquad
  h_N = h \left(\frac{N}{N_{ref}}\right)^{-\eta}.$$

$G_t$ is the norm growth so far (injected noise $\propto m^2/B$ per step,
forgotten over $T$ steps), $h \ge 0$ its effect on the step size and $\eta$ how
that effect scales with the model's size (a bigger model's initial norm is
larger). $h = 0$ gives [`nqs_engine.SizedNQS`][] exactly; $T \to \infty$ is
norm growth without weight decay. On a constant schedule the step size falls
from $\gamma_0$ to $\gamma_0 / (1 + h_N T / B)$, so a long constant run anneals
itself, and the extra gain of a final decay is smaller than the plain NQS says.

**Pieces.** A run is evaluated on pieces of constant $m$ and $B$; each piece takes
the mean of $\tilde m$ over its steps, in closed form ([`effective_multipliers`][]),
so that the distance it moves, $\gamma_0 \sum_t \tilde m_t$, is exact. On loss curves
the pieces are the schedule's segments cut at the checkpoints (one per logging
interval); for final losses, [`planning_loss`][] and direct calls every segment is
cut into `pieces` equal parts (default 32), which changes the plain NQS nothing
(splitting a segment leaves its risk unchanged) and resolves the decay of
$\tilde m$ along it. With one piece per step it is the law above step by step.
On curves the mean over a whole logging interval is first-order accurate in the
change of $h_N G$ over the interval: against the 32-piece form, the fits of
`benchmarks/curves.py` differ by 1e-5 to 5e-5 nats on average (at most 6e-4,
early in the warmup); `tests/test_nqs_norm.py` bounds it for a stronger law.

Fitting ([`NormSizedNQSSpace`][]) extends the sized NQS's coordinates with
$h = e^{u}/G_{scale}$, $\eta = 2 \tanh u$, $T = T_{scale}\, e^{u}$, where
$G_{scale}$ is the largest $\sum_t m_t^2 / B_t$ of the fitted runs and
$T_{scale}$ their longest run in steps; with one model size $\eta = 0$ is fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import FloatArray, RealLike
from .._risk._risk import float_array
from .._runs import Runs
from .._schedule import Schedule
from ._base import AbstractFitSpace, AbstractLossModel, FitDefaults, read_values
from ._nqs import NQSCurveData, NQSData
from ._nqs_sizes import (
    SIZED_NAMES,
    SizedBreakdown,
    SizedNQS,
    SizedNQSSpace,
    call_schedule,
    sized_curve_losses,
    sized_final_losses,
)

#: The norm-growth parameters, after those of the sized NQS.
NORM_NAMES = ("h", "eta", "T")

#: Every fitted parameter of [`NormSizedNQS`][], in the order of its flat form.
NORM_SIZED_NAMES = (*SIZED_NAMES, *NORM_NAMES)

#: Bound of the size exponent: $\eta \in (-2, 2)$.
ETA_MAX = 2.0

#: Latin-hypercube ranges of the starting points, relative to the data's scales:
#: $h\,G_{scale}$ and $T / T_{scale}$ log-uniformly, $\eta$ uniformly.
NORM_START_RANGES: dict[str, tuple[float, float]] = {
    "h": (1e-2, 30.0),
    "eta": (-1.0, 1.0),
    "T": (0.05, 10.0),
}

#: Pieces each segment is cut into for final losses and planning (module docstring).
DEFAULT_PIECES = 32


def effective_multipliers(h_N: FloatArray, T: FloatArray, mult: FloatArray,
                          batches: FloatArray, lengths: FloatArray) -> FloatArray:
    r"""The step-size multipliers $\tilde m$ of pieces `(R, P)`: each piece's mean over its steps.

    Each of the R runs (row) has `(P,)` pieces of $k$ = `lengths` steps at multiplier
    $m$ = `mult` and batch $B$ = `batches`. Over a piece $G$ relaxes towards
    $G_\infty = T m^2/B$: $G(t) = G_\infty + (G_0 - G_\infty) e^{-t/T}$, and the piece takes
    the mean of $m / (1 + h_N G(t))$ over its $k$ steps, in closed form with
    $c = 1 + h_N G_\infty$, $d = h_N (G_0 - G_\infty)$:

    $$\tilde m = \frac{m}{c}\left(1 + \frac{T}{k}\,
        \log\frac{c + d\,e^{-k/T}}{c + d}\right)\quad(\tilde m = m / (1 + h_N G_0)
        \text{ for } k = 0).$$

    `h_N (R,)`, `T` a scalar or `(R,)`. Pure JAX, one `lax.scan` over the pieces.

    **Example:** one run, pieces of 1000 steps at multiplier 1 and batch 1, no forgetting
    ($T$ huge, so $G = t$): the means of $1 / (1 + 10^{-3} t)$ are $\log 2$, $\log 1.5$, ...

    >>> import jax.numpy as jnp
    >>> from nqs_engine._model._nqs_norm import effective_multipliers
    >>> one = jnp.ones((1, 3))
    >>> m = effective_multipliers(jnp.array([1e-3]), 1e12, one, one, 1000.0 * one)
    >>> [round(float(v), 6) for v in m[0]], round(float(jnp.log(1.5)), 6)
    ([0.693147, 0.405465, 0.287682], 0.405465)
    """
    T = jnp.broadcast_to(jnp.asarray(T, mult.dtype), h_N.shape)
    rate = mult**2 / batches

    def advance(G, piece):
        rate_j, k = piece
        G_inf = rate_j * T
        c = 1.0 + h_N * G_inf
        d = h_N * (G - G_inf)
        shrink = jnp.expm1(-k / T)                       # e^{-k/T} - 1
        some = k > 0
        k_safe = jnp.where(some, k, 1.0)
        mean = (1.0 + (T / k_safe) * jnp.log1p(d * shrink / (c + d))) / c
        mean = jnp.where(some, mean, 1.0 / (1.0 + h_N * G))
        return G + (G - G_inf) * shrink, mean

    _, means = jax.lax.scan(advance, jnp.zeros(h_N.shape, mult.dtype), (rate.T, lengths.T))
    return mult * means.T


def split_pieces(mult: FloatArray, batches: FloatArray, steps: FloatArray, pieces: int):
    """Segments `(n, S)` each cut into `pieces` equal parts: arrays `(n, S * pieces)`.

    Segment $s$ of $k_s$ steps becomes `pieces` parts of $k_s /$ `pieces` steps at its
    multiplier and batch size (the plain NQS's risk is unchanged by the cut).

    **Example:**

    >>> import jax.numpy as jnp
    >>> from nqs_engine._model._nqs_norm import split_pieces
    >>> m, b, k = split_pieces(jnp.array([[1.0, 0.5]]), jnp.array([[8.0, 8.0]]),
    ...                        jnp.array([[100.0, 50.0]]), 2)
    >>> m.tolist(), k.tolist()
    ([[1.0, 1.0, 0.5, 0.5]], [[50.0, 50.0, 25.0, 25.0]])
    """
    rep = lambda a: jnp.repeat(a, pieces, axis=-1)  # noqa: E731
    return rep(mult), rep(batches), rep(steps / pieces)


class NormSizedNQS(AbstractLossModel):
    r"""The sized NQS with a step size that shrinks as the weight norm grows (norm growth).

    $L = \mathrm{SizedNQS}(N, \gamma_0 \tilde m_t)$ with $\tilde m_t = m_t / (1 + h_N G_t)$,
    $dG/dt = m_t^2/B_t - G/T$, $h_N = h (N/N_{ref})^{-\eta}$ (module docstring).

    **Arguments:** `sized` (the [`nqs_engine.SizedNQS`][] it runs: spectrum, size terms,
    step size, quadrature), `h` ($\ge 0$), `eta`, `T` ($> 0$, steps), and `pieces`
    (parts each segment is cut into for final losses; default 32).

    **Example:** with $h = 0$ it is the sized NQS; norm growth lowers a long constant
    run's step size, which anneals it.

    >>> import nqs_engine as nqs
    >>> sized = nqs.SizedNQS(kappa=0.5, A=0.1)
    >>> off = nqs.NormSizedNQS(sized, h=0.0, eta=0.0, T=1e4)
    >>> abs(float(off(1e8, 256, 20_000).total) - float(sized(1e8, 256, 20_000).total)) < 1e-12
    True
    >>> on = nqs.NormSizedNQS(sized, h=0.5, eta=0.0, T=1e4)
    >>> float(on(1e8, 256, 20_000).variance) < float(sized(1e8, 256, 20_000).variance)
    True
    """

    sized: SizedNQS = eqx.field(default_factory=SizedNQS)
    h: FloatArray = eqx.field(converter=jnp.asarray, default=0.0)
    eta: FloatArray = eqx.field(converter=jnp.asarray, default=0.0)
    T: FloatArray = eqx.field(converter=jnp.asarray, default=1e5)
    pieces: int = eqx.field(static=True, default=DEFAULT_PIECES)
    kind: ClassVar[str] = "nqs-sizes-norm"
    label: ClassVar[str] = "NQS across sizes, norm growth"
    terms: ClassVar[tuple[str, ...]] = SizedBreakdown.TERMS
    fit_defaults: ClassVar[FitDefaults] = FitDefaults(loss="huber", starts=512, refine=16,
                                                      max_steps=200, polish_steps=20)

    def __check_init__(self):
        if not isinstance(self.sized, SizedNQS):
            raise TypeError(f"sized must be a SizedNQS, got {type(self.sized).__name__}")
        if isinstance(self.pieces, bool) or int(self.pieces) != self.pieces or self.pieces < 1:
            raise ValueError(f"pieces must be an integer >= 1, got {self.pieces!r}")

    def h_N(self, N: FloatArray) -> FloatArray:
        r"""$h (N / N_{ref})^{-\eta}$ for nominal sizes `N` (pure JAX, broadcasting).

        **Example:**

        >>> import nqs_engine as nqs
        >>> model = nqs.NormSizedNQS(h=1e-4, eta=1.0)
        >>> [float(v) for v in model.h_N(jnp.array([1e8, 2e8]))]
        [0.0001, 5e-05]
        """
        return self.h * (N / self.sized.N_ref) ** (-self.eta)

    def effective(self, N, mult, batches, lengths) -> FloatArray:
        """The effective multipliers of pieces `(R, P)` of runs of nominal sizes `N (R,)`
        ([`effective_multipliers`][] with $h_N$ and $T$)."""
        return effective_multipliers(self.h_N(N), self.T, mult, batches, lengths)

    # -- evaluation -----------------------------------------------------------------

    def __call__(self, N: RealLike, B: RealLike = None, K: RealLike = None, *,
                 schedule: Schedule | None = None, **inputs: Any) -> SizedBreakdown:
        if inputs:
            raise ValueError(f"the norm-growth sized NQS takes no inputs besides N and the "
                             f"schedule, got {', '.join(inputs)}")
        schedule = call_schedule(B, K, schedule)
        N = float_array(N, "N")
        shape = jnp.broadcast_shapes(N.shape, schedule.lr.shape[:-1])
        S = schedule.lr.shape[-1]
        flat = lambda a: jnp.broadcast_to(a, shape + (S,)).reshape(-1, S)  # noqa: E731
        N_flat = jnp.broadcast_to(N, shape).reshape(-1)
        mult, batches, steps = split_pieces(flat(schedule.lr), flat(schedule.batch),
                                            flat(schedule.steps), self.pieces)
        mult = self.effective(N_flat, mult, batches, steps)
        unflat = lambda a: a.reshape(shape + (S * self.pieces,))  # noqa: E731
        return self.sized(N, schedule=Schedule(unflat(mult), unflat(batches), unflat(steps)))

    def check(self) -> None:
        """The sized NQS's checks, then `h` >= 0, `eta` finite, `T` > 0 and finite."""
        self.sized.check()
        for name, ok, rule in (("h", lambda v: v >= 0, " and >= 0"),
                               ("eta", lambda v: v == v, ""), ("T", lambda v: v > 0, " and > 0")):
            v = np.ravel(np.asarray(getattr(self, name), float))
            bad = ~(np.isfinite(v) & ok(v))
            if bad.any():
                raise ValueError(f"parameter {name} = {float(v[bad][0]):g} must be finite{rule}")

    def check_peak(self, peak: float) -> None:
        """As the sized NQS: the effective step size never exceeds the schedule's."""
        self.sized.check_peak(peak)

    def prepare(self, runs: Runs, *, search: bool = False) -> NQSData | NQSCurveData:
        """The sized NQS's layout; final-loss rows have each segment cut into `pieces`."""
        data = self.sized.prepare(runs, search=search)
        if isinstance(data, NQSCurveData):
            return data
        mult, batches, steps = split_pieces(data.mult, data.batches, data.steps, self.pieces)
        return eqx.tree_at(lambda d: (d.mult, d.batches, d.steps), data, (mult, batches, steps))

    def predict_prepared(self, data: NQSData | NQSCurveData) -> FloatArray:
        if isinstance(data, NQSCurveData):
            mult = self.effective(data.N, data.mult, data.batches, data.lengths)
            return sized_curve_losses(self.sized, data, mult)
        mult = self.effective(data.N, data.mult, data.batches, data.steps)
        return sized_final_losses(self.sized, data, mult)

    def planning_loss(self, N, B, K, seq_len):
        dtype = jnp.result_type(float)
        N, B, K = jnp.broadcast_arrays(*(jnp.asarray(v, dtype) for v in (N, B, K)))
        shape = N.shape
        N, B, K = (v.reshape(-1) for v in (N, B, K))
        mult, batches, steps = split_pieces(jnp.ones_like(K)[:, None], B[:, None], K[:, None],
                                            self.pieces)
        mult = self.effective(N, mult, batches, steps)
        sized = self.sized
        data = NQSData(N=N, mult=mult, batches=batches, steps=steps, init_sq_norm=None,
                       rule=sized.search_rule, chunk=2048)
        return sized_final_losses(sized, data).reshape(shape)

    # -- parameters -----------------------------------------------------------------

    def parameters(self) -> dict[str, FloatArray]:
        """The sized NQS's parameters and h, eta, T."""
        return {**self.sized.parameters(), "h": self.h, "eta": self.eta, "T": self.T}

    def options(self) -> dict[str, Any]:
        """The step size, the reference size and `pieces`."""
        return {**self.sized.options(), "pieces": int(self.pieces)}

    def fit_space(self, runs: Runs, weights: np.ndarray | None = None) -> "NormSizedNQSSpace":
        return NormSizedNQSSpace.of(self, runs, weights)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], source: str) -> "NormSizedNQS":
        own = {k: values[k] for k in (*NORM_NAMES, "pieces") if k in values}
        rest = {k: v for k, v in values.items() if k not in own}
        out = read_values(own, source, NORM_NAMES, {"pieces": DEFAULT_PIECES})
        pieces = out["pieces"]
        if not (float(pieces).is_integer() and pieces >= 1):
            raise ValueError(f"{source}: 'pieces' must be an integer >= 1, got {pieces:g}")
        sized = SizedNQS.from_values(rest, source)
        model = cls(sized, h=out["h"], eta=out["eta"], T=out["T"], pieces=int(pieces))
        try:
            model.check()
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        return model


def _log_floor(x):
    return np.log(np.maximum(x, 1e-300))


class NormSizedNQSSpace(AbstractFitSpace):
    """The coordinates of [`NormSizedNQS`][]: the sized NQS's, then those of h, eta and T
    (module docstring), for one data set; `eta` is fixed at 0 with one model size."""

    base: SizedNQSSpace
    template: NormSizedNQS
    g_scale: float = eqx.field(static=True)
    t_scale: float = eqx.field(static=True)
    free: tuple[str, ...] = eqx.field(static=True)

    @classmethod
    def of(cls, template: NormSizedNQS, runs: Runs, weights=None) -> "NormSizedNQSSpace":
        """The space for `runs` (rows of positive `weights`), with its scales from the runs."""
        used = np.ones(runs.size, bool) if weights is None else np.asarray(weights) > 0
        sizes = np.unique(np.asarray(runs.N)[used]).size
        free = NORM_NAMES if sizes >= 2 else ("h", "T")
        # The sized NQS fixes A, alpha, rho with one size and alpha with two.
        fitted = len(SIZED_NAMES) - (3 if sizes < 2 else 1 if sizes < 3 else 0) + len(free)
        needed = fitted + 1
        if int(used.sum()) < needed:
            raise ValueError(f"too few observations to fit the {needed - 1} parameters of the "
                             f"norm-growth sized NQS: {int(used.sum())} (need at least {needed} "
                             "rows: final losses or checkpoints)")
        base = SizedNQSSpace.of(template.sized, runs, weights)
        schedule = runs.needs_schedule("the norm-growth sized NQS")
        lr, batch, steps = (np.asarray(a, float) for a in (schedule.lr, schedule.batch,
                                                           schedule.steps))
        growth = np.sum(lr**2 * steps / batch, axis=-1)[used]
        total = np.sum(steps, axis=-1)[used]
        if not (np.max(growth) > 0 and np.max(total) > 0):
            raise ValueError("no run takes a step with a positive step size; nothing to fit")
        return cls(base=base, template=template, g_scale=float(np.max(growth)),
                   t_scale=float(np.max(total)), free=free)

    @property
    def base_size(self) -> int:
        return len(self.base.free)

    def _extra(self, u) -> dict[str, FloatArray]:
        d = self.base_size
        maps = {"h": lambda x: jnp.exp(x) / self.g_scale,
                "eta": lambda x: ETA_MAX * jnp.tanh(x),
                "T": lambda x: self.t_scale * jnp.exp(x)}
        out = {name: maps[name](jnp.clip(u[d + i], -50.0, 50.0))
               for i, name in enumerate(self.free)}
        out.setdefault("eta", jnp.zeros((), u.dtype))
        return out

    def to_model(self, u):
        sized = self.base.to_model(u[: self.base_size])
        v = self._extra(u)
        return eqx.tree_at(lambda m: (m.sized, m.h, m.eta, m.T), self.template,
                           (sized, v["h"], v["eta"], v["T"]))

    def _extra_flat(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        inverse = {"h": lambda x: _log_floor(x * self.g_scale),
                   "eta": lambda x: np.arctanh(np.clip(x / ETA_MAX, -1 + 1e-12, 1 - 1e-12)),
                   "T": lambda x: _log_floor(x / self.t_scale)}
        return np.stack([inverse[n](np.asarray(values[n], np.float64)) for n in self.free],
                        axis=-1)

    def to_flat(self, model) -> np.ndarray:
        base = self.base.to_flat(model.sized)
        extra = self._extra_flat({n: np.asarray(getattr(model, n), np.float64)
                                  for n in NORM_NAMES})
        return np.concatenate([base, np.broadcast_to(extra, base.shape[:-1] + extra.shape[-1:])],
                              axis=-1)

    def candidates(self, num, seed, ranges) -> np.ndarray:
        ranges = dict(ranges or {})
        unknown = set(ranges) - set(NORM_SIZED_NAMES)
        if unknown:
            raise ValueError(f"unknown parameter(s) in ranges: {', '.join(sorted(unknown))}")
        own = {k: ranges.pop(k) for k in NORM_NAMES if k in ranges}
        base = self.base.candidates(num, seed, ranges or None)
        bounds = {**NORM_START_RANGES, **own}
        # Relative to the data's scales (module docstring); user ranges are absolute.
        scale = {"h": 1.0 / self.g_scale, "eta": 1.0, "T": self.t_scale}
        for k in own:
            scale[k] = 1.0
        from scipy.stats import qmc  # here: scipy.stats costs ~0.4 s to import

        sample = qmc.LatinHypercube(d=len(self.free),
                                    seed=np.random.default_rng(seed + 1)).random(base.shape[0])
        values = {}
        for j, name in enumerate(self.free):
            a, b = (float(x) * scale[name] for x in bounds[name])
            if name == "eta":
                values[name] = a + (b - a) * sample[:, j]
            else:
                values[name] = np.exp(np.log(a) + (np.log(b) - np.log(a)) * sample[:, j])
        return np.concatenate([base, self._extra_flat(values)], axis=-1)

    def describe_bounds(self, model) -> list[str]:
        notes = self.base.describe_bounds(model.sized)
        if "eta" not in self.free:
            notes.append("every run has the same model size: the norm-growth exponent eta = 0 "
                         "is fixed")
        elif abs(float(model.eta)) > 0.999 * ETA_MAX:
            notes.append(f"eta = {float(model.eta):.6g} sits at a bound of (-{ETA_MAX:g}, "
                         f"{ETA_MAX:g})")
        if float(model.h) * self.g_scale < 1e-4:
            notes.append(f"h = {float(model.h):.3g}: no norm growth (the sized NQS)")
        return notes


__all__ = [
    "DEFAULT_PIECES",
    "ETA_MAX",
    "NORM_NAMES",
    "NORM_SIZED_NAMES",
    "NORM_START_RANGES",
    "NormSizedNQS",
    "NormSizedNQSSpace",
    "effective_multipliers",
    "split_pieces",
]
