r"""The NQS as loss models: the plain risk and the weight-norm variant.

Both hold the seven parameters $\theta = (p, q, P, Q, e_{irr}, R, r)$ ([`nqs_engine.NQSParams`][])
and the peak step size $\gamma_0$ (`lr`) that a run's learning-rate schedule
multiplies, and sum over directions with their own [`nqs_engine.SumRule`][]s
(`rule` for reported predictions, `search_rule` inside fits, plans and sweeps).
Their flat form for fitting is

$$p = 1 + \mathrm{softplus}(u_1),\ q = q_{min} + \mathrm{softplus}(u_2),\ P = e^{u_3},\
  Q = \frac{2}{\gamma_{max}}\,\sigma(u_4),\ e_{irr} = e^{u_5},\ R = e^{u_6},\ r = u_7,$$

so every $u$ is a valid model: $p > 1$; $\gamma_{max} Q < 2$ (SGD is stable at
the largest step size any run takes); and $q > q_{min} = 1.05 \log 2 / \log n_0$,
which keeps the kink of the summand at $\gamma\lambda_n = 1$ inside the exactly
summed head of the quadrature rule ($n_0$ = `rule.smooth_from`). $P, Q, e_{irr}, R$
are searched in log space and $p, q, r$ nearly directly (SPEC section 5); the
starting points are a Latin hypercube over [`START_RANGES`][].
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import FloatArray, RealLike
from .._misc import suggest
from .._params import DEFAULT_LR, PARAM_NAMES, PRESETS, NQSParams, check_params
from .._quadrature import SumRule
from .._risk._fast import losses, plain_loss, theta_of
from .._risk._risk import (
    NO_BUCKET,
    RiskBreakdown,
    float_array,
    prepare_inputs,
    risk,
    risk_terms,
    schedule_risk,
)
from .._risk._kernel import approximation_term
from .._risk._trajectory import pieces_trajectory
from .._risk._weight_norm import (
    WEIGHT_NORM_RULE,
    default_chunk,
    weight_norm_risk,
    weight_norm_terms,
)
from .._runs import Runs
from .._schedule import Schedule
from ._base import AbstractFitSpace, AbstractLossModel, FitDefaults, read_values

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

#: The quadrature rule used while fitting the plain risk (32 head terms, order 5: the
#: weight-norm variant's rule before its window took fewer nodes): 171 summand evaluations
#: per sum instead of 461. On the Pythia ladder it changes the objective by ~1e-13
#: (relative), far below anything that moves the optimum; reported objectives and
#: residuals use each model's `rule`. The weight-norm model searches with its own rule,
#: [`WEIGHT_NORM_RULE`][], which has the same head (so the same floor on q).
FIT_RULE = SumRule(head=32, panels=16, nodes=8, order=5)


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
    from scipy.stats import qmc  # here: scipy.stats costs ~0.4 s to import

    sample = qmc.LatinHypercube(d=7, seed=np.random.default_rng(seed)).random(num)
    points = qmc.scale(sample, lo, hi)
    cols = {}
    for j, name in enumerate(PARAM_NAMES):
        cols[name] = np.exp(points[:, j]) if name in _LOG_SPACE else points[:, j]
    return NQSParams(**cols)


def _preset_params(name: str) -> NQSParams:
    return NQSParams.from_dict(PRESETS[name])


def q_floor(rule: SumRule) -> float:
    r"""$q_{min} = 1.05 \log 2 / \log n_0$: with $\gamma Q < 2$ it keeps $\gamma Q n_0^{-q} < 1$,
    the kink of the summand inside the exact head of `rule` (5% margin)."""
    return 1.05 * float(np.log(2.0) / np.log(rule.smooth_from))


# ---------------------------------------------------------------------------
# Prepared data
# ---------------------------------------------------------------------------


class NQSData(eqx.Module):
    """Runs laid out for the NQS: flat model sizes and segments `(n, S)` (multipliers of lr)."""

    N: FloatArray
    mult: FloatArray
    batches: FloatArray
    steps: FloatArray
    init_sq_norm: FloatArray | None
    rule: SumRule = eqx.field(static=True)
    chunk: int = eqx.field(static=True)
    #: Scan the segments instead of unrolling them (the searches' form: under the fitter's
    #: derivatives it compiles several times faster, and runs faster too).
    scan: bool = eqx.field(static=True, default=False)

    @property
    def largest_multiplier(self) -> float:
        """The largest step-size multiplier any run takes a step at (host side)."""
        taken = np.where(np.asarray(self.steps) > 0, np.asarray(self.mult), 0)
        return float(np.max(taken)) if taken.size else 0.0


class NQSCurveData(eqx.Module):
    """Checkpoints of loss curves laid out for one pass per run.

    Each of the R runs is cut at its segment ends and its observed checkpoints
    into P pieces (padded with empty ones): step-size multipliers `mult (R, P)`,
    batch sizes `batches` and step counts `lengths`; piece 0 is empty, so the
    state after it is the start of the run. `N (R,)`; for each of the n rows
    its run and the piece that ends at its checkpoint.
    """

    N: FloatArray
    mult: FloatArray
    batches: FloatArray
    lengths: FloatArray
    row_run: jax.Array
    row_piece: jax.Array
    rule: SumRule = eqx.field(static=True)


def _run_pieces(mult, batches, steps, checkpoints):
    """One run's pieces (host side): segment ends and checkpoints merged, empty pieces dropped.

    Returns (multipliers, batches, lengths) of the pieces, a leading empty piece
    included, and the index of the piece ending at each checkpoint.
    """
    ends = np.cumsum(steps)
    cuts = np.unique(np.concatenate([ends[steps > 0], checkpoints[checkpoints > 0]]))
    cuts = cuts[cuts <= ends[-1] * (1 + 1e-12)]
    seg = np.minimum(np.searchsorted(ends, cuts * (1 - 1e-13), side="left"), ends.size - 1)
    lengths = np.diff(np.concatenate([[0.0], cuts]))
    # A piece spanning a whole segment takes its step count exactly.
    starts = ends - steps
    whole = np.isclose(cuts - lengths, starts[seg], rtol=0, atol=1e-9) & np.isclose(
        lengths, steps[seg], rtol=1e-12, atol=0)
    lengths = np.where(whole, steps[seg], lengths)
    at = np.searchsorted(cuts, checkpoints * (1 - 1e-13), side="left") + 1
    at = np.where(checkpoints > 0, at, 0)
    first = max(int(np.argmax(steps > 0)), 0)
    return (np.concatenate([[mult[first]], mult[seg]]), np.concatenate([[batches[first]],
            batches[seg]]), np.concatenate([[0.0], lengths]), at)


#: Within a checkpoint interval, the search merges adjacent pieces whose step-size
#: multipliers (and batch sizes) differ by at most this fraction.
MERGE_TOLERANCE = 0.05


def _merge_pieces(m, b, k, at):
    r"""Coarser pieces for searches: within each interval between checkpoints, adjacent
    pieces whose multiplier and batch differ from the first of their group by at most
    `MERGE_TOLERANCE` (relative) merge into one, keeping $\sum \gamma$ and
    $\sum \gamma^2 / B$; jumps and checkpoints stay edges. Returns the merged pieces
    and the new index of the piece ending at each checkpoint."""
    edge = np.zeros(k.size, bool)
    edge[at[at > 0]] = True  # a checkpoint ends here: the next piece starts a group
    start = np.ones(k.size, bool)
    first_m, first_b = m[0], b[0]
    for j in range(1, k.size):  # host side, once per run before the search
        close = (abs(m[j] - first_m) <= MERGE_TOLERANCE * max(m[j], first_m)
                 and abs(b[j] - first_b) <= MERGE_TOLERANCE * max(b[j], first_b))
        start[j] = edge[j - 1] or not close or k[j] == 0 or k[j - 1] == 0
        if start[j]:
            first_m, first_b = m[j], b[j]
    group = np.cumsum(start) - 1
    G = int(group[-1]) + 1
    steps = np.bincount(group, k, G)
    moved = np.bincount(group, m * k, G)
    noise = np.bincount(group, m * m / b * k, G)
    with np.errstate(divide="ignore", invalid="ignore"):
        mult = np.where(steps > 0, moved / steps, m[start])
        batch = np.where(noise > 0, mult**2 * steps / noise, b[start])
    return mult, batch, steps, group[at]


def curve_data(runs: Runs, rule: SumRule, who: str, coarse: bool = False) -> NQSCurveData | None:
    """The runs as whole curves (see [`NQSCurveData`][]), or None when every run has one row.

    Rows sharing a `run` label must be checkpoints of one run: the same model
    size and the same schedule up to the earlier checkpoint (`ValueError` naming
    the row otherwise). `coarse` merges nearly equal pieces between checkpoints
    ([`_merge_pieces`][]), for searches.
    """
    labels = np.asarray(runs.run)
    groups, row_run = np.unique(labels, return_inverse=True)
    row_run = row_run.reshape(-1)
    R = groups.size
    if R == runs.size:
        return None
    data = nqs_data(runs, rule, 1, who)
    N = np.asarray(data.N)
    step = np.asarray(runs.step, float)
    # The row with the last checkpoint of each run carries the run's schedule.
    order = np.lexsort((step, row_run))
    last = order[np.r_[np.flatnonzero(np.diff(row_run[order])), runs.size - 1]]
    if not np.all(N == N[last][row_run]):
        bad = int(np.flatnonzero(N != N[last][row_run])[0])
        raise ValueError(f"row {bad} has N = {N[bad]:g} but other rows of its run have "
                         f"N = {N[last][row_run][bad]:g}; rows sharing a run label must be "
                         "checkpoints of one run")
    mult, batches, steps = (np.asarray(a) for a in (data.mult, data.batches, data.steps))
    full = steps[last][row_run]
    truncated = np.clip(step[:, None] - (np.cumsum(full, axis=-1) - full), 0, full)
    used = steps > 0
    agree = (np.isclose(truncated, steps, rtol=1e-9, atol=1e-9).all(-1)
             & (~used | (mult == mult[last][row_run])).all(-1)
             & (~used | (batches == batches[last][row_run])).all(-1))
    if not agree.all():
        bad = int(np.argmin(agree))
        raise ValueError(f"row {bad} does not follow the schedule of the other rows of its run "
                         f"(label {groups[row_run[bad]]!r}); rows sharing a run label must be "
                         "checkpoints of one run")
    pieces, row_piece = [], np.zeros(runs.size, int)
    for r, i in enumerate(last):  # one host-side cut per run (a handful of runs)
        rows = np.flatnonzero(row_run == r)
        m, b, k, at = _run_pieces(mult[i], batches[i], steps[i], step[rows])
        if coarse:
            m, b, k, at = _merge_pieces(m, b, k, at)
        pieces.append((m, b, k))
        row_piece[rows] = at
    P = max(k.size for _, _, k in pieces)
    pad = lambda a, fill: np.concatenate([a, np.full(P - a.size, fill)])  # noqa: E731
    M = np.stack([pad(m, m[-1]) for m, _, _ in pieces])
    Bs = np.stack([pad(b, b[-1]) for _, b, _ in pieces])
    L = np.stack([pad(k, 0.0) for _, _, k in pieces])
    return NQSCurveData(N=jnp.asarray(N[last]), mult=jnp.asarray(M), batches=jnp.asarray(Bs),
                        lengths=jnp.asarray(L), row_run=jnp.asarray(row_run),
                        row_piece=jnp.asarray(row_piece), rule=rule)


def nqs_data(runs: Runs, rule: SumRule, chunk: int, who: str, scan: bool = False) -> NQSData:
    """The runs' schedules flattened to `(n, S)` arrays, with the optional `init_sq_norm` input
    (`scan`: see [`NQSData`][])."""
    schedule = runs.needs_schedule(who)
    dummy = NQSParams(1.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    prepared = prepare_inputs(dummy, runs.N, 1.0, (schedule.lr, schedule.batch, schedule.steps),
                              rule, chunk=NO_BUCKET)
    init = runs.inputs.get("init_sq_norm")
    return NQSData(N=prepared.N, mult=prepared.lrs, batches=prepared.batches,
                   steps=prepared.steps, init_sq_norm=None if init is None else jnp.asarray(init),
                   rule=rule, chunk=max(1, min(chunk, runs.size)), scan=scan)


# ---------------------------------------------------------------------------
# The family
# ---------------------------------------------------------------------------


class AbstractNQS(AbstractLossModel):
    r"""An NQS loss model: parameters $\theta$, peak step size $\gamma_0$ and quadrature rules."""

    params: eqx.AbstractVar[NQSParams]
    lr: eqx.AbstractVar[FloatArray]
    rule: eqx.AbstractVar[SumRule]
    search_rule: eqx.AbstractVar[SumRule]
    variant: ClassVar[str] = ""
    terms: ClassVar[tuple[str, ...]] = RiskBreakdown.TERMS

    def check(self) -> None:
        """`check_params` with this model's step size, and the kink condition of its rules."""
        check_params(self.params, self.lr)
        for rule in (self.rule, self.search_rule):
            ratio = np.asarray(rule.kink_ratio(np.asarray(self.lr), np.asarray(self.params.Q),
                                               np.asarray(self.params.q)))
            if np.any(ratio >= 1):
                q = float(np.min(np.asarray(self.params.q)))
                raise ValueError(
                    f"parameter q = {q:g} is too small for the quadrature rule (lr * Q * "
                    f"{rule.smooth_from:g}^-q = {float(np.max(ratio)):g} >= 1); raise q or lower "
                    "lr or Q"
                )

    def check_peak(self, peak: float) -> None:
        """Refuse schedules whose largest step-size multiplier `peak` would diverge."""
        if peak <= 1:
            return
        gamma = float(np.max(np.asarray(self.lr))) * peak
        Q, q = float(np.max(np.asarray(self.params.Q))), float(np.min(np.asarray(self.params.q)))
        if gamma * Q >= 2:
            raise ValueError(
                f"step size diverges: the schedule's largest multiplier {peak:g} gives "
                f"lr * {peak:g} * Q = {gamma * Q:g} >= 2; lower lr or the multiplier"
            )
        if self.rule.kink_ratio(gamma, Q, q) >= 1:
            raise ValueError(
                f"parameter q = {q:g} is too small for the engine's quadrature rule at the "
                f"schedule's largest step size lr * {peak:g}; raise q, or lower lr or Q"
            )

    def options(self) -> dict[str, Any]:
        """The step size (and the variant's own settings)."""
        return {"lr": float(np.asarray(self.lr)), **self.variant_options()}

    @abc.abstractmethod
    def variant_options(self) -> dict[str, Any]:
        """Settings of the variant besides the step size."""

    def with_params(self, params: NQSParams) -> "AbstractNQS":
        """The same model with other parameters."""
        return eqx.tree_at(lambda m: m.params, self, params)

    def as_variant(self, variant: str) -> "AbstractNQS":
        """The same parameters and step size in another variant (`"plain"`, `"weight-norm"`)."""
        return nqs_model(variant, self.params, self.lr)

    @classmethod
    def preset(cls, name: str) -> "AbstractNQS":
        """The named parameter preset (see [`nqs_engine.PRESETS`][]) as this model.

        **Example:**

        >>> import nqs_engine as nqs
        >>> round(float(nqs.NQS.preset("pythia-owt2").lr), 3)
        1.999
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}{suggest(name, PRESETS)}; available: "
                             f"{', '.join(sorted(PRESETS))}")
        values = PRESETS[name]
        return cls(NQSParams.from_dict(values), lr=float(values["lr"]))


def _check_design(runs: Runs, used: np.ndarray, min_rows: int = 8) -> None:
    """Refuse data that cannot pin down the seven parameters at all."""
    rows = int(np.sum(used))
    if rows < min_rows:
        raise ValueError(
            f"too few observations to fit the 7 NQS parameters: {rows} (need at least "
            f"{min_rows} rows: final losses or checkpoints)"
        )
    tokens = np.asarray(runs.tokens)[used]
    steps = np.asarray(runs.step)[used]
    if np.unique(tokens).size < 2 and np.unique(steps).size < 2:
        raise ValueError(
            "degenerate design: every run sees the same number of tokens; the fit needs "
            "runs of different lengths or batch sizes, or checkpoints along the runs"
        )


def design_notes(runs: Runs, used: np.ndarray) -> list[str]:
    """What the data cannot identify (reported with the fit, not refused)."""
    notes = []
    if np.unique(np.asarray(runs.N)[used]).size < 2:
        notes.append(
            "every run has the same model size: e_irr and the approximation term "
            "(1/2) P zeta(p, N + 1) are identified only as their sum, so predictions "
            "for other model sizes extrapolate the fitted spectrum"
        )
    return notes


def _nqs_values(values: Mapping[str, Any], source: str, extra: Mapping[str, Any]):
    out = read_values(values, source, PARAM_NAMES, {"lr": DEFAULT_LR, **extra})
    params = NQSParams(**{k: np.asarray(out[k]) for k in PARAM_NAMES})
    return params, out


class NQS(AbstractNQS):
    r"""The plain NQS (SPEC section 1): the expected risk of SGD on the noisy quadratic.

    For a run of $N$ directions under segments $(\gamma_s, B_s, k_s)$,
    $\gamma_s = m_s \gamma_0$, each direction starts at $b = 1$, $v = 0$ and, with
    $a_s = 1 - \gamma_s \lambda_n$, $\lambda_n = Q n^{-q}$,

    $$b \leftarrow b\,a_s^{2k_s},\qquad
      v \leftarrow v\,a_s^{2k_s} + \frac{\gamma_s^2}{B_s}\frac{1 - a_s^{2k_s}}{1 - a_s^2};$$

    $L = e_{irr} + \tfrac12 P\zeta(p, N+1) + \sum_{n\le N} \tfrac12 P n^{-p} b_n
    + \sum_{n \le N} \tfrac12 \lambda_n R n^{-r} v_n$. Calling it returns a
    [`nqs_engine.RiskBreakdown`][] ([`nqs_engine.risk`][] and
    [`nqs_engine.schedule_risk`][] are its functional face).

    **Arguments:** `params` ([`nqs_engine.NQSParams`][]; default the published fit
    to the Pythia ladder, preset `pythia-owt2`), `lr` $= \gamma_0$ (default 1.999),
    `rule` (predictions) and `search_rule` (inside fits, plans, sweeps).

    **Example:**

    >>> import nqs_engine as nqs
    >>> model = nqs.NQS.preset("pythia-owt2")
    >>> round(float(model(1e8, 256, 20_000).total), 4)
    2.4126
    >>> cosine = nqs.Schedule.cosine(20_000, 256, pieces=32, warmup=0.01)
    >>> round(float(model(1e8, schedule=cosine).total), 4)
    2.3572
    """

    params: NQSParams = eqx.field(default_factory=lambda: _preset_params("pythia-owt2"))
    lr: FloatArray = eqx.field(converter=jnp.asarray, default=DEFAULT_LR)
    rule: SumRule = eqx.field(static=True, default=SumRule())
    search_rule: SumRule = eqx.field(static=True, default=FIT_RULE)
    kind: ClassVar[str] = "nqs"
    label: ClassVar[str] = "plain"
    variant: ClassVar[str] = "plain"
    fit_defaults: ClassVar[FitDefaults] = FitDefaults(max_steps=400, polish_steps=30)

    def __check_init__(self):
        if not isinstance(self.params, NQSParams):
            raise TypeError(f"params must be an NQSParams, got {type(self.params).__name__}")

    def parameters(self) -> dict[str, FloatArray]:
        """The seven NQS parameters by name."""
        return {name: getattr(self.params, name) for name in PARAM_NAMES}

    def variant_options(self) -> dict[str, Any]:
        """None besides the step size."""
        return {}

    def fit_space(self, runs: Runs, weights: np.ndarray | None = None) -> "NQSSpace":
        return NQSSpace.of(self, runs, weights)

    def __call__(self, N: RealLike, B: RealLike = None, K: RealLike = None, *,
                 schedule: Schedule | None = None, **inputs: Any):
        _no_inputs(inputs, ())
        if schedule is None:
            if B is None or K is None:
                raise ValueError("give B and K, or a schedule")
            return risk(self.params, N, B, K, lr=self.lr, rule=self.rule)
        if B is not None or K is not None:
            raise ValueError("give B and K, or a schedule, not both")
        return schedule_risk(self.params, N, schedule, lr=self.lr, rule=self.rule)

    def prepare(self, runs: Runs, *, search: bool = False) -> NQSData | NQSCurveData:
        """The runs laid out once: as whole curves, one pass per run, when some run has
        several checkpoints ([`curve_data`][]); else one configuration per row."""
        rule = self.search_rule if search else self.rule
        curves = curve_data(runs, rule, "the NQS", coarse=search)
        if curves is None:
            return nqs_data(runs, rule, 1024, "the NQS", scan=search)
        return curves

    def predict_prepared(self, data: NQSData | NQSCurveData) -> FloatArray:
        if isinstance(data, NQSCurveData):
            return curve_losses(self.params, self.lr, data)
        return row_losses(self.params, self.lr, data)

    def planning_loss(self, N, B, K, seq_len):
        theta = theta_of(self.params)
        N, B, K = jnp.broadcast_arrays(*(jnp.asarray(v, theta.dtype) for v in (N, B, K)))
        if N.ndim == 0:
            return plain_loss(theta, N, B, K, self.lr, self.search_rule)
        shape = N.shape
        flat = [v.reshape(-1) for v in (N, B, K)]
        return losses(theta, *flat, self.lr, self.search_rule).reshape(shape)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], source: str) -> AbstractNQS:
        values = dict(values)
        variant = values.pop("variant", None) or "plain"
        if variant != cls.variant:  # files that name the variant beside model "nqs"
            return _VARIANTS_BY_NAME[_variant_name(variant, source)].from_values(values, source)
        params, out = _nqs_values(values, source, {})
        return cls(params, lr=out["lr"])


class WeightNormNQS(AbstractNQS):
    r"""The weight-norm variant of the NQS (SPEC section 2): the step size decays as the
    expected squared weight norm $W_2$ grows.

    The run is cut into stairs of $w(K)$ steps (and at the schedule's change
    points); before each stair
    $\gamma \leftarrow \min(\gamma_{prev}, \gamma_{sched}, \gamma_0 s/(s + W_2))$ with
    $s = E\|w_0\|^2 = N \sigma_0^2$ ($\sigma_0$ = `init_scale`, default 0.02) unless a run
    gives its own `init_sq_norm`. [`nqs_engine.weight_norm_risk`][] is its functional face.

    **Example:**

    >>> import nqs_engine as nqs
    >>> model = nqs.WeightNormNQS.preset("pythia-owt2")
    >>> round(float(model(1e8, 256, 10_000).total), 4) != round(float(
    ...     model.as_variant("plain")(1e8, 256, 10_000).total), 4)
    True
    """

    params: NQSParams = eqx.field(default_factory=lambda: _preset_params("pythia-owt2"))
    lr: FloatArray = eqx.field(converter=jnp.asarray, default=DEFAULT_LR)
    init_scale: FloatArray = eqx.field(converter=jnp.asarray, default=0.02)
    rule: SumRule = eqx.field(static=True, default=WEIGHT_NORM_RULE)
    search_rule: SumRule = eqx.field(static=True, default=WEIGHT_NORM_RULE)
    kind: ClassVar[str] = "nqs-weight-norm"
    label: ClassVar[str] = "weight-norm"
    inputs: ClassVar[tuple[str, ...]] = ("init_sq_norm",)
    variant: ClassVar[str] = "weight-norm"
    smooth_in_steps: ClassVar[bool] = False  # the stairs make the loss piecewise in K
    # The norm recursion is a checkpointed loop: reverse-mode derivatives only.
    fit_defaults: ClassVar[FitDefaults] = FitDefaults(max_steps=400, polish_steps=30,
                                                      jacobian="reverse")

    def __check_init__(self):
        if not isinstance(self.params, NQSParams):
            raise TypeError(f"params must be an NQSParams, got {type(self.params).__name__}")

    def variant_options(self) -> dict[str, Any]:
        return {"init_scale": float(np.asarray(self.init_scale))}

    def parameters(self) -> dict[str, FloatArray]:
        """The seven NQS parameters by name."""
        return {name: getattr(self.params, name) for name in PARAM_NAMES}

    def fit_space(self, runs: Runs, weights: np.ndarray | None = None) -> "NQSSpace":
        return NQSSpace.of(self, runs, weights)

    def __call__(self, N: RealLike, B: RealLike = None, K: RealLike = None, *,
                 schedule: Schedule | None = None, **inputs: Any):
        _no_inputs(inputs, type(self).inputs)
        if schedule is None:
            if B is None or K is None:
                raise ValueError("give B and K, or a schedule")
            schedule = Schedule.constant(K, B)
        elif B is not None or K is not None:
            raise ValueError("give B and K, or a schedule, not both")
        init = inputs.get("init_sq_norm")
        if init is None:
            init = float_array(N, "N") * self.init_scale**2
        return weight_norm_risk(self.params, N, schedule, lr=self.lr, init_sq_norm=init,
                                rule=self.rule)

    def prepare(self, runs: Runs, *, search: bool = False) -> NQSData:
        # The fit's searches differentiate through the stair loop: batches of 16 keep its
        # memory small. The accurate form (predictions; the polish of a fit, which has
        # fewer than 2,048 runs but for the largest logs) takes `default_chunk`'s batch.
        chunk = 16 if search else default_chunk(runs.size)
        return nqs_data(runs, self.search_rule if search else self.rule, chunk,
                        "the weight-norm NQS")

    def predict_prepared(self, data: NQSData) -> FloatArray:
        n = data.N.shape[0]
        theta = jnp.broadcast_to(theta_of(self.params, data.N.dtype)[:, None], (7, n))
        s0 = data.N * self.init_scale**2 if data.init_sq_norm is None else data.init_sq_norm
        gamma0 = jnp.broadcast_to(jnp.asarray(self.lr, data.N.dtype), (n,))
        bias, var, approx = weight_norm_terms(theta, data.N, gamma0[:, None] * data.mult,
                                              data.batches, data.steps, gamma0, s0, data.rule,
                                              data.chunk, check=False)
        return theta[4] + approx + bias + var

    def planning_loss(self, N, B, K, seq_len):
        theta = theta_of(self.params)
        N, B, K = jnp.broadcast_arrays(*(jnp.asarray(v, theta.dtype) for v in (N, B, K)))
        shape = N.shape
        N, B, K = (v.reshape(-1) for v in (N, B, K))
        n = N.shape[0]
        gamma0 = jnp.full((n,), self.lr, theta.dtype)
        th = jnp.broadcast_to(theta[:, None], (7, n))
        bias, var, approx = weight_norm_terms(th, N, gamma0[:, None], B[:, None], K[:, None],
                                              gamma0, N * self.init_scale**2, self.search_rule,
                                              16, check=False)
        return (theta[4] + approx + bias + var).reshape(shape)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], source: str) -> AbstractNQS:
        values = dict(values)
        variant = values.pop("variant", None) or cls.variant
        if variant != cls.variant:
            return _VARIANTS_BY_NAME[_variant_name(variant, source)].from_values(values, source)
        params, out = _nqs_values(values, source, {"init_scale": 0.02})
        return cls(params, lr=out["lr"], init_scale=out["init_scale"])


#: The NQS variants by name (`--variant` of the command line).
_VARIANTS_BY_NAME: dict[str, type] = {"plain": NQS, "weight-norm": WeightNormNQS}
VARIANTS = tuple(_VARIANTS_BY_NAME)


def row_losses(params: NQSParams, lr, data: NQSData) -> FloatArray:
    """The plain NQS loss of every row of per-row data (one configuration each), no checks."""
    n = data.N.shape[0]
    theta = jnp.broadcast_to(theta_of(params, data.N.dtype)[:, None], (7, n))
    terms = risk_terms(theta, data.N, lr * data.mult, data.batches, data.steps, data.rule,
                       data.chunk, check=False, scan=data.scan)
    return terms[0] + terms[1] + terms[2] + terms[3]


def curve_losses(params: NQSParams, lr, data: NQSCurveData) -> FloatArray:
    """The loss at every row of curve data: one pass over each run's pieces, rows gathered."""
    theta = tuple(theta_of(params, data.N.dtype))

    def one(N, mult, batches, lengths):
        return pieces_trajectory(theta, N, lr * mult, batches, lengths, data.rule)

    bias, var = jax.vmap(one)(data.N, data.mult, data.batches, data.lengths)
    fixed = theta[4] + approximation_term(theta[0], theta[2], data.N, data.rule)
    total = fixed[:, None] + bias + var
    return total[data.row_run, data.row_piece]


