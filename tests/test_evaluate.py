"""Tests of nqs_engine._metrics: metrics, groups, table and the compute-gap protocol."""

from __future__ import annotations

import math
import re

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from nqs_engine._metrics import (
    GAP_NAMES,
    METRIC_NAMES,
    compute_gap,
    format_table,
    grouped_metrics,
    huber,
    metrics,
)

DELTA = 1e-3

# ---------------------------------------------------------------------------
# huber
# ---------------------------------------------------------------------------


def test_huber_hand_values():
    e = np.array([0.0, 5e-4, -1e-3, 1e-3, 3e-3, -0.5])
    expected = np.array([0.0, 1.25e-7, 5e-7, 5e-7, 2.5e-6, 1e-3 * (0.5 - 5e-4)])
    np.testing.assert_allclose(huber(e), expected, rtol=1e-14, atol=0)
    # Exactly at delta the quadratic branch applies: 0.5 * delta^2, bit for bit.
    assert huber(DELTA) == 0.5 * DELTA * DELTA
    assert huber(np.float64(2.0), delta=1.0) == 1.5
    assert huber([[1.0, -2.0]], delta=4.0).shape == (1, 2)


@pytest.mark.parametrize("delta", [1e-3, 0.1, 2.0])
def test_huber_continuous_with_continuous_derivative_at_delta(delta):
    h = 1e-7 * delta
    for sign in (1.0, -1.0):
        at = sign * delta
        below, above = sign * (delta - h), sign * (delta + h)
        # Value: both sides tend to delta^2 / 2.
        assert abs(huber(below, delta) - 0.5 * delta**2) <= 2 * h * delta
        assert abs(huber(above, delta) - 0.5 * delta**2) <= 2 * h * delta
        # One-sided finite-difference slopes: both equal sign * delta.
        left = (huber(at, delta) - huber(at - h, delta)) / h
        right = (huber(at + h, delta) - huber(at, delta)) / h
        np.testing.assert_allclose([left, right], [sign * delta] * 2, rtol=1e-5)


def test_huber_bad_delta():
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="delta must be finite and > 0"):
            huber(1.0, bad)


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------


def test_metrics_hand_values_log_residuals():
    # y_hat = 1, y = exp(e): the log residuals are e, one inside, one at and one beyond delta.
    e = np.array([0.0, 5e-4, -1e-3, 3e-3])
    m = metrics(np.exp(e), np.ones(4))
    assert list(m) == list(METRIC_NAMES)
    assert m["n"] == 4 and isinstance(m["n"], int)
    # Huber: (0 + 1.25e-7 + 5e-7 + 2.5e-6) / 4 = 7.8125e-7, i.e. 0.078125 in units of 1e-5.
    assert m["huber_e5"] == pytest.approx(0.078125, rel=1e-12)
    # MSLE: (0 + 2.5e-7 + 1e-6 + 9e-6) / 4.
    assert m["msle"] == pytest.approx(2.5625e-6, rel=1e-12)
    assert m["max_abs_log_error"] == pytest.approx(3e-3, rel=1e-12)
    # MAPE: |1 - e^e| / e^e = |1 - e^-e|.
    assert m["mape"] == pytest.approx(100 * np.mean(np.abs(-np.expm1(-e))), rel=1e-12)


def test_metrics_hand_values_mape_and_large_errors():
    m = metrics([1.0, 2.0, 4.0], [1.1, 2.0, 3.0])
    assert m["mape"] == pytest.approx(100 * (0.1 + 0.0 + 0.25) / 3, rel=1e-13)
    e = np.array([math.log(1 / 1.1), 0.0, math.log(4 / 3)])
    assert m["msle"] == pytest.approx(np.mean(e**2), rel=1e-13)
    assert m["max_abs_log_error"] == pytest.approx(math.log(4 / 3), rel=1e-13)
    # Both nonzero residuals are beyond delta: the linear branch.
    hub = DELTA * (abs(e[0]) - DELTA / 2) + DELTA * (abs(e[2]) - DELTA / 2)
    assert m["huber_e5"] == pytest.approx(1e5 * hub / 3, rel=1e-13)
    # A larger delta puts both in the quadratic branch.
    assert metrics([1.0, 2.0, 4.0], [1.1, 2.0, 3.0], delta=1.0)["huber_e5"] == pytest.approx(
        1e5 * 0.5 * m["msle"], rel=1e-13
    )


def test_metrics_accepts_any_matching_shape():
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert metrics(y, y * 1.1) == metrics(y.ravel(), y.ravel() * 1.1)
    assert metrics(2.0, 2.0)["n"] == 1


