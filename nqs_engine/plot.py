r"""Figures of the NQS: fits against runs, isoflop and isotoken curves, the three terms,
schedules and the compute-optimal frontier.

Every function returns a `matplotlib.figure.Figure` made without `pyplot`, so
nothing depends on a display or on matplotlib's global backend: save it with
`fig.savefig("name.png")`, or show it in a notebook by leaving it as the last
expression of a cell. The model lines are computed in one vectorised call per
figure. Requires matplotlib (`pip install 'nqs-engine[plot]'`); importing
`nqs_engine` alone does not import it.

The functions, and the model quantities they draw:

- [`actual_vs_predicted`][]: measured against predicted loss, and the relative
  error $\hat L / L - 1$ of every run.
- [`isoflop_curves`][]: loss against $N$ at fixed compute $C = 6 N B K \ell$
  ($\ell$ the sequence length), the model line following each group's batch
  sizes (a power law $B \propto N^{c}$ fitted to the group) with
  $K = C / (6 N B \ell)$.
- [`isotoken_curves`][]: loss against $B$ at fixed $N$ and tokens $D = B K \ell$.
- [`loss_decomposition`][]: $L(K) = \varepsilon_{irr} + \text{approximation}
  + \text{bias}(K) + \text{variance}(K)$ against the number of steps $K$.
- [`trajectories`][]: the loss curve under several schedules, with their
  step-size multipliers and batch sizes.
- [`frontier_plot`][]: the compute-optimal $N$, tokens per parameter and loss
  against $C$, NQS beside Chinchilla's allocation (from [`nqs_engine.frontier`][]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:
    from matplotlib.figure import Figure
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "nqs_engine.plot needs matplotlib: pip install 'nqs-engine[plot]'"
    ) from exc

from ._misc import vector
from ._model import NQS, AbstractNQS, as_model
from ._plan import Frontier
from ._risk._trajectory import trajectory
from ._schedule import Schedule


# ---------------------------------------------------------------------------
# Input checks (before any model evaluation)
# ---------------------------------------------------------------------------


def _vector(name: str, values: Any, n: int | None = None, positive: bool = True) -> np.ndarray:
    check = (lambda v: v > 0) if positive else None
    return vector(values, name, size=n, broadcast="scalar", check=check,
                  requirement="must be finite and > 0" if positive else "")


def _runs(N, B, K, loss) -> tuple[np.ndarray, ...]:
    N = _vector("N", N)
    B = _vector("B", B, N.size)
    K = _vector("K", K, N.size)
    loss = None if loss is None else _vector("loss", loss, N.size)
    return N, B, K, loss


def _model_loss(model, N, B, K) -> np.ndarray:
    """The model's loss for flat arrays of constant-schedule runs, in one call."""
    if not model.smooth_in_steps:
        K = np.maximum(np.round(K), 1.0)  # stairs (the weight-norm variant) need whole steps
    return np.asarray(model(N, B, K).total)


def _groups(labels: Any, n: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"groups must have one label per run ({n}), got shape {labels.shape}")
    return labels


def _cluster(x: np.ndarray, gap: float = 1.5) -> np.ndarray:
    """Group labels 0, 1, ... (in increasing order of `x`) for nearly equal values.

    Sorted values start a new group where one exceeds the previous by more than
    the factor `gap`; a ladder's budgets differ by more, its runs' rounding by less.
    """
    order = np.argsort(x, kind="stable")
    jumps = np.diff(np.log(x[order])) > np.log(gap)
    labels = np.empty(x.size, int)
    labels[order] = np.concatenate([[0], np.cumsum(jumps)])
    return labels


def _ordered(keys: np.ndarray, level: np.ndarray) -> list:
    """The distinct `keys`, ordered by the geometric mean of `level` over each group."""
    names = list(dict.fromkeys(keys.tolist()))
    return sorted(names, key=lambda k: float(np.mean(np.log(level[keys == k]))))


def _name(model) -> str:
    """How figures name a model: "plain NQS", "weight-norm NQS", "chinchilla", ..."""
    return f"{model.label} NQS" if isinstance(model, AbstractNQS) else model.label or model.kind


