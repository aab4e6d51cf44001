"""Sharded sweeps (`_sweep.sweep`) and the `sweep` subcommand (`_cli_sweep`).

The grids share the shapes of the `sweep` doctest ((3, 2, 3), and (3, 2, 2) at
fixed compute) so the whole file compiles only a handful of programs.
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nqs_engine as nqs
from nqs_engine import PLAN_RULE, sweep
from nqs_engine._io import InputError
from nqs_engine._sweep import _program
from nqs_engine.cli._sweep import add_arguments as add_sweep_arguments
from nqs_engine.cli._sweep import parse_axis
from nqs_engine.cli._sweep import run as run_sweep

PARAMS, LR = nqs.preset("pythia-owt2")
N = np.array([1e7, 1e8, 1e9])
B = np.array([64.0, 256.0])
K = np.array([1e3, 1e4, 1e5])
SEQ = 128.0
# (1e7, 64) takes 2 steps on 1e12 FLOPs; every other (N, B) less than one.
C = np.array([1e12, 1e18])


def _risk(K_cells, rule):
    return np.asarray(
        nqs.risk(PARAMS, N[:, None, None], B[None, :, None], K_cells, lr=LR, rule=rule).total
    )


@pytest.mark.parametrize("rule", [nqs.SumRule(), PLAN_RULE], ids=["SumRule", "PLAN_RULE"])
def test_sweep_equals_risk_on_the_grid(rule):
    out = sweep(PARAMS, N, B, K, lr=LR, rule=rule)
    assert out.shape == (3, 2, 3) and out.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(out), _risk(K, rule), rtol=1e-9, atol=0)
    # Not constant: the loss falls with N and with K at every cell.
    assert np.all(np.diff(out, axis=0) < 0) and np.all(np.diff(out, axis=2) < 0)


def test_second_sweep_of_the_same_shape_does_not_recompile():
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("d",))
    program = _program(mesh, 2048, False)
    first = sweep(PARAMS, N, B, K, lr=LR)
    size = program._cached._cache_size()
    second = sweep(PARAMS, N * 2, B / 2, K * 3, lr=LR - 0.5)
    assert program._cached._cache_size() == size  # new values, no new program
    assert not np.allclose(first, second)


def test_compute_grid_runs_its_steps_and_marks_infeasible_cells_inf():
    out = np.asarray(sweep(PARAMS, N, B, compute=C, seq_len=SEQ, lr=LR))
    assert out.shape == (3, 2, 2)
    steps = C[None, None, :] / (6 * N[:, None, None] * B[None, :, None] * SEQ)
    infeasible = steps < 1
    assert infeasible.sum() == 5 and not infeasible[:, :, 1].any()
    assert np.all(np.isposinf(out[infeasible]))
    # Feasible cells: the loss of the plain run of K = C / (6 N B seq_len) steps.
    ref = np.asarray(nqs.risk(PARAMS, np.broadcast_to(N[:, None, None], steps.shape)[~infeasible],
                              np.broadcast_to(B[None, :, None], steps.shape)[~infeasible],
                              steps[~infeasible], lr=LR, rule=PLAN_RULE).total)
    np.testing.assert_allclose(out[~infeasible], ref, rtol=1e-9, atol=0)


def _batched():
    return nqs.NQSParams(**{**PARAMS.to_dict(), "p": jnp.array([1.1, 1.2])})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(N=N[None]), r"N must be a 1-D array of model sizes, got shape \(1, 3\)"),
        (dict(B=[]), r"B is empty"),
        (dict(N=[1e7, 0.5]), r"N\[1\] = 0.5 is out of range: model sizes must be finite and >= 1"),
        (dict(B=[64.0, -1.0]), r"B\[1\] = -1 is out of range"),
        (dict(K=[1.0, 2.0, np.nan]), r"K\[2\] = nan is out of range"),
        (dict(K=None), r"exactly one of K"),
        (dict(compute=C, seq_len=SEQ), r"exactly one of K"),
        (dict(K=None, compute=C), r"compute needs seq_len"),
        (dict(seq_len=SEQ), r"seq_len is only used with compute"),
        (dict(K=None, compute=[1e18, 0.0], seq_len=SEQ), r"compute\[1\] = 0 is out of range"),
        (dict(K=None, compute=C, seq_len=0.0), r"seq_len must be a finite number > 0"),
        (dict(params=nqs.NQSParams(**{**PARAMS.to_dict(), "p": 0.9})), r"parameter p = 0.9"),
        (dict(params=_batched()), r"one parameter set, got a batch of shape \(2,\)"),
        (dict(lr=2.5), r"lr"),
        (dict(lr=-1.0), r"step size lr = -1 must be positive and finite"),
        (dict(chunk=0), r"chunk must be an integer >= 1"),
        (dict(devices=[]), r"devices is empty"),
    ],
)
def test_bad_arguments_raise_before_any_work(kwargs, match):
    args = {**dict(params=PARAMS, N=N, B=B, K=K, lr=LR), **kwargs}
    with pytest.raises(ValueError, match=match):
        sweep(**args)


def test_planning_rule_domain_is_checked():
    # lr * Q * 13.5^-q >= 1 > lr * Q * 29^-q: fine for SumRule(), not for PLAN_RULE.
    params = nqs.NQSParams(**{**PARAMS.to_dict(), "q": 0.22})
    lr = 1.9 / float(PARAMS.Q)
    with pytest.raises(ValueError, match=r"q = 0.22 is too small"):
        sweep(params, N, B, K, lr=lr)


_MULTI_DEVICE = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import nqs_engine as nqs
    from nqs_engine import sweep
    from nqs_engine._model import as_model
    from nqs_engine._sweep import _operands, _program
    assert jax.device_count() == 4, jax.devices()
    params, lr = nqs.preset("pythia-owt2")
    N, B, K = [1e7, 1e8, 1e9], [64.0, 256.0], [1e3, 1e4, 1e5]
    out = sweep(params, N, B, K, lr=lr)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("d",))
    program = _program(mesh, 2048, False)
    flat = program(as_model(params, lr), *_operands([np.array(v) for v in (N, B, K)], 1.0,
                                                    jnp.float64))
    print(json.dumps({
        "cache_size": program._cached._cache_size(),
        "named": flat.sharding == jax.NamedSharding(mesh, jax.P("d")),
        "devices": len(flat.sharding.device_set),
        "shards": sorted(s.data.shape[0] for s in flat.addressable_shards),
        "flat": [float(v).hex() for v in np.asarray(flat)],
        "loss": [float(v).hex() for v in np.asarray(out).ravel()],
    }))
    """
)


