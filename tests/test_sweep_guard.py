"""The size guard and the streamed output of `nqs-engine sweep` (issue #17, item 2).

A grid of 1e9 cells used to start computing silently and grow past 3.5 GB of
memory; now it is refused at once (or, with --yes, streamed in blocks of
bounded memory). The grids here share the shapes of `tests/test_sweep.py` so
that few programs compile; the blocks are made tiny (`BLOCK_CELLS`) to stream
a small grid through many of them.
"""

import contextlib
import json
import shutil
import signal
import time

import numpy as np
import pytest

import nqs_engine as nqs
import nqs_engine._sweep as library_sweep
from nqs_engine import sweep
from nqs_engine.cli import main
from nqs_engine.cli import _sweep as cli_sweep

PARAMS, LR = nqs.preset("pythia-owt2")
N = np.array([1e7, 1e8, 1e9])
B = np.array([64.0, 256.0])
K = np.array([1e3, 1e4, 1e5])
SMALL = ["--N", "1e7:1e9:3", "--B", "64,256", "--K", "1e3:1e5:3"]


class _Overtime(Exception):
    """Raised by `_deadline` (not an OSError, which the command reports as bad input)."""


@contextlib.contextmanager
def _deadline(seconds):
    """Fail (rather than run for hours) if the block takes longer than `seconds`."""
    def expired(signum, frame):
        raise _Overtime(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _sweep(tmp_path, *argv, out="grid.npz"):
    return main(["sweep", "--params", "pythia-owt2", *argv, "--out", str(tmp_path / out)])


@pytest.mark.parametrize("fmt, size", [("npz", "8.0 GB (8,000,040,984 bytes)"),
                                       ("csv", "GB (")])
def test_a_billion_cells_are_refused_at_once_naming_cells_and_bytes(tmp_path, capsys, fmt,
                                                                     size):
    # The command of issue #17: before the guard it computed silently for hours.
    t0 = time.monotonic()
    with _deadline(60):
        code = _sweep(tmp_path, "--N", "1e6:1e11:1000", "--B", "16:65536:1000",
                      "--K", "100:1000000:1000", out=f"grid.{fmt}")
    elapsed = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    assert elapsed < 5, elapsed
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nqs-engine: error: the grid has "
                                                   "1,000,000,000 cells (1000 x 1000 x 1000)")
    assert size in lines[0] and "more than --max-cells 100,000,000" in lines[0]
    assert "--yes" in lines[0] and "cells/s" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_max_cells_is_the_threshold_and_yes_overrides_it(tmp_path, capsys):
    assert _sweep(tmp_path, *SMALL, "--max-cells", "17") == 2
    err = capsys.readouterr().err
    assert "the grid has 18 cells (3 x 2 x 3), more than --max-cells 17: " in err
    assert list(tmp_path.iterdir()) == []
    assert _sweep(tmp_path, *SMALL, "--max-cells", "18", "--no-progress") == 0
    assert _sweep(tmp_path, *SMALL, "--max-cells", "1", "--yes", "--no-progress") == 0
    err = capsys.readouterr().err
    # The estimate comes first, before any work: cells, devices, bytes, time.
    assert err.count("nqs-engine: sweep: 18 cells (3 x 2 x 3) on 1 device(s), ") == 2
    assert "bytes) to " in err and "cells/s (calibrated)" in err
    assert _sweep(tmp_path, *SMALL, "--max-cells", "1.5") == 2
    assert "--max-cells: expected a whole number of cells >= 1" in capsys.readouterr().err


# BLOCK_CELLS -> how the 3 x 2 x 3 grid is cut: 2 whole N rows (the last padded), one
# N row in parts of 2 B rows... down to parts of 2 K values of one (N, B).
@pytest.mark.parametrize("block", [12, 4, 2], ids=["N-rows", "B-rows", "K-parts"])
def test_streamed_npz_is_the_grid_bit_for_bit(tmp_path, monkeypatch, block):
    monkeypatch.setattr(cli_sweep, "BLOCK_CELLS", block)
    assert _sweep(tmp_path, *SMALL, "--no-progress") == 0
    with np.load(tmp_path / "grid.npz") as z:
        assert sorted(z.files) == ["B", "K", "N", "loss", "metadata"]
        ref = np.asarray(sweep(PARAMS, z["N"], z["B"], z["K"], lr=LR))
        np.testing.assert_array_equal(z["loss"], ref)
        meta = json.loads(str(z["metadata"]))
    assert meta["shape"] == [3, 2, 3] and meta["processes"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["grid.npz"]


def test_streamed_csv_at_fixed_compute_is_the_grid(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_sweep, "BLOCK_CELLS", 2)
    C = np.array([1e12, 1e18])
    assert _sweep(tmp_path, "--N", "1e7,1e8,1e9", "--B", "64,256", "--compute", "1e12,1e18",
                  "--no-progress", out="iso.csv") == 0
    table = np.genfromtxt(tmp_path / "iso.csv", delimiter=",", names=True)
    ref = np.asarray(sweep(PARAMS, N, B, compute=C, seq_len=128.0, lr=LR)).ravel()
    np.testing.assert_array_equal(table["loss"], ref)  # N slowest, C fastest
    np.testing.assert_array_equal(table["N"], np.repeat(N, 4))


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_sweep, "BLOCK_CELLS", 6)
    monkeypatch.setattr(cli_sweep, "PROGRESS_INTERVAL", 0.0)
    assert _sweep(tmp_path, *SMALL) == 0
    err = capsys.readouterr().err
    assert "nqs-engine: sweep: 6 of 18 cells (33.3%) in 0:0" in err
    assert "nqs-engine: sweep: 12 of 18 cells (66.7%)" in err and "left" in err
    assert "\r" not in err  # lines, not a bar
    assert _sweep(tmp_path, *SMALL, "--no-progress") == 0
    assert " of 18 cells" not in capsys.readouterr().err
    # At the default interval (10 s), a short run prints no progress line.
    monkeypatch.setattr(cli_sweep, "PROGRESS_INTERVAL", 10.0)
    assert _sweep(tmp_path, *SMALL) == 0
    assert " of 18 cells" not in capsys.readouterr().err


def test_an_output_larger_than_the_free_space_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 100))
    assert _sweep(tmp_path, *SMALL) == 2
    err = capsys.readouterr().err.strip()
    assert "the output would take about" in err and "has 100 bytes free" in err
    assert "\n" not in err and list(tmp_path.iterdir()) == []


def test_an_axis_too_long_is_refused_before_it_is_built(tmp_path, capsys):
    t0 = time.monotonic()
    assert _sweep(tmp_path, "--N", "1:1e10:100000000", "--B", "64", "--K", "1") == 2
    assert time.monotonic() - t0 < 5
    assert "--N '1:1e10:100000000': NUM must be at most 16,777,216 points, got 100,000,000" \
        in capsys.readouterr().err


def test_an_interrupted_stream_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_sweep, "BLOCK_CELLS", 6)
    old = tmp_path / "grid.npz"
    old.write_bytes(b"old")
    calls = []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return sweep(*args, **kwargs)

    monkeypatch.setattr(library_sweep, "sweep", interrupt)  # the CLI imports it per run
    assert _sweep(tmp_path, *SMALL, "--no-progress") == 130
    assert [p.name for p in tmp_path.iterdir()] == ["grid.npz"] and old.read_bytes() == b"old"
