"""The figures (`nqs_engine.plot`), `nqs-engine plot` and `nqs-engine demo`.

The figures are checked by their data: each model line must equal an
independent evaluation of the model (`nqs.risk`, `nqs.trajectory` one schedule
at a time), the grouping must find the ladder's budgets, and bad input must be
refused before any evaluation. The commands are checked for their files (whole
images, nothing left behind on error) and their one-line errors.
"""

from __future__ import annotations

import csv
import os
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="the figures need matplotlib (the plot extra)")

import nqs_engine as nqs  # noqa: E402
from nqs_engine import plot  # noqa: E402
from nqs_engine.cli import main  # noqa: E402
from nqs_engine.cli._plot import make_figures  # noqa: E402

PARAMS, LR = nqs.preset("pythia-owt2")
SEQ = 128
PNG = b"\x89PNG\r\n\x1a\n"


def _ladder():
    """A small synthetic ladder: two isoflop budgets (B tied to N) and one isotoken group."""
    rng = np.random.default_rng(0)
    rows = []
    for C in (1e16, 1e17):
        for N in (2e6, 4e6, 8e6, 1.6e7):
            B = 2.0 ** round(np.log2(64 * (1e7 / N) ** 0.5))
            K = round(C / (6 * N * B * SEQ))
            rows.append((N, B, K, "isoflop", "train"))
    for B in (16.0, 64.0, 256.0, 1024.0):
        rows.append((1e7, B, round(2e9 / (B * SEQ)), "isotoken", "test"))
    N, B, K = (np.array([r[i] for r in rows], float) for i in range(3))
    loss = np.asarray(nqs.risk(PARAMS, N, B, K, lr=LR).total) * (1 + 0.01 * rng.standard_normal(N.size))
    return N, B, K, loss, np.array([r[3] for r in rows]), np.array([r[4] for r in rows])


def _write_runs(path, filtered=None):
    N, B, K, loss, kind, split = _ladder()
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["N", "B", "K", "loss", "type", "split", "filtered"])
        for i in range(N.size):
            w.writerow([N[i], B[i], int(K[i]), loss[i], kind[i], split[i],
                        "True" if filtered is not None and i in filtered else "False"])
    return path


# ---------------------------------------------------------------------------
# The figures' data against independent model evaluations
# ---------------------------------------------------------------------------


def test_isoflop_lines_are_the_model_along_each_budget():
    N, B, K, loss, kind, _ = _ladder()
    m = kind == "isoflop"
    fig = plot.isoflop_curves(PARAMS, N[m], B[m], K[m], loss[m], seq_len=SEQ, lr=LR)
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 1]
    assert len(lines) == 2  # the two budgets, found by grouping the compute
    C = 6 * N[m] * B[m] * K[m] * SEQ
    for line, level in zip(lines, (1e16, 1e17)):  # ordered by compute
        x, y = (np.asarray(v, float) for v in line.get_data())
        group = np.abs(np.log(C / level)) < 0.2
        slope, icpt = np.polyfit(np.log(N[m][group]), np.log(B[m][group]), 1)
        c_level = np.exp(np.mean(np.log(C[group])))
        b = np.exp(icpt + slope * np.log(x))
        want = np.asarray(nqs.risk(PARAMS, x, b, c_level / (6 * x * b * SEQ), lr=LR).total)
        np.testing.assert_allclose(y, want, rtol=1e-12)
        star = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
        assert any(float(s.get_ydata()[0]) == pytest.approx(y.min()) for s in star)
    # The measured runs are drawn as they are.
    dots = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
    np.testing.assert_allclose(np.sort(dots), np.sort(loss[m]))


def test_isotoken_lines_keep_tokens_fixed():
    N, B, K, loss, kind, _ = _ladder()
    m = kind == "isotoken"
    fig = plot.isotoken_curves(PARAMS, N[m], B[m], K[m], loss[m], seq_len=SEQ, lr=LR,
                               num_points=30)
    (line,) = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 1]
    b, y = (np.asarray(v, float) for v in line.get_data())
    assert b.min() == pytest.approx(8.0) and b.max() == pytest.approx(2048.0)
    D = np.exp(np.mean(np.log(B[m] * K[m] * SEQ)))
    want = np.asarray(nqs.risk(PARAMS, 1e7, b, D / (b * SEQ), lr=LR).total)
    np.testing.assert_allclose(y, want, rtol=1e-12)