def _colors(k: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.05, 0.9, max(k, 1))]


def _sci(x: float) -> str:
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


# ---------------------------------------------------------------------------
# Actual vs predicted
# ---------------------------------------------------------------------------


def actual_vs_predicted(
    actual: Any,
    predicted: Any,
    *,
    groups: Any = None,
    title: str = "NQS predictions against measured runs",
) -> Figure:
    r"""Predicted against measured loss (left) and the relative error $\hat L/L - 1$ (right).

    Points are coloured by `groups` (one label per run, e.g. the runs' split or
    type); the legend gives each group's number of runs and mean absolute
    relative error. The diagonal is a perfect prediction.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine.plot import actual_vs_predicted
    >>> fig = actual_vs_predicted([3.1, 2.9, 2.7], [3.12, 2.88, 2.71], groups=["a", "a", "b"])
    >>> [ax.get_xlabel() for ax in fig.axes]
    ['measured loss', 'measured loss']
    """
    actual = _vector("actual", actual)
    predicted = _vector("predicted", predicted, actual.size)
    groups = np.full(actual.size, "runs") if groups is None else _groups(groups, actual.size)
    rel = predicted / actual - 1.0
    names = list(dict.fromkeys(groups.tolist()))
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    ax, ax_err = fig.subplots(1, 2)
    lo, hi = min(actual.min(), predicted.min()), max(actual.max(), predicted.max())
    pad = 0.03 * (hi - lo + 1e-12)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, ls="--",
            label="perfect prediction")
    for name, color in zip(names, _colors(len(names))):
        m = groups == name
        label = f"{name} ({m.sum()} runs, mean |error| {100 * np.mean(np.abs(rel[m])):.2f}%)"
        ax.scatter(actual[m], predicted[m], s=18, color=color, label=label, alpha=0.85)
        ax_err.scatter(actual[m], 100 * rel[m], s=18, color=color, alpha=0.85)
    ax.set_xlabel("measured loss")
    ax.set_ylabel("predicted loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax_err.axhline(0.0, color="0.5", lw=1, ls="--")
    ax_err.set_xlabel("measured loss")
    ax_err.set_ylabel("relative error of the prediction (%)")
    ax_err.set_title(f"all runs: mean |error| {100 * np.mean(np.abs(rel)):.2f}%, "
                     f"max {100 * np.max(np.abs(rel)):.2f}%")
    ax_err.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------------------
# Isoflop and isotoken curves
# ---------------------------------------------------------------------------


def _batch_rule(logN: np.ndarray, logB: np.ndarray) -> tuple[float, float]:
    """log B = a + c log N, least squares over a group (c = 0 when N or B is constant)."""
    if np.ptp(logN) < 1e-12 or np.ptp(logB) < 1e-12:
        return float(np.mean(logB)), 0.0
    c, a = np.polyfit(logN, logB, 1)
    return float(a), float(c)


def _curves_figure(xs, model, labels, dots, *, xlabel: str, title: str, log_base: int) -> Figure:
    """Model lines (`model`: the lines' losses end to end), a star at each minimum,
    and the measured runs `dots` (a list of (x, loss) per line, or None)."""
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    start = 0
    for i, (x, label, color) in enumerate(zip(xs, labels, _colors(len(xs)))):
        y = model[start : start + x.size]
        start += x.size
        ax.plot(x, y, color=color, lw=1.6, label=label)
        j = int(np.argmin(y))
        ax.plot(x[j], y[j], marker="*", ms=12, color=color, mec="k", mew=0.6, ls="none")
        if dots is not None:
            ax.scatter(*dots[i], s=22, color=color, edgecolor="k", linewidth=0.4, zorder=3)
    ax.set_xscale("log", base=log_base)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title + (", runs (dots)" if dots is not None else ""))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return fig


