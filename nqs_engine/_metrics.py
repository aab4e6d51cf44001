r"""Accuracy metrics of loss predictions, by group, and the compute-gap protocol.

Everything here is plain NumPy over a few hundred rows: no JAX, no fitting. A
model enters only through its predictions, or, for [`compute_gap`][], through a
callback that fits it on some rows and predicts others, so this module stays
independent of the fitting code.

**Metrics.** For measured losses $y_i > 0$ and predictions $\hat y_i > 0$,
$i = 1, \ldots, n$, with log residuals $e_i = \log y_i - \log \hat y_i$:

- Huber loss of the log residuals ($\delta = 10^{-3}$, the loss the NQS and
  Chinchilla fits minimise), reported like the NQS paper as "mean Huber
  $\times 10^{-5}$":
  $$\texttt{huber\_e5} = \frac{10^5}{n} \sum_i H_\delta(e_i), \qquad
    H_\delta(e) = \begin{cases} \tfrac12 e^2 & |e| \le \delta \\
    \delta\,(|e| - \tfrac12 \delta) & |e| > \delta \end{cases}$$
  ($H_\delta$ and its derivative are continuous at $|e| = \delta$);
- mean squared log error $\texttt{msle} = \frac1n \sum_i e_i^2$;
- mean absolute percentage error
  $\texttt{mape} = \frac{100}{n} \sum_i |\hat y_i - y_i| / y_i$;
- $\texttt{max\_abs\_log\_error} = \max_i |e_i|$.

Log residuals make every metric but `mape` invariant under a common rescaling
of $y$ and $\hat y$, and symmetric in $y \leftrightarrow \hat y$.

**Compute gap.** Scaling laws are meant to extrapolate. [`compute_gap`][] fits
every model on the runs of compute $C \le C_0$ only, predicts the runs of
compute $C > C_0$, and scores those predictions. The extrapolation distance is
the compute gap $\max_{\text{test}} C / C_0$ (also reported with the median
test compute in place of the maximum); sweeping $C_0$ over several thresholds
shows how accuracy decays with the gap.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._misc import first_bad, vector

#: Keys of the dictionary returned by [`metrics`][], in order.
METRIC_NAMES = ("n", "huber_e5", "msle", "mape", "max_abs_log_error")

#: Keys that [`compute_gap`][] adds in front of the metrics, in order.
GAP_NAMES = ("C0", "gap", "gap_median", "n_train", "n_test")

#: Label of the row over all data points in [`grouped_metrics`][].
ALL = "all"

_FORMATS = {
    "huber_e5": "{:.2f}",
    "msle": "{:.5g}",
    "mape": "{:.2f}",
    "max_abs_log_error": "{:.4g}",
    "C0": "{:.4g}",
    "gap": "{:.3g}",
    "gap_median": "{:.3g}",
}


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------


def _positive(x: Any, name: str) -> np.ndarray:
    """`x` as a float64 array whose values are all finite and > 0."""
    x = np.asarray(x, dtype=np.float64)
    bad = ~(np.isfinite(x) & (x > 0))
    if bad.any():
        i = first_bad(bad)
        where = ", ".join(map(str, i)) if isinstance(i, tuple) else i
        raise ValueError(
            f"{name} must be finite and > 0; first bad value {name}[{where}] = {float(x[i])!r}"
        )
    return x


def _check_delta(delta: float) -> float:
    delta = float(delta)
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be finite and > 0, got {delta!r}")
    return delta


def _pair(y: Any, y_hat: Any, y_name: str = "y", hat_name: str = "y_hat"):
    """`y` and `y_hat` validated: same shape, at least one point, finite and > 0."""
    y_arr = np.asarray(y, dtype=np.float64)
    hat_arr = np.asarray(y_hat, dtype=np.float64)
    if y_arr.shape != hat_arr.shape:
        raise ValueError(
            f"{y_name} and {hat_name} must have the same shape, "
            f"got {y_arr.shape} and {hat_arr.shape}"
        )
    if y_arr.size == 0:
        raise ValueError(f"{y_name} must hold at least one point")
    return _positive(y_arr, y_name), _positive(hat_arr, hat_name)


def _vector(x: Any, name: str, n: int | None = None) -> np.ndarray:
    if np.ndim(x) != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {np.shape(x)}")
    return vector(x, name, size=n, allow_empty=True, finite=False)


def _python(value: Any) -> Any:
    """A NumPy scalar as the matching Python scalar (labels print and compare cleanly)."""
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------


def huber(e: npt.ArrayLike, delta: float = 1e-3) -> np.ndarray:
    r"""The Huber function, elementwise.

    $$H_\delta(e) = \begin{cases} \tfrac12 e^2 & |e| \le \delta, \\
      \delta\,(|e| - \tfrac12 \delta) & |e| > \delta. \end{cases}$$

    Quadratic near zero and linear beyond $\delta$, with value $\delta^2/2$ and
    slope $\pm\delta$ on both sides of $|e| = \delta$, so large residuals
    (outliers) weigh linearly rather than quadratically.

    **Arguments:** `e`, an array of residuals (any shape); `delta` $> 0$.

    **Returns:** a float64 NumPy array of the shape of `e`.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._metrics import huber
    >>> huber(np.array([0.0, 1e-3, -3e-3]))   # 0, delta^2 / 2, delta (3 delta - delta / 2)
    array([0.0e+00, 5.0e-07, 2.5e-06])
    """
    delta = _check_delta(delta)
    e = np.asarray(e, dtype=np.float64)
    a = np.abs(e)
    return np.where(a <= delta, 0.5 * e * e, delta * (a - 0.5 * delta))


def _metrics(y: np.ndarray, y_hat: np.ndarray, delta: float) -> dict[str, Any]:
    """[`metrics`][] of already validated, non-empty arrays."""
    e = np.log(y) - np.log(y_hat)
    return {
        "n": int(y.size),
        "huber_e5": float(np.mean(huber(e, delta)) * 1e5),
        "msle": float(np.mean(e * e)),
        "mape": float(np.mean(np.abs(y_hat - y) / y) * 100.0),
        "max_abs_log_error": float(np.max(np.abs(e))),
    }


def metrics(y: npt.ArrayLike, y_hat: npt.ArrayLike, delta: float = 1e-3) -> dict[str, Any]:
    r"""Accuracy of the predictions `y_hat` of the measured losses `y`.

    With log residuals $e_i = \log y_i - \log \hat y_i$ over the $n$ points:

    $$\texttt{huber\_e5} = \frac{10^5}{n} \sum_i H_\delta(e_i), \quad
      \texttt{msle} = \frac1n \sum_i e_i^2, \quad
      \texttt{mape} = \frac{100}{n} \sum_i \frac{|\hat y_i - y_i|}{y_i}, \quad
      \texttt{max\_abs\_log\_error} = \max_i |e_i|,$$

    where $H_\delta$ is [`huber`][]; `huber_e5` is the mean Huber loss in units
    of $10^{-5}$, as the NQS paper reports it, and `mape` is in percent.

    **Arguments:**

    - `y`, `y_hat`: arrays of the same shape (flattened), at least one point,
      every value finite and $> 0$; otherwise ValueError naming the argument
      and the first bad index.
    - `delta`: the Huber threshold $\delta > 0$.

    **Returns:** a dict with keys `n` (an int) and `huber_e5`, `msle`, `mape`,
    `max_abs_log_error` (Python floats), in that order.

    **Example:** one prediction 10% high, one exact.

    >>> from nqs_engine._metrics import metrics
    >>> m = metrics([2.0, 3.0], [2.2, 3.0])
    >>> m["n"], round(m["mape"], 6), round(m["max_abs_log_error"], 6)   # log(1.1) = 0.09531
    (2, 5.0, 0.09531)
    >>> round(m["huber_e5"], 4)   # 1e5 * 1e-3 * (0.09531 - 0.0005) / 2
    4.7405
    """
    delta = _check_delta(delta)
    y_arr, hat_arr = _pair(y, y_hat)
    return _metrics(y_arr.ravel(), hat_arr.ravel(), delta)


def _labels(groups: Mapping[str, Any] | None, n: int, reserved: Sequence[str]):
    """Group columns validated: names and 1-D label arrays of length `n`."""
    if groups is None:
        return [], []
    if not isinstance(groups, Mapping):
        raise ValueError(
            f"groups must be a mapping of column name to labels, got {type(groups).__name__}"
        )
    names = [str(k) for k in groups]
    clash = [k for k in names if k in reserved]
    if clash:
        raise ValueError(f"group column {clash[0]!r} clashes with an output column name")
    labels = []
    for key in groups:
        arr = np.asarray(groups[key])
        if arr.ndim != 1 or arr.shape[0] != n:
            raise ValueError(
                f"groups[{key!r}] must be a 1-D array of length {n}, got shape {arr.shape}"
            )
        labels.append(arr)
    return names, labels


def _combinations(labels: list[np.ndarray], n: int):
    """Distinct label combinations (sorted) and the combination index of each row."""
    if not labels:
        return [], np.zeros(n, dtype=np.intp)
    uniques, codes = [], []
    for arr in labels:
        u, inv = np.unique(arr, return_inverse=True)
        uniques.append(u)
        codes.append(inv.reshape(-1))
    combos, which = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
    keys = [tuple(_python(u[c]) for u, c in zip(uniques, combo)) for combo in combos]
    return keys, which.reshape(-1)


def _grouped(y, preds, names, labels, delta, prefix=None):
    """Rows of [`grouped_metrics`][] from validated inputs; `prefix` goes in front."""
    keys, which = _combinations(labels, y.shape[0])
    prefix = {} if prefix is None else prefix
    rows = []
    for g, key in enumerate(keys):  # a handful of groups; each one is vectorised
        mask = which == g
        for model, y_hat in preds.items():
            rows.append({**prefix, **dict(zip(names, key)), "model": model,
                         **_metrics(y[mask], y_hat[mask], delta)})
    for model, y_hat in preds.items():
        rows.append({**prefix, **dict.fromkeys(names, ALL), "model": model,
                     **_metrics(y, y_hat, delta)})
    return rows


def _predictions(predictions: Any, n: int, what: str) -> dict[str, np.ndarray]:
    if not isinstance(predictions, Mapping) or len(predictions) == 0:
        raise ValueError(f"{what} must be a non-empty mapping of model name to predictions")
    out = {}
    for model, values in predictions.items():
        name = f"{what}[{model!r}]"
        out[str(model)] = _positive(_vector(values, name, n), name)
    return out


def grouped_metrics(
    y: npt.ArrayLike,
    predictions: Mapping[str, npt.ArrayLike],
    groups: Mapping[str, npt.ArrayLike] | None = None,
    delta: float = 1e-3,
) -> list[dict[str, Any]]:
    r"""[`metrics`][] of several models, for every group of rows and for all rows.

    The rows of the data are partitioned by their combination of labels in
    `groups` (e.g. `{"split": ..., "type": ...}`); only combinations that occur
    are reported, sorted by the labels of each column in turn. For every such
    combination $g$ with rows $I_g$ and every model $m$, the result holds one
    row with the metrics of $(y_i, \hat y^{(m)}_i)_{i \in I_g}$; then one row
    per model over all rows, with every group column set to `"all"`.

    **Arguments:**

    - `y`: 1-D array of $n$ measured losses, finite and $> 0$.
    - `predictions`: model name (`"nqs"`, `"chinchilla"`, ...) to a 1-D array
      of $n$ predictions, finite and $> 0$.
    - `groups`: column name to a 1-D array of $n$ labels (strings or numbers),
      or `None` for the `"all"` rows only. Names may not be `"model"` or a
      metric name.
    - `delta`: the Huber threshold.

    **Returns:** a list of dicts `{group columns..., "model": name, n, huber_e5,
    msle, mape, max_abs_log_error}`: for each combination in sorted order, one
    row per model (in the order of `predictions`), then the `"all"` rows.
    Labels are Python scalars.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._metrics import grouped_metrics
    >>> y = np.array([3.0, 2.5, 2.9, 2.4])
    >>> rows = grouped_metrics(
    ...     y, {"nqs": y * 1.01, "chinchilla": y * 0.95},
    ...     groups={"split": np.array(["train", "train", "test", "test"])},
    ... )
    >>> [(r["split"], r["model"], r["n"], round(r["mape"], 2)) for r in rows]
    [('test', 'nqs', 2, 1.0), ('test', 'chinchilla', 2, 5.0),
     ('train', 'nqs', 2, 1.0), ('train', 'chinchilla', 2, 5.0),
     ('all', 'nqs', 4, 1.0), ('all', 'chinchilla', 4, 5.0)]
    """
    delta = _check_delta(delta)
    y = _vector(y, "y")
    if y.shape[0] == 0:
        raise ValueError("y must hold at least one point")
    y = _positive(y, "y")
    preds = _predictions(predictions, y.shape[0], "predictions")
    names, labels = _labels(groups, y.shape[0], ("model", *METRIC_NAMES))
    return _grouped(y, preds, names, labels, delta)


# ---------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------


def _cell(column: str, value: Any) -> tuple[str, bool]:
    """The text of one cell and whether it is numeric (right-aligned)."""
    if value is None:
        return "", False
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)), False
    if isinstance(value, numbers.Integral):
        return str(int(value)), True
    if isinstance(value, numbers.Real):
        return _FORMATS.get(column, "{:.5g}").format(float(value)), True
    return str(value), False


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    r"""Rows of dicts as a fixed-width plain-text table, for a terminal.

    The first line holds the column names, the second a rule of dashes, then
    one line per row. Columns whose cells are all numbers are right-aligned,
    the others left-aligned; columns are separated by two spaces. Floats are
    formatted by column: `huber_e5` and `mape` with 2 decimals, `msle` with 5
    significant digits, `max_abs_log_error` with 4, `C0` with 4, `gap` and
    `gap_median` with 3, any other float with 5; integers in full. A key a row
    lacks gives an empty cell.

    **Arguments:**

    - `rows`: a sequence of mappings, e.g. from [`grouped_metrics`][] or
      [`compute_gap`][].
    - `columns`: the columns to show, in order; by default every key of the
      rows in order of first appearance. Needed when `rows` is empty.

    **Returns:** the table as one string, lines joined by `"\n"`, no
    trailing newline or trailing spaces.

    **Example:**

    >>> from nqs_engine._metrics import format_table
    >>> print(format_table([
    ...     {"model": "nqs", "n": 12, "huber_e5": 1.23456, "msle": 2.5625e-6},
    ...     {"model": "chinchilla", "n": 12, "huber_e5": 10.0, "msle": 1e-4},
    ... ]))
    model        n  huber_e5       msle
    ----------  --  --------  ----------
    nqs         12      1.23  2.5625e-06
    chinchilla  12     10.00      0.0001
    """
    if columns is None:
        if len(rows) == 0:
            raise ValueError("format_table needs `columns` when `rows` is empty")
        columns = list(dict.fromkeys(k for row in rows for k in row))
    columns = [str(c) for c in columns]
    cells = [[_cell(c, row.get(c)) for c in columns] for row in rows]
    widths, right = [], []
    for j, c in enumerate(columns):
        col = [cells[i][j] for i in range(len(rows))]
        widths.append(max([len(c)] + [len(text) for text, _ in col]))
        right.append(bool(col) and all(num for text, num in col if text))

    def line(texts):
        parts = [t.rjust(w) if r else t.ljust(w) for t, w, r in zip(texts, widths, right)]
        return "  ".join(parts).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out += [line([text for text, _ in row]) for row in cells]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Compute gap
# ---------------------------------------------------------------------------


def compute_gap(
    C: npt.ArrayLike,
    y: npt.ArrayLike,
    thresholds: npt.ArrayLike,
    fit_and_predict: Callable[[np.ndarray, np.ndarray], Mapping[str, npt.ArrayLike]],
    *,
    delta: float = 1e-3,
    groups: Mapping[str, npt.ArrayLike] | None = None,
) -> list[dict[str, Any]]:
    r"""Extrapolation accuracy: fit on compute $\le C_0$, score on compute $> C_0$.

    For each threshold $C_0$ in `thresholds` (in the given order), the rows
    split into train $= \{i : C_i \le C_0\}$ and test $= \{i : C_i > C_0\}$.
    `fit_and_predict(train_mask, test_mask)` fits each model on the train rows
    and returns its predictions of the test rows; these are scored with
    [`metrics`][] (per group of `groups` and over all test rows, as in
    [`grouped_metrics`][]). The compute gap of the split is
    $$\texttt{gap} = \frac{\max_{i \in \text{test}} C_i}{C_0}, \qquad
      \texttt{gap\_median} = \frac{\operatorname{median}_{i \in \text{test}} C_i}{C_0}.$$

    **Arguments:**

    - `C`: 1-D array of the $n$ rows' training compute (FLOP), finite, $> 0$.
    - `y`: 1-D array of the $n$ measured losses, finite, $> 0$.
    - `thresholds`: 1-D array of thresholds $C_0 > 0$, each leaving at least one
      train and one test row (else ValueError naming the threshold).
    - `fit_and_predict`: called with two boolean arrays of length $n$ (train and
      test masks, fresh copies); returns a non-empty mapping of model name to
      predictions of the test rows, in row order (length = number of test rows,
      finite, $> 0$).
    - `delta`: the Huber threshold.
    - `groups`: optional column name to 1-D labels of all $n$ rows, to score the
      test rows per group too.

    **Returns:** a list of dicts, for each threshold the rows of
    [`grouped_metrics`][] of its test rows, each prefixed with `C0`, `gap`,
    `gap_median`, `n_train`, `n_test` (these describe the whole split; the
    metrics' `n` counts the row's group).

    **Example:** a "model" that predicts the mean training loss.

    >>> import numpy as np
    >>> from nqs_engine._metrics import compute_gap
    >>> C = np.array([1e18, 1e19, 1e20, 1e21])
    >>> y = np.array([3.0, 2.6, 2.3, 2.1])
    >>> def fit_and_predict(train, test):
    ...     return {"mean": np.full(test.sum(), y[train].mean())}
    >>> rows = compute_gap(C, y, [1e19, 1e20], fit_and_predict)
    >>> [(r["C0"], r["gap"], r["n_train"], r["n_test"], round(r["mape"], 2)) for r in rows]
    [(1e+19, 100.0, 2, 2, 27.54), (1e+20, 10.0, 3, 1, 25.4)]
    """
    delta = _check_delta(delta)
    C = _vector(C, "C")
    if C.shape[0] == 0:
        raise ValueError("C must hold at least one point")
    C = _positive(C, "C")
    y = _positive(_vector(y, "y", C.shape[0]), "y")
    thresholds = _vector(thresholds, "thresholds")
    if thresholds.shape[0] == 0:
        raise ValueError("thresholds must hold at least one threshold")
    thresholds = _positive(thresholds, "thresholds")
    names, labels = _labels(groups, C.shape[0], ("model", *GAP_NAMES, *METRIC_NAMES))

    rows = []
    for c0 in thresholds.tolist():  # a handful of thresholds
        train = C <= c0
        test = ~train
        n_train, n_test = int(train.sum()), int(test.sum())
        if n_train < 1 or n_test < 1:
            raise ValueError(
                f"threshold C0={c0:g} leaves {n_train} train and {n_test} test rows; "
                "each needs at least one"
            )
        preds = _predictions(
            fit_and_predict(train.copy(), test.copy()), n_test,
            f"fit_and_predict(...) at C0={c0:g}",
        )
        prefix = {
            "C0": c0,
            "gap": float(C[test].max() / c0),
            "gap_median": float(np.median(C[test]) / c0),
            "n_train": n_train,
            "n_test": n_test,
        }
        rows += _grouped(y[test], preds, names, [a[test] for a in labels], delta, prefix)
    return rows
