r"""A run's final loss from the first part of its curve, and endpoint compute laws.

**Prefix -> endpoint.** A run $i$ of $K_i$ steps is observed up to a fraction $p$
of them; its final loss $L_i(K_i)$ is to be predicted. Two kinds of predictor:

- *parametric forms*, fitted to the run's own prefix alone, in the normalised
  progress $\tau = s / K_i$:

  $$L(\tau) = F + A\,g(\tau; \theta),\qquad
    g_{log} = -\log(\tau + c),\ g_{exp} = e^{-\tau/c},\
    g_{power} = (\tau + c)^{-a},\ g_{rational} = \frac{1}{1 + \tau / c},$$

  with $A \ge 0$, $c > 0$, $a > 0$, by bounded least absolute error
  (`scipy.optimize.minimize`) or Huber (`scipy.optimize.least_squares`,
  `loss="huber"`), from a small grid of shape starts ($F, A$ by least squares
  for each), and extrapolated to $\tau = 1$;
- *a loss model* (by default [`nqs_engine.SizedNQS`][]), fitted jointly to every
  run's checkpoints up to a cutoff and evaluated at the end of the target's
  known (planned) schedule.

The model protocol never reads a loss past $p$ of the run it predicts, nor
past that step of any other run, which may share the target's prefix (the same
run continued under another schedule): runs whose final steps agree within
2% form a group of targets, the cutoff is $c = p \min_{i \in group} K_i$, and
the fit sees only checkpoints at steps $\le c$ of every run. Those past it are
never handed to the fit (their losses are not even copied).

**Endpoint compute law.** Per schedule family, final losses against compute
$C$ are fitted on the smaller budgets by

$$L(C) = E + A\,(C / 10^{18})^{-\alpha},\qquad 0 \le E < \min L,\ A \ge 0,\ \alpha \ge 0,$$

or the two-parameter log-log form $L(C) = A (C/10^{18})^{-\alpha}$, and the
held-out larger budgets are predicted ([`fit_compute_law`][],
[`compute_law_backtest`][]).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ._fit._fit import prepare_fit, refine_starts, report_fit, screen_starts
from ._model import AbstractLossModel
from ._model._nqs_sizes import SizedNQS
from ._quadrature import SumRule
from ._runs import Runs

#: The prefix fractions reported by default.
FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 10))

#: The per-run fitting criteria of the parametric forms.
CRITERIA = ("mae", "huber")

#: Huber scale (nats) of the parametric forms' robust fits.
HUBER_SCALE = 1e-3

#: Of a form's grid of shape starts, how many (those of lowest objective after the
#: least-squares F, A) are refined.
SHAPE_STARTS = 3


def _g_log(t, c):
    return -np.log(t + c)


def _g_exp(t, c):
    return np.exp(-t / c)


def _g_power(t, c, a):
    return (t + c) ** (-a)


def _g_rational(t, c):
    return 1.0 / (1.0 + t / c)


@dataclasses.dataclass(frozen=True)
class Form:
    """A parametric curve $F + A g(\\tau; \\theta)$: its shape `g`, the shape parameters'
    bounds and the grid of shape starts."""

    name: str
    g: Callable[..., np.ndarray]
    bounds: tuple[tuple[float, float], ...]
    grid: tuple[tuple[float, ...], ...]

    def __call__(self, tau: Any, x: Sequence[float]) -> np.ndarray:
        """$F + A g(\\tau; \\theta)$ at `tau` for parameters `x = (F, A, *theta)`."""
        return x[0] + x[1] * self.g(np.asarray(tau, float), *x[2:])


#: The parametric forms of seed 003's dashboard, by name.
FORMS: dict[str, Form] = {
    "log": Form("log", _g_log, ((1e-4, 10.0),), tuple((c,) for c in (1e-3, 1e-2, 0.1, 1.0))),
    "exp": Form("exp", _g_exp, ((1e-3, 100.0),),
                tuple((c,) for c in (0.03, 0.1, 0.3, 1.0, 3.0))),
    "power": Form("power", _g_power, ((1e-4, 10.0), (1e-3, 5.0)),
                  tuple((c, a) for c in (1e-3, 1e-2, 0.1, 1.0) for a in (0.1, 0.3, 1.0))),
    "rational": Form("rational", _g_rational, ((1e-4, 100.0),),
                     tuple((c,) for c in (1e-3, 1e-2, 0.1, 1.0, 10.0))),
}


def fit_form(form: str | Form, tau: Any, y: Any, criterion: str = "mae") -> np.ndarray:
    r"""Fit $L(\tau) = F + A g(\tau;\theta)$ to points $(\tau_j, y_j)$; returns $(F, A, \theta)$.

    `criterion` `"mae"` minimises $\frac1n\sum_j |L(\tau_j) - y_j|$ under the bounds
    (Powell, then Nelder-Mead from its end point); `"huber"` minimises
    $\sum_j H(L(\tau_j) - y_j)$ with Huber scale [`HUBER_SCALE`][] nats
    (trust-region reflective). Each shape start of the form's grid gets $F, A$ by
    linear least squares; the [`SHAPE_STARTS`][] of lowest objective are refined
    and the end point of lowest objective is returned. Bounds:
    $F \in [-10, 20]$, $A \in [10^{-8}, 100]$ and the form's own shape bounds.

    **Example:** a power law recovered from its noiseless points.

    >>> import numpy as np
    >>> from nqs_engine._prefix import FORMS, fit_form
    >>> tau = np.linspace(0.05, 0.5, 30)
    >>> y = FORMS["power"](tau, (2.0, 0.5, 0.05, 0.6))
    >>> x = fit_form("power", tau, y, "huber")
    >>> round(float(FORMS["power"](1.0, x)), 4), round(float(FORMS["power"](1.0, (2.0, 0.5, 0.05, 0.6))), 4)
    (2.4856, 2.4856)
    """
    from scipy.optimize import least_squares, minimize

    f = FORMS[form] if isinstance(form, str) else form
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    tau, y = np.asarray(tau, float), np.asarray(y, float)
    if tau.shape != y.shape or tau.ndim != 1:
        raise ValueError(f"tau and y must be 1-D arrays of one length, got {tau.shape} and "
                         f"{y.shape}")
    if tau.size < len(f.bounds) + 2:
        raise ValueError(f"the {f.name} form has {len(f.bounds) + 2} parameters; "
                         f"{tau.size} point(s) cannot pin them down")
    bounds = ((-10.0, 20.0), (1e-8, 100.0), *f.bounds)
    lo, hi = np.array([b[0] for b in bounds]), np.array([b[1] for b in bounds])

    def value(x):
        e = f(tau, x) - y
        if criterion == "mae":
            return float(np.mean(np.abs(e)))
        a = np.abs(e)
        return float(np.sum(np.where(a <= HUBER_SCALE, 0.5 * e * e,
                                     HUBER_SCALE * (a - 0.5 * HUBER_SCALE))))

    starts = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for shape in f.grid:  # F, A by least squares for each shape start
            gv = f.g(tau, *shape)
            X = np.stack([np.ones_like(gv), gv], axis=1)
            (F0, A0), *_ = np.linalg.lstsq(X, y, rcond=None)
            x0 = np.clip(np.array([F0, max(A0, 1e-6), *shape]), lo, hi)
            starts.append((value(x0), x0))
        starts.sort(key=lambda item: item[0] if np.isfinite(item[0]) else np.inf)
        best, best_value = None, np.inf
        for _, x0 in starts[:SHAPE_STARTS]:  # the most promising starts, refined
            if criterion == "mae":
                r = minimize(value, x0, method="Powell", bounds=list(bounds),
                             options=dict(maxiter=2000, xtol=1e-7, ftol=1e-10))
                r = minimize(value, r.x, method="Nelder-Mead", bounds=list(bounds),
                             options=dict(maxiter=1000, xatol=1e-8, fatol=1e-11))
                x = r.x
            else:
                x = least_squares(lambda x: f(tau, x) - y, x0, loss="huber",
                                  f_scale=HUBER_SCALE, bounds=(lo, hi), max_nfev=1000,
                                  xtol=1e-10, ftol=1e-10).x
            v = value(x)
            if np.isfinite(v) and v < best_value:
                best, best_value = x, v
    if best is None:
        raise ValueError(f"the {f.name} form could not be fitted (non-finite at every start)")
    return np.asarray(best, float)


# ---------------------------------------------------------------------------
# Logged curves
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CurveLog:
    r"""Loss curves logged with their learning rate: one row per checkpoint (host side).

    `run` labels (rows of one run share one), `N` model sizes, `step` checkpoint
    steps, `lr` the learning rate logged at each, `loss` (or `None`), `B` batch
    sizes, and how to read the schedule ([`nqs_engine.Runs.from_curves`][]):
    `warmup` steps of linear warmup from 0 before the first log, `peak` the rate
    that step size $\gamma_0$ stands for (default: the largest rate logged in the
    whole table, so that every prefix of a run keeps its multipliers), `seq_len`.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._prefix import CurveLog
    >>> log = CurveLog.from_arrays(run=["a"] * 3 + ["b"] * 2, N=1e7,
    ...                            step=[100, 200, 300, 100, 200], lr=1e-3,
    ...                            loss=[4.0, 3.8, 3.7, 4.1, 3.9])
    >>> log.labels.tolist(), log.final_step.tolist()
    (['a', 'b'], [300.0, 200.0])
    """

    run: np.ndarray
    N: np.ndarray
    step: np.ndarray
    lr: np.ndarray
    loss: np.ndarray | None
    B: np.ndarray
    warmup: float = 0.0
    peak: float | None = None
    seq_len: float = 128.0

    @classmethod
    def from_arrays(cls, run: Any, N: Any, step: Any, lr: Any, loss: Any = None, *,
                    B: Any = 1.0, warmup: float = 0.0, peak: float | None = None,
                    seq_len: float = 128.0) -> "CurveLog":
        """Validated columns (broadcast to the length of `step`); rows sorted by run, step."""
        step = np.asarray(step, float).reshape(-1)
        n = step.size
        if n == 0:
            raise ValueError("no checkpoints: step is empty")
        cols = {k: np.broadcast_to(np.asarray(v, float), (n,)).copy()
                for k, v in (("N", N), ("lr", lr), ("B", B))}
        run = np.broadcast_to(np.asarray(run).astype(str), (n,)).copy()
        y = None if loss is None else np.broadcast_to(np.asarray(loss, float), (n,)).copy()
        order = np.lexsort((step, run))
        if peak is None:
            peak = float(np.max(cols["lr"]))
        return cls(run=run[order], N=cols["N"][order], step=step[order], lr=cols["lr"][order],
                   loss=None if y is None else y[order], B=cols["B"][order],
                   warmup=float(warmup), peak=float(peak), seq_len=float(seq_len))

    @property
    def labels(self) -> np.ndarray:
        """The distinct run labels, sorted."""
        return np.unique(self.run)

    @property
    def final_step(self) -> np.ndarray:
        """The last logged step of each run (order of `labels`)."""
        _, inv = np.unique(self.run, return_inverse=True)
        out = np.zeros(self.labels.size)
        np.maximum.at(out, inv, self.step)
        return out

    def run_index(self) -> np.ndarray:
        """Each row's position in `labels`."""
        return np.unique(self.run, return_inverse=True)[1].reshape(-1)

    def subset(self, mask: Any) -> "CurveLog":
        """The rows of boolean `mask` (losses of the others are not copied)."""
        m = np.asarray(mask, bool)
        return dataclasses.replace(
            self, run=self.run[m], N=self.N[m], step=self.step[m], lr=self.lr[m],
            loss=None if self.loss is None else self.loss[m], B=self.B[m])

    def runs(self, with_loss: bool = True) -> Runs:
        """The rows as [`nqs_engine.Runs`][] (`Runs.from_curves`), with or without losses."""
        return Runs.from_curves(self.N, self.step, self.lr,
                                self.loss if with_loss else None, run=self.run, B=self.B,
                                warmup=self.warmup, peak=self.peak, seq_len=self.seq_len)