def _variant_name(variant: Any, source: str) -> str:
    if variant not in _VARIANTS_BY_NAME:
        raise ValueError(f"{source}: variant must be one of {', '.join(VARIANTS)}, got "
                         f"{variant!r}")
    return variant


def _no_inputs(inputs: Mapping[str, Any], known: tuple[str, ...]) -> None:
    extra = [k for k in inputs if k not in known]
    if extra:
        allowed = ", ".join(known) or "none"
        raise ValueError(f"the NQS does not take the input(s) {', '.join(extra)} (it takes: "
                         f"{allowed}); give B and K, or a schedule")


def nqs_model(variant: str, params: NQSParams, lr: RealLike = DEFAULT_LR,
              rule: SumRule | None = None) -> AbstractNQS:
    """The NQS model of `variant` (`"plain"` or `"weight-norm"`) with these parameters.

    **Example:**

    >>> import nqs_engine as nqs
    >>> from nqs_engine._model import nqs_model
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> type(nqs_model("weight-norm", params, lr)).__name__
    'WeightNormNQS'
    """
    cls = _VARIANTS_BY_NAME[_variant_name(variant, "variant")]
    model = cls(params, lr=lr)
    return model if rule is None else dataclasses.replace(model, rule=rule)


def as_model(params: Any, lr: RealLike | None = None, variant: str | None = None,
             rule: SumRule | None = None) -> AbstractLossModel:
    """A checked loss model from a model, or from `NQSParams` with `lr` and `variant`.

    The consumers that took `NQSParams` before loss models existed (planning,
    sweeps, figures) accept either through this. With `NQSParams`, `rule` is the
    quadrature of the search (default the planning rule, `search_rule`). A
    model carries its own step size and rules: giving `lr`, `variant` or `rule`
    with one is an error.

    **Example:**

    >>> import nqs_engine as nqs
    >>> from nqs_engine._model import as_model
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> type(as_model(params, lr, "weight-norm")).__name__, type(as_model(nqs.NQS())).__name__
    ('WeightNormNQS', 'NQS')
    """
    if isinstance(params, AbstractLossModel):
        if lr is not None or variant is not None or rule is not None:
            raise ValueError("lr, variant and rule go with NQSParams; a model carries its own")
        params.check()
        return params
    if not isinstance(params, NQSParams):
        raise TypeError(f"params must be a loss model or an NQSParams, got {type(params).__name__}")
    model = nqs_model(variant or "plain", params, DEFAULT_LR if lr is None else lr)
    if rule is not None:
        model = dataclasses.replace(model, search_rule=rule)
    model.check()
    return model