def test_weight_norm_variant_lines():
    N, B, K, loss, kind, _ = _ladder()
    m = kind == "isotoken"
    fig = plot.isotoken_curves(PARAMS, N[m], B[m], K[m], seq_len=SEQ, lr=LR,
                               variant="weight-norm", num_points=8)
    (line,) = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 1]
    b, y = (np.asarray(v, float) for v in line.get_data())
    D = np.exp(np.mean(np.log(B[m] * K[m] * SEQ)))
    k = np.maximum(np.round(D / (b * SEQ)), 1)
    want = nqs.weight_norm_risk(PARAMS, 1e7, nqs.Schedule.constant(k, b), lr=LR).total
    np.testing.assert_allclose(y, np.asarray(want), rtol=1e-12)


def test_decomposition_terms_sum_to_the_total():
    fig = plot.loss_decomposition(PARAMS, 1e8, 256, 1e4, lr=LR, num_points=25)
    data = {ln.get_label(): np.asarray(ln.get_ydata(), float) for ln in fig.axes[0].get_lines()}
    assert set(data) == {"total", "irreducible", "approximation", "bias", "variance"}
    parts = data["irreducible"] + data["approximation"] + data["bias"] + data["variance"]
    np.testing.assert_allclose(parts, data["total"], rtol=1e-12)
    k = np.asarray(fig.axes[0].get_lines()[0].get_xdata(), float)
    assert k[0] == 1 and k[-1] == 1e4
    np.testing.assert_allclose(data["total"], nqs.risk(PARAMS, 1e8, 256, k, lr=LR).total,
                               rtol=1e-12)
    assert np.all(np.diff(data["bias"]) < 0) and np.all(np.diff(data["variance"]) >= 0)


def test_trajectories_match_one_schedule_at_a_time():
    S = nqs.Schedule
    schedules = {"cosine": S.cosine(3000, 64, pieces=3), "ramp": S.batch_ramp(3000, (32, 96))}
    fig = plot.trajectories(PARAMS, 3e7, schedules, lr=LR, num_points=12)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label().split(":")[0] for ln in lines] == list(schedules)
    for line, s in zip(lines, schedules.values()):
        k, y = (np.asarray(v, float) for v in line.get_data())
        want = nqs.trajectory(PARAMS, 3e7, s, k, lr=LR).total
        np.testing.assert_allclose(y, np.asarray(want), rtol=1e-10)


def test_actual_vs_predicted_errors_and_groups():
    actual = np.array([3.0, 2.5, 2.0, 4.0])
    predicted = np.array([3.03, 2.45, 2.0, 4.2])
    fig = plot.actual_vs_predicted(actual, predicted, groups=["a", "a", "b", "b"])
    ax, ax_err = fig.axes
    err = np.concatenate([c.get_offsets()[:, 1] for c in ax_err.collections])
    np.testing.assert_allclose(np.sort(err), np.sort(100 * (predicted / actual - 1)))
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("a (2 runs, mean |error| 1.50%)") for t in labels)
    assert "max 5.00%" in ax_err.get_title()