# ---------------------------------------------------------------------------
# Prefix -> endpoint
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PrefixResult:
    r"""Endpoint predictions from prefixes (see [`prefix_endpoints`][]).

    - `fractions (F,)`, `labels (R,)`, `N (R,)`, `final_step (R,)`, `final_loss (R,)`;
    - `cutoff (F, R)`: the last step the predictions of run `r` at fraction `f` saw;
    - `model (F, R)`: the loss model's endpoint predictions (NaN where it had no fit);
    - `forms`: `"form/criterion"` -> `(F, R)` endpoint predictions, NaN where the
      prefix has too few points; `form_params` the same keys -> `(F, R, k)`;
    - `curves (F, n)`: the model's prediction at every row of the log from the
      fit of each fraction (its continuation of the curves), and `log`, the log.
    - `fits`: per fraction, per group of targets, the fitted model's
      parameters (`model.to_dict()`) and the fit's wall time.
    """

    fractions: np.ndarray
    labels: np.ndarray
    N: np.ndarray
    final_step: np.ndarray
    final_loss: np.ndarray
    cutoff: np.ndarray
    model: np.ndarray
    forms: dict[str, np.ndarray]
    form_params: dict[str, np.ndarray]
    curves: np.ndarray
    log: CurveLog
    fits: list[dict[str, Any]]

    def table(self) -> list[dict[str, Any]]:
        """Endpoint MAE and worst absolute error per fraction and model size, for the model
        and every form, the best form per cell and whether the model beats it.

        Only runs where the model (when fitted) and every form have a prediction are scored.
        """
        out = []
        for f, p in enumerate(self.fractions):
            for size in np.unique(self.N):
                cols = {k: v[f] for k, v in self.forms.items()}
                if np.isfinite(self.model).any():
                    cols = {"model": self.model[f], **cols}
                ok = (self.N == size) & np.all([np.isfinite(v) for v in cols.values()], axis=0)
                row: dict[str, Any] = {"p": float(p), "N": float(size), "runs": int(ok.sum())}
                if ok.any():
                    for name, pred in cols.items():
                        err = np.abs(pred[ok] - self.final_loss[ok])
                        row[f"{name} mae"] = float(err.mean())
                        row[f"{name} worst"] = float(err.max())
                    best = min(self.forms, key=lambda k: row[f"{k} mae"])
                    row["best form"] = best
                    row["best form mae"] = row[f"{best} mae"]
                    if "model" in cols:
                        row["model wins"] = bool(row["model mae"] < row["best form mae"])
                out.append(row)
        return out


