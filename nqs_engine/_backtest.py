r"""Backtests: fit every model on the small budgets of a ladder, score it on the big ones.

A scaling law is judged by what it predicts at compute it has not seen. For a
cutoff $C_0$, each model is fitted on the runs whose budget is at most $C_0$ and
predicts the others; on each held-out budget $b$ (and over all held-out runs)
the backtest reports, with log errors $e_i = \log y_i - \log \hat y_i$:

- `msle` $= \overline{e_i^2}$, `mae` $= \overline{|\hat y_i - y_i|}$ (nats),
  `mape` $= 100\,\overline{|\hat y_i - y_i| / y_i}$;
- `best_run_error` $= \hat y_j / y_j - 1$ at the budget's lowest-loss run $j$ (the
  run a planner cares about);
- `gap` $= b / C_0$ (the compute ratio extrapolated; overall: the largest);
- with `bootstrap` $> 0$, `coverage`: the share of held-out runs inside the
  prediction interval at `level` ([`nqs_engine.BootstrapResult.predict_interval`][]
  with `prediction=True`).

Budgets are the runs' named budgets when given, else their compute $C = 6ND$
grouped into levels (a new level where sorted compute jumps by more than 1.5x).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import numpy as np

from ._fit import bootstrap, fit
from ._metrics import format_table
from ._misc import vector
from ._model import AbstractLossModel
from ._runs import Runs

#: Keys of every row of a backtest, in order.
COLUMNS = ("cutoff", "model", "budget", "n", "gap", "msle", "mae", "mape", "best_run_error",
           "coverage")


def compute_levels(C: np.ndarray, gap: float = 1.5) -> np.ndarray:
    """Budget levels from compute: each run gets the geometric mean compute of its level,
    a new level starting where sorted compute jumps by more than the factor `gap`.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._backtest import compute_levels
    >>> compute_levels(np.array([1e18, 1.1e18, 1e19, 0.9e19])).round(-15).tolist()
    [1.049e+18, 1.049e+18, 9.487e+18, 9.487e+18]
    """
    C = np.asarray(C, float)
    order = np.argsort(C, kind="stable")
    jumps = np.r_[False, np.diff(np.log(C[order])) > np.log(gap)]
    group = np.empty(C.size, int)
    group[order] = np.cumsum(jumps)
    means = np.exp(np.bincount(group, np.log(C)) / np.bincount(group))
    return means[group]


class Backtest(eqx.Module):
    """The outcome of [`backtest`][]: one row per (cutoff, model, held-out budget) and one
    per (cutoff, model) over all held-out runs (`budget = "all"`), plus each fit's wall
    time and the fitted models (`fits[(cutoff, model name)]`)."""

    rows: list
    fits: dict
    wall_time: float

    def table(self, columns: Sequence[str] | None = None) -> str:
        """The rows as a plain-text table."""
        return format_table(self.rows, list(columns or COLUMNS))

    def summary(self) -> list[dict[str, Any]]:
        """The overall rows only (one per cutoff and model)."""
        return [r for r in self.rows if r["budget"] == "all"]

    def figure(self):
        """Held-out mean squared log error against the compute gap, one line per model."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4.5), layout="constrained")
        ax = fig.subplots()
        names = list(dict.fromkeys(r["model"] for r in self.rows))
        for name in names:
            pts = sorted((r["gap"], r["msle"]) for r in self.rows
                         if r["model"] == name and r["budget"] != "all")
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, "o-", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compute gap: held-out budget / cutoff")
        ax.set_ylabel("held-out mean squared log error")
        ax.set_title("Backtest: error against extrapolation distance")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        return fig


def _metrics(y, p):
    e = np.log(y) - np.log(p)
    j = int(np.argmin(y))
    return {"n": int(y.size), "msle": float(np.mean(e * e)), "mae": float(np.mean(np.abs(p - y))),
            "mape": float(100 * np.mean(np.abs(p - y) / y)),
            "best_run_error": float(p[j] / y[j] - 1)}


