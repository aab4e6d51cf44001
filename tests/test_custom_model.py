"""A new loss model in one file: fit, predict (Python and command line) and plan take it
without a change to any of them.

The model is a small law of its own, $L = E + A N^{-a} + C K^{-c} (1 + g / B)$: a
size term, and a steps term whose noise floor falls with the batch size. It
subclasses `nqs.AbstractLossModel` and nothing else in the package knows of it.
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
from nqs_engine.cli import main

NAMES = ("E", "A", "a", "C", "c", "g")
TRUE = dict(E=1.8, A=300.0, a=0.35, C=20.0, c=0.4, g=64.0)


class StepsLawBreakdown(nqs.AbstractBreakdown):
    irreducible: jax.Array
    size: jax.Array
    steps: jax.Array
    total: jax.Array
    TERMS: ClassVar[tuple[str, ...]] = ("irreducible", "size", "steps")


class StepsLawData(eqx.Module):
    N: jax.Array
    B: jax.Array
    K: jax.Array


class StepsLawSpace(nqs.AbstractFitSpace):
    """u = (log E, log A, a, log C, c, log g)."""

    template: "StepsLaw"

    def to_model(self, u):
        v = jnp.stack([jnp.exp(u[0]), jnp.exp(u[1]), u[2], jnp.exp(u[3]), u[4], jnp.exp(u[5])])
        return StepsLaw(v)

    def to_flat(self, model):
        v = np.asarray(model.values, float)
        return np.stack([np.log(v[..., 0]), np.log(v[..., 1]), v[..., 2], np.log(v[..., 3]),
                         v[..., 4], np.log(v[..., 5])], axis=-1)

    def candidates(self, num, seed, ranges):
        rng = np.random.default_rng(seed)
        n = num or 256
        lo = np.array([0.0, 3.0, 0.1, 1.0, 0.1, 2.0])
        hi = np.array([1.0, 8.0, 0.8, 5.0, 0.8, 6.0])
        return lo + (hi - lo) * rng.random((n, 6))

    def describe_bounds(self, model):
        return []


class StepsLaw(nqs.AbstractLossModel):
    values: jax.Array = eqx.field(converter=jnp.asarray,
                                  default_factory=lambda: np.array([TRUE[n] for n in NAMES]))
    kind: ClassVar[str] = "test-steps-law"
    label: ClassVar[str] = "steps law"
    terms: ClassVar[tuple[str, ...]] = StepsLawBreakdown.TERMS
    fit_defaults: ClassVar[nqs.FitDefaults] = nqs.FitDefaults(starts=256, refine=8, max_steps=300)

    def _terms(self, N, B, K):
        E, A, a, C, c, g = (self.values[..., i] for i in range(6))
        return E, A * N ** (-a), C * K ** (-c) * (1 + g / B)

    def __call__(self, N, B=None, K=None, *, schedule=None, **inputs):
        if schedule is not None:
            B, K = schedule.batch[..., 0], jnp.sum(schedule.steps, axis=-1)
        E, size, steps = self._terms(jnp.asarray(N), jnp.asarray(B), jnp.asarray(K))
        E, size, steps = jnp.broadcast_arrays(E, size, steps)
        return StepsLawBreakdown(E, size, steps, E + size + steps)

    def check(self):
        if not np.all(np.isfinite(np.asarray(self.values))):
            raise ValueError("steps law: parameters must be finite")

    def check_peak(self, peak):
        pass

    def prepare(self, runs, *, search=False):
        s = runs.needs_schedule("the steps law")
        return StepsLawData(runs.N, s.batch[:, 0], jnp.sum(s.steps, axis=-1))

    def predict_prepared(self, data):
        return sum(self._terms(data.N, data.B, data.K))

    def fit_space(self, runs, weights=None):
        return StepsLawSpace(self)

    def planning_loss(self, N, B, K, seq_len):
        return sum(self._terms(N, B, K))

    def parameters(self):
        return {n: self.values[..., i] for i, n in enumerate(NAMES)}

    def options(self):
        return {}

    @classmethod
    def from_values(cls, values, source):
        unknown = set(values) - set(NAMES)
        if unknown:
            raise ValueError(f"{source}: unknown key {sorted(unknown)[0]!r}")
        return cls(np.array([float(values[n]) for n in NAMES]))


def _runs():
    N = np.repeat([1e6, 3e6, 1e7, 3e7], 6)
    B = np.tile([16.0, 32, 64, 128, 256, 512], 4)
    K = np.tile([500.0, 1000, 2000, 4000, 8000, 16000], 4)
    y = np.asarray(StepsLaw()(N, B, K).total)
    return nqs.Runs.from_arrays(N, B, K, y)


@pytest.fixture(scope="module")
def fitted():
    return nqs.fit(_runs(), StepsLaw(values=np.ones(6)))


def test_fit_recovers_the_law(fitted):
    assert type(fitted.model) is StepsLaw
    got = {n: float(v) for n, v in fitted.model.parameters().items()}
    for name in NAMES:
        assert got[name] == pytest.approx(TRUE[name], rel=1e-3), name
    assert fitted.objective < 1e-12


def test_bootstrap_and_predict_take_it(fitted):
    runs = _runs()
    boot = nqs.bootstrap(runs, fitted, num_samples=8, max_steps=50)
    lo, hi = boot.predict_interval(runs)
    truth = np.asarray(runs.loss)
    assert np.all(lo <= truth * (1 + 1e-6)) and np.all(truth <= hi * (1 + 1e-6))
    held = nqs.Runs.from_arrays([1e9], 1024, 1e5)
    want = float(StepsLaw()(1e9, 1024, 1e5).total)
    assert float(fitted.model.predict(held)[0]) == pytest.approx(want, rel=1e-6)


def test_the_command_line_fits_and_predicts_it(tmp_path):
    runs = _runs()
    table = tmp_path / "runs.csv"
    rows = zip(*(np.asarray(a) for a in (runs.N, runs.schedule.batch[:, 0],
                                          runs.schedule.total_steps, runs.loss)))
    table.write_text("N,B,K,loss\n" + "".join(",".join(repr(float(v)) for v in r) + "\n"
                                              for r in rows))
    params = tmp_path / "fit.json"
    assert main(["fit", str(table), "--model", "test-steps-law", "--out", str(params),
                 "--no-progress"]) == 0
    data = json.loads(params.read_text())
    assert data["model"] == "test-steps-law"
    assert data["g"] == pytest.approx(TRUE["g"], rel=1e-3)
    query = tmp_path / "query.csv"
    query.write_text("N,B,K\n1e9,1024,100000\n")
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(query), "--params", str(params), "--out", str(pred)]) == 0
    header, row = pred.read_text().splitlines()
    assert header == "N,B,K,prediction,irreducible,size,steps"
    assert float(row.split(",")[3]) == pytest.approx(float(StepsLaw()(1e9, 1024, 1e5).total),
                                                     rel=1e-6)


def test_plan_takes_it():
    model = StepsLaw()
    C = 1e19
    out = nqs.plan(model, C, seq_len=128, method="grid+gradient", batch="free")
    # Brute force over the feasible (N, B) plane at the plan's compute.
    N = np.geomspace(1e5, 1e12, 801)[:, None]
    B = np.geomspace(1.0, 2.0**24, 801)[None, :]
    K = C / (6 * N * B * 128)
    L = np.where(K >= 1, np.asarray(model.planning_loss(N, B, np.maximum(K, 1), 128)), np.inf)
    assert float(out.loss_exact) <= L.min() + 1e-9
    assert float(out.compute) <= C * (1 + 1e-9)