def test_frontier_plot_draws_the_plans_and_chinchilla():
    ch = nqs.chinchilla_preset("pythia-owt2")
    front = nqs.frontier(PARAMS, [1e18, 1e19], seq_len=SEQ, lr=LR, chinchilla=ch, method="grid")
    fig = plot.frontier_plot(front, seq_len=SEQ)
    ax_n = fig.axes[0]
    nqs_line, ch_line = ax_n.get_lines()
    np.testing.assert_allclose(nqs_line.get_ydata(), front.plan.N)
    np.testing.assert_allclose(ch_line.get_ydata(), front.chinchilla_N)
    regret = [t.get_text() for t in fig.axes[2].texts]
    want = front.nqs_loss_at_chinchilla - front.plan.loss
    assert regret == [f"+{r:.3f}" for r in want] and np.all(want > 0)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: plot.actual_vs_predicted([1.0, 2.0], [1.0]), "predicted must have 2 entries, got 1"),
        (lambda: plot.actual_vs_predicted([1.0, -2.0], [1.0, 2.0]), r"actual\[1\] = -2 must be finite and > 0"),
        (lambda: plot.isoflop_curves(PARAMS, [1e7, 2e7], [8, 8], [10, np.nan], seq_len=SEQ),
         r"K\[1\] = nan"),
        (lambda: plot.isoflop_curves(PARAMS, [1e7, 1e7], [8, 8], [10, 20], seq_len=SEQ),
         "no isoflop group"),
        (lambda: plot.isotoken_curves(PARAMS, [1e7, 2e7], [8, 8], [10, 10], seq_len=SEQ),
         "no isotoken group"),
        (lambda: plot.isoflop_curves(PARAMS, [1e7, 2e7], [8, 8], [10, 5], seq_len=SEQ,
                                     variant="fancy"), "variant must be one of"),
        (lambda: plot.isoflop_curves(PARAMS, [1e7, 2e7], [8, 8], [10, 5], seq_len=SEQ,
                                     groups=["a"]), "one label per run"),
        (lambda: plot.trajectories(PARAMS, 1e7, {"a": nqs.Schedule.constant(10, 8),
                                                 "b": nqs.Schedule.constant(20, 8)}),
         "same number of steps"),
        (lambda: plot.trajectories(PARAMS, 1e7, {}), "non-empty mapping"),
        (lambda: plot.loss_decomposition(PARAMS, 0.0, 8, 10), r"N\[0\] = 0 must be finite and > 0"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_frontier_plot_needs_a_frontier():
    with pytest.raises(TypeError, match="needs a Frontier"):
        plot.frontier_plot({"compute": [1e18]})


# ---------------------------------------------------------------------------
# nqs-engine plot
# ---------------------------------------------------------------------------


def test_plot_command_writes_every_figure(tmp_path, capsys):
    runs = _write_runs(tmp_path / "runs.csv", filtered={0})
    out = tmp_path / "figs"
    code = main(["plot", str(runs), "--params", "pythia-owt2", "--out", str(out),
                 "--compute", "1e18,1e19", "--chinchilla", "pythia-owt2"])
    assert code == 0
    files = sorted(os.listdir(out))
    assert files == sorted(f"{n}.png" for n in ("actual_vs_predicted", "isoflop", "isotoken",
                                                "decomposition", "trajectories", "frontier"))
    for name in files:
        with open(out / name, "rb") as fh:
            assert fh.read(8) == PNG
    printed = capsys.readouterr()
    assert printed.out.splitlines() == [str(out / f) for f in
                                        ("actual_vs_predicted.png", "isoflop.png", "isotoken.png",
                                         "decomposition.png", "trajectories.png", "frontier.png")]
    assert "wrote 6 figure(s)" in printed.err


def test_plot_command_fits_chinchilla_and_writes_svg(tmp_path, capsys, monkeypatch):
    runs = _write_runs(tmp_path / "runs.csv")
    out = tmp_path / "figs"
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # --no-progress wins
    code = main(["plot", str(runs), "--params", "pythia-owt2", "--out", str(out),
                 "--plots", "actual,frontier", "--compute", "1e18", "--format", "svg",
                 "--no-progress"])
    assert code == 0
    assert "drawing" not in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["actual_vs_predicted.svg", "frontier.svg"]
    assert (out / "frontier.svg").read_text().lstrip().startswith("<?xml")


def test_plot_command_skips_or_refuses_figures_the_runs_cannot_make(tmp_path, capsys,
                                                                    monkeypatch):
    path = tmp_path / "one.csv"
    path.write_text("N,B,K,loss\n1e7,64,1000,3.2\n1e7,64,2000,3.1\n")
    out = tmp_path / "figs"
    # Asked for by name: an error naming the figure, and nothing written.
    assert main(["plot", str(path), "--params", "pythia-owt2", "--out", str(out),
                 "--plots", "actual,isoflop"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nqs-engine: error: isoflop: no isoflop group: every compute level has "
                   "runs of a single N"]
    assert not out.exists()
    # By default (or --plots all): skipped with a note. On a terminal a progress
    # bar runs over the figures, and each note starts a line of its own.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["plot", str(path), "--params", "pythia-owt2", "--out", str(out),
                 "--plots", "all"]) == 0
    assert sorted(os.listdir(out)) == ["actual_vs_predicted.png", "decomposition.png",
                                       "trajectories.png"]
    lines = capsys.readouterr().err.split("\n")
    for name in ("isoflop", "isotoken", "frontier"):
        assert sum(line.startswith(f"nqs-engine: {name}: skipped (") for line in lines) == 1
    bar = [line for line in lines if line.startswith("\rdrawing [")]
    assert len(bar) == 3  # cut by the isoflop and isotoken notes
    assert "decomposition (4/5)" in bar[-1] and bar[-1].endswith("100.0% done ETA 0:00\x1b[K")