def _groups(final_step: np.ndarray, tolerance: float = 0.02) -> list[np.ndarray]:
    """Runs whose final steps agree within `tolerance` (relative, chained), as index arrays."""
    order = np.argsort(final_step, kind="stable")
    groups, current = [], [order[0]]
    for i in order[1:]:  # host side, one pass over the runs
        if final_step[i] <= final_step[current[0]] * (1 + tolerance):
            current.append(i)
        else:
            groups.append(np.array(current))
            current = [i]
    groups.append(np.array(current))
    return groups


def prefix_cutoffs(log: CurveLog, fraction: float) -> np.ndarray:
    r"""The step up to which the model protocol may read, per run: $p \min_{j \in g} K_j$
    over the group $g$ of runs with (nearly) the same final step (within 2%).

    **Example:**

    >>> from nqs_engine._prefix import CurveLog, prefix_cutoffs
    >>> log = CurveLog.from_arrays(run=["a", "a", "b", "b", "c"], N=1e7,
    ...                            step=[500, 1000, 500, 990, 300], lr=1.0)
    >>> prefix_cutoffs(log, 0.5).tolist()
    [495.0, 495.0, 150.0]
    """
    K = log.final_step
    out = np.zeros(K.size)
    for g in _groups(K):
        out[g] = fraction * K[g].min()
    return out