@pytest.mark.parametrize(
    "y, y_hat, match",
    [
        ([1.0, 2.0], [1.0], r"y and y_hat must have the same shape, got \(2,\) and \(1,\)"),
        ([], [], "y must hold at least one point"),
        (
            [1.0, 0.0, -1.0],
            [1.0, 1.0, 1.0],
            r"y must be finite and > 0; first bad value y\[1\] = 0\.0",
        ),
        ([1.0, 1.0, 1.0], [1.0, 1.0, np.nan], r"y_hat must be finite and > 0; .*y_hat\[2\] = nan"),
        ([1.0, np.inf], [1.0, 1.0], r"y\[1\] = inf"),
        ([[1.0, 1.0], [1.0, -2.0]], np.ones((2, 2)), r"y\[1, 1\] = -2\.0"),
    ],
)
def test_metrics_errors(y, y_hat, match):
    with pytest.raises(ValueError, match=match):
        metrics(y, y_hat)


def test_metrics_bad_delta():
    with pytest.raises(ValueError, match="delta"):
        metrics([1.0], [1.0], delta=-1.0)


positive = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)
losses = hnp.arrays(np.float64, st.integers(1, 40), elements=positive)


@settings(max_examples=60)
@given(y=losses, data=st.data())
def test_metrics_zero_iff_predictions_equal(y, data):
    m = metrics(y, y.copy())
    assert all(m[k] == 0.0 for k in METRIC_NAMES[1:])
    # Perturb one point by a relative amount of at least 1e-6: every metric is then > 0.
    i = data.draw(st.integers(0, y.size - 1))
    r = data.draw(st.floats(1e-6, 0.5) | st.floats(-0.5, -1e-6))
    y_hat = y.copy()
    y_hat[i] *= 1.0 + r
    m = metrics(y, y_hat)
    assert all(m[k] > 0.0 for k in METRIC_NAMES[1:])


@settings(max_examples=60)
@given(
    y=losses,
    data=st.data(),
    log_scale=st.floats(-6 * math.log(10), 6 * math.log(10)),
)
def test_metrics_invariant_under_common_scaling(y, data, log_scale):
    e = data.draw(hnp.arrays(np.float64, y.shape, elements=st.floats(-1.0, 1.0)))
    y_hat = y * np.exp(e)
    s = math.exp(log_scale)
    a, b = metrics(y, y_hat), metrics(s * y, s * y_hat)
    # Rescaling moves each log residual by a few ulps of |log(s y)| <= ~30.
    de = 1e-13
    max_e = a["max_abs_log_error"]
    assert abs(a["msle"] - b["msle"]) <= 2 * de * max_e + 1e-12 * a["msle"]
    assert abs(a["huber_e5"] - b["huber_e5"]) <= 1e5 * DELTA * de + 1e-12 * a["huber_e5"]
    assert abs(a["max_abs_log_error"] - b["max_abs_log_error"]) <= de
    assert b["mape"] == pytest.approx(a["mape"], rel=1e-12, abs=1e-10)


@settings(max_examples=60)
@given(y=losses, data=st.data())
def test_metrics_symmetric_in_log_residual(y, data):
    e = data.draw(hnp.arrays(np.float64, y.shape, elements=st.floats(-1.0, 1.0)))
    y_hat = y * np.exp(e)
    a, b = metrics(y, y_hat), metrics(y_hat, y)
    for k in ("huber_e5", "msle", "max_abs_log_error"):
        assert b[k] == pytest.approx(a[k], rel=1e-12, abs=1e-15)


@settings(max_examples=60)
@given(y=losses, r=st.floats(0.0, 0.99))
def test_mape_symmetric_over_and_under_prediction(y, r):
    # Predicting every point r high or r low gives the same MAPE, 100 r.
    high, low = metrics(y, y * (1 + r)), metrics(y, y * (1 - r))
    assert high["mape"] == pytest.approx(100 * r, rel=1e-12, abs=1e-12)
    assert low["mape"] == pytest.approx(100 * r, rel=1e-12, abs=1e-12)


# ---------------------------------------------------------------------------
# grouped_metrics
# ---------------------------------------------------------------------------


def _grouped_data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(2.0, 4.0, n)
    preds = {
        "nqs": y * np.exp(rng.normal(0, 0.01, n)),
        "chinchilla": y * np.exp(rng.normal(0, 0.05, n)),
    }
    split = rng.choice(["train", "test"], n)
    kind = rng.choice([2, 0, 1], n)
    kind[(split == "test") & (kind == 1)] = 0  # ("test", 1) never occurs
    return y, preds, {"split": split, "type": kind}