def isoflop_curves(
    params: Any,
    N: Any,
    B: Any,
    K: Any,
    loss: Any = None,
    *,
    seq_len: float,
    lr: float | None = None,
    groups: Any = None,
    variant: str | None = None,
    num_points: int = 80,
) -> Figure:
    r"""Loss against model size $N$ at fixed compute, runs and model lines per budget.

    Runs with the same compute $C = 6 N B K \ell$ (within a factor 1.5 of the
    next, or as labelled by `groups`) form one curve. Along it the model follows the
    group's batch sizes, $\log B = a + c \log N$ fitted to the group's runs (the
    runs of a ladder usually tie $B$ to $N$), and $K = C/(6 N B \ell)$. A star
    marks the model's minimum on each curve, the compute-optimal $N$ at that
    batch rule. Groups with fewer than two distinct $N$ are left out.

    **Arguments:** `params`, a loss model (or `NQSParams` with `lr` and `variant`,
    "plain" or "weight-norm"); the runs `N`, `B` (sequences), `K` (steps) and
    optionally their measured `loss`; `seq_len` (tokens per sequence);
    `num_points` per line.

    **Example:**

    >>> import numpy as np, nqs_engine as nqs
    >>> from nqs_engine.plot import isoflop_curves
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> N = np.array([1e7, 3e7, 1e8, 1e7, 3e7, 1e8])
    >>> C = np.repeat([1e17, 1e18], 3)
    >>> B = np.full(6, 256.0)
    >>> K = C / (6 * N * B * 128)
    >>> fig = isoflop_curves(params, N, B, K, seq_len=128, lr=lr)
    >>> len(fig.axes[0].get_lines())  # a line and a star per budget
    4
    """
    model = as_model(params, lr, variant)
    N, B, K, loss = _runs(N, B, K, loss)
    seq_len = float(_vector("seq_len", seq_len)[0])
    C = 6.0 * N * B * K * seq_len
    keys = _cluster(C) if groups is None else _groups(groups, N.size)
    curves = []
    for key in _ordered(keys, C):
        m = keys == key
        if np.unique(N[m]).size < 2:
            continue
        c_level = float(np.exp(np.mean(np.log(C[m]))))
        a, c = _batch_rule(np.log(N[m]), np.log(B[m]))
        n_line = np.geomspace(N[m].min() / 1.5, N[m].max() * 1.5, num_points)
        b_line = np.exp(a + c * np.log(n_line))
        k_line = c_level / (6.0 * n_line * b_line * seq_len)
        keep = k_line >= 1.0
        curves.append((key, c_level, m, n_line[keep], b_line[keep], k_line[keep]))
    if not curves:
        raise ValueError("no isoflop group: every compute level has runs of a single N")
    flat = [np.concatenate([cv[i] for cv in curves]) for i in (3, 4, 5)]
    line = _model_loss(model, *flat)
    labels = [f"C = {_sci(c_level)} FLOPs" if groups is None else f"{key} (C = {_sci(c_level)})"
              for key, c_level, *_ in curves]
    dots = None if loss is None else [(N[cv[2]], loss[cv[2]]) for cv in curves]
    return _curves_figure(
        [cv[3] for cv in curves], line, labels, dots, xlabel="model size N (parameters)",
        title=f"Isoflop curves: {_name(model)} (lines, star = optimum)", log_base=10)


