"""Tables of runs read and written column by column with pyarrow (CSV and Parquet).

[`ColumnarRuns`][] streams a CSV or Parquet file of runs in chunks of rows, in
bounded memory, with the checks and messages of [`nqs_engine._io.CsvColumns`][]:
the header (required columns present once, no clash with the output's
columns), then every row (the right number of fields, each numeric column a
finite number satisfying its rule). The fast path parses a whole chunk at once
in pyarrow's C++ reader; wherever it fails (a malformed row, a cell pyarrow
does not read as a number, text that is not UTF-8), the same rows are read
again by the Python reader of `_io`, so the error names the file, the row
(data rows counted from 1), the column and the value exactly as before, and
cells Python's `float` accepts (`" 2"`, `"1_000"`) keep being accepted.

[`ColumnarWriter`][] writes the input columns as read, followed by float64
result columns, to CSV (each float as the shortest text that reads back to
the same float64; input cells re-quoted only where CSV needs it) or to
Parquet (numeric input columns as float64, others as they were).

The format follows the file name: `.parquet` or `.pq` is Parquet, anything
else CSV.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import numpy as np

from ._io import Column, CsvColumns, InputError, check_values, locate_columns, to_float

PARQUET_SUFFIXES = (".parquet", ".pq")


def table_format(path: str | os.PathLike[str]) -> str:
    """`"parquet"` for a `.parquet` / `.pq` file name, else `"csv"`.

    **Example:**

    >>> from nqs_engine._columnar import table_format
    >>> table_format("runs.parquet"), table_format("runs.csv")
    ('parquet', 'csv')
    """
    return "parquet" if os.fspath(path).lower().endswith(PARQUET_SUFFIXES) else "csv"


def _pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.compute  # noqa: F401
        import pyarrow.csv  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:  # a dependency of the package; a broken install
        raise InputError(f"reading and writing tables needs pyarrow ({exc})") from None
    import pyarrow

    return pyarrow


@dataclasses.dataclass(frozen=True)
class ColumnarChunk:
    """A block of consecutive data rows, as columns.

    **Fields:**

    - `start`: number of data rows before this chunk (row `start + i + 1` in
      messages is the chunk's row `i`).
    - `table`: the rows as a `pyarrow.Table` of the file's columns (CSV: every
      column as text, exactly as read; Parquet: as stored).
    - `values`: each checked numeric column as a float64 array.
    - `texts`: each text column's cells as strings (surrounding spaces stripped).
    """

    start: int
    table: Any
    values: dict[str, np.ndarray]
    texts: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        """Number of rows in the chunk."""
        return self.table.num_rows

    @property
    def rows(self) -> list[list[str]]:
        """The rows as lists of strings (CSV: exactly as read; Parquet: each value as text)."""
        pa = _pyarrow()
        cols = []
        for i in range(self.table.num_columns):
            cells = self.table.column(i)
            if not (pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type)):
                cells = pa.compute.cast(cells, pa.string())
            cols.append(["" if v is None else v for v in cells.to_pylist()])
        return [list(r) for r in zip(*cols)]


def read_rows(path: str | os.PathLike[str]) -> list[list[str]]:
    """Every row of a Parquet file (header first) as strings, like `csv.reader` gives a CSV's.

    **Example:**

    >>> import pathlib, tempfile
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> from nqs_engine._columnar import read_rows
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.parquet"
    >>> pq.write_table(pa.table({"name": ["a"], "d": [512]}), path)
    >>> read_rows(path)
    [['name', 'd'], ['a', '512']]
    """
    pa = _pyarrow()
    try:
        table = pa.parquet.read_table(os.fspath(path))
    except FileNotFoundError:
        raise InputError(f"{os.fspath(path)}: no such file") from None
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{os.fspath(path)}: not a readable Parquet file: {exc}") from None
    chunk = ColumnarChunk(0, table, {})
    return [list(table.column_names), *chunk.rows]


class ColumnarRuns:
    """A CSV or Parquet file of runs with required numeric columns, read in chunks.

    The arguments and checks are those of [`nqs_engine._io.CsvColumns`][] (see
    this module's docstring); `header`, `index` and `columns` mean the same.

    **Example:**

    >>> import pathlib, tempfile
    >>> from nqs_engine._io import RUN_COLUMNS
    >>> from nqs_engine._columnar import ColumnarRuns
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.csv"
    >>> _ = path.write_text("name,N,B,K\\na,1e8,256,1000\\nb,1e9,512,2000\\n")
    >>> runs = ColumnarRuns(path, RUN_COLUMNS)
    >>> runs.header
    ('name', 'N', 'B', 'K')
    >>> [chunk.values["N"].tolist() for chunk in runs.chunks(1)]
    [[100000000.0], [1000000000.0]]
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        columns: Sequence[Column],
        reserved: Sequence[str] = (),
        optional: Sequence[Column] = (),
        text: Sequence[tuple[str, str]] = (),
        expected: str | None = None,
    ):
        self.path = os.fspath(path)
        self.format = table_format(self.path)
        self.text = tuple(text)
        self.reserved = tuple(reserved)
        if self.format == "csv":
            self._csv: CsvColumns | None = CsvColumns(
                self.path, columns, reserved=reserved, optional=optional, text=text,
                expected=expected,
            )
            self.header = self._csv.header
            self.index = self._csv.index
            self.columns = self._csv.columns
        else:
            self._csv = None
            self._parquet_header(columns, optional, expected)
        #: Fraction of the file read so far by the running `chunks` iteration.
        self.fraction_read = 0.0

    def _parquet_header(self, columns, optional, expected) -> None:
        pa = _pyarrow()
        try:
            schema = pa.parquet.read_schema(self.path)
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{self.path}: is a directory, expected a Parquet file") from None
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{self.path}: not a readable Parquet file: {exc}") from None
        names = list(schema.names)
        if not names:
            want = expected or ", ".join(c.name for c in columns) or "of the runs"
            raise InputError(f"{self.path} is empty: expected columns {want}")
        self.header = tuple(names)
        self.index, self.columns = locate_columns(self.path, names, columns, optional, self.text,
                                                  self.reserved)
        for c in self.columns:
            kind = schema.field(self.index[c.name]).type
            if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                    or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
                raise InputError(
                    f"{self.path}: column {c.name!r} ({c.meaning}) holds {kind}, not numbers"
                )

    # -- reading --------------------------------------------------------------

    def _batches(self) -> Iterator[Any]:
        """The file's record batches (CSV: every column as text)."""
        pa = _pyarrow()
        if self.format == "parquet":
            pf = pa.parquet.ParquetFile(self.path)
            total = max(1, pf.metadata.num_rows)
            done = 0
            for batch in pf.iter_batches(batch_size=65536):
                done += batch.num_rows
                self.fraction_read = done / total
                yield batch
            return
        names = [f"c{i}" for i in range(len(self.header))]
        size = max(1, os.path.getsize(self.path))
        source = pa.OSFile(self.path, "rb")
        try:
            reader = pa.csv.open_csv(
                source,
                read_options=pa.csv.ReadOptions(skip_rows=1, column_names=names,
                                                 block_size=1 << 22),
                parse_options=pa.csv.ParseOptions(newlines_in_values=True),
                convert_options=pa.csv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    strings_can_be_null=False, quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                self.fraction_read = min(1.0, source.tell() / size)
                yield batch
        finally:
            source.close()

    def chunks(self, size: int) -> Iterator[ColumnarChunk]:
        """Stream the validated data rows in chunks of (at most) `size` rows.

        Raises [`InputError`][] at the first bad row, as `CsvColumns.chunks` does.
        """
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        pa = _pyarrow()
        self.fraction_read = 0.0
        start = 0
        pending: list[Any] = []
        held = 0
        batches = self._batches()
        try:
            while True:
                batch = next(batches, None)
                if batch is not None:
                    pending.append(batch)
                    held += batch.num_rows
                while held >= size or (batch is None and held > 0):
                    table = pa.Table.from_batches(pending)
                    take = min(size, held)
                    chunk, rest = table.slice(0, take), table.slice(take)
                    pending, held = rest.to_batches(), rest.num_rows
                    yield self._check(start, chunk)
                    start += take
                if batch is None:
                    return
        except pa.ArrowException as exc:
            raise self._reader_error(exc) from None

    def _reader_error(self, exc: Exception) -> InputError:
        """The Python reader's message for the first bad row (pyarrow's if it finds none)."""
        if self._csv is not None:
            self._csv.count_rows()  # raises the precise InputError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        kind = "CSV" if self.format == "csv" else "Parquet"
        return InputError(f"{self.path}: malformed {kind}: {first}")

    def _check(self, start: int, table) -> ColumnarChunk:
        pa = _pyarrow()
        values = {}
        for column in self.columns:
            cells = table.column(self.index[column.name])
            where = lambda i, name=column.name: f"{self.path}, row {start + i + 1}, column {name!r}"  # noqa: E731
            try:
                v = pa.compute.cast(cells, pa.float64()).to_numpy()
            except pa.ArrowException:
                v = None
            if v is None or (cells.null_count and self.format == "parquet"):
                texts = ["" if t is None else str(t) for t in cells.to_pylist()]
                v = to_float(texts, where)
            check_values(column, np.asarray(v, dtype=np.float64),
                         lambda i, cells=cells: _cell_text(cells, i), where)
            values[column.name] = np.asarray(v, dtype=np.float64)
        texts = {name: [("" if t is None else str(t)).strip()
                        for t in table.column(self.index[name]).to_pylist()]
                 for name, _ in self.text}
        return ColumnarChunk(start, table, values, texts)

    def count_rows(
        self,
        on_chunk: Callable[[int], None] | None = None,
        size: int = 200_000,
        check: Callable[[ColumnarChunk], None] | None = None,
    ) -> int:
        """Validate every data row (streaming) and return the number of them.

        As `CsvColumns.count_rows`: `check(chunk)` runs the caller's checks on
        each chunk, `on_chunk(rows_so_far)` reports progress; no data rows is an
        [`InputError`][].
        """
        total = 0
        for chunk in self.chunks(size):
            if check is not None:
                check(chunk)
            total += len(chunk)
            if on_chunk is not None:
                on_chunk(total)
        if total == 0:
            raise InputError(f"{self.path}: no data rows (only a header)")
        return total


def _cell_text(cells, i: int) -> str:
    value = cells[i].as_py()
    return "" if value is None else str(value)


class ColumnarWriter:
    """Writes the input columns of each chunk, then float64 result columns.

    `f` is a binary file (see `nqs_engine._io.atomic_output(..., binary=True)`),
    `header` the input's column names, `names` the result columns, `fmt`
    `"csv"` or `"parquet"`, `numeric` the input columns to store as float64 in
    Parquet (their checked values).

    **Example:**

    >>> import io, pathlib, tempfile
    >>> import numpy as np
    >>> from nqs_engine._io import RUN_COLUMNS
    >>> from nqs_engine._columnar import ColumnarRuns, ColumnarWriter
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.csv"
    >>> _ = path.write_text('name,N,B,K\\n"a,1",1e8,256,1000\\n')
    >>> runs = ColumnarRuns(path, RUN_COLUMNS)
    >>> out = io.BytesIO()
    >>> writer = ColumnarWriter(out, runs.header, ("prediction",), "csv")
    >>> for chunk in runs.chunks(10):
    ...     writer.write(chunk, np.array([[2.5]]))
    >>> writer.close()
    >>> print(out.getvalue().decode(), end="")
    name,N,B,K,prediction
    "a,1",1e8,256,1000,2.5
    """

    def __init__(self, f: IO[bytes], header: Sequence[str], names: Sequence[str], fmt: str,
                 numeric: Sequence[str] = ()):
        self.f = f
        self.header = tuple(header)
        self.names = tuple(names)
        self.format = fmt
        self.numeric = set(numeric)
        self._parquet = None
        if fmt == "csv":
            import csv
            import io

            line = io.StringIO()
            csv.writer(line, lineterminator="\n").writerow([*self.header, *self.names])
            f.write(line.getvalue().encode("utf-8"))

    def write(self, chunk: ColumnarChunk, results: np.ndarray) -> None:
        """Append the chunk's rows with `results` (rows x len(names)) as the last columns."""
        pa = _pyarrow()
        results = np.asarray(results, dtype=np.float64).reshape(len(chunk), len(self.names))
        if self.format == "parquet":
            self._write_parquet(chunk, results)
            return
        pc = pa.compute
        fields = []
        for i in range(chunk.table.num_columns):
            cells = chunk.table.column(i)
            if not (pa.types.is_string(cells.type) or pa.types.is_large_string(cells.type)):
                cells = pc.cast(cells, pa.string())
            cells = pc.fill_null(cells, "")
            needs = pc.match_substring_regex(cells, r'[,"\r\n]')
            if pc.any(needs).as_py():
                quoted = pc.binary_join_element_wise(
                    '"', pc.replace_substring(cells, '"', '""'), '"', "")
                cells = pc.if_else(needs, quoted, cells)
            fields.append(cells)
        for j in range(results.shape[1]):
            fields.append(pc.cast(pa.array(results[:, j]), pa.string()))
        lines = pc.binary_join_element_wise(*fields, ",")
        lines = pc.binary_join_element_wise(lines, "\n", "")  # each line ends in a newline
        for piece in (lines.chunks if hasattr(lines, "chunks") else [lines]):
            self._write_text(piece)

    def _write_text(self, lines) -> None:
        """Write a string array's values back to back (each already ends in a newline)."""
        n = len(lines)
        if n == 0:
            return
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset:lines.offset + n + 1]
        data = lines.buffers()[2]
        self.f.write(memoryview(data)[int(offsets[0]):int(offsets[-1])])

    def _write_parquet(self, chunk: ColumnarChunk, results: np.ndarray) -> None:
        pa = _pyarrow()
        arrays, names = [], []
        for i, name in enumerate(self.header):
            if name.strip() in self.numeric and name.strip() in chunk.values:
                arrays.append(pa.array(chunk.values[name.strip()]))
            else:
                arrays.append(chunk.table.column(i))
            names.append(name)
        for j, name in enumerate(self.names):
            arrays.append(pa.array(results[:, j]))
            names.append(name)
        table = pa.Table.from_arrays(arrays, names=names)
        if self._parquet is None:
            self._parquet = pa.parquet.ParquetWriter(self.f, table.schema)
        self._parquet.write_table(table)

    def close(self) -> None:
        """Finish the file (Parquet's footer); CSV needs nothing."""
        if self._parquet is not None:
            self._parquet.close()
            self._parquet = None


__all__ = ["ColumnarChunk", "ColumnarRuns", "ColumnarWriter", "PARQUET_SUFFIXES", "read_rows",
           "table_format"]