def _padded(log: CurveLog, size: int) -> tuple[CurveLog, np.ndarray]:
    """The log padded to `size` rows by repeating its last row, and the weights (0 for the
    repeats)."""
    n = log.step.size
    idx = np.concatenate([np.arange(n), np.full(size - n, n - 1)])
    w = np.concatenate([np.ones(n), np.zeros(size - n)])
    return dataclasses.replace(
        log, run=log.run[idx], N=log.N[idx], step=log.step[idx], lr=log.lr[idx],
        loss=None if log.loss is None else log.loss[idx], B=log.B[idx]), w


def _row_bucket(n: int) -> int:
    size = 64
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


#: The quadrature inside prefix fits: 16 exact head terms and 8 x 6 Gauss-Legendre
#: nodes (71 evaluations per sum); the reported predictions use the model's `rule`.
PREFIX_RULE = SumRule(head=16, panels=8, nodes=6, order=3)


def default_model() -> SizedNQS:
    """The sized NQS of the prefix protocol: the Pythia preset's NQS parameters as a
    template, searched with [`PREFIX_RULE`][]."""
    return SizedNQS(search_rule=PREFIX_RULE)


def thin(log: CurveLog, per_run: int) -> np.ndarray:
    """A mask keeping at most `per_run` checkpoints of each run, evenly spread over its rows
    (the first and the last always kept)."""
    idx = log.run_index()
    keep = np.zeros(idx.size, bool)
    for r in np.unique(idx):  # host side, once per run
        rows = np.flatnonzero(idx == r)
        take = np.unique(np.round(np.linspace(0, rows.size - 1, min(per_run, rows.size))))
        keep[rows[take.astype(int)]] = True
    return keep