def isotoken_curves(
    params: Any,
    N: Any,
    B: Any,
    K: Any,
    loss: Any = None,
    *,
    seq_len: float,
    lr: float | None = None,
    groups: Any = None,
    variant: str | None = None,
    num_points: int = 80,
) -> Figure:
    r"""Loss against batch size $B$ at fixed $N$ and tokens $D = B K \ell$.

    Runs with the same $N$ and $D$ (each within a factor 1.5, or as labelled by
    `groups`) form one curve; the model line keeps $N$ and $D$ and sets
    $K = D/(B\ell)$. Too large a batch leaves too few steps (the bias term
    grows), too small a batch is noisy (the variance term grows): the star marks
    the model's best $B$. Groups with fewer than two distinct $B$ are left out.

    **Example:**

    >>> import numpy as np, nqs_engine as nqs
    >>> from nqs_engine.plot import isotoken_curves
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> B = np.array([64.0, 256, 1024])
    >>> K = 2e9 / (B * 128)
    >>> fig = isotoken_curves(params, np.full(3, 1e8), B, K, seq_len=128, lr=lr)
    >>> fig.axes[0].get_xlabel()
    'batch size B (sequences)'
    """
    model = as_model(params, lr, variant)
    N, B, K, loss = _runs(N, B, K, loss)
    seq_len = float(_vector("seq_len", seq_len)[0])
    D = B * K * seq_len
    if groups is None:
        keys = _cluster(N) * (N.size + 1) + _cluster(D)
    else:
        keys = _groups(groups, N.size)
    curves = []
    for key in _ordered(keys, N * D):
        m = keys == key
        if np.unique(B[m]).size < 2:
            continue
        n_level = float(np.exp(np.mean(np.log(N[m]))))
        d_level = float(np.exp(np.mean(np.log(D[m]))))
        b_line = np.geomspace(B[m].min() / 2, B[m].max() * 2, num_points)
        k_line = d_level / (b_line * seq_len)
        keep = k_line >= 1.0
        curves.append((key, n_level, d_level, m, b_line[keep], k_line[keep]))
    if not curves:
        raise ValueError("no isotoken group: every (N, tokens) pair has runs of a single B")
    flat_N = np.concatenate([np.full(cv[4].size, cv[1]) for cv in curves])
    flat_B = np.concatenate([cv[4] for cv in curves])
    flat_K = np.concatenate([cv[5] for cv in curves])
    line = _model_loss(model, flat_N, flat_B, flat_K)
    labels = [f"N = {_sci(n_level)}, D = {_sci(d_level)} tokens" if groups is None
              else f"{key}: N = {_sci(n_level)}, D = {_sci(d_level)} tokens"
              for key, n_level, d_level, *_ in curves]
    dots = None if loss is None else [(B[cv[3]], loss[cv[3]]) for cv in curves]
    return _curves_figure(
        [cv[4] for cv in curves], line, labels, dots, xlabel="batch size B (sequences)",
        title=f"Isotoken curves: {_name(model)} (lines, star = best B)", log_base=2)


# ---------------------------------------------------------------------------
# The loss decomposition
# ---------------------------------------------------------------------------


