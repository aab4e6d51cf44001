"""The pyarrow table reader and writer against the Python CSV reader of `_io`."""

import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="the columnar tables need pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from nqs_engine._columnar import ColumnarRuns, ColumnarWriter, table_format  # noqa: E402
from nqs_engine._io import RUN_COLUMNS, CsvColumns, InputError  # noqa: E402

AWKWARD = ["plain", "a,b", 'say "hi"', "two\nlines", "", " padded ", "ünï"]


def _write_runs(path, n, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rows.append([AWKWARD[i % len(AWKWARD)], f"{10 ** rng.uniform(6, 10):.6g}",
                     str(int(2 ** rng.integers(4, 12))), f"{rng.uniform(0, 1e5):.3f}", str(i)])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["tag", "N", "B", "K", "id"])
        w.writerows(rows)
    return rows


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_chunks_equal_the_python_reader(tmp_path, size):
    path = tmp_path / "runs.csv"
    _write_runs(path, 300)
    fast = list(ColumnarRuns(path, RUN_COLUMNS).chunks(size))
    slow = list(CsvColumns(path, RUN_COLUMNS).chunks(size))
    assert [c.start for c in fast] == [c.start for c in slow]
    for a, b in zip(fast, slow):
        assert len(a) == len(b)
        for name in "NBK":
            np.testing.assert_array_equal(a.values[name], b.values[name])
        # the carried cells are the cells as read, awkward text included
        assert [list(r) for r in zip(*(a.table.column(i).to_pylist() for i in range(5)))] \
            == b.rows


def test_csv_writer_round_trips_cells_and_floats(tmp_path):
    path = tmp_path / "runs.csv"
    rows = _write_runs(path, 50)
    runs = ColumnarRuns(path, RUN_COLUMNS)
    rng = np.random.default_rng(1)
    results = rng.standard_normal((50, 2)) * 10.0 ** rng.integers(-20, 20, (50, 2))
    results[0] = [0.0, -0.0]
    out = io.BytesIO()
    writer = ColumnarWriter(out, runs.header, ("x", "y"), "csv")
    done = 0
    for chunk in runs.chunks(16):
        writer.write(chunk, results[done:done + len(chunk)])
        done += len(chunk)
    writer.close()
    back = list(csv.reader(io.StringIO(out.getvalue().decode("utf-8"), newline="")))
    assert back[0] == ["tag", "N", "B", "K", "id", "x", "y"]
    assert [r[:5] for r in back[1:]] == rows
    got = np.array([[float(v) for v in r[5:]] for r in back[1:]])
    np.testing.assert_array_equal(got, results)  # bit for bit: shortest round-trip text


@pytest.mark.parametrize("text, message", [
    ("N,B,K\n1e8,256\n", "row 1: has 2 field(s), expected 3"),
    ("N,B,K\n1e8,256,100\n1e8,abc,100\n", "row 2, column 'B': value 'abc' is not a number"),
    ("N,B,K\n1e8,256,inf\n", "row 1, column 'K': value 'inf' is not finite"),
    ("N,B,K\n0.5,256,100\n", "row 1, column 'N': N (model size) must be >= 1, got '0.5'"),
    ("N,B,K\n", "no data rows"),
])
def test_errors_are_the_python_readers(tmp_path, text, message):
    path = tmp_path / "runs.csv"
    path.write_text(text)
    with pytest.raises(InputError) as fast:
        ColumnarRuns(path, RUN_COLUMNS).count_rows()
    with pytest.raises(InputError) as slow:
        CsvColumns(path, RUN_COLUMNS).count_rows()
    assert str(fast.value) == str(slow.value)
    assert message in str(fast.value)