def fit_prefix(log: CurveLog, cutoff: float, model: AbstractLossModel | None = None, *,
               starts: int = 32, refine: int = 3, max_steps: int = 60, seed: int = 0,
               init: AbstractLossModel | None = None, loss: str | None = None,
               per_run: int = 96):
    r"""Fit `model` to every checkpoint of `log` at a step $\le$ `cutoff` (never beyond).

    The rows past the cutoff are dropped before anything is built from the log, so
    their losses are never read; of the rest at most `per_run` checkpoints per run
    are kept, evenly spread ([`thin`][]: the curves are smooth, and the cost of a
    fit grows with the checkpoints). The kept rows are padded (repeats of the last,
    weight 0) to one of a few sizes, so that fits at nearby cutoffs share compiled
    programs. Search on the model's coarse data only (no accurate polish):
    `starts` candidates screened, the best `refine` (and `init`) refined for
    `max_steps` iterations by the model's default method.

    Returns the fitted model's [`nqs_engine.FitResult`][]-like outcome (`.model`),
    or `None` when no row lies within the cutoff.
    """
    started = time.perf_counter()
    model = default_model() if model is None else model
    if not np.any(log.step <= cutoff):
        return None
    seen = log.subset(log.step <= cutoff)  # the only rows the fit is given
    seen = seen.subset(thin(seen, per_run))
    padded, w = _padded(seen, _row_bucket(seen.step.size))
    setup = prepare_fit(padded.runs(), model, weights=w, loss=loss)
    x0, num = screen_starts(setup, starts=starts, refine=refine, init=init, seed=seed)
    out = refine_starts(setup, x0, max_steps=max_steps)
    return report_fit(setup, out, num_candidates=num, seed=seed, started=started)