def test_grouped_metrics_rows_counts_and_all():
    y, preds, groups = _grouped_data()
    rows = grouped_metrics(y, preds, groups)
    expected_keys = sorted({(s, int(t)) for s, t in zip(groups["split"], groups["type"])})
    assert ("test", 1) not in expected_keys
    assert len(rows) == 2 * (len(expected_keys) + 1)
    group_rows, all_rows = rows[:-2], rows[-2:]
    # Sorted combinations, one row per model each, models in the given order.
    assert [(r["split"], r["type"]) for r in group_rows[::2]] == expected_keys
    assert [r["model"] for r in rows] == ["nqs", "chinchilla"] * (len(expected_keys) + 1)
    for r in group_rows:
        assert type(r["type"]) is int and type(r["split"]) is str
        assert list(r) == ["split", "type", "model", *METRIC_NAMES]
        mask = (groups["split"] == r["split"]) & (groups["type"] == r["type"])
        assert r["n"] == mask.sum()
        assert {k: r[k] for k in METRIC_NAMES} == metrics(y[mask], preds[r["model"]][mask])
    assert sum(r["n"] for r in group_rows) == 2 * y.size
    for r in all_rows:
        assert r["split"] == r["type"] == "all"
        assert {k: r[k] for k in METRIC_NAMES} == metrics(y, preds[r["model"]])


def test_grouped_metrics_without_groups():
    y, preds, _ = _grouped_data()
    rows = grouped_metrics(y, preds, None, delta=0.02)
    assert rows == [
        {"model": m, **metrics(y, p, delta=0.02)} for m, p in preds.items()
    ]


def test_grouped_metrics_errors():
    y, preds, groups = _grouped_data(n=10)
    with pytest.raises(ValueError, match=r"predictions\['nqs'\] must have 10 entries, got 9"):
        grouped_metrics(y, {"nqs": preds["nqs"][:-1]})
    bad = preds["nqs"].copy()
    bad[4] = -1.0
    with pytest.raises(ValueError, match=r"predictions\['nqs'\]\[4\] = -1\.0"):
        grouped_metrics(y, {"nqs": bad})
    with pytest.raises(ValueError, match="non-empty mapping"):
        grouped_metrics(y, {})
    with pytest.raises(ValueError, match=r"groups\['split'\] must be a 1-D array of length 10"):
        grouped_metrics(y, preds, {"split": groups["split"][:5]})
    with pytest.raises(ValueError, match="group column 'model' clashes"):
        grouped_metrics(y, preds, {"model": groups["split"]})
    with pytest.raises(ValueError, match=r"y must be a 1-D array"):
        grouped_metrics(y.reshape(2, 5), preds)
    y_bad = y.copy()
    y_bad[7] = np.nan
    with pytest.raises(ValueError, match=r"y\[7\] = nan"):
        grouped_metrics(y_bad, preds)


# ---------------------------------------------------------------------------
# format_table
# ---------------------------------------------------------------------------


def test_format_table_headers_and_lines():
    y, preds, groups = _grouped_data()
    rows = grouped_metrics(y, preds, groups)
    text = format_table(rows)
    lines = text.split("\n")
    assert len(lines) == 2 + len(rows)
    header = lines[0].split()
    assert header == ["split", "type", "model", *METRIC_NAMES]
    assert set(lines[1].replace(" ", "")) == {"-"}
    # Fixed width: every line's columns start where the header's do.
    assert all(len(line) <= len(lines[1]) for line in lines)
    for line, row in zip(lines[2:], rows):
        cells = line.split()
        assert cells[:3] == [str(row["split"]), str(row["type"]), row["model"]]
        assert cells[3] == str(row["n"])
        assert cells[4] == f"{row['huber_e5']:.2f}"
        assert cells[5] == f"{row['msle']:.5g}"
        assert cells[6] == f"{row['mape']:.2f}"
    assert text == text.rstrip() and all(line == line.rstrip() for line in lines)


def test_format_table_columns_missing_and_empty():
    rows = [{"model": "a", "x": 1.5}, {"model": "bb", "y": 2}]
    lines = format_table(rows, columns=["y", "model", "x"]).split("\n")
    assert lines[0].split() == ["y", "model", "x"]
    assert lines[2].split() == ["a", "1.5"]
    assert lines[3].split() == ["2", "bb"]
    assert format_table([], columns=["a", "b"]).split("\n")[0] == "a  b"
    with pytest.raises(ValueError, match="columns"):
        format_table([])


# ---------------------------------------------------------------------------
# compute_gap
# ---------------------------------------------------------------------------


