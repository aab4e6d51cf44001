"""Prefix -> endpoint and endpoint compute laws (issue #15).

The parametric forms recover curves of their own shape; the model protocol
never reads a loss past its cutoff (of the run it predicts, nor of any run that
shares that run's prefix): its predictions do not change when every such loss is
changed, and a NaN there is never touched. The compute law recovers a law it
generated.
"""

from __future__ import annotations

import json
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nqs_engine as nqs
from nqs_engine._prefix import (
    FORMS,
    CurveLog,
    compute_law,
    compute_law_backtest,
    fit_compute_law,
    fit_form,
    prefix_cutoffs,
    prefix_endpoints,
    prefix_figure,
    thin,
)
from nqs_engine.cli import main

TRUE_SHAPES = {"log": (3.0, 0.4, 0.05), "exp": (2.5, 1.0, 0.2), "power": (2.0, 0.6, 0.05, 0.5),
               "rational": (2.2, 1.5, 0.1)}


@pytest.mark.parametrize("name", list(FORMS))
@pytest.mark.parametrize("criterion", ["mae", "huber"])
def test_forms_recover_curves_of_their_own_shape(name, criterion):
    tau = np.linspace(0.04, 0.5, 40)
    x_true = TRUE_SHAPES[name]
    y = FORMS[name](tau, x_true)
    x = fit_form(name, tau, y, criterion)
    assert float(np.max(np.abs(FORMS[name](tau, x) - y))) < 1e-4
    assert float(FORMS[name](1.0, x)) == pytest.approx(float(FORMS[name](1.0, x_true)), abs=5e-3)


def test_forms_refuse_too_few_points():
    with pytest.raises(ValueError, match="cannot pin them down"):
        fit_form("power", [0.1, 0.2, 0.3], [3.0, 2.9, 2.8])
    with pytest.raises(ValueError, match="criterion"):
        fit_form("log", np.linspace(0.1, 0.5, 9), np.ones(9), "mse")


# ---------------------------------------------------------------------------
# A small loss model of curves, so that the protocol tests compile in seconds:
# L(s) = E + A (1 + c sum_t m_t)^-a over the schedule's multipliers, per run size.
# ---------------------------------------------------------------------------


class CurveLawData(eqx.Module):
    N: jax.Array
    area: jax.Array


class CurveLawSpace(nqs.AbstractFitSpace):
    template: "CurveLaw"

    def to_model(self, u):
        return CurveLaw(jnp.stack([jnp.exp(u[0]), jnp.exp(u[1]), jnp.exp(u[2]), jnp.exp(u[3])]))

    def to_flat(self, model):
        return np.log(np.asarray(model.values, float))

    def candidates(self, num, seed, ranges):
        rng = np.random.default_rng(seed)
        return np.log([2.0, 2.0, 1e-3, 0.5]) + rng.normal(0, 0.3, (num or 16, 4))

    def describe_bounds(self, model):
        return []


class CurveLaw(nqs.AbstractLossModel):
    values: jax.Array = eqx.field(converter=jnp.asarray,
                                  default_factory=lambda: np.array([2.0, 2.0, 1e-3, 0.5]))
    kind: ClassVar[str] = "test-curve-law"
    label: ClassVar[str] = "curve law"
    terms: ClassVar[tuple[str, ...]] = ()

    def __call__(self, N, B=None, K=None, *, schedule=None, **inputs):
        raise NotImplementedError

    def check(self):
        pass

    def check_peak(self, peak):
        pass

    def prepare(self, runs, *, search=False):
        s = runs.needs_schedule("the curve law")
        return CurveLawData(runs.N, jnp.sum(s.lr * s.steps, axis=-1))

    def predict_prepared(self, data):
        E, A, c, a = (self.values[i] for i in range(4))
        return E * (1e8 / data.N) ** 0.05 + A * (1 + c * data.area) ** (-a)

    def fit_space(self, runs, weights=None):
        return CurveLawSpace(self)

    def planning_loss(self, N, B, K, seq_len):
        raise NotImplementedError

    def parameters(self):
        return {n: self.values[i] for i, n in enumerate(("E", "A", "c", "a"))}

    def options(self):
        return {}

    @classmethod
    def from_values(cls, values, source):
        return cls(np.array([values[k] for k in ("E", "A", "c", "a")], float))


def _log(loss_fn=None):
    """Runs a (1000 steps) and b (2000 steps, the same schedule as a for 1000 steps, the same
    losses there: a continued), and c at another size; logged every 50 steps."""
    rows = []
    for label, N, K in (("a", 1e8, 1000), ("b", 1e8, 2000), ("c", 4e8, 1000)):
        s = np.arange(50.0, K + 1, 50.0)
        rows.append((np.full(s.size, label), np.full(s.size, N), s))
    run, N, step = (np.concatenate(c) for c in zip(*rows))
    lr = np.where(step <= 1000, 1.0, 0.5)
    loss = 2.0 * (1e8 / N) ** 0.05 + 2.0 * (1 + 1e-3 * step) ** -0.5
    if loss_fn is not None:
        loss = loss_fn(run, step, loss)
    return CurveLog.from_arrays(run, N, step, lr, loss)