def prefix_endpoints(
    log: CurveLog,
    fractions: Sequence[float] = FRACTIONS,
    *,
    model: AbstractLossModel | None = None,
    forms: Sequence[str] = tuple(FORMS),
    criteria: Sequence[str] = CRITERIA,
    fit_model: bool = True,
    starts: int = 32,
    refine: int = 3,
    max_steps: int = 60,
    per_run: int = 96,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> PrefixResult:
    r"""Predict every run's final loss from its first fraction $p$ of steps, for each $p$.

    The parametric forms (module docstring) are fitted to each run's own
    checkpoints with $\tau = s / K_i \le p$ (at least as many points as the form
    has parameters), by each criterion. The loss model (default
    [`nqs_engine.SizedNQS`][]; `fit_model=False` skips it) is fitted once per
    fraction and group of targets with nearly equal final steps, to the
    checkpoints of every run up to the group's cutoff ([`prefix_cutoffs`][]),
    starting also from the fit of the next smaller cutoff (whose rows it holds),
    and predicts the targets' curves to their final step from their known
    schedules. Nothing past a target's cutoff is read for its prediction.

    **Returns:** a [`PrefixResult`][] (`.table()` for the endpoint errors).

    **Example:** parametric forms only, on two synthetic power-law curves.

    >>> import numpy as np
    >>> from nqs_engine._prefix import CurveLog, prefix_endpoints
    >>> s = np.arange(100.0, 2001.0, 100.0)
    >>> y = np.concatenate([2 + 3 * (s / 2000 + 0.05) ** -0.5, 2.2 + 3 * (s / 2000 + 0.05) ** -0.5])
    >>> log = CurveLog.from_arrays(run=np.repeat(["a", "b"], 20), N=np.repeat([1e7, 1e8], 20),
    ...                            step=np.tile(s, 2), lr=1.0, loss=y)
    >>> out = prefix_endpoints(log, [0.5], forms=["power"], criteria=["huber"], fit_model=False)
    >>> np.round(out.forms["power/huber"][0] - out.final_loss, 4).tolist()
    [0.0, 0.0]
    """
    if log.loss is None:
        raise ValueError("the log has no losses to fit")
    fractions = np.asarray(fractions, float)
    if fractions.ndim != 1 or not np.all((fractions > 0) & (fractions <= 1)):
        raise ValueError(f"fractions must lie in (0, 1], got {fractions.tolist()}")
    for c in criteria:
        if c not in CRITERIA:
            raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {c!r}")
    for name in forms:
        if name not in FORMS:
            raise ValueError(f"unknown form {name!r}; known: {', '.join(FORMS)}")
    report = progress or (lambda stage, done, total: None)
    labels, K = log.labels, log.final_step
    idx = log.run_index()
    R, Fn = labels.size, fractions.size
    last = np.array([np.flatnonzero(idx == r)[-1] for r in range(R)])
    final_loss = log.loss[last]
    N = log.N[last]
    keys = [f"{name}/{c}" for name in forms for c in criteria]
    preds = {k: np.full((Fn, R), np.nan) for k in keys}
    params = {k: np.full((Fn, R, len(FORMS[k.split('/')[0]].bounds) + 2), np.nan) for k in keys}
    total = Fn * R
    for f, p in enumerate(fractions):  # host side: scipy per run and form
        for r in range(R):
            rows = np.flatnonzero((idx == r) & (log.step <= p * K[r]))
            tau, y = log.step[rows] / K[r], log.loss[rows]
            for name in forms:
                form = FORMS[name]
                if tau.size < len(form.bounds) + 2:
                    continue
                for c in criteria:
                    x = fit_form(form, tau, y, c)
                    params[f"{name}/{c}"][f, r] = x
                    preds[f"{name}/{c}"][f, r] = form(1.0, x)
            report("parametric forms", f * R + r + 1, total)
    cutoff = np.stack([np.minimum(prefix_cutoffs(log, p), K) for p in fractions])
    model_pred = np.full((Fn, R), np.nan)
    curves = np.full((Fn, log.step.size), np.nan)
    fits: list[dict[str, Any]] = []
    if fit_model:
        template = default_model() if model is None else model
        target_runs = log.runs(with_loss=False)  # the planned schedules, no losses
        groups = _groups(K)
        # Every (fraction, group) fit, in order of cutoff: each starts also from the fit
        # just before it, whose data (rows up to a smaller cutoff) are a subset of its own.
        tasks = sorted(((float(cutoff[f, g[0]]), f, gi) for f in range(Fn)
                        for gi, g in enumerate(groups)), key=lambda t: (t[0], t[1], t[2]))
        previous = None
        for done, (c, f, gi) in enumerate(tasks, 1):
            members = groups[gi]
            t0 = time.perf_counter()
            result = fit_prefix(log, c, template, starts=starts, refine=refine,
                                max_steps=max_steps, seed=seed + done, init=previous,
                                per_run=per_run)
            report("model fits", done, len(tasks))
            if result is None:
                continue
            previous = result.model
            pred = np.asarray(result.model.predict(target_runs))
            rows = np.isin(idx, members)
            curves[f, rows] = pred[rows]
            model_pred[f, members] = pred[last[members]]
            fits.append({"p": float(fractions[f]), "group": [str(labels[m]) for m in members],
                         "cutoff": c, "wall_time_s": time.perf_counter() - t0,
                         "objective": float(result.objective),
                         "params": result.model.to_dict()})
    return PrefixResult(fractions=fractions, labels=labels, N=N, final_step=K,
                        final_loss=final_loss, cutoff=cutoff, model=model_pred, forms=preds,
                        form_params=params, curves=curves, log=log, fits=fits)


# ---------------------------------------------------------------------------
# Endpoint compute laws
# ---------------------------------------------------------------------------

#: The compute laws: three parameters (E, A, alpha) or the two-parameter log-log line.
LAWS = ("power", "loglog")


def compute_law(C: Any, x: Sequence[float], law: str = "power") -> np.ndarray:
    r"""$E + A (C/10^{18})^{-\alpha}$ (`x = (E, A, alpha)`) or $A (C/10^{18})^{-\alpha}$
    (`"loglog"`, `x = (A, alpha)`) at compute `C`."""
    c = np.asarray(C, float) / 1e18
    if law == "loglog":
        return x[0] * c ** (-x[1])
    return x[0] + x[1] * c ** (-x[2])


def fit_compute_law(C: Any, loss: Any, law: str = "power") -> np.ndarray:
    r"""Fit a compute law to final losses $y_j$ at compute $C_j$ (least squares on $\log y$).

    `"power"`: $L = E + A (C/10^{18})^{-\alpha}$ with $0 \le E < \min_j y_j$, $A \ge 0$,
    $\alpha \in [0, 5]$, from a grid of $(E, \alpha)$ starts ($A$ by least squares for
    each), bounded trust-region least squares; needs 3 points. `"loglog"`: the line
    $\log L = \log A - \alpha \log(C/10^{18})$ ($\alpha \ge 0$), needs 2.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._prefix import compute_law, fit_compute_law
    >>> C = np.array([1e17, 3e17, 1e18, 3e18])
    >>> y = compute_law(C, (2.0, 1.0, 0.3))
    >>> np.round(fit_compute_law(C, y), 4).tolist()
    [2.0, 1.0, 0.3]
    """
    from scipy.optimize import least_squares

    C, y = np.asarray(C, float).reshape(-1), np.asarray(loss, float).reshape(-1)
    if C.shape != y.shape or not (np.all(C > 0) and np.all(y > 0)):
        raise ValueError("C and loss must be positive arrays of one length")
    if law not in LAWS:
        raise ValueError(f"law must be one of {', '.join(LAWS)}, got {law!r}")
    lc = np.log(C / 1e18)
    need = 2 if law == "loglog" else 3
    if np.unique(C).size < need:
        raise ValueError(f"the {law} law has {need} parameters; {np.unique(C).size} distinct "
                         "budget(s) cannot pin them down")
    if law == "loglog":
        slope, icept = np.polyfit(lc, np.log(y), 1)
        if slope > 0:  # alpha >= 0: the best flat line
            return np.array([float(np.exp(np.mean(np.log(y)))), 0.0])
        return np.array([float(np.exp(icept)), float(-slope)])
    top = float(y.min()) * (1 - 1e-9)
    lo, hi = np.array([0.0, 0.0, 0.0]), np.array([top, np.inf, 5.0])
    best, best_cost = None, np.inf
    for frac in (0.0, 0.5, 0.8, 0.95):
        for a in (0.05, 0.1, 0.2, 0.4, 0.8):
            E = frac * top
            g = np.exp(-a * lc)
            A = max(float(np.sum(g * (y - E)) / np.sum(g * g)), 1e-12)
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                r = least_squares(lambda x: np.log(np.maximum(compute_law(C, x), 1e-300)) - np.log(y),
                                  np.clip([E, A, a], lo, np.minimum(hi, 1e12)), bounds=(lo, hi),
                                  xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=2000)
            if np.isfinite(r.cost) and r.cost < best_cost:
                best, best_cost = r.x, r.cost
    return np.asarray(best, float)


def compute_law_backtest(C: Any, loss: Any, family: Any, *, holdout: int = 1,
                         law: str = "power", labels: Any = None,
                         model_predictions: Any = None) -> list[dict[str, Any]]:
    r"""Per family: fit a compute law on all but the `holdout` largest budgets, predict those.

    `C`, `loss`, `family` (and optional `labels`, `model_predictions`: a loss model's
    predictions of the same final losses, reported beside) are per run. Families
    with too few training budgets for the law are skipped. Returns one row per
    held-out run: `family`, `run`, `C`, `observed`, `law` (prediction),
    `law error`, and `model`, `model error` when given.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._prefix import compute_law, compute_law_backtest
    >>> C = np.array([1e17, 3e17, 1e18, 3e18])
    >>> rows = compute_law_backtest(C, compute_law(C, (2.0, 1.0, 0.3)), ["a"] * 4)
    >>> [(r["run"], round(r["law error"], 6)) for r in rows]
    [('3', 0.0)]
    """
    C, y = np.asarray(C, float).reshape(-1), np.asarray(loss, float).reshape(-1)
    fam = np.asarray(family).astype(str).reshape(-1)
    names = (np.arange(C.size).astype(str) if labels is None
             else np.asarray(labels).astype(str).reshape(-1))
    model = None if model_predictions is None else np.asarray(model_predictions, float)
    if not (C.size == y.size == fam.size == names.size):
        raise ValueError("C, loss, family (and labels) need one entry per run")
    need = 2 if law == "loglog" else 3
    out = []
    for f in np.unique(fam):  # host side, a handful of families
        members = np.flatnonzero(fam == f)
        order = members[np.argsort(C[members], kind="stable")]
        train, test = order[:-holdout], order[-holdout:]
        if np.unique(C[train]).size < need:
            continue
        x = fit_compute_law(C[train], y[train], law)
        pred = compute_law(C[test], x, law)
        for i, yh in zip(test, pred):
            row = {"family": str(f), "run": str(names[i]), "C": float(C[i]),
                   "observed": float(y[i]), "law": float(yh), "law error": float(yh - y[i]),
                   "params": [float(v) for v in x]}
            if model is not None:
                row["model"] = float(model[i])
                row["model error"] = float(model[i] - y[i])
            out.append(row)
    return out


def compute_law_endpoints(log: CurveLog, family: Any, *, law: str = "power", holdout: int = 1,
                          model: AbstractLossModel | None = None, fit_model: bool = True,
                          per_run: int = 96, seed: int = 0) -> list[dict[str, Any]]:
    r"""[`compute_law_backtest`][] on the final losses of logged runs, with a loss model beside.

    `family` is one label per row of `log` (constant within a run). A run's compute
    is $C = 6 N D$, $D$ its tokens (`seq_len` $\sum_t B_t$). The model (default the
    sized NQS) is fitted once to the curves of every run that is not held out in its
    family (at most `per_run` checkpoints each, [`thin`][]) and predicts the held-out
    runs' final losses from their schedules; `fit_model=False` leaves it out.

    **Example:** see [`compute_law_backtest`][]; `nqs-engine prefix --compute-law`.
    """
    fam_rows = np.asarray(family).astype(str).reshape(-1)
    if fam_rows.size != log.step.size:
        raise ValueError(f"family needs one label per row ({log.step.size}), got {fam_rows.size}")
    idx, labels = log.run_index(), log.labels
    last = np.array([np.flatnonzero(idx == r)[-1] for r in range(labels.size)])
    fam = fam_rows[last]
    if not np.all(fam_rows == fam[idx]):
        i = int(np.argmax(fam_rows != fam[idx]))
        raise ValueError(f"row {i}: the family differs within run {labels[idx[i]]!r}")
    runs = log.runs(with_loss=False)
    C = np.asarray(runs.C)[last]
    y = log.loss[last]
    rows = compute_law_backtest(C, y, fam, holdout=holdout, law=law, labels=labels)
    if fit_model and rows:
        held = np.isin(labels, [r["run"] for r in rows])
        train = log.subset(~held[idx])
        train = train.subset(thin(train, per_run))
        template = default_model() if model is None else model
        padded, w = _padded(train, _row_bucket(train.step.size))
        setup = prepare_fit(padded.runs(), template, weights=w)
        x0, num = screen_starts(setup, seed=seed)
        out = refine_starts(setup, x0)
        fitted = report_fit(setup, out, num_candidates=num, seed=seed,
                            started=time.perf_counter()).model
        pred = np.asarray(fitted.predict(runs))[last]
        by_label = dict(zip(labels.tolist(), pred.tolist()))
        for r in rows:
            r["model"] = float(by_label[r["run"]])
            r["model error"] = r["model"] - r["observed"]
    return rows


# ---------------------------------------------------------------------------
# The figure
# ---------------------------------------------------------------------------


def prefix_figure(result: PrefixResult, fraction: float, form: str | None = None,
                  runs: Sequence[str] | None = None):
    """Observed curves, the model's and a form's continuations from the prefix at `fraction`,
    and the predicted finals: one panel per model size (a `matplotlib` Figure, no pyplot).

    `form` (`"name/criterion"`) defaults to the best form at that fraction over all
    runs; `runs` selects labels (default all). The seen part of each curve is
    drawn solid, the hidden part thin; the cutoff is a dotted vertical line.
    """
    from matplotlib.figure import Figure

    f = int(np.argmin(np.abs(result.fractions - fraction)))
    p = float(result.fractions[f])
    if form is None:
        scores = {k: np.nanmean(np.abs(v[f] - result.final_loss)) for k, v in result.forms.items()
                  if np.isfinite(v[f]).any()}
        form = min(scores, key=scores.get) if scores else None
    log = result.log
    idx = log.run_index()
    sizes = np.unique(result.N)
    fig = Figure(figsize=(6.0 * sizes.size, 4.4), layout="constrained")
    axes = fig.subplots(1, sizes.size, squeeze=False)[0]
    colors = [f"C{i}" for i in range(10)]
    for ax, size in zip(axes, sizes):
        members = [r for r in range(result.labels.size) if result.N[r] == size
                   and (runs is None or result.labels[r] in runs)]
        for j, r in enumerate(members):
            col = colors[j % 10]
            rows = idx == r
            s, y = log.step[rows], log.loss[rows]
            cut = result.cutoff[f, r]
            seen = s <= cut
            ax.plot(s[seen], y[seen], color=col, lw=1.6, label=str(result.labels[r]))
            ax.plot(s[~seen], y[~seen], color=col, lw=0.6, alpha=0.6)
            if np.isfinite(result.curves[f, rows]).any():
                ax.plot(s[~seen], result.curves[f, rows][~seen], color=col, ls="--", lw=1.0)
                ax.plot([s[-1]], [result.model[f, r]], marker="o", color=col, ms=5)
            if form is not None and np.isfinite(result.forms[form][f, r]):
                K = result.final_step[r]
                x = result.form_params[form][f, r]
                tt = np.linspace(cut, K, 50)
                ax.plot(tt, FORMS[form.split("/")[0]](tt / K, x), color=col, ls=":", lw=1.0)
                ax.plot([K], [result.forms[form][f, r]], marker="x", color=col, ms=6)
        if members:
            ax.axvline(float(np.min(result.cutoff[f, members])), color="0.5", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats)")
        ax.set_title(f"N = {size:.3g}: prefix p = {p:g} (dashed/o: model, dotted/x: {form})",
                     fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    return fig


__all__ = [
    "CRITERIA", "CurveLog", "FORMS", "FRACTIONS", "Form", "HUBER_SCALE", "LAWS", "PREFIX_RULE",
    "SHAPE_STARTS",
    "PrefixResult", "compute_law", "compute_law_backtest", "compute_law_endpoints", "default_model", "fit_compute_law",
    "fit_form", "fit_prefix", "prefix_cutoffs", "prefix_endpoints", "prefix_figure", "thin",
]