def test_a_cell_does_not_depend_on_the_grid_it_is_swept_in():
    # Sub-grids (one-point axes included) hold the very values of the whole grid: what
    # lets the command stream a grid in blocks and processes split it.
    whole = np.asarray(sweep(PARAMS, N, B, K, lr=LR))
    np.testing.assert_array_equal(np.asarray(sweep(PARAMS, N[1:2], B[1:], K[2:], lr=LR)),
                                  whole[1:2, 1:, 2:])
    np.testing.assert_array_equal(np.asarray(sweep(PARAMS, N[::2], B, K[:1], lr=LR)),
                                  whole[::2, :, :1])


def test_sweep_shards_over_four_virtual_devices_and_matches_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", _MULTI_DEVICE], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["cache_size"] == 1  # the sweep's program, reused
    # 18 cells padded to 20: one block of 5 on each of the 4 devices.
    assert got["devices"] == 4 and got["named"]
    assert got["shards"] == [5, 5, 5, 5]
    flat = np.array([float.fromhex(v) for v in got["flat"]])
    loss = np.array([float.fromhex(v) for v in got["loss"]])
    np.testing.assert_array_equal(flat[:18], loss)
    np.testing.assert_array_equal(flat[18:], loss[-1])  # padding repeats the last cell
    one = np.asarray(sweep(PARAMS, N, B, K, lr=LR, devices=jax.local_devices()[:1]))
    np.testing.assert_array_equal(loss.reshape(3, 2, 3), one)  # bit for bit


# ---------------------------------------------------------------------------
# The subcommand
# ---------------------------------------------------------------------------


def _run(*argv):
    parser = argparse.ArgumentParser(prog="nqs-engine sweep")
    add_sweep_arguments(parser)
    return run_sweep(parser.parse_args(["--params", "pythia-owt2", "--no-progress", *argv]))