def test_cutoffs_group_runs_of_equal_length():
    log = _log()
    np.testing.assert_array_equal(prefix_cutoffs(log, 0.5), [500.0, 1000.0, 500.0])


def test_thin_keeps_ends():
    log = _log()
    keep = thin(log, 5)
    idx = log.run_index()
    for r in range(3):
        rows = np.flatnonzero(idx == r)
        assert keep[rows].sum() == 5 and keep[rows[0]] and keep[rows[-1]]


def _predict(log):
    return prefix_endpoints(log, [0.5], model=CurveLaw(), forms=["power"], criteria=["huber"],
                            starts=4, refine=2, max_steps=30)


def test_the_model_never_reads_a_loss_past_the_cutoff():
    base = _predict(_log())
    assert np.all(np.isfinite(base.model))
    a, b, c = 0, 1, 2
    # Every loss past p * K = 500 of run a's group: of run a itself, of run b (which is run
    # a continued) and of run c. Run b's own group (K = 2000) may read up to 1000.
    def move(run, step, loss):
        return np.where(step > 500, loss + 0.3 * np.sin(step), loss)

    moved = _predict(_log(move))
    assert moved.model[0, a] == base.model[0, a]  # bit for bit
    assert moved.model[0, c] == base.model[0, c]
    assert moved.model[0, b] != base.model[0, b]
    assert moved.forms["power/huber"][0, a] == base.forms["power/huber"][0, a]
    assert np.all(moved.cutoff[0] == [500.0, 1000.0, 500.0])


def test_a_prefix_fit_never_touches_the_losses_past_its_cutoff():
    def hide(run, step, loss):
        return np.where(step > 500, np.nan, loss)

    kwargs = dict(starts=4, refine=1, max_steps=20)
    seen = nqs_engine_prefix().fit_prefix(_log(), 500.0, CurveLaw(), **kwargs)
    blind = nqs_engine_prefix().fit_prefix(_log(hide), 500.0, CurveLaw(), **kwargs)
    np.testing.assert_array_equal(np.asarray(seen.model.values), np.asarray(blind.model.values))
    assert float(np.max(np.asarray(seen.model.predict(_log().subset(_log().step <= 500).runs()))
                        )) > 0


def nqs_engine_prefix():
    import nqs_engine._prefix as module

    return module


def test_prefix_table_and_figure():
    out = _predict(_log())
    rows = out.table()
    assert {r["N"] for r in rows} == {1e8, 4e8}
    assert all("model mae" in r and "best form" in r for r in rows if r["runs"])
    fig = prefix_figure(out, 0.5)
    assert len(fig.axes) == 2


def test_compute_law_recovers_itself_and_the_loglog_line():
    C = np.geomspace(1e16, 1e19, 6)
    y = compute_law(C, (1.8, 0.9, 0.25))
    np.testing.assert_allclose(fit_compute_law(C, y), [1.8, 0.9, 0.25], rtol=1e-5)
    line = compute_law(C, (3.0, 0.05), "loglog")
    np.testing.assert_allclose(fit_compute_law(C, line, "loglog"), [3.0, 0.05], rtol=1e-9)
    # E stays below the smallest loss even when the points want more
    x = fit_compute_law(C[:3], [2.0, 1.99, 1.98])
    assert 0 <= x[0] < 1.98 and x[1] >= 0 and x[2] >= 0
    with pytest.raises(ValueError, match="3 parameters"):
        fit_compute_law(C[:2], y[:2])


def test_compute_law_backtest_holds_out_the_largest_budgets():
    C = np.array([1e17, 3e17, 1e18, 3e18, 1e17, 1e18])
    y = compute_law(C, (2.0, 1.0, 0.3))
    rows = compute_law_backtest(C, y, ["f"] * 4 + ["g"] * 2, labels=list("abcdef"),
                                model_predictions=y + 0.01)
    assert [r["run"] for r in rows] == ["d"]  # family g has too few budgets for 3 parameters
    assert rows[0]["law error"] == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["model error"] == pytest.approx(0.01)
    rows = compute_law_backtest(C, y, ["f"] * 4 + ["g"] * 2, law="loglog")
    assert {r["family"] for r in rows} == {"f"}


def test_prefix_command(tmp_path, capsys):
    log = _log()
    path = tmp_path / "curves.csv"
    lines = ["run,N,step,lr,loss,family"] + [
        f"{r},{n},{s},{l},{y},{'const' if r != 'b' else 'long'}"
        for r, n, s, l, y in zip(log.run, log.N, log.step, log.lr, log.loss)]
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "prefix.json"
    fig = tmp_path / "prefix.png"
    assert main(["prefix", str(path), "--lr-column", "lr", "--no-model", "--fractions",
                 "0.5,0.8", "--forms", "power,rational", "--out", str(out), "--figure",
                 str(fig), "--compute-law", "loglog", "--family-column", "family"]) == 0
    printed = capsys.readouterr().out
    assert "best form" in printed
    data = json.loads(out.read_text())
    assert data["fractions"] == [0.5, 0.8] and set(data["forms"]) == {
        "power/mae", "power/huber", "rational/mae", "rational/huber"}
    assert fig.stat().st_size > 1000
    assert main(["prefix", str(path), "--no-model"]) == 2
    assert "--lr-column" in capsys.readouterr().err