def _gap_data(n=40, seed=1):
    rng = np.random.default_rng(seed)
    C = 10.0 ** rng.uniform(18, 22, n)
    y = 1.8 + 300 * C**-0.1 * np.exp(rng.normal(0, 0.01, n))
    return C, y, rng.choice(["a", "b"], n)


def test_compute_gap_against_direct_computation():
    C, y, kind = _gap_data()
    calls = []

    def fit_and_predict(train, test):
        calls.append((train.copy(), test.copy()))
        train[:] = False  # the callback gets copies: mutating them changes nothing
        return {
            "mean": np.full(int(test.sum()), y[~test].mean()),
            "last": np.full(int(test.sum()), y[~test][np.argmax(C[~test])]),
        }

    thresholds = [1e19, 1e20, 3e21]
    rows = compute_gap(C, y, thresholds, fit_and_predict, delta=0.01)
    assert len(rows) == 2 * len(thresholds) and len(calls) == len(thresholds)
    for k, c0 in enumerate(thresholds):
        train, test = C <= c0, C > c0
        np.testing.assert_array_equal(calls[k][0], train)
        np.testing.assert_array_equal(calls[k][1], test)
        expected = {
            "mean": y[train].mean(),
            "last": y[train][np.argmax(C[train])],
        }
        for j, model in enumerate(("mean", "last")):
            r = rows[2 * k + j]
            assert list(r) == [*GAP_NAMES, "model", *METRIC_NAMES]
            assert r["C0"] == c0 and r["model"] == model
            assert r["n_train"] == train.sum() and r["n_test"] == r["n"] == test.sum()
            assert r["gap"] == pytest.approx(C[test].max() / c0, rel=1e-15)
            assert r["gap_median"] == pytest.approx(np.median(C[test]) / c0, rel=1e-15)
            direct = metrics(y[test], np.full(test.sum(), expected[model]), delta=0.01)
            assert {m: r[m] for m in METRIC_NAMES} == pytest.approx(direct, rel=1e-14)


def test_compute_gap_with_groups():
    C, y, kind = _gap_data()

    def fit_and_predict(train, test):
        return {"mean": np.full(int(test.sum()), y[train].mean())}

    rows = compute_gap(C, y, [1e20], fit_and_predict, groups={"type": kind})
    test = C > 1e20
    pred = np.full(test.sum(), y[C <= 1e20].mean())
    assert [r["type"] for r in rows] == sorted(set(kind[test])) + ["all"]
    for r in rows:
        assert r["n_test"] == test.sum()
        sel = np.ones(test.sum(), bool) if r["type"] == "all" else kind[test] == r["type"]
        assert {m: r[m] for m in METRIC_NAMES} == metrics(y[test][sel], pred[sel])
    assert sum(r["n"] for r in rows[:-1]) == rows[-1]["n"]


def test_compute_gap_errors():
    C, y, _ = _gap_data(n=10)

    def ok(train, test):
        return {"m": np.full(int(test.sum()), 2.0)}

    for c0 in (1e10, 1e30):
        with pytest.raises(ValueError, match=re.escape(f"threshold C0={c0:g} leaves")):
            compute_gap(C, y, [1e20, c0], ok)
    msg = r"thresholds must be finite and > 0; .*thresholds\[1\] = -1\.0"
    with pytest.raises(ValueError, match=msg):
        compute_gap(C, y, [1e20, -1.0], ok)
    with pytest.raises(ValueError, match="at least one threshold"):
        compute_gap(C, y, [], ok)
    with pytest.raises(ValueError, match="y must have 10 entries, got 9"):
        compute_gap(C, y[:-1], [1e20], ok)
    with pytest.raises(ValueError, match=r"C\[0\] = 0\.0"):
        compute_gap(np.r_[0.0, C[1:]], y, [1e20], ok)
    with pytest.raises(ValueError, match=r"at C0=1e\+20\['m'\] must have \d+ entries"):
        compute_gap(C, y, [1e20], lambda tr, te: {"m": np.ones(3 + int(te.sum()))})
    with pytest.raises(ValueError, match=r"at C0=1e\+20\['m'\]\[0\] = nan"):
        compute_gap(C, y, [1e20], lambda tr, te: {"m": np.full(int(te.sum()), np.nan)})
    with pytest.raises(ValueError, match="C0=1e\\+20 must be a non-empty mapping"):
        compute_gap(C, y, [1e20], lambda tr, te: None)
    with pytest.raises(ValueError, match="group column 'gap' clashes"):
        compute_gap(C, y, [1e20], ok, groups={"gap": np.zeros(10)})