def test_cli_npz_holds_the_grid_and_metadata(tmp_path, capsys):
    out = tmp_path / "grid.npz"
    assert _run("--N", "1e7:1e9:3", "--B", "64,256", "--K", "1e3:1e5:3", "--out", str(out)) == 0
    with np.load(out) as z:
        assert sorted(z.files) == ["B", "K", "N", "loss", "metadata"]
        np.testing.assert_allclose(z["N"], N, rtol=1e-15)
        np.testing.assert_array_equal(z["B"], B)
        np.testing.assert_allclose(z["K"], K, rtol=1e-15)
        ref = sweep(PARAMS, z["N"], z["B"], z["K"], lr=LR)
        np.testing.assert_array_equal(z["loss"], ref)
        meta = json.loads(str(z["metadata"]))
    assert meta["axes"] == ["N", "B", "K"] and meta["shape"] == [3, 2, 3]
    assert meta["lr"] == LR and meta["p"] == float(PARAMS.p) and meta["devices"] == 1
    assert "swept 18 cells (3 x 2 x 3) on 1 device(s)" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["grid.npz"]  # no temporary left


def test_cli_csv_at_fixed_compute_is_consistent(tmp_path, capsys):
    out = tmp_path / "iso.csv"
    assert _run("--N", "1e7,1e8,1e9", "--B", "60,250", "--pow2-B", "--compute", "1e12,1e18",
                "--seq-len", "128", "--out", str(out)) == 0
    table = np.genfromtxt(out, delimiter=",", names=True)
    assert table.dtype.names == ("N", "B", "K", "C", "tokens", "loss")
    assert len(table) == 12
    np.testing.assert_array_equal(np.unique(table["B"]), B)  # 60, 250 -> 64, 256
    np.testing.assert_allclose(table["C"], 6 * table["N"] * table["tokens"], rtol=1e-14)
    np.testing.assert_allclose(table["tokens"], table["B"] * table["K"] * SEQ, rtol=1e-14)
    assert np.array_equal(np.isinf(table["loss"]), table["K"] < 1)
    ref = np.asarray(sweep(PARAMS, N, B, compute=C, seq_len=SEQ, lr=LR)).ravel()
    np.testing.assert_array_equal(table["loss"], ref)  # N slowest, C fastest
    assert "5 infeasible" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--N", "1e7:1e9"], r"--N '1e7:1e9': expected START:STOP:NUM"),
        (["--N", "1e7:1e9:0"], r"--N '1e7:1e9:0': NUM must be an integer >= 1"),
        (["--N", "1e7:1e9:1"], r"NUM = 1 needs START == STOP"),
        (["--N", "0.5,1e8"], r"--N '0.5,1e8': values must be >= 1, got 0.5"),
        (["--B", "64,abc"], r"--B '64,abc': 'abc' is not a number"),
        (["--K", "1e3:-1:3"], r"--K '1e3:-1:3': STOP must be > 0"),
        (["--K", "1e3,inf"], r"'inf' is not finite"),
        (["--seq-len", "0"], r"--seq-len must be a finite number > 0"),
        (["--devices", "5"], r"--devices must be 'all' or an integer from 1 to 1"),
        (["--out", "grid.txt"], r"the extension must be .npz or .csv"),
        (["--out", "no/such/dir/grid.csv"], r"does not exist"),
    ],
)
def test_cli_bad_flags_raise_one_line_input_errors(tmp_path, argv, match):
    flags = {"--N": "1e7", "--B": "64", "--K": "1e3", "--out": str(tmp_path / "g.npz")}
    for flag, value in zip(argv[::2], argv[1::2]):
        flags[flag] = value if flag != "--out" else str(tmp_path / value)
    with pytest.raises(InputError, match=match) as info:
        _run(*(x for item in flags.items() for x in item))
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_cli_planning_rule_error_leaves_existing_output(tmp_path):
    params = tmp_path / "p.json"
    params.write_text(json.dumps({**PARAMS.to_dict(), "q": 0.22, "lr": 1.9 / float(PARAMS.Q)}))
    out = tmp_path / "g.csv"
    out.write_text("old\n")
    parser = argparse.ArgumentParser()
    add_sweep_arguments(parser)
    args = parser.parse_args(["--params", str(params), "--N", "1e7", "--B", "64", "--K", "1e3",
                              "--out", str(out), "--no-progress"])
    with pytest.raises(InputError, match=r"p.json: .*q = 0.22 is too small"):
        run_sweep(args)
    assert out.read_text() == "old\n"


def test_parse_axis_geometric_endpoints_and_single_point():
    a = parse_axis("1e6:1e9:4", "--N")
    np.testing.assert_allclose(a, [1e6, 1e7, 1e8, 1e9], rtol=1e-15)
    assert a[0] == 1e6 and a[-1] == 1e9
    assert parse_axis("256:256:1", "--B").tolist() == [256.0]