def test_not_utf8_and_python_float_syntax(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_bytes(b"N,B,K\n1e8,256,100\n1e8,\xff\xfe,100\n")
    with pytest.raises(InputError, match="not UTF-8"):
        ColumnarRuns(path, RUN_COLUMNS).count_rows()
    path.write_text("N,B,K\n 1e8 ,1_024,100\n")  # Python's float reads both; pyarrow neither
    (chunk,) = ColumnarRuns(path, RUN_COLUMNS).chunks(10)
    assert chunk.values["N"].tolist() == [1e8] and chunk.values["B"].tolist() == [1024.0]


def test_parquet_in_and_out(tmp_path):
    path = tmp_path / "runs.csv"
    _write_runs(path, 40)
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(path)
    pq.write_table(table, tmp_path / "runs.parquet")
    assert table_format(tmp_path / "runs.parquet") == "parquet"
    fast = list(ColumnarRuns(tmp_path / "runs.parquet", RUN_COLUMNS).chunks(9))
    slow = list(CsvColumns(path, RUN_COLUMNS).chunks(9))
    for a, b in zip(fast, slow, strict=True):
        for name in "NBK":
            np.testing.assert_array_equal(a.values[name], b.values[name])
    results = np.arange(40.0)[:, None]
    with open(tmp_path / "out.parquet", "wb") as f:
        writer = ColumnarWriter(f, fast[0].table.column_names, ("prediction",), "parquet",
                                numeric=("N", "B", "K"))
        done = 0
        for chunk in fast:
            writer.write(chunk, results[done:done + len(chunk)])
            done += len(chunk)
        writer.close()
    back = pq.read_table(tmp_path / "out.parquet")
    assert back.column_names == ["tag", "N", "B", "K", "id", "prediction"]
    assert back.column("prediction").to_pylist() == list(range(40))
    assert back.schema.field("N").type == pa.float64()
    assert back.column("tag").to_pylist() == table.column("tag").to_pylist()


def test_parquet_header_errors(tmp_path):
    pq.write_table(pa.table({"N": [1e8], "B": [256.0]}), tmp_path / "a.parquet")
    with pytest.raises(InputError, match="missing column 'K'"):
        ColumnarRuns(tmp_path / "a.parquet", RUN_COLUMNS)
    pq.write_table(pa.table({"N": [1e8], "B": [256.0], "K": [True]}), tmp_path / "b.parquet")
    with pytest.raises(InputError, match="column 'K' .* holds bool, not numbers"):
        ColumnarRuns(tmp_path / "b.parquet", RUN_COLUMNS)
    (tmp_path / "c.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        ColumnarRuns(tmp_path / "c.parquet", RUN_COLUMNS)
    pq.write_table(pa.table({"N": [1e8, None], "B": [256.0, 1.0], "K": [1.0, 2.0]}),
                   tmp_path / "d.parquet")
    with pytest.raises(InputError, match="row 2, column 'N': value '' is not a number"):
        ColumnarRuns(tmp_path / "d.parquet", RUN_COLUMNS).count_rows()


def test_cli_predict_parquet_matches_csv(tmp_path):
    path = tmp_path / "runs.csv"
    _write_runs(path, 30)
    import pyarrow.csv as pacsv

    pq.write_table(pacsv.read_csv(path), tmp_path / "runs.parquet")
    env = {**os.environ, "NQS_ENGINE_NO_CACHE": "1"}
    for src, dst in (("runs.csv", "a.csv"), ("runs.parquet", "b.parquet"), ("runs.csv", "c.parquet")):
        subprocess.run([sys.executable, "-m", "nqs_engine.cli", "predict", str(tmp_path / src),
                        "--params", "pythia-owt2", "--out", str(tmp_path / dst), "--no-progress"],
                       check=True, env=env, capture_output=True)
    a = pacsv.read_csv(tmp_path / "a.csv")
    for name in ("b.parquet", "c.parquet"):
        b = pq.read_table(tmp_path / name)
        assert b.column_names == a.column_names
        for col in ("prediction", "bias", "variance"):
            assert b.column(col).to_pylist() == a.column(col).to_pylist()


def test_fit_reads_parquet_like_csv(tmp_path, capsys):
    """Every command's runs table takes Parquet too (plain columns and --columns mappings)."""
    import json

    import pyarrow.csv as pacsv

    import nqs_engine as nqs
    from nqs_engine.cli import main

    truth = nqs.ChinchillaParams(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.36)
    rng = np.random.default_rng(2)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e9), 30))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e11), 30))
    y = np.asarray(nqs.chinchilla_loss(truth, N, D))
    with open(tmp_path / "runs.csv", "w") as f:
        f.write("size,tokens,loss\n" + "".join(f"{a!r},{b!r},{c!r}\n" for a, b, c in
                                                zip(N.tolist(), D.tolist(), y.tolist())))
    pq.write_table(pacsv.read_csv(tmp_path / "runs.csv"), tmp_path / "runs.parquet")
    fits = {}
    for name in ("runs.csv", "runs.parquet"):
        out = tmp_path / f"{name}.json"
        assert main(["fit", str(tmp_path / name), "--model", "chinchilla", "--columns",
                     "N=size,D=tokens", "--out", str(out), "--no-progress"]) == 0
        fits[name] = json.loads(out.read_text())
    assert fits["runs.csv"]["E"] == fits["runs.parquet"]["E"]
    # Unmapped columns, read through the columnar reader: the same as the CSV.
    pq.write_table(pa.table({"N": N, "D": D, "loss": y}), tmp_path / "plain.parquet")
    out = tmp_path / "plain.json"
    assert main(["fit", str(tmp_path / "plain.parquet"), "--model", "chinchilla", "--out",
                 str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["E"] == pytest.approx(fits["runs.csv"]["E"], rel=1e-9)
    capsys.readouterr()
