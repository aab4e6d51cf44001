r"""The NQS with each run's peak learning rate (and width) as inputs.

Real ladders set the learning rate per run (Marin: $\eta = 0.33\sqrt{B}/d$), and a
fixed step size $\gamma_0$ for every run leaves the NQS one channel for the batch
size, the variance term $\propto 1/B$, which runs out: it then predicts a floor
where the real runs, trained at larger rates, keep improving. This model maps a
run's peak learning rate $\eta_i$ and width $d_i$ to NQS *time*:

$$c_i = \left(\frac{\eta_i}{\eta_{ref}}\right)^{s_\eta}\left(\frac{d_i}{d_{ref}}\right)^{s_d},$$

and evaluates the plain NQS (SPEC section 1) with every segment of the run's
schedule run for $c_i k_s$ steps at batch $B_s / c_i$. For the directions with
$\gamma\lambda_n \ll 1$ (all but the very top) this is exactly SGD at step size
$c_i\gamma$ for $k_s$ steps at batch $B_s$ (same decay $a^{2k}$ to first order,
same injected noise $\gamma^2 k / B$), but unlike scaling $\gamma$ it can never push
the top direction past the edge of stability on a run it was not fitted to.
$s_\eta$ and $s_d$ are fitted, in $[0, 4]$; the references are the largest
$\eta$ and $d$ of the fitted runs, so $c \le 1$ there. A run without a learning
rate or width (an input the fitted runs did not have) gets factor 1 for it, and
the model is then the plain NQS: on a ladder with one learning rate (Pythia) the
fit is the plain fit. Theory agrees with the fitted exponents: Adam's
square-root scaling rule corresponds to SGD's linear one, $\gamma_{SGD} \propto
\eta_{Adam}^2$, i.e. $s_\eta \approx 2$ (both Marin ladders fit 1.86-1.92).

Weakly identified directions are bounded: $r \in [0, 5]$ (unbounded, multistart
fits fall into basins with $r \to 50$, $R \to 0$).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import FloatArray, RealLike
from .._params import DEFAULT_LR, PARAM_NAMES, NQSParams
from .._quadrature import SumRule
from .._risk._risk import RiskBreakdown, float_array, risk_terms, schedule_risk
from .._risk._fast import theta_of
from .._runs import Runs
from .._schedule import Schedule
from ._base import AbstractFitSpace, FitDefaults, read_values
from ._nqs import (
    FIT_RULE,
    AbstractNQS,
    NQSCurveData,
    NQSData,
    NQSSpace,
    curve_data,
    curve_losses,
    nqs_data,
    row_losses,
)

#: The per-run inputs the model reads: the run's peak learning rate and width.
INPUTS = ("lr", "width")
#: Box of the exponents $s_\eta, s_d$ and of the noise exponent $r$.
EXPONENT_RANGE = (0.0, 4.0)
R_RANGE = (0.0, 5.0)
#: Where the starting points of the exponents are drawn.
EXPONENT_STARTS = {"lr": (0.5, 2.5), "width": (0.0, 2.5)}


class LRData(eqx.Module):
    """The NQS data of the runs and, per row (or per run for curves), the log inputs."""

    base: NQSData | NQSCurveData
    log_inputs: FloatArray  # (rows or runs, 2): log eta, log d (0 where absent)
    present: FloatArray  # (rows or runs, 2): 1 where the input is given


def _log_inputs(runs: Runs) -> tuple[np.ndarray, np.ndarray]:
    cols, mask = [], []
    for name in INPUTS:
        if name in runs.inputs:
            v = np.asarray(runs.inputs[name], float)
            if not np.all(v > 0):
                i = int(np.argmax(~(v > 0)))
                raise ValueError(f"input {name}[{i}] = {v[i]:g} must be > 0")
            cols.append(np.log(v))
            mask.append(np.ones(v.size))
        else:
            cols.append(np.zeros(runs.size))
            mask.append(np.zeros(runs.size))
    return np.stack(cols, -1), np.stack(mask, -1)


class LearningRateNQS(AbstractNQS):
    r"""The plain NQS with each run's peak learning rate and width mapped to time (module
    docstring): segment $s$ runs $c_i k_s$ steps at batch $B_s / c_i$, with
    $c_i = (\eta_i/\eta_{ref})^{s_\eta} (d_i/d_{ref})^{s_d}$.

    **Arguments:** `params` ([`nqs_engine.NQSParams`][]), `s_lr` $= s_\eta$, `s_width`
    $= s_d$, `lr_ref` $= \eta_{ref}$ and `width_ref` $= d_{ref}$ (1 where unknown), `lr`
    $= \gamma_0$ and the quadrature rules. Inputs of a call or of [`nqs_engine.Runs`][]:
    `lr` (peak learning rate) and `width`.

    **Example:** the batch doubled at a learning rate grown by $\sqrt 2$ (Adam's rule):
    with $s_\eta = 2$ the run moves as far per token.

    >>> import nqs_engine as nqs
    >>> params, _ = nqs.preset("pythia-owt2")
    >>> model = nqs.LearningRateNQS(params, s_lr=2.0, lr_ref=1e-3)
    >>> slow = model(1e8, 256, 20_000, lr=1e-3 / 2**0.5).total
    >>> fast = model(1e8, 512, 20_000, lr=1e-3).total
    >>> bool(fast < slow)
    True
    """

    params: NQSParams = eqx.field(default_factory=lambda: NQSParams(1.5, 1.0, 3.0, 0.5, 0.5,
                                                                    1.0, 1.0))
    s_lr: FloatArray = eqx.field(converter=jnp.asarray, default=0.0)
    s_width: FloatArray = eqx.field(converter=jnp.asarray, default=0.0)
    lr_ref: FloatArray = eqx.field(converter=jnp.asarray, default=1.0)
    width_ref: FloatArray = eqx.field(converter=jnp.asarray, default=1.0)
    lr: FloatArray = eqx.field(converter=jnp.asarray, default=DEFAULT_LR)
    rule: SumRule = eqx.field(static=True, default=SumRule())
    search_rule: SumRule = eqx.field(static=True, default=FIT_RULE)
    kind: ClassVar[str] = "nqs-lr"
    label: ClassVar[str] = "plain, lr-mapped"
    variant: ClassVar[str] = "plain"
    inputs: ClassVar[tuple[str, ...]] = INPUTS
    terms: ClassVar[tuple[str, ...]] = RiskBreakdown.TERMS
    fit_defaults: ClassVar[FitDefaults] = FitDefaults(max_steps=400, polish_steps=30)

    def __check_init__(self):
        if not isinstance(self.params, NQSParams):
            raise TypeError(f"params must be an NQSParams, got {type(self.params).__name__}")

    def parameters(self) -> dict[str, FloatArray]:
        return {**{n: getattr(self.params, n) for n in PARAM_NAMES}, "s_lr": self.s_lr,
                "s_width": self.s_width}

    def variant_options(self) -> dict[str, Any]:
        return {"lr_ref": float(np.asarray(self.lr_ref)),
                "width_ref": float(np.asarray(self.width_ref))}

    def factor(self, log_inputs, present):
        r"""$c = \exp\big(s_\eta (\log\eta - \log\eta_{ref}) + s_d (\log d - \log d_{ref})\big)$,
        factor 1 for an absent input."""
        x = log_inputs - jnp.log(jnp.stack([self.lr_ref, self.width_ref]))
        s = jnp.stack([self.s_lr, self.s_width])
        return jnp.exp(jnp.sum(present * x * s, axis=-1))

    def __call__(self, N: RealLike, B: RealLike = None, K: RealLike = None, *,
                 schedule: Schedule | None = None, **inputs: Any) -> RiskBreakdown:
        unknown = [k for k in inputs if k not in INPUTS]
        if unknown:
            raise ValueError(f"the lr-mapped NQS does not take the input(s) {', '.join(unknown)} "
                             f"(it takes: {', '.join(INPUTS)})")
        if schedule is None:
            if B is None or K is None:
                raise ValueError("give B and K, or a schedule")
            schedule = Schedule.constant(K, B)
        elif B is not None or K is not None:
            raise ValueError("give B and K, or a schedule, not both")
        values = [inputs.get(name) for name in INPUTS]
        logs = [jnp.zeros(()) if v is None else jnp.log(float_array(v, name))
                for v, name in zip(values, INPUTS)]
        present = [jnp.asarray(0.0 if v is None else 1.0) for v in values]
        logs = jnp.stack(jnp.broadcast_arrays(*logs), -1)
        c = self.factor(logs, jnp.stack(present))
        timed = Schedule(schedule.lr, schedule.batch / c[..., None], schedule.steps * c[..., None])
        return schedule_risk(self.params, N, timed, lr=self.lr, rule=self.rule)

    def prepare(self, runs: Runs, *, search: bool = False) -> LRData:
        rule = self.search_rule if search else self.rule
        x, present = _log_inputs(runs)
        for j, (name, s) in enumerate(zip(INPUTS, (self.s_lr, self.s_width))):
            if not present[:, j].all() and np.any(np.asarray(s) != 0):
                raise ValueError(
                    f"the model maps each run's {name} to time (s_{name} = "
                    f"{float(np.max(np.asarray(s))):.4g}) but the runs do not give {name!r} for "
                    "every row: give it (a column or input named so)")
        curves = curve_data(runs, rule, "the lr-mapped NQS", coarse=search)
        if curves is None:
            return LRData(nqs_data(runs, rule, 1024, "the lr-mapped NQS", scan=search),
                          jnp.asarray(x), jnp.asarray(present))
        first = np.zeros(int(curves.N.shape[0]), int)
        row_run = np.asarray(curves.row_run)
        first[row_run[::-1]] = np.arange(row_run.size)[::-1]
        if not np.allclose(x[first][row_run], x):
            bad = int(np.argmax(~np.isclose(x[first][row_run], x).all(-1)))
            raise ValueError(f"row {bad}: the learning rate and width of a run's rows must agree")
        return LRData(curves, jnp.asarray(x[first]), jnp.asarray(present[first]))

    def predict_prepared(self, data: LRData) -> FloatArray:
        c = self.factor(data.log_inputs, data.present)
        base = data.base
        if isinstance(base, NQSCurveData):
            timed = eqx.tree_at(lambda d: (d.batches, d.lengths), base,
                                (base.batches / c[:, None], base.lengths * c[:, None]))
            return curve_losses(self.params, self.lr, timed)
        timed = eqx.tree_at(lambda d: (d.batches, d.steps), base,
                            (base.batches / c[:, None], base.steps * c[:, None]))
        return row_losses(self.params, self.lr, timed)

    def planning_loss(self, N, B, K, seq_len):
        """The loss of constant runs at the reference learning rate and width ($c = 1$)."""
        theta = theta_of(self.params)
        N, B, K = jnp.broadcast_arrays(*(jnp.asarray(v, theta.dtype) for v in (N, B, K)))
        shape = N.shape
        flat = [v.reshape(-1) for v in (N, B, K)]
        n = flat[0].shape[0]
        th = jnp.broadcast_to(theta[:, None], (7, n))
        terms = risk_terms(th, flat[0], jnp.full((n, 1), self.lr, theta.dtype), flat[1][:, None],
                           flat[2][:, None], self.search_rule, 2048, check=False)
        return (terms[0] + terms[1] + terms[2] + terms[3]).reshape(shape)

    def fit_space(self, runs: Runs, weights: np.ndarray | None = None) -> "LRSpace":
        base = NQSSpace.of(self, runs, weights)
        x, present = _log_inputs(runs)
        used = np.ones(runs.size, bool) if weights is None else np.asarray(weights) > 0
        has = tuple(bool(present[used, j].all()) for j in range(len(INPUTS)))
        partial = [name for name, j in zip(INPUTS, range(2))
                   if present[used, j].any() and not has[j]]
        if partial:
            raise ValueError(f"input {partial[0]!r} is given for some fitted runs and not others")
        refs = [float(np.max(np.asarray(runs.inputs[name], float)[used])) if has[j] else 1.0
                for j, name in enumerate(INPUTS)]
        template = eqx.tree_at(lambda m: (m.lr_ref, m.width_ref), self,
                               (jnp.asarray(refs[0]), jnp.asarray(refs[1])))
        return LRSpace(base=eqx.tree_at(lambda s: s.template, base, template), has=has)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], source: str) -> "LearningRateNQS":
        values = dict(values)
        values.pop("variant", None)
        out = read_values(values, source, PARAM_NAMES, {
            "lr": DEFAULT_LR, "s_lr": 0.0, "s_width": 0.0, "lr_ref": 1.0, "width_ref": 1.0})
        params = NQSParams(**{k: np.asarray(out[k]) for k in PARAM_NAMES})
        return cls(params, s_lr=out["s_lr"], s_width=out["s_width"], lr_ref=out["lr_ref"],
                   width_ref=out["width_ref"], lr=out["lr"])


def _logit(f):
    f = np.clip(f, 1e-9, 1 - 1e-9)
    return np.log(f) - np.log1p(-f)


class LRSpace(AbstractFitSpace):
    r"""The NQS's coordinates with $r = 5\sigma(u_7)$, and $s = 4\sigma(u)$ for each input the
    fitted runs give (an absent input's exponent is fixed at 0)."""

    base: NQSSpace
    has: tuple[bool, ...] = eqx.field(static=True)

    def _extra(self) -> int:
        return sum(self.has)

    def to_model(self, u):
        theta = list(self.base.theta(u[:7]))
        theta[6] = R_RANGE[0] + (R_RANGE[1] - R_RANGE[0]) * jax.nn.sigmoid(
            jnp.clip(u[6], -50.0, 50.0))
        lo, hi = EXPONENT_RANGE
        s, k = [], 7
        for present in self.has:
            if present:
                s.append(lo + (hi - lo) * jax.nn.sigmoid(jnp.clip(u[k], -50.0, 50.0)))
                k += 1
            else:
                s.append(jnp.zeros((), u.dtype))
        model = self.base.template.with_params(NQSParams(*theta))
        return eqx.tree_at(lambda m: (m.s_lr, m.s_width), model, tuple(s))

    def _u_of(self, theta: np.ndarray, s: np.ndarray) -> np.ndarray:
        u = self.base.flat_of_theta(theta)
        u[..., 6] = _logit((theta[..., 6] - R_RANGE[0]) / (R_RANGE[1] - R_RANGE[0]))
        lo, hi = EXPONENT_RANGE
        extra = [_logit((s[..., j] - lo) / (hi - lo)) for j in range(2) if self.has[j]]
        return np.concatenate([u, np.stack(extra, -1)], -1) if extra else u

    def to_flat(self, model) -> np.ndarray:
        theta = np.stack([np.asarray(getattr(model.params, n), np.float64) for n in PARAM_NAMES],
                         axis=-1)
        s = np.stack(np.broadcast_arrays(np.asarray(model.s_lr, float),
                                         np.asarray(model.s_width, float)), -1)
        return self._u_of(theta, np.broadcast_to(s, (*theta.shape[:-1], 2)))

    def candidates(self, num, seed, ranges) -> np.ndarray:
        u = self.base.candidates(num, seed, ranges)
        theta = np.array(jax.vmap(lambda v: jnp.stack(self.base.theta(v)))(jnp.asarray(u)))
        theta[:, 6] = np.clip(theta[:, 6], 0.01, 4.99)
        rng = np.random.default_rng(seed + 1)
        s = np.stack([rng.uniform(*EXPONENT_STARTS[name], theta.shape[0]) for name in INPUTS], -1)
        return self._u_of(theta, s)

    def describe_bounds(self, model) -> list[str]:
        notes = self.base.describe_bounds(model)
        for name, value in (("r", model.params.r), ("s_lr", model.s_lr),
                            ("s_width", model.s_width)):
            lo, hi = R_RANGE if name == "r" else EXPONENT_RANGE
            v = float(value)
            if (name == "r" or self.has[INPUTS.index(name[2:])]) and min(v - lo, hi - v) < 1e-6 * (hi - lo):
                notes.append(f"{name} = {v:.6g} sits at a bound of [{lo:g}, {hi:g}]")
        return notes


__all__ = ["EXPONENT_RANGE", "INPUTS", "LRData", "LRSpace", "LearningRateNQS", "R_RANGE"]