def predict_runs(
    params: NQSParams,
    runs: Runs,
    *,
    lr: RealLike = DEFAULT_LR,
    variant: str = "plain",
    rule: SumRule | None = None,
) -> FloatArray:
    r"""Predicted loss of every row of `runs` with the plain or weight-norm NQS.

    The functional face of [`AbstractLossModel.predict`][]: `params` may be batched
    (shape `(M,)`, e.g. bootstrap samples), giving `(M, n)`. The plain predictor is
    [`nqs_engine.schedule_risk`][], the other [`nqs_engine.weight_norm_risk`][]
    (initial squared norm $N \cdot 0.02^2$).

    **Example:**

    >>> import nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> runs = nqs.Runs.from_arrays(N=[1e7, 1e8], B=256, K=5000, loss=[3.4, 3.1])
    >>> nqs.predict_runs(params, runs, lr=lr).shape
    (2,)
    """
    return nqs_model(variant, params, lr, rule).predict(runs)


# ---------------------------------------------------------------------------
# The flat form for fitting
# ---------------------------------------------------------------------------


def _inv_softplus(v):
    v = np.maximum(v, 1e-12)
    return v + np.log(-np.expm1(-v))


class NQSSpace(AbstractFitSpace):
    """The unconstrained coordinates of the NQS (module docstring), for one data set."""

    template: AbstractNQS
    lr_max: FloatArray
    q_min: float = eqx.field(static=True)
    remarks: tuple[str, ...] = eqx.field(static=True, default=())

    @classmethod
    def of(cls, template: AbstractNQS, runs: Runs, weights=None) -> "NQSSpace":
        """The space of `template`'s family for `runs` (rows of positive `weights`): Q bounded
        by the largest step size the runs take; refuses designs that pin nothing down."""
        used = np.ones(runs.size, bool) if weights is None else np.asarray(weights) > 0
        _check_design(runs, used)
        data = nqs_data(runs, template.search_rule, 1, type(template).__name__)
        if not data.largest_multiplier > 0:
            raise ValueError("no run takes a step with a positive step size; nothing to fit")
        # The model itself must stay valid (lr * Q < 2: a multiplier of 1 is the peak step
        # size), also when the runs' schedules never reach their peak (cosine pieces).
        peak = max(1.0, data.largest_multiplier) * float(np.max(np.asarray(template.lr)))
        return cls(template=template, lr_max=jnp.asarray(peak),
                   q_min=q_floor(template.search_rule), remarks=tuple(design_notes(runs, used)))

    def theta(self, u):
        """u -> the seven parameters (a tuple), pure JAX."""
        u = jnp.clip(u, -50.0, 50.0)  # keeps far line-search probes finite
        sp = jax.nn.softplus
        Q = (2.0 / self.lr_max) * jax.nn.sigmoid(u[3])
        return (1.0 + sp(u[0]), self.q_min + sp(u[1]), jnp.exp(u[2]), Q,
                jnp.exp(u[4]), jnp.exp(u[5]), u[6])

    def to_model(self, u):
        return self.template.with_params(NQSParams(*self.theta(u)))

    def to_flat(self, model) -> np.ndarray:
        t = np.stack([np.asarray(getattr(model.params, n), np.float64) for n in PARAM_NAMES],
                     axis=-1)
        return self.flat_of_theta(t)

    def flat_of_theta(self, theta: np.ndarray) -> np.ndarray:
        """theta (..., 7) -> u (..., 7); values outside the domain are clipped into it."""
        t = np.asarray(theta, dtype=np.float64)
        tiny = 1e-12
        s = np.clip(t[..., 3] * float(np.asarray(self.lr_max)) / 2, tiny, 1 - 1e-9)
        return np.stack(
            [
                _inv_softplus(t[..., 0] - 1),
                _inv_softplus(t[..., 1] - self.q_min),
                np.log(np.maximum(t[..., 2], tiny)),
                np.log(s) - np.log1p(-s),
                np.log(np.maximum(t[..., 4], tiny)),
                np.log(np.maximum(t[..., 5], tiny)),
                t[..., 6],
            ],
            axis=-1,
        )

    def candidates(self, num, seed, ranges) -> np.ndarray:
        starts = latin_hypercube_starts(int(num or 4096), seed, ranges)
        theta = np.stack([np.asarray(getattr(starts, n), float) for n in PARAM_NAMES], axis=-1)
        return self.flat_of_theta(theta)

    def describe_bounds(self, model) -> list[str]:
        u = self.to_flat(model)
        p = model.params
        notes = list(self.remarks)
        if u[3] > 6.9:  # sigmoid > 0.999: Q within 0.1% of the stability limit
            notes.append(f"Q = {float(p.Q):.6g} is at the edge of stability: lr * Q * (largest "
                         f"multiplier) = {2 / (1 + np.exp(-u[3])):.4f} -> 2; a larger step size "
                         "than the data's will diverge")
        if float(p.e_irr) < 1e-6:
            notes.append(f"e_irr = {float(p.e_irr):.3g} sits at its bound 0")
        if float(p.p) < 1 + 1e-6:
            notes.append(f"p = {float(p.p):.8g} sits at its bound 1")
        if float(p.q) < self.q_min * (1 + 1e-6):
            notes.append(f"q = {float(p.q):.6g} sits at its bound {self.q_min:.6g}")
        return notes


__all__ = [
    "AbstractNQS",
    "FIT_RULE",
    "NQS",
    "NQSData",
    "NQSSpace",
    "START_RANGES",
    "VARIANTS",
    "as_model",
    "WeightNormNQS",
    "latin_hypercube_starts",
    "nqs_data",
    "curve_data",
    "curve_losses",
    "nqs_model",
    "predict_runs",
    "q_floor",
    "row_losses",
]
