r"""One NQS shared across model sizes, with the two size terms real loss curves need.

The plain NQS (SPEC section 1) gives a model of size $N$ the first $N$ directions
of one quadratic; a bigger model then differs from a smaller one only by the
directions $(N_1, N_2]$, which start at their initial risk. So the gap between
two sizes is zero at step 0 and opens only as those directions are learned. Real
curves of one family at two sizes (the Multi-Power Law curves of 25M and 100M
models) are already 0.3 nats apart after 2k steps and stay so to 72k steps, while
both keep falling: a bigger model learns faster per step, which the plain NQS
cannot express (a joint fit leaves 0.04 nats RMSE). [`SizedNQS`][] adds the
minimal terms that carry this, and keeps one spectrum, one noise law and one
learning-rate map for every size:

$$L(N, \text{schedule}) = \mathrm{NQS}_{\theta_N}(\kappa N, \text{schedule})
    + A \left(\frac{N}{N_{ref}}\right)^{-\alpha},\qquad
  \theta_N = (p, q, P, Q, e_{irr}, R_N, r),\quad
  R_N = R \left(\frac{N}{N_{ref}}\right)^{\rho}.$$

- $\kappa N$ directions ($\kappa$ fitted): the NQS's directions are not the
  network's parameters;
- a *capacity* term $A (N/N_{ref})^{-\alpha}$, $A \ge 0$: the size term of a
  Chinchilla law, a loss floor that falls with size (with two sizes it acts as
  one offset; $\alpha$ is then fixed, see below);
- a *gradient-noise scale* $R_N$: the per-example noise of a bigger model
  differs by a power of its size.

Fitting ([`SizedNQSSpace`][]) is in unconstrained coordinates with bounds that
keep the weakly identified directions sane:

$$p = 1 + \mathrm{softplus}(u_1),\ q = q_{min} + \mathrm{softplus}(u_2),\ P = e^{u_3},\
  Q = \tfrac{2}{\gamma_{max}}\sigma(u_4),\ e_{irr} = e^{u_5},\ R = e^{u_6},\
  r = r_{max}\sigma(u_7),$$
$$\kappa = \kappa_{lo}(\kappa_{hi}/\kappa_{lo})^{\sigma(u_8)},\ A = e^{u_9},\
  \alpha = \alpha_{max}\sigma(u_{10}),\ \rho = \rho_{max}\tanh(u_{11}),$$

with $r \in (0, 5)$, $\kappa \in (10^{-7}, 1)$, $\alpha \in (0, 1.5)$,
$\rho \in (-2, 2)$. What the data cannot identify is fixed and said: with one
model size $A = 0$ (it is $e_{irr}$), $\rho = 0$; with two sizes the capacity term
takes one number, so $\alpha$ is fixed at [`DEFAULT_ALPHA`][] (the parameter
exponent of Hoffmann et al.) and only $A$ is fitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._breakdown import AbstractBreakdown
from .._custom_types import FloatArray, RealLike
from .._params import DEFAULT_LR, PARAM_NAMES, PRESETS, NQSParams, check_params
from .._quadrature import SumRule
from .._risk._kernel import approximation_term
from .._risk._risk import float_array, risk_terms, schedule_risk
from .._risk._trajectory import pieces_trajectory
from .._runs import Runs
from .._schedule import Schedule
from ._base import AbstractFitSpace, AbstractLossModel, FitDefaults, read_values
from ._nqs import FIT_RULE, NQSCurveData, NQSData, curve_data, nqs_data, q_floor

#: The size terms' names, after the seven NQS parameters.
SIZE_NAMES = ("kappa", "A", "alpha", "rho")

#: Every fitted parameter of [`SizedNQS`][], in the order of its flat form.
SIZED_NAMES = (*PARAM_NAMES, *SIZE_NAMES)

#: The capacity exponent used when the data have fewer than three model sizes
#: (Hoffmann et al.'s parameter exponent).
DEFAULT_ALPHA = 0.34

#: Bounds of the weakly identified parameters (module docstring).
BOUNDS: dict[str, tuple[float, float]] = {
    "r": (0.0, 5.0),
    "kappa": (1e-7, 1.0),
    "alpha": (0.0, 1.5),
    "rho": (-2.0, 2.0),
}

#: Latin-hypercube ranges of the starting points. `Q` is given as the fraction
#: $\gamma_{max} Q / 2$ of the stability limit; P, Q, e_irr, R, kappa and A are
#: sampled log-uniformly.
SIZED_START_RANGES: dict[str, tuple[float, float]] = {
    "p": (1.05, 2.5),
    "q": (0.5, 2.5),
    "P": (0.5, 50.0),
    "Q": (1e-3, 0.9),
    "e_irr": (0.5, 3.0),
    "R": (1e-3, 10.0),
    "r": (0.5, 2.5),
    "kappa": (1e-5, 1e-1),
    "A": (0.01, 1.0),
    "alpha": (0.1, 1.0),
    "rho": (-0.5, 0.5),
}
_LOG = ("P", "Q", "e_irr", "R", "kappa", "A")


class SizedBreakdown(AbstractBreakdown):
    r"""The loss of [`SizedNQS`][] and its five terms.

    `irreducible` $e_{irr}$, `capacity` $A (N/N_{ref})^{-\alpha}$, `approximation`
    $\tfrac12 P \zeta(p, \kappa N + 1)$, `bias` and `variance` (of the NQS on
    $\kappa N$ directions with noise $R_N$), and `total`, their sum.
    """

    irreducible: FloatArray
    capacity: FloatArray
    approximation: FloatArray
    bias: FloatArray
    variance: FloatArray
    total: FloatArray
    TERMS: ClassVar[tuple[str, ...]] = ("irreducible", "capacity", "approximation", "bias",
                                        "variance")


class SizedNQS(AbstractLossModel):
    r"""The NQS shared across model sizes, with a capacity term and a size-dependent noise.

    $L = \mathrm{NQS}_{\theta_N}(\kappa N) + A (N/N_{ref})^{-\alpha}$,
    $R_N = R (N/N_{ref})^{\rho}$ (module docstring). On loss curves (rows sharing a
    `run` label, e.g. [`nqs_engine.Runs.from_curves`][]) each run's checkpoints come
    from one pass over its schedule.

    **Arguments:** `params` (the seven NQS parameters, [`nqs_engine.NQSParams`][];
    default the Pythia preset's, a starting template for fits),
    `kappa`, `A`, `alpha`, `rho` (the size terms), `lr` $= \gamma_0$ (default 1.999),
    `N_ref` (the size the terms are relative to, default $10^8$), `rule` and
    `search_rule` (quadrature for predictions and inside fits).

    **Example:** the capacity term and the noise scale vanish at $N = N_{ref}$ with
    $A = 0$, leaving the plain NQS on $\kappa N$ directions.

    >>> import numpy as np, nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> sized = nqs.SizedNQS(params, kappa=0.5, A=0.0, alpha=0.34, rho=0.2)
    >>> a = float(sized(1e8, 256, 10_000).total)
    >>> b = float(nqs.risk(params, 0.5e8, 256, 10_000, lr=lr).total)
    >>> abs(a - b) < 1e-9
    True
    >>> sorted(sized(2e7, 256, 10_000).terms())
    ['approximation', 'bias', 'capacity', 'irreducible', 'variance']
    """

    params: NQSParams = eqx.field(
        default_factory=lambda: NQSParams.from_dict(PRESETS["pythia-owt2"]))
    kappa: FloatArray = eqx.field(converter=jnp.asarray, default=1.0)
    A: FloatArray = eqx.field(converter=jnp.asarray, default=0.0)
    alpha: FloatArray = eqx.field(converter=jnp.asarray, default=DEFAULT_ALPHA)
    rho: FloatArray = eqx.field(converter=jnp.asarray, default=0.0)
    lr: FloatArray = eqx.field(converter=jnp.asarray, default=DEFAULT_LR)
    N_ref: FloatArray = eqx.field(converter=jnp.asarray, default=1e8)
    rule: SumRule = eqx.field(static=True, default=SumRule())
    search_rule: SumRule = eqx.field(static=True, default=FIT_RULE)
    kind: ClassVar[str] = "nqs-sizes"
    label: ClassVar[str] = "NQS across sizes"
    terms: ClassVar[tuple[str, ...]] = SizedBreakdown.TERMS
    fit_defaults: ClassVar[FitDefaults] = FitDefaults(loss="huber", starts=256, refine=8,
                                                      max_steps=200, polish_steps=20)

    def __check_init__(self):
        if not isinstance(self.params, NQSParams):
            raise TypeError(f"params must be an NQSParams, got {type(self.params).__name__}")

    # -- the size terms -------------------------------------------------------------

    def size_terms(self, N: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        r"""$(\kappa N,\ R (N/N_{ref})^{\rho},\ A (N/N_{ref})^{-\alpha})$ for nominal sizes `N`
        (pure JAX, broadcasting)."""
        x = N / self.N_ref
        return self.kappa * N, self.params.R * x**self.rho, self.A * x ** (-self.alpha)

    def nqs_params(self, N: FloatArray) -> NQSParams:
        """The plain NQS parameters a model of nominal size `N` runs with (its noise `R_N`)."""
        _, R_N, _ = self.size_terms(N)
        p = self.params
        return NQSParams(p.p, p.q, p.P, p.Q, p.e_irr, R_N, p.r)

    # -- evaluation -----------------------------------------------------------------

    def __call__(self, N: RealLike, B: RealLike = None, K: RealLike = None, *,
                 schedule: Schedule | None = None, **inputs: Any) -> SizedBreakdown:
        if inputs:
            raise ValueError(f"the sized NQS takes no inputs besides N and the schedule, got "
                             f"{', '.join(inputs)}")
        schedule = call_schedule(B, K, schedule)
        N = float_array(N, "N")
        N_eff, _, capacity = self.size_terms(N)
        out = schedule_risk(self.nqs_params(N), N_eff, schedule, lr=self.lr, rule=self.rule)
        capacity = jnp.broadcast_to(capacity, out.total.shape)
        return SizedBreakdown(out.irreducible, capacity, out.approximation, out.bias,
                              out.variance, out.total + capacity)

    def check(self) -> None:
        """The NQS domain (`check_params`), the quadrature's kink condition, and the size
        terms: `kappa` > 0, `A` >= 0, `alpha`, `rho` finite, `N_ref` > 0."""
        check_params(self.params, self.lr)
        for name, ok, rule in (("kappa", lambda v: v > 0, "> 0"), ("A", lambda v: v >= 0, ">= 0"),
                               ("alpha", np.isfinite, "finite"), ("rho", np.isfinite, "finite"),
                               ("N_ref", lambda v: v > 0, "> 0")):
            v = np.asarray(getattr(self, name), float)
            if not np.all(np.isfinite(v) & ok(v)):
                raise ValueError(f"parameter {name} = {float(np.ravel(v)[0]):g} must be {rule}")
        for rule in (self.rule, self.search_rule):
            ratio = np.asarray(rule.kink_ratio(np.asarray(self.lr), np.asarray(self.params.Q),
                                               np.asarray(self.params.q)))
            if np.any(ratio >= 1):
                raise ValueError(f"parameter q = {float(np.min(self.params.q)):g} is too small "
                                 f"for the quadrature rule (lr * Q * {rule.smooth_from:g}^-q = "
                                 f"{float(np.max(ratio)):g} >= 1); raise q or lower lr or Q")

    def check_peak(self, peak: float) -> None:
        """Refuse schedules whose largest step-size multiplier `peak` would diverge."""
        gamma = float(np.max(np.asarray(self.lr))) * max(peak, 1.0)
        Q = float(np.max(np.asarray(self.params.Q)))
        if gamma * Q >= 2:
            raise ValueError(f"step size diverges: the schedule's largest multiplier {peak:g} "
                             f"gives lr * {peak:g} * Q = {gamma * Q:g} >= 2; lower lr or the "
                             "multiplier")
        q = float(np.min(np.asarray(self.params.q)))
        if self.rule.kink_ratio(gamma, Q, q) >= 1:
            raise ValueError(f"parameter q = {q:g} is too small for the quadrature rule at the "
                             f"schedule's largest step size lr * {peak:g}; raise q, or lower lr "
                             "or Q")

    def prepare(self, runs: Runs, *, search: bool = False) -> NQSData | NQSCurveData:
        """Whole curves (one pass per run) when some run has several checkpoints, else one
        configuration per row; `search` takes the coarser pieces and rule."""
        rule = self.search_rule if search else self.rule
        curves = curve_data(runs, rule, "the sized NQS", coarse=search)
        if curves is None:
            return nqs_data(runs, rule, 1024, "the sized NQS", scan=search)
        return pad_pieces(curves, piece_bucket(curves.lengths.shape[1]))

    def predict_prepared(self, data: NQSData | NQSCurveData) -> FloatArray:
        if isinstance(data, NQSCurveData):
            return sized_curve_losses(self, data)
        return sized_final_losses(self, data)

    def planning_loss(self, N, B, K, seq_len):
        dtype = jnp.result_type(float)
        N, B, K = jnp.broadcast_arrays(*(jnp.asarray(v, dtype) for v in (N, B, K)))
        shape = N.shape
        N, B, K = (v.reshape(-1) for v in (N, B, K))
        N_eff, R_N, capacity = self.size_terms(N)
        theta = sized_theta(self, R_N, N.dtype)
        lrs = jnp.broadcast_to(jnp.asarray(self.lr, N.dtype), N.shape)[:, None]
        terms = risk_terms(theta, N_eff, lrs, B[:, None], K[:, None], self.search_rule,
                           2048, check=False)
        return (terms[0] + terms[1] + terms[2] + terms[3] + capacity).reshape(shape)

    # -- parameters -----------------------------------------------------------------

    def parameters(self) -> dict[str, FloatArray]:
        """The seven NQS parameters and the size terms kappa, A, alpha, rho."""
        out = {name: getattr(self.params, name) for name in PARAM_NAMES}
        out.update({name: getattr(self, name) for name in SIZE_NAMES})
        return out

    def options(self) -> dict[str, Any]:
        """The step size and the reference size."""
        return {"lr": float(np.asarray(self.lr)), "N_ref": float(np.asarray(self.N_ref))}

    def fit_space(self, runs: Runs, weights: np.ndarray | None = None) -> "SizedNQSSpace":
        return SizedNQSSpace.of(self, runs, weights)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], source: str) -> "SizedNQS":
        out = read_values(values, source, SIZED_NAMES, {"lr": DEFAULT_LR, "N_ref": 1e8})
        params = NQSParams(**{k: np.asarray(out[k]) for k in PARAM_NAMES})
        model = cls(params, **{k: out[k] for k in (*SIZE_NAMES, "lr", "N_ref")})
        try:
            model.check()
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
        return model


def call_schedule(B: RealLike, K: RealLike, schedule: Schedule | None) -> Schedule:
    """The schedule a model call runs: `schedule`, or one constant segment of `K` steps at
    batch size `B` (each checked, by name); `ValueError` for both or neither.

    **Example:**

    >>> from nqs_engine._model._nqs_sizes import call_schedule
    >>> s = call_schedule([64.0, 128.0], [1000.0, 1000.0], None)
    >>> s.batch.tolist(), s.steps.tolist()
    ([[64.0], [128.0]], [[1000.0], [1000.0]])
    """
    if schedule is None:
        if B is None or K is None:
            raise ValueError("give B and K, or a schedule")
        B, K = float_array(B, "B"), float_array(K, "K")
        return Schedule(jnp.ones(jnp.shape(K) + (1,)), B[..., None], K[..., None])
    if B is not None or K is not None:
        raise ValueError("give B and K, or a schedule, not both")
    return schedule


def piece_bucket(P: int) -> int:
    """The padded piece count for `P` pieces: the least of 16, 24, 32, 48, 64, 96, ... (powers
    of two and 1.5 times them) that holds them, so that fits on curves of similar lengths (the
    prefixes of a run) share compiled programs at most 1.5 times the work."""
    size = 16
    while size < P:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def pad_pieces(data: NQSCurveData, P: int) -> NQSCurveData:
    """Curve data padded to `P` pieces per run with empty ones (zero steps change nothing)."""
    extra = P - data.lengths.shape[1]
    if extra <= 0:
        return data
    edge = lambda a: jnp.pad(a, ((0, 0), (0, extra)), mode="edge")  # noqa: E731
    return eqx.tree_at(lambda d: (d.mult, d.batches, d.lengths), data,
                       (edge(data.mult), edge(data.batches),
                        jnp.pad(data.lengths, ((0, 0), (0, extra)))))


def sized_theta(model: SizedNQS, R_N: FloatArray, dtype) -> FloatArray:
    """The NQS parameters `(7, n)` of rows whose noise is `R_N (n,)`."""
    p = model.params
    n = R_N.shape[0]
    rows = [jnp.broadcast_to(jnp.asarray(v, dtype), (n,))
            for v in (p.p, p.q, p.P, p.Q, p.e_irr, R_N, p.r)]
    return jnp.stack(rows)


def sized_final_losses(model: SizedNQS, data: NQSData, mult: FloatArray | None = None
                       ) -> FloatArray:
    r"""The final loss of every row of `data`: the NQS on $\kappa N$ directions with noise
    $R_N$ over the row's segments, plus the capacity term. `mult` `(n, S)` replaces the
    segments' step-size multipliers (default `data.mult`)."""
    N_eff, R_N, capacity = model.size_terms(data.N)
    theta = sized_theta(model, R_N, data.N.dtype)
    mult = data.mult if mult is None else mult
    terms = risk_terms(theta, N_eff, model.lr * mult, data.batches, data.steps,
                       data.rule, data.chunk, check=False, scan=data.scan)
    return terms[0] + terms[1] + terms[2] + terms[3] + capacity


def sized_curve_losses(model: SizedNQS, data: NQSCurveData, mult: FloatArray | None = None
                       ) -> FloatArray:
    r"""The loss at every row of curve data: for each run (nominal size $N$) one pass of the NQS
    on $\kappa N$ directions with noise $R_N$ over its pieces, plus the capacity term. `mult`
    `(R, P)` replaces the pieces' step-size multipliers (default `data.mult`)."""
    N_eff, R_N, capacity = model.size_terms(data.N)
    theta = sized_theta(model, R_N, data.N.dtype)

    def one(th, n, mult, batches, lengths):
        return pieces_trajectory(tuple(th), n, model.lr * mult, batches, lengths, data.rule)

    mult = data.mult if mult is None else mult
    bias, var = jax.vmap(one)(theta.T, N_eff, mult, data.batches, data.lengths)
    fixed = theta[4] + approximation_term(theta[0], theta[2], N_eff, data.rule) + capacity
    total = fixed[:, None] + bias + var
    return total[data.row_run, data.row_piece]


# ---------------------------------------------------------------------------
# The flat form for fitting
# ---------------------------------------------------------------------------


def _inv_softplus(v):
    v = np.maximum(v, 1e-12)
    return v + np.log(-np.expm1(-v))


def _logit(s):
    s = np.clip(s, 1e-12, 1 - 1e-12)
    return np.log(s) - np.log1p(-s)


class SizedNQSSpace(AbstractFitSpace):
    """The unconstrained coordinates of [`SizedNQS`][] (module docstring), for one data set.

    `free` names the fitted parameters (the flat vector's entries, in
    `SIZED_NAMES` order); the others take their `fixed` values.
    """

    template: SizedNQS
    lr_max: FloatArray
    q_min: float = eqx.field(static=True)
    free: tuple[str, ...] = eqx.field(static=True)
    fixed: tuple[tuple[str, float], ...] = eqx.field(static=True)
    remarks: tuple[str, ...] = eqx.field(static=True, default=())

    @classmethod
    def of(cls, template: SizedNQS, runs: Runs, weights=None) -> "SizedNQSSpace":
        """The space for `runs` (rows of positive `weights`): Q bounded by the largest step
        size the runs take; size terms the data cannot identify fixed (and said)."""
        used = np.ones(runs.size, bool) if weights is None else np.asarray(weights) > 0
        if int(used.sum()) < 12:
            raise ValueError(f"too few observations to fit the 11 parameters of the sized NQS: "
                             f"{int(used.sum())} (need at least 12 rows: final losses or "
                             "checkpoints)")
        steps = np.asarray(runs.step)[used]
        if np.unique(np.asarray(runs.tokens)[used]).size < 2 and np.unique(steps).size < 2:
            raise ValueError("degenerate design: every run sees the same number of tokens; the "
                             "fit needs runs of different lengths, or checkpoints along them")
        data = nqs_data(runs, template.search_rule, 1, "the sized NQS")
        taken = np.where(np.asarray(data.steps) > 0, np.asarray(data.mult), 0)[used]
        peak = float(np.max(taken)) * float(np.max(np.asarray(template.lr)))
        if not peak > 0:
            raise ValueError("no run takes a step with a positive step size; nothing to fit")
        sizes = np.unique(np.asarray(runs.N)[used]).size
        fixed, remarks = {}, []
        if sizes < 2:
            fixed.update(A=0.0, alpha=DEFAULT_ALPHA, rho=0.0)
            remarks.append("every run has the same model size: the capacity term (A = 0) and "
                           "the noise exponent (rho = 0) are fixed, and kappa is identified "
                           "only through the spectrum; predictions for other sizes extrapolate")
        elif sizes < 3:
            fixed.update(alpha=DEFAULT_ALPHA)
            remarks.append(f"two model sizes: the capacity term A (N/N_ref)^-alpha is one offset, "
                           f"so alpha is fixed at {DEFAULT_ALPHA}; other sizes extrapolate it")
        free = tuple(n for n in SIZED_NAMES if n not in fixed)
        return cls(template=template, lr_max=jnp.asarray(peak), q_min=q_floor(template.search_rule),
                   free=free, fixed=tuple(fixed.items()), remarks=tuple(remarks))

    def values(self, u) -> dict[str, FloatArray]:
        """u -> every parameter by name, pure JAX."""
        u = jnp.clip(u, -50.0, 50.0)  # keeps far trial points finite
        sp, sig = jax.nn.softplus, jax.nn.sigmoid
        lo, hi = (np.log(v) for v in BOUNDS["kappa"])
        maps = {
            "p": lambda x: 1.0 + sp(x),
            "q": lambda x: self.q_min + sp(x),
            "P": jnp.exp,
            "Q": lambda x: (2.0 / self.lr_max) * sig(x),
            "e_irr": jnp.exp,
            "R": jnp.exp,
            "r": lambda x: BOUNDS["r"][0] + (BOUNDS["r"][1] - BOUNDS["r"][0]) * sig(x),
            "kappa": lambda x: jnp.exp(lo + (hi - lo) * sig(x)),
            "A": jnp.exp,
            "alpha": lambda x: BOUNDS["alpha"][1] * sig(x),
            "rho": lambda x: BOUNDS["rho"][1] * jnp.tanh(x),
        }
        out = {name: maps[name](u[i]) for i, name in enumerate(self.free)}
        out.update({name: jnp.asarray(v, u.dtype) for name, v in self.fixed})
        return out

    def to_model(self, u):
        v = self.values(u)
        params = NQSParams(*(v[n] for n in PARAM_NAMES))
        return eqx.tree_at(lambda m: (m.params, m.kappa, m.A, m.alpha, m.rho), self.template,
                           (params, v["kappa"], v["A"], v["alpha"], v["rho"]))

    def to_flat(self, model) -> np.ndarray:
        values = {n: np.asarray(v, np.float64) for n, v in model.parameters().items()}
        return self.flat_of_values(values)

    def flat_of_values(self, v: Mapping[str, np.ndarray]) -> np.ndarray:
        """Parameter values (each `(...)`) -> u `(..., d)`; values off the domain are clipped."""
        lo, hi = (np.log(b) for b in BOUNDS["kappa"])
        tiny = 1e-12
        inverse = {
            "p": lambda x: _inv_softplus(x - 1),
            "q": lambda x: _inv_softplus(x - self.q_min),
            "P": lambda x: np.log(np.maximum(x, tiny)),
            "Q": lambda x: _logit(x * float(np.asarray(self.lr_max)) / 2),
            "e_irr": lambda x: np.log(np.maximum(x, tiny)),
            "R": lambda x: np.log(np.maximum(x, tiny)),
            "r": lambda x: _logit((x - BOUNDS["r"][0]) / (BOUNDS["r"][1] - BOUNDS["r"][0])),
            "kappa": lambda x: _logit((np.log(np.maximum(x, tiny)) - lo) / (hi - lo)),
            "A": lambda x: np.log(np.maximum(x, tiny)),
            "alpha": lambda x: _logit(x / BOUNDS["alpha"][1]),
            "rho": lambda x: np.arctanh(np.clip(x / BOUNDS["rho"][1], -1 + 1e-12, 1 - 1e-12)),
        }
        return np.stack([inverse[n](np.asarray(v[n], np.float64)) for n in self.free], axis=-1)

    def candidates(self, num, seed, ranges) -> np.ndarray:
        bounds = dict(SIZED_START_RANGES)
        if ranges is not None:
            unknown = set(ranges) - set(SIZED_NAMES)
            if unknown:
                raise ValueError(f"unknown parameter(s) in ranges: {', '.join(sorted(unknown))}")
            bounds.update(ranges)
        n = int(num or 256)
        from scipy.stats import qmc  # here: scipy.stats costs ~0.4 s to import

        sample = qmc.LatinHypercube(d=len(self.free), seed=np.random.default_rng(seed)).random(n)
        values = {}
        for j, name in enumerate(self.free):
            a, b = (float(x) for x in bounds[name])
            if name in _LOG:
                values[name] = np.exp(np.log(a) + (np.log(b) - np.log(a)) * sample[:, j])
            else:
                values[name] = a + (b - a) * sample[:, j]
        if "Q" in values:  # sampled as a fraction of the stability limit
            values["Q"] = values["Q"] * 2 / float(np.asarray(self.lr_max))
        return self.flat_of_values(values)

    def describe_bounds(self, model) -> list[str]:
        u = self.to_flat(model)
        at = dict(zip(self.free, u))
        notes = list(self.remarks)
        if at.get("Q", 0.0) > 6.9:
            notes.append(f"Q = {float(model.params.Q):.6g} is at the edge of stability for the "
                         "largest step size of the data")
        if float(model.params.e_irr) < 1e-6:
            notes.append(f"e_irr = {float(model.params.e_irr):.3g} sits at its bound 0")
        for name, edge in (("r", 6.9), ("kappa", 6.9), ("alpha", 6.9), ("rho", 3.5)):
            if name in at and abs(at[name]) > edge:
                notes.append(f"{name} = {float(model.parameters()[name]):.6g} sits at a bound of "
                             f"{BOUNDS[name]}")
        if "A" in at and float(model.A) < 1e-6:
            notes.append(f"A = {float(model.A):.3g}: no capacity term (bound 0)")
        return notes


__all__ = [
    "BOUNDS",
    "DEFAULT_ALPHA",
    "SIZED_NAMES",
    "SIZED_START_RANGES",
    "SIZE_NAMES",
    "SizedBreakdown",
    "SizedNQS",
    "SizedNQSSpace",
    "call_schedule",
    "pad_pieces",
    "piece_bucket",
    "sized_curve_losses",
    "sized_final_losses",
    "sized_theta",
]