def loss_decomposition(
    params: Any,
    N: float,
    B: float,
    K: float,
    *,
    lr: float | None = None,
    num_points: int = 200,
) -> Figure:
    r"""The terms of a model's loss against steps $k \le K$ at model size $N$ and batch $B$.

    For the NQS: $L(k) = \varepsilon_{irr} + \tfrac12 P\,\zeta(p, N+1)$ (approximation:
    the directions the model lacks) $+$ bias$(k)$ (the signal not yet learnt, which
    falls with $k$) $+$ variance$(k)$ (the gradient noise, which grows to a
    plateau set by $\gamma/B$), on log-log axes; constant schedule. Any other
    loss model draws its own terms. `params`: a loss model, or `NQSParams` with `lr`.

    **Example:**

    >>> import nqs_engine as nqs
    >>> from nqs_engine.plot import loss_decomposition
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> fig = loss_decomposition(params, 1e8, 256, 1e5, lr=lr, num_points=20)
    >>> sorted(t.get_text() for t in fig.axes[0].get_legend().get_texts())[:2]
    ['approximation', 'bias']
    """
    model = as_model(params, lr)
    N, B, K = (float(_vector(name, v)[0]) for name, v in (("N", N), ("B", B), ("K", K)))
    k = np.unique(np.round(np.geomspace(1.0, K, num_points)))
    out = model(N, B, k)
    terms = {name: np.broadcast_to(np.asarray(v), k.shape)
             for name, v in {"total": out.total, **out.terms()}.items()}
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    styles = {"total": dict(color="k", lw=2.2), "irreducible": dict(color="0.55", ls=":"),
              "approximation": dict(color="tab:green", ls="--"), "bias": dict(color="tab:blue"),
              "variance": dict(color="tab:red")}
    others = iter(_colors(len(terms)))
    for name, values in terms.items():
        style = styles.get(name) or dict(color=next(others))
        ax.plot(k, values, label=name, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("steps k")
    ax.set_ylabel("loss term (nats/token)")
    final = ", ".join(f"{name} {values[-1]:.3g}" for name, values in terms.items()
                      if name != "total")
    ax.set_title(f"Loss decomposition ({_name(model)}): N = {_sci(N)}, B = {B:g}\n"
                 f"at K = {K:.3g}: {final}")
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return fig


# ---------------------------------------------------------------------------
# Trajectories under schedules
# ---------------------------------------------------------------------------


def trajectories(
    params: Any,
    N: float,
    schedules: Mapping[str, Schedule],
    *,
    lr: float | None = None,
    num_points: int = 200,
) -> Figure:
    r"""The loss curve $L(k)$ under each named schedule (top), and each schedule (below).

    All schedules must run the same number of steps $K$; their curves come from
    one batched [`nqs_engine.trajectory`][] call at `num_points` checkpoints
    (`params`: an NQS model, or `NQSParams` with `lr`). The
    lower panels draw each schedule's step-size multiplier and batch size. The
    legend gives the final loss.

    **Example:**

    >>> import nqs_engine as nqs
    >>> from nqs_engine.plot import trajectories
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> S = {"constant": nqs.Schedule.constant(5000, 256),
    ...      "cosine": nqs.Schedule.cosine(5000, 256, pieces=8)}
    >>> fig = trajectories(params, 1e8, S, lr=lr, num_points=20)
    >>> len(fig.axes)
    3
    """
    model = as_model(params, lr)
    if not isinstance(model, NQS):
        raise ValueError(f"trajectories draws the plain NQS's loss curves; got a "
                         f"{type(model).__name__}")
    if not isinstance(schedules, Mapping) or not schedules:
        raise ValueError("schedules must be a non-empty mapping of name -> Schedule")
    for name, s in schedules.items():
        if not isinstance(s, Schedule) or s.lr.ndim != 1:
            raise ValueError(f"schedules[{name!r}] must be one Schedule (1-D arrays)")
    N = float(_vector("N", N)[0])
    totals = {name: float(s.total_steps) for name, s in schedules.items()}
    K = max(totals.values())
    if any(abs(t - K) > 0.5 for t in totals.values()):
        raise ValueError(f"schedules must run the same number of steps, got {totals}")
    names = list(schedules)
    checkpoints = np.unique(np.round(np.linspace(0.0, K, num_points)))
    checkpoints = checkpoints[checkpoints >= 1]
    curves = np.asarray(trajectory(model.params, N, Schedule.stack([schedules[n] for n in names]),
                                   checkpoints, lr=model.lr).total)
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax, ax_lr, ax_b = fig.subplots(3, 1, sharex=True, height_ratios=[3, 1, 1])
    for name, curve, color in zip(names, curves, _colors(len(names))):
        ax.plot(checkpoints, curve, color=color, lw=1.6, label=f"{name}: final {curve[-1]:.4f}")
        s = schedules[name]
        edges = np.concatenate([[0.0], np.cumsum(np.asarray(s.steps))])
        ax_lr.stairs(np.asarray(s.lr), edges, color=color, lw=1.4, baseline=None)
        ax_b.stairs(np.asarray(s.batch), edges, color=color, lw=1.4, baseline=None)
    lo = float(np.min(curves[:, -1]))
    hi = float(np.max(curves[:, curves.shape[1] // 10]))
    ax.set_ylim(lo - 0.05 * (hi - lo), hi)
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"Loss under schedules: N = {_sci(N)}, K = {K:.0f} steps, "
                 f"peak lr = {float(np.asarray(model.lr)):g}")
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    ax_lr.set_ylabel("lr multiplier")
    ax_lr.grid(alpha=0.3)
    ax_b.set_ylabel("batch B")
    ax_b.set_xlabel("step k")
    ax_b.grid(alpha=0.3)
    return fig


# ---------------------------------------------------------------------------
# The compute-optimal frontier
# ---------------------------------------------------------------------------


def frontier_plot(front: Frontier, *, seq_len: float | None = None) -> Figure:
    r"""The compute-optimal frontier of [`nqs_engine.frontier`][]: $N$, tokens per
    parameter and loss against compute, NQS beside Chinchilla.

    Left: $N_{opt}(C)$ of the NQS plans and of Chinchilla's allocation. Middle:
    tokens per parameter $D/N$ (Chinchilla's rule of thumb is about 20), with
    the NQS batch size on a second axis when `seq_len` is given. Right: the
    loss of the NQS plan and the NQS loss of Chinchilla's choice (its regret
    under the NQS), with Chinchilla's own prediction dotted.

    **Example:**

    >>> import numpy as np, nqs_engine as nqs
    >>> from nqs_engine.plot import frontier_plot
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> ch = nqs.chinchilla_preset("pythia-owt2")
    >>> f = nqs.frontier(params, [1e18, 1e19, 1e20], seq_len=128, lr=lr, chinchilla=ch,
    ...                  method="grid")
    >>> len(frontier_plot(f, seq_len=128).axes)
    4
    """
    if not isinstance(front, Frontier):
        raise TypeError(f"frontier_plot needs a Frontier (from nqs_engine.frontier), "
                        f"got {type(front).__name__}")
    C = np.asarray(front.compute, float).ravel()
    plan = front.plan
    N, B = np.asarray(plan.N, float).ravel(), np.asarray(plan.B, float).ravel()
    tokens = np.asarray(plan.tokens, float).ravel()
    loss = np.asarray(plan.loss, float).ravel()
    has_ch = front.chinchilla_N is not None
    fig = Figure(figsize=(13, 4.4), layout="constrained")
    ax_n, ax_d, ax_l = fig.subplots(1, 3)
    ax_n.plot(C, N, "o-", color="tab:blue", label="NQS plan")
    ax_d.plot(C, tokens / N, "o-", color="tab:blue", label="NQS plan")
    ax_l.plot(C, loss, "o-", color="tab:blue", label="NQS plan")
    if has_ch:
        ch_N = np.asarray(front.chinchilla_N, float).ravel()
        ch_D = np.asarray(front.chinchilla_D, float).ravel()
        ax_n.plot(C, ch_N, "s--", color="tab:orange", label="Chinchilla")
        ax_d.plot(C, ch_D / ch_N, "s--", color="tab:orange", label="Chinchilla")
        at_ch = np.asarray(front.nqs_loss_at_chinchilla, float).ravel()
        ax_l.plot(C, at_ch, "s--", color="tab:orange", label="Chinchilla's choice, NQS loss")
        ax_l.plot(C, np.asarray(front.chinchilla_loss, float).ravel(), ":", color="tab:orange",
                  label="Chinchilla's own prediction")
        regret = at_ch - loss
        for c, y, r in zip(C, at_ch, regret):
            if np.isfinite(r):
                ax_l.annotate(f"+{r:.3f}", (c, y), textcoords="offset points", xytext=(4, 4),
                              fontsize=7, color="tab:orange")
    if seq_len is not None:
        ax_b = ax_d.twinx()
        ax_b.plot(C, B, "^:", color="tab:green", label="NQS batch B")
        ax_b.set_yscale("log", base=2)
        ax_b.set_ylabel("NQS batch size B (sequences)", color="tab:green")
    for ax in (ax_n, ax_d, ax_l):
        ax.set_xscale("log")
        ax.set_xlabel("compute C (FLOPs)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    ax_n.set_yscale("log")
    ax_n.set_ylabel("compute-optimal N (parameters)")
    ax_n.set_title("Model size")
    ax_d.set_yscale("log")
    ax_d.set_ylabel("tokens per parameter D/N")
    ax_d.set_title("Data per parameter")
    ax_l.set_ylabel("loss (nats/token)")
    ax_l.set_title("Loss (annotated: Chinchilla's regret)" if has_ch else "Loss")
    return fig


__all__ = [
    "actual_vs_predicted",
    "frontier_plot",
    "isoflop_curves",
    "isotoken_curves",
    "loss_decomposition",
    "trajectories",
]