def test_make_figures_reports_progress_and_notes():
    calls, notes = [], []
    figures = make_figures(["actual"], set(), nqs.NQS(PARAMS, lr=LR), SEQ, None, (1e7, 64, 1e3),
                           np.array([1e18]), None, notes.append,
                           progress=lambda i, n, name: calls.append((i, n, name)))
    assert figures == {}
    assert calls == [(0, 1, "actual"), (1, 1, "done")]
    assert notes == ["actual: skipped (needs measured runs)"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--plots", "actual,wrong"], "argument --plots: unknown figure 'wrong'"),
        (["--at", "1e7,64"], "argument --at: expected N,B,K"),
        (["--compute", "-1"], "argument --compute: expected positive FLOP counts"),
        (["--format", "gif"], "argument --format: invalid choice: 'gif'"),
        (["--dpi", "0"], "argument --dpi: expected a positive number"),
        (["--chinchilla", "nope", "--plots", "frontier"], "--chinchilla nope: no such file"),
        (["--params", "fit.json"], "fit.json"),
    ],
)
def test_plot_command_bad_flags(tmp_path, capsys, args, message):
    runs = _write_runs(tmp_path / "runs.csv")
    argv = ["plot", str(runs), "--params", "pythia-owt2", "--out", str(tmp_path / "o")] + args
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nqs-engine: error: ") and message in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("N,B,K\n1e7,64,100\n", "column 'loss'"),
        ("N,B,K,loss\n1e7,64,100,abc\n", "row 1, column 'loss'"),
        ("N,B,K,loss\n1e7,64,0,3.0\n", "row 1, column 'K': 0 steps; plot needs K >= 1"),
        ("N,B,K,loss,filtered\n1e7,64,10,3.0,True\n", "every row is marked filtered"),
    ],
)
def test_plot_command_bad_files(tmp_path, capsys, text, message):
    path = tmp_path / "runs.csv"
    path.write_text(text)
    assert main(["plot", str(path), "--params", "pythia-owt2", "--out", str(tmp_path / "o"),
                 "--plots", "actual"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------
# nqs-engine demo
# ---------------------------------------------------------------------------


def test_demo_predicts_plans_and_draws(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "compute-optimal" in printed and "Chinchilla" in printed
    assert sorted(os.listdir(out)) == sorted(
        ["ladder.csv", "frontier.csv", "isoflop.png", "isotoken.png", "decomposition.png",
         "trajectories.png", "frontier.png"])
    with open(out / "ladder.csv") as fh:
        ladder = list(csv.DictReader(fh))
    N, B, K = (np.array([float(r[c]) for r in ladder]) for c in "NBK")
    np.testing.assert_allclose(B * K * SEQ / N, 20, rtol=0.01)  # 20 tokens per parameter
    want = nqs.risk(PARAMS, N, B, K, lr=LR)
    for column, term in (("prediction", "total"), ("bias", "bias"), ("variance", "variance")):
        np.testing.assert_allclose([float(r[column]) for r in ladder],
                                   np.asarray(getattr(want, term)), rtol=1e-12)
    with open(out / "frontier.csv") as fh:
        front = list(csv.DictReader(fh))
    C = np.array([float(r["C"]) for r in front])
    assert C.tolist() == [1e18, 1e19, 1e20, 1e21, 1e22]
    # Each plan spends at most its budget, and its loss is the model's at its run.
    n, b, k, loss = (np.array([float(r[c]) for r in front]) for c in ("N", "B", "K", "loss"))
    assert np.all(6 * n * b * k * SEQ <= C * (1 + 1e-9))
    np.testing.assert_allclose(loss, nqs.risk(PARAMS, n, b, k, lr=LR).total, rtol=1e-9)
    # Chinchilla's choice is worse under the NQS than the NQS plan (the plan is optimal).
    regret = np.array([float(r["regret"]) for r in front])
    assert np.all(regret > 0)
    for name in ("isoflop.png", "frontier.png"):
        with open(out / name, "rb") as fh:
            assert fh.read(8) == PNG


def test_demo_tables_only(tmp_path):
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), "--no-plots", "--no-progress"]) == 0
    assert sorted(os.listdir(out)) == ["frontier.csv", "ladder.csv"]
