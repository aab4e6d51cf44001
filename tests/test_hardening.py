"""Hardening of issue 17, items 3-5: strict parameter files, --out checked before any
work, and the smaller messages (each a regression test of a reported defect).

Every case fails in argument checking or input validation, before any
computation, so the file runs in seconds.
"""

from __future__ import annotations

import csv
import json

import pytest

from nqs_engine.cli import main

THETA = dict(p=1.3, q=0.9, P=5.0, Q=0.8, e_irr=0.5, R=2.0, r=1.2)


def run(capsys, *argv):
    """(exit status, the stderr line) of `nqs-engine ARGV`."""
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    return status, err


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def test_checkpoint_past_its_run_names_row_column_and_K(tmp_path, capsys):
    """Was `step[2] = 1720 must lie in [0, total steps]`: 0-based, no row, column or K."""
    runs = write_csv(tmp_path / "runs.csv", ["N", "B", "K", "step", "loss", "run"],
                     [[1e8, 256, 1000, 500, 3.5, "a"], [1e8, 256, 1000, 1000, 3.2, "a"],
                      [1e8, 256, 1000, 1720, 3.1, "a"]])
    status, err = run(capsys, "fit", runs, "--out", tmp_path / "fit.json")
    assert status == 2
    assert "row 3" in err and "step = 1720" in err and "K = 1000" in err
    assert "column 'step'" in err and "step[" not in err
    assert not (tmp_path / "fit.json").exists()


@pytest.mark.parametrize("value", ["-1e20", "-1e20,1e21", "-.5"])
def test_negative_compute_is_a_value_out_of_range(tmp_path, capsys, value):
    """Was `argument --compute: expected one argument` (argparse took it for an option)."""
    status, err = run(capsys, "plan", "--params", "pythia-owt2", "--compute", value)
    assert status == 2
    assert "expected one argument" not in err
    assert "> 0" in err and "--compute" in err


def test_negative_sweep_axis_is_a_value_out_of_range(tmp_path, capsys):
    status, err = run(capsys, "sweep", "--params", "pythia-owt2", "--N", "1e8:1e9:3",
                      "--B", "256", "--compute", "-1e20", "--out", tmp_path / "s.csv")
    assert status == 2
    assert "expected one argument" not in err and "> 0" in err


@pytest.mark.parametrize("command", [
    ["plan", "--params", "pythia-owt2"],
    ["sweep", "--params", "pythia-owt2", "--N", "1e8:1e9:3", "--B", "256"],
])
def test_empty_item_in_a_compute_list_is_refused(tmp_path, capsys, command):
    status, err = run(capsys, *command, "--compute", "1e18,,1e20", "--out",
                      tmp_path / "out.json")
    assert status == 2 and "--compute" in err and "1e18,,1e20" in err


def test_refine_larger_than_starts_is_an_error(tmp_path, capsys):
    runs = write_csv(tmp_path / "runs.csv", ["N", "B", "K", "loss"],
                     [[1e7 * 3 ** i, 64, 1000 * (i + 1), 4.0 - 0.2 * i] for i in range(8)])
    status, err = run(capsys, "fit", runs, "--starts", "2", "--refine", "5", "--out",
                      tmp_path / "fit.json")
    assert status == 2 and "--refine 5" in err and "--starts 2" in err


def test_unknown_key_in_params_names_it_and_suggests(tmp_path, capsys):
    """Was: {"LR": 1.0, ...} ran silently at the default lr."""
    params = tmp_path / "params.json"
    params.write_text(json.dumps({**THETA, "LR": 1.0}))
    runs = write_csv(tmp_path / "runs.csv", ["N", "B", "K"], [[1e8, 256, 1000]])
    status, err = run(capsys, "predict", runs, "--params", params, "--out", tmp_path / "p.csv")
    assert status == 2 and "'LR'" in err and "did you mean 'lr'" in err
    assert not (tmp_path / "p.csv").exists()


def test_unknown_preset_suggests_the_nearest(tmp_path, capsys):
    runs = write_csv(tmp_path / "runs.csv", ["N", "B", "K"], [[1e8, 256, 1000]])
    status, err = run(capsys, "predict", runs, "--params", "pythia-ow2", "--out",
                      tmp_path / "p.csv")
    assert status == 2 and "did you mean 'pythia-owt2'" in err


def test_chinchilla_file_given_to_trajectory_names_the_kind(tmp_path, capsys):
    params = tmp_path / "chinchilla.json"
    params.write_text(json.dumps(dict(model="chinchilla", E=1.7, A=400.0, B=410.0, alpha=0.34,
                                      beta=0.28)))
    status, err = run(capsys, "trajectory", "--params", params, "--N", "1e8", "--B", "256",
                      "--K", "1000", "--out", tmp_path / "t.csv")
    assert status == 2 and "Chinchilla" in err and "missing parameter" not in err


@pytest.mark.parametrize("content", ["", "\n", "\ufeff"])
def test_empty_runs_file_message_is_a_whole_sentence(tmp_path, capsys, content):
    runs = tmp_path / "runs.csv"
    runs.write_text(content, encoding="utf-8")
    status, err = run(capsys, "fit", runs, "--out", tmp_path / "fit.json")
    assert status == 2 and "is empty" in err
    assert err.endswith("N, B, K, loss")


def test_plan_checks_out_before_planning(tmp_path, capsys, monkeypatch):
    import nqs_engine._plan as plan_module

    def no_work(*args, **kwargs):
        raise AssertionError("planned before checking --out")

    monkeypatch.setattr(plan_module, "plan", no_work)
    status, err = run(capsys, "plan", "--params", "pythia-owt2", "--compute", "1e20",
                      "--out", tmp_path / "missing" / "plan.json")
    assert status == 2 and "--out" in err and "does not exist" in err


def test_plot_checks_out_before_drawing(tmp_path, capsys):
    runs = write_csv(tmp_path / "runs.csv", ["N", "B", "K", "loss"],
                     [[1e7 * 3 ** i, 64, 1000 * (i + 1), 4.0 - 0.2 * i] for i in range(8)])
    afile = tmp_path / "afile"
    afile.write_text("")
    status, err = run(capsys, "plot", runs, "--params", "pythia-owt2", "--out", afile)
    assert status == 2 and "--out" in err and "not a folder" in err
    status, err = run(capsys, "plot", runs, "--params", "pythia-owt2", "--out",
                      afile / "figures")
    assert status == 2 and "--out" in err and "is a file, not a folder" in err
    assert "skipped" not in err  # nothing was drawn first


def test_plan_out_under_a_file_says_so(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    status, err = run(capsys, "plan", "--params", "pythia-owt2", "--compute", "1e20",
                      "--out", afile / "plan.json")
    assert status == 2 and "--out" in err and "is a file, not a folder" in err
