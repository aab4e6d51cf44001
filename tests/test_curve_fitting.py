"""Fitting schedules and loss curves: the defects found on real curves, one test each.

1. a segment at step size 0 (warmups start there) has finite gradients and fits;
   a fit whose every start fails raises, naming why;
3. runs of a single model size are fitted, with a note on what they cannot identify;
4. the checkpoints of a run are predicted in one pass over its schedule;
6. a step size past the edge of stability is a one-line ValueError, and a fit on
   a bound says so;
7. `Schedule.cosine(final=array)` and `Schedule.stack`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nqs_engine as nqs
from nqs_engine._model._nqs import NQSCurveData, NQSSpace

TRUTH, LR = nqs.preset("pythia-owt2")


def _with_idle_start(K, B, first_lr):
    """A constant run whose first step is at multiplier `first_lr` (0: a warmup's start)."""
    return nqs.Schedule(jnp.array([first_lr, 1.0]), jnp.array([B, B]), jnp.array([1.0, K - 1]))


def test_a_segment_at_step_size_zero_has_finite_gradients():
    def loss(Q, first):
        params = nqs.NQSParams(**{**TRUTH.to_dict(), "Q": Q})
        return nqs.schedule_risk(params, 1e7, _with_idle_start(2000.0, 64.0, first), lr=LR).total

    g0 = jax.grad(loss)(float(TRUTH.Q), 0.0)
    assert np.isfinite(g0)
    # A step at multiplier 0 is no step at all: the same value and gradient as K - 1 steps.
    plain = lambda Q: nqs.risk(nqs.NQSParams(**{**TRUTH.to_dict(), "Q": Q}), 1e7, 64.0,  # noqa: E731
                               1999.0, lr=LR).total
    np.testing.assert_allclose(loss(float(TRUTH.Q), 0.0), plain(float(TRUTH.Q)), rtol=1e-13)
    np.testing.assert_allclose(g0, jax.grad(plain)(float(TRUTH.Q)), rtol=1e-10)
    # The same holds for the weight-norm variant's recurrence.
    wn = lambda Q: nqs.weight_norm_risk(nqs.NQSParams(**{**TRUTH.to_dict(), "Q": Q}), 1e7,  # noqa: E731
                                        _with_idle_start(2000.0, 64.0, 0.0), lr=LR).total
    assert np.isfinite(jax.grad(wn)(float(TRUTH.Q)))


def _design():
    N = np.repeat([1e6, 3e6, 1e7, 3e7], 5)
    B = np.tile([16.0, 32, 64, 128, 256], 4)
    K = np.tile([8000.0, 5000, 3000, 2000, 1000], 4) * np.repeat([1.0, 1.5, 2, 3], 5)
    return N, B, K


def test_runs_starting_at_step_size_zero_fit():
    N, B, K = _design()
    sched = nqs.Schedule.stack([_with_idle_start(k, b, 0.0) for k, b in zip(K, B)])
    y = nqs.schedule_risk(TRUTH, N, sched, lr=LR).total
    runs = nqs.Runs.from_arrays(N, loss=y, schedule=sched)
    result = nqs.fit(runs, starts=1024, refine=4, max_steps=400)
    assert result.num_failed == 0
    assert result.objective < 1e-6, result.summary()  # was 0.0576: every start failed


def test_a_fit_whose_every_start_fails_raises(monkeypatch):
    N, B, K = _design()
    runs = nqs.Runs.from_arrays(N, B, K, np.full(N.size, 3.0))
    monkeypatch.setattr(nqs.NQS, "predict_prepared", lambda self, data: data.N * jnp.nan)
    with pytest.raises(ValueError, match="non-finite objective"):
        nqs.fit(runs, starts=16, refine=2, max_steps=5)


def _count_refinements(monkeypatch):
    """Record the data of every refinement the fit runs (search, then any polish)."""
    from nqs_engine._fit import _fit as fit_module

    calls, real = [], fit_module._refine
    monkeypatch.setattr(fit_module, "_refine",
                        lambda setup, *a, **k: calls.append(setup.data) or real(setup, *a, **k))
    return calls


def test_one_model_size_is_fitted_with_a_note(monkeypatch):
    B = np.tile([16.0, 32, 64, 128], 3)
    K = np.repeat([2000.0, 4000, 8000], 4)
    y = nqs.risk(TRUTH, 1e7, B, K, lr=LR).total
    runs = nqs.Runs.from_arrays(np.full(B.size, 1e7), B, K, y)
    refinements = _count_refinements(monkeypatch)
    result = nqs.fit(runs, starts=256, refine=8, max_steps=200)
    # The search's rule agrees with the model's to ~1e-13 here: no second refinement.
    assert len(refinements) == 1
    assert any("same model size" in note for note in result.notes), result.notes
    assert result.objective < 1e-4
    assert "same model size" in " ".join(result.summary()["notes"])


def _curves(N=1e7, K=6000.0, checkpoints=None):
    sched = nqs.Schedule.cosine(K, 64.0, pieces=24, warmup=0.05, final=0.1)
    steps = np.arange(250.0, K + 1, 250.0) if checkpoints is None else checkpoints
    stack = nqs.Schedule.stack([sched] * steps.size)
    return sched, steps, stack


def test_checkpoints_of_a_run_are_one_pass():
    sched, steps, stack = _curves()
    y = np.asarray(nqs.trajectory(TRUTH, 1e7, sched, steps, lr=LR).total)
    order = np.random.default_rng(0).permutation(steps.size)  # rows in any order
    runs = nqs.Runs.from_arrays(np.full(steps.size, 1e7), loss=y[order], schedule=stack,
                                step=steps[order], run=np.zeros(steps.size))
    model = nqs.NQS(TRUTH, lr=LR)
    data = model.prepare(runs)
    assert isinstance(data, NQSCurveData)
    # One run; its pieces are the schedule's segments and the checkpoints, merged.
    edges = np.unique(np.concatenate([np.cumsum(np.asarray(sched.steps)), steps]))
    assert data.lengths.shape == (1, edges.size + 1)
    np.testing.assert_allclose(model.predict(runs), y[order], rtol=1e-12)
    # ... the same values as one configuration per row.
    per_row = nqs.schedule_risk(TRUTH, np.asarray(runs.N), runs.schedule, lr=LR).total
    np.testing.assert_allclose(model.predict(runs), per_row, rtol=1e-12)


def test_rows_of_one_run_must_agree():
    sched, steps, stack = _curves(checkpoints=np.array([1000.0, 2000.0]))
    runs = nqs.Runs.from_arrays([1e7, 3e7], loss=[3.0, 2.9], schedule=stack, step=steps,
                                run=["a", "a"])
    with pytest.raises(ValueError, match="same model size|rows sharing a run label"):
        nqs.NQS(TRUTH, lr=LR).predict(runs)


def test_past_the_edge_of_stability_is_a_value_error():
    model = nqs.NQS(TRUTH, lr=LR)
    runs = nqs.Runs.from_arrays([1e8], schedule=nqs.Schedule.constant(1000, 64, lr=1.2))
    with pytest.raises(ValueError, match=r"step size diverges: .* 1.2 .* >= 2"):
        model.predict(runs)


def test_a_fit_on_the_stability_bound_says_so():
    runs = nqs.Runs.from_arrays(*_design(), np.full(20, 3.0))
    space = nqs.NQS(TRUTH, lr=LR).fit_space(runs)
    assert isinstance(space, NQSSpace)
    edge = nqs.NQSParams(**{**TRUTH.to_dict(), "Q": 2 / LR * (1 - 1e-5), "e_irr": 1e-9})
    notes = space.describe_bounds(nqs.NQS(edge, lr=LR))
    assert any("edge of stability" in n for n in notes), notes
    assert any("e_irr" in n for n in notes), notes
    assert space.describe_bounds(nqs.NQS(TRUTH, lr=LR)) == []


def test_cosine_takes_an_array_of_finals_and_stack_pads():
    finals = np.array([0.0, 0.1, 0.5])
    batch = nqs.Schedule.cosine(1000.0, 64.0, pieces=8, final=finals)
    for i, f in enumerate(finals):
        one = nqs.Schedule.cosine(1000.0, 64.0, pieces=8, final=float(f))
        np.testing.assert_allclose(batch.lr[i], one.lr, rtol=1e-15)
    with pytest.raises(ValueError, match="warmup must be a number"):
        nqs.Schedule.cosine(1000.0, 64.0, warmup=np.array([0.1, 0.2]))
    stacked = nqs.Schedule.stack([nqs.Schedule.constant(10, 8),
                                  nqs.Schedule.cosine(20, 8, pieces=4)])
    assert stacked.shape == (2,) and stacked.num_segments == 4
    np.testing.assert_allclose(stacked.total_steps, [10.0, 20.0])
    np.testing.assert_allclose(nqs.schedule_risk(TRUTH, 1e7, stacked, lr=LR).total[0],
                               nqs.risk(TRUTH, 1e7, 8.0, 10.0, lr=LR).total, rtol=1e-13)


def _warmup_cosine(K=24000, W=2160):
    t = np.arange(K)
    return np.where(t < W, t / W, 0.1 + 0.45 * (1 + np.cos(np.pi * (t - W) / (K - W))))


@pytest.mark.parametrize("params, lr, tol", [
    # fitted to the Multi-Power Law curves (its top direction far from the edge)
    (nqs.NQSParams(p=1.361, q=0.836, P=3.195, Q=0.00513, e_irr=2.606, R=0.1326, r=1.627), LR,
     3e-5),
    (TRUTH, LR, 1e-4),  # the Pythia preset: lr * Q = 1.77, the most sensitive case
], ids=["mpl-fit", "pythia-preset"])
def test_graded_pieces_track_the_per_step_schedule_at_every_checkpoint(params, lr, tol):
    m = _warmup_cosine()
    checkpoints = np.arange(2176, 24000, 128)
    exact = nqs.Schedule.from_arrays(m, 1.0)  # 24000 one-step segments
    graded = nqs.Schedule.from_arrays(m, 1.0, checkpoints=checkpoints)
    assert graded.num_segments < exact.num_segments / 10
    edges = np.cumsum(np.asarray(graded.steps))
    assert np.isin(checkpoints, edges).all()  # every checkpoint is a segment edge
    # Each piece keeps the sum of step sizes and the injected noise exactly.
    np.testing.assert_allclose(np.sum(graded.lr * graded.steps), m.sum(), rtol=1e-12)
    np.testing.assert_allclose(np.sum(graded.lr**2 / graded.batch * graded.steps),
                               np.sum(m**2), rtol=1e-12)
    for N in (3e3, 1e7):
        ref = np.asarray(nqs.trajectory(params, N, exact, checkpoints, lr=lr).total)
        got = np.asarray(nqs.trajectory(params, N, graded, checkpoints, lr=lr).total)
        assert np.max(np.abs(got / ref - 1)) <= tol  # relative to the loss
    # Equal pieces that ignore the checkpoints (the old way) are far off.
    equal = nqs.Schedule.from_arrays(m, 1.0, segments=12)
    off = np.asarray(nqs.trajectory(params, 1e7, equal, checkpoints, lr=lr).total)
    assert np.max(np.abs(off / ref - 1)) > 10 * tol


def _write(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return str(path)


def test_fit_command_takes_a_schedule(tmp_path):
    """`nqs-engine fit --schedule` (it took none before): the runs' losses under a cosine
    schedule are fitted with that schedule, and the fit predicts them back."""
    from nqs_engine.cli import main

    N, B, K = _design()
    sched = nqs.Schedule.from_spec("cosine:pieces=8,warmup=0.05", K, B)
    y = np.asarray(nqs.schedule_risk(TRUTH, N, sched, lr=LR).total)
    runs = _write(tmp_path / "runs.csv", ["N", "B", "K", "loss"], zip(N, B, K, y))
    out = tmp_path / "fit.json"
    assert main(["fit", runs, "--schedule", "cosine:pieces=8,warmup=0.05", "--out", str(out),
                 "--starts", "512", "--refine", "8", "--no-progress"]) == 0
    import json

    data = json.loads(out.read_text())
    # The same fit as the library's on these runs under this schedule.
    same = nqs.fit(nqs.Runs.from_arrays(N, loss=y, schedule=sched), starts=512, refine=8)
    assert data["diagnostics"]["objective"] == pytest.approx(same.objective, rel=1e-9)
    assert data["p"] == pytest.approx(float(same.params.p), rel=1e-9)
    # ... and not a fit of constant runs, which the command did before: the fitted model
    # follows the losses under the schedule, not under constant runs of the same K.
    fitted = nqs.model_from_dict(data)
    under_schedule = np.asarray(fitted.predict(nqs.Runs.from_arrays(N, schedule=sched)))
    as_constant = np.asarray(fitted.predict(nqs.Runs.from_arrays(N, B, K)))
    err = lambda pred: float(np.max(np.abs(np.log(pred / y))))  # noqa: E731
    assert err(under_schedule) < 1e-3 < err(as_constant)
    assert main(["fit", runs, "--schedule", "cosin", "--out", str(out)]) == 2


def test_fit_command_takes_curves_logged_with_their_learning_rate(tmp_path, capsys, monkeypatch):
    """Checkpoints every 100 steps of two curves of one size, warmup from lr 0, logged
    with their learning rate: the fit recovers the curves from the rate column."""
    from nqs_engine.cli import main

    K, W = 3000, 300
    t = np.arange(K)
    rows, rng = [], np.random.default_rng(1)
    steps = np.arange(100, K + 1, 100)
    for name, m in (("const", np.minimum(t / W, 1.0)),
                    ("cos", np.where(t < W, t / W, 0.1 + 0.45 * (1 + np.cos(np.pi * (t - W) /
                                                                          (K - W)))))):
        sched = nqs.Schedule.from_arrays(m, 32.0, checkpoints=steps)
        y = np.asarray(nqs.trajectory(TRUTH, 1e7, sched, steps, lr=LR).total)
        lr = np.interp(steps, t, m) * 6e-4
        rows += [(name, 1e7, 32, s, repr(float(v)), repr(float(yy)))
                 for s, v, yy in zip(steps, lr, y)]
    order = rng.permutation(len(rows))  # rows in any order
    curves = _write(tmp_path / "curves.csv", ["run", "N", "B", "step", "lr", "loss"],
                    [rows[i] for i in order])
    out = tmp_path / "fit.json"
    refinements = _count_refinements(monkeypatch)
    assert main(["fit", curves, "--lr-column", "lr", "--warmup", "100", "--out", str(out),
                 "--starts", "1024", "--refine", "4", "--no-progress"]) == 0
    # The search ran on the coarser form of the curves, then the best start was polished.
    assert len(refinements) == 2
    assert "same model size" in capsys.readouterr().err  # said, not refused
    import json

    data = json.loads(out.read_text())
    assert data["diagnostics"]["objective"] < 1e-4 * len(rows)
    # The runs the command read: the rates interpolated between the logged steps after
    # the warmup from 0 give back the curves (the cosine, interpolated linearly between
    # logged steps 100 apart, within 2e-4).
    table = np.array([rows[i] for i in order], dtype=object)
    runs = nqs.Runs.from_curves(table[:, 1].astype(float), table[:, 3].astype(float),
                                table[:, 4].astype(float), table[:, 5].astype(float),
                                run=table[:, 0].astype(str), B=32, warmup=100)
    back = np.asarray(nqs.NQS(TRUTH, lr=LR).predict(runs))
    np.testing.assert_allclose(back, table[:, 5].astype(float), rtol=2e-4)
    # The warmup is longer than the first logged step: one line, exit 2.
    assert main(["fit", curves, "--lr-column", "lr", "--warmup", "500", "--out", str(out)]) == 2
    assert "longer than the first logged step" in capsys.readouterr().err