def backtest(
    runs: Runs,
    models: Mapping[str, AbstractLossModel] | Sequence[AbstractLossModel],
    *,
    cutoffs: Any = None,
    budget: Any = None,
    train: Any = None,
    bootstrap_samples: int = 0,
    level: float = 0.9,
    fit_options: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Backtest:
    r"""Fit each model on the budgets up to each cutoff, score it on the rest (module docstring).

    **Arguments:**

    - `runs`: the ladder, with losses (final losses; curves work too).
    - `models`: the model families to fit, as templates (`{name: model}`, or a
      list named by each model's `kind`), e.g. `nqs.NQS()`, `nqs.LearningRateNQS()`,
      `nqs.Chinchilla(seq_len=...)`.
    - `cutoffs`: the largest budget fitted, one or several (FLOPs); or `train`, a
      boolean mask of the rows to fit (e.g. a `split` column), the rest held out.
    - `budget`: each row's budget (named budgets of a ladder); default the runs'
      compute grouped into levels ([`compute_levels`][]).
    - `bootstrap_samples`, `level`: prediction intervals and their coverage.
    - `fit_options`: passed to [`nqs_engine.fit`][] (e.g. `starts`).

    **Returns:** a [`Backtest`][].

    **Example:** a synthetic ladder made by the NQS itself: the NQS extrapolates it.

    >>> import numpy as np, nqs_engine as nqs
    >>> truth, lr = nqs.preset("pythia-owt2")
    >>> C = np.repeat([1e15, 3e15, 1e16, 3e16, 1e17], 3)  # 3 sizes per budget
    >>> N = np.sqrt(C) * np.tile([1 / 30, 1 / 10, 1 / 3], 5)
    >>> B = 64.0
    >>> K = C / (6 * N * B * 128)
    >>> runs = nqs.Runs.from_arrays(N, B, K, nqs.risk(truth, N, B, K, lr=lr).total)
    >>> bt = nqs.backtest(runs, {"nqs": nqs.NQS()}, cutoffs=[1e16],
    ...                   fit_options=dict(starts=256, refine=8))
    >>> [round(r["msle"], 6) < 1e-4 for r in bt.summary()]
    [True]
    """
    started = time.perf_counter()
    if not isinstance(runs, Runs):
        raise TypeError(f"runs must be a Runs, got {type(runs).__name__}")
    y = np.asarray(runs.needs_loss(), float)
    if not isinstance(models, Mapping):
        models = {m.kind: m for m in models}
    if not models:
        raise ValueError("give at least one model")
    for name, m in models.items():
        if not isinstance(m, AbstractLossModel):
            raise TypeError(f"models[{name!r}] must be a loss model, got {type(m).__name__}")
    levels = (compute_levels(np.asarray(runs.C)) if budget is None else
              vector(budget, "budget", size=runs.size, check=lambda v: v > 0,
                     requirement="must be > 0"))
    if train is not None:
        splits = [("split", np.asarray(train, bool))]
        if splits[0][1].shape != (runs.size,):
            raise ValueError(f"train must be a boolean mask of {runs.size} rows")
    else:
        if cutoffs is None:
            raise ValueError("give cutoffs (the largest budget fitted) or a train mask")
        cutoffs = vector(cutoffs, "cutoffs", check=lambda v: v > 0, requirement="must be > 0")
        # A budget within 1e-6 relative of a cutoff is at it (levels are float products).
        splits = [(float(c), levels <= c * (1 + 1e-6)) for c in cutoffs]
    report = progress or (lambda text: None)
    options = dict(fit_options or {})
    rows, fits = [], {}
    for cutoff, mask in splits:  # a handful of cutoffs and models, each a whole fit
        held = ~mask
        if not mask.any() or not held.any():
            raise ValueError(f"cutoff {cutoff}: {int(mask.sum())} rows to fit and "
                             f"{int(held.sum())} to hold out; each needs at least one")
        reference = float(levels[mask].max()) if cutoff == "split" else cutoff
        fitted_runs, test_runs = runs.subset(mask), runs.subset(held)
        for name, template in models.items():
            report(f"fitting {name} on {int(mask.sum())} runs (cutoff {cutoff})")
            t0 = time.perf_counter()
            result = fit(fitted_runs, template, **options)
            pred = np.asarray(result.model.predict(test_runs), float)
            inside = None
            if bootstrap_samples:
                report(f"bootstrapping {name} ({bootstrap_samples} refits)")
                boot = bootstrap(fitted_runs, result, num_samples=int(bootstrap_samples),
                                 level=level)
                lo, hi = boot.predict_interval(test_runs, level, prediction=True)
                inside = (lo <= y[held]) & (y[held] <= hi)
            fits[(cutoff, name)] = dict(result=result, wall_time=time.perf_counter() - t0)
            for b in np.unique(levels[held]):
                sel = levels[held] == b
                row = {"cutoff": cutoff, "model": name, "budget": float(b),
                       **_metrics(y[held][sel], pred[sel]), "gap": float(b / reference),
                       "coverage": None if inside is None else float(inside[sel].mean())}
                rows.append({k: row[k] for k in COLUMNS})
            row = {"cutoff": cutoff, "model": name, "budget": "all", **_metrics(y[held], pred),
                   "gap": float(levels[held].max() / reference),
                   "coverage": None if inside is None else float(inside.mean())}
            rows.append({k: row[k] for k in COLUMNS})
    return Backtest(rows=rows, fits=fits, wall_time=time.perf_counter() - started)


__all__ = ["Backtest", "COLUMNS", "backtest", "compute_levels"]
