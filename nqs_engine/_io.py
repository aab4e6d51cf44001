"""Tables and files: CSV runs read in checked chunks, JSON, and atomic output.

Everything here streams: a CSV of runs is read in chunks of rows, validated
chunk by chunk, and never held whole in memory, so files of tens of millions
of rows go through in bounded memory. Outputs are written to a temporary file
in the destination's folder and moved onto the destination only when complete
(`os.replace`, atomic on POSIX), so a destination is written whole or not at all.

Problems with the user's files raise [`InputError`][] with a one-line message
that names the file, the row (data rows counted from 1), the column and the
offending value; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import numpy as np


class InputError(ValueError):
    """A problem with the user's input files or options, described in one line."""


# ---------------------------------------------------------------------------
# CSV of runs
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Column:
    """A numeric CSV column that must be present and whose values must be valid.

    **Arguments:**

    - `name`: the column's header (matched after stripping surrounding spaces).
    - `valid`: elementwise test on a float64 array of finite values, returning a
      boolean mask of the acceptable ones.
    - `requirement`: the rule in words, used in messages (`"must be >= 1"`).
    - `meaning`: what the column holds, used in messages (`"model size"`).
    """

    name: str
    valid: Callable[[np.ndarray], np.ndarray]
    requirement: str
    meaning: str = ""


#: The columns of a RUNS.csv: model size N (directions, >= 1), batch size B (> 0)
#: and number of steps K (>= 0). Non-integer values are allowed (the model is
#: continuous in all three).
RUN_COLUMNS: tuple[Column, ...] = (
    Column("N", lambda v: v >= 1, "must be >= 1", "model size"),
    Column("B", lambda v: v > 0, "must be > 0", "batch size"),
    Column("K", lambda v: v >= 0, "must be >= 0", "number of steps"),
)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """A block of consecutive data rows of a CSV file.

    **Fields:**

    - `start`: number of data rows before this chunk (so row `start + i + 1`
      in messages is `rows[i]`).
    - `rows`: the rows as lists of strings, exactly as read (all columns).
    - `values`: for each required [`Column`][] (and each optional one the file
      has), its values as a float64 array.
    - `texts`: for each text column, its cells as strings (surrounding spaces
      stripped).
    """

    start: int
    rows: list[list[str]]
    values: dict[str, np.ndarray]
    texts: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        """Number of rows in the chunk."""
        return len(self.rows)


class _CountingLines:
    """Iterates over a text file's lines, counting the characters read so far."""

    def __init__(self, stream: IO[str]):
        self._stream = stream
        self.chars = 0

    def __iter__(self) -> Iterator[str]:
        for line in self._stream:
            self.chars += len(line)
            yield line


def locate_columns(
    path: str,
    header: Sequence[str],
    required: Sequence[Column],
    optional: Sequence[Column] = (),
    text: Sequence[tuple[str, str]] = (),
    reserved: Sequence[str] = (),
) -> tuple[dict[str, int], tuple[Column, ...]]:
    """Where each wanted column is in `header` (names matched after stripping spaces).

    Returns `(index, columns)`: name -> position for every required, optional (if
    present) and text column, and the numeric columns to check in every row (the
    required ones, then the optional ones present). [`InputError`][] names a missing
    required or text column (listing the columns found), a column that appears more
    than once, or a name in `reserved` (a column the output adds) already there.
    """
    stripped = [field.strip() for field in header]
    found = ", ".join(repr(name) for name in stripped)
    index: dict[str, int] = {}
    wanted = [(c.name, c.meaning, True) for c in required]
    wanted += [(c.name, c.meaning, False) for c in optional]
    wanted += [(name, meaning, True) for name, meaning in text]
    for name, meaning, needed in wanted:
        hits = [i for i, field in enumerate(stripped) if field == name]
        if not hits and needed:
            raise InputError(f"{path}: missing column {name!r} ({meaning}); columns found: {found}")
        if len(hits) > 1:
            raise InputError(f"{path}: column {name!r} appears {len(hits)} times in the header")
        if hits:
            index[name] = hits[0]
    for name in reserved:
        if name in stripped:
            raise InputError(f"{path}: already has a column named {name!r}, which the output "
                             "adds; rename or drop it")
    columns = tuple(required) + tuple(c for c in optional if c.name in index)
    return index, columns


class CsvColumns:
    """A CSV file with a header row and required numeric columns, read in chunks.

    Opening reads only the header and checks that every required column is
    present exactly once and that no column clashes with a name in `reserved`
    (the columns a command will append). [`CsvColumns.chunks`][] then streams
    the data rows, checking every one: the right number of fields, and each
    required column numeric, finite and satisfying its [`Column`][] rule.
    Blank lines are skipped and not counted as rows. The file is read as UTF-8
    (a byte-order mark is ignored).

    **Arguments:**

    - `path`: the CSV file.
    - `columns`: the required numeric columns.
    - `reserved`: names that must not already be columns.
    - `optional`: numeric columns checked like `columns` when the header has
      them (at most once), and otherwise absent from [`Chunk.values`][].
    - `text`: required text columns, as `(name, meaning)` pairs; their cells are
      passed through as strings in [`Chunk.texts`][].
    - `expected`: the columns an empty file is told to have (default: `columns`).

    **Example:**

    >>> import pathlib, tempfile
    >>> from nqs_engine._io import RUN_COLUMNS, CsvColumns
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.csv"
    >>> _ = path.write_text("name,N,B,K\\na,1e8,256,1000\\nb,1e9,512,2000\\n")
    >>> runs = CsvColumns(path, RUN_COLUMNS)
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
        self.required = tuple(columns)
        self.text = tuple(text)
        with self._open() as f:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise self._read_error(exc, 1) from None
        if not header or all(not field.strip() for field in header):
            names = expected or ", ".join(c.name for c in self.required) or "of the runs"
            raise InputError(f"{self.path} is empty: expected a header row with columns {names}")
        self.header: tuple[str, ...] = tuple(header)
        #: Column name -> its position, and the numeric columns checked in every row:
        #: the required ones, then the optional ones present in the header.
        self.index, self.columns = locate_columns(self.path, header, self.required, optional,
                                                  self.text, reserved)
        #: Characters read so far by the running [`CsvColumns.chunks`][] iteration
        #: (roughly bytes: a progress measure against `os.path.getsize(path)`).
        self.chars_read = 0

    def _open(self) -> IO[str]:
        try:
            return open(self.path, newline="", encoding="utf-8-sig")
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{self.path}: is a directory, expected a CSV file") from None
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read: {exc.strerror}") from None

    def _read_error(self, exc: Exception, line: int) -> InputError:
        if isinstance(exc, UnicodeDecodeError):
            return InputError(f"{self.path}: not UTF-8 text near line {line}")
        return InputError(f"{self.path}, line {line}: malformed CSV: {exc}")

    def chunks(self, size: int) -> Iterator[Chunk]:
        """Stream the validated data rows in chunks of (at most) `size` rows.

        Raises [`InputError`][] at the first bad row: wrong number of fields,
        a required value that is not a number, not finite, or outside its rule.
        """
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        width = len(self.header)
        self.chars_read = 0
        with self._open() as f:
            lines = _CountingLines(f)
            reader = csv.reader(lines)
            start = 0
            try:
                next(reader, None)  # header
                while True:
                    rows: list[list[str]] = []
                    for row in reader:
                        if row:  # csv yields [] for a blank line
                            rows.append(row)
                            if len(rows) == size:
                                break
                    self.chars_read = lines.chars
                    if not rows:
                        return
                    yield self._check(start, rows, width)
                    start += len(rows)
            except (csv.Error, UnicodeDecodeError) as exc:
                raise self._read_error(exc, reader.line_num) from None

    def _check(self, start: int, rows: list[list[str]], width: int) -> Chunk:
        for i, row in enumerate(rows):
            if len(row) != width:
                raise InputError(
                    f"{self.path}, row {start + i + 1}: has {len(row)} field(s), "
                    f"expected {width} (one per header column)"
                )
        values = {}
        for column in self.columns:
            j = self.index[column.name]
            texts = [row[j] for row in rows]
            where = lambda i, name=column.name: self._where(start + i, name)  # noqa: E731
            v = to_float(texts, where)
            check_values(column, v, texts.__getitem__, where)
            values[column.name] = v
        texts = {name: [row[self.index[name]].strip() for row in rows] for name, _ in self.text}
        return Chunk(start, rows, values, texts)

    def _where(self, i: int, name: str) -> str:
        return f"{self.path}, row {i + 1}, column {name!r}"

    def count_rows(
        self,
        on_chunk: Callable[[int], None] | None = None,
        size: int = 100_000,
        check: Callable[[Chunk], None] | None = None,
    ) -> int:
        """Validate every data row (streaming) and return the number of them.

        Raises [`InputError`][] on the first bad row, or if there are no data
        rows. `check(chunk)` runs further checks of the caller's on each chunk
        (raising `InputError`); `on_chunk(rows_so_far)` is called after each
        chunk (for progress).
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


def check_values(column: Column, v: np.ndarray, text: Callable[[int], str],
                 where: Callable[[int], str]) -> None:
    """Raise [`InputError`][] at the first value of `column` that is not finite or breaks its rule.

    `text(i)` is the cell as written and `where(i)` names its file, row and column.
    """
    finite = np.isfinite(v)
    if not finite.all():
        i = int(np.argmin(finite))
        raise InputError(f"{where(i)}: value {text(i)!r} is not finite")
    ok = column.valid(v)
    if not ok.all():
        i = int(np.argmin(ok))
        raise InputError(
            f"{where(i)}: {column.name} ({column.meaning}) {column.requirement}, got {text(i)!r}"
        )


def to_float(texts: list[str], where: Callable[[int], str]) -> np.ndarray:
    """Parse strings as float64 (Python's `float` syntax), naming the first bad one."""
    try:
        return np.array(texts, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(texts), dtype=np.float64)
    for i, text in enumerate(texts):
        try:
            out[i] = float(text)
        except ValueError:
            raise InputError(f"{where(i)}: value {text!r} is not a number") from None
    return out


# ---------------------------------------------------------------------------
# JSON parameters
# ---------------------------------------------------------------------------


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; [`InputError`][] names the file (and a syntax error's line)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a JSON file") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


# ---------------------------------------------------------------------------
# Atomic output
# ---------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Held while an output's temporary file is created or moved into place, and by
#: [`abandon_outputs`][], so that an interrupt sees every output either pending or done.
OUTPUTS_LOCK = threading.RLock()
#: Set by a process that ends itself at a signal (the command line): then the
#: temporary files and finished outputs of [`atomic_output`][] are remembered in
#: `_TRACKED` for [`abandon_outputs`][].
_TRACKING = [False]
_TRACKED: set[str] = set()


def track_outputs() -> None:
    """Remember every output of [`atomic_output`][] from now on, for [`abandon_outputs`][]."""
    _TRACKING[0] = True


def abandon_outputs() -> None:
    """Delete every remembered temporary file and finished output (at an interrupt).

    Takes [`OUTPUTS_LOCK`][] and keeps it: the caller is about to end the process.
    """
    OUTPUTS_LOCK.acquire()
    for path in list(_TRACKED):
        with contextlib.suppress(OSError):
            os.unlink(path)
    _TRACKED.clear()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], binary: bool = False) -> Iterator[IO[Any]]:
    """Open a text (or, with `binary=True`, binary) file that replaces `path` only if
    the `with` block completes.

    Writes to a hidden temporary file in `path`'s folder, then flushes it to
    disk and moves it onto `path` with `os.replace`. On any exception
    (`KeyboardInterrupt` included) the temporary file is deleted and `path`,
    existing or not, is left untouched. After [`track_outputs`][] (the command
    line's interrupt handling), [`abandon_outputs`][] deletes the temporary
    file, or `path` once it is written. The file is opened with `newline=""`
    (ready for `csv.writer`) in UTF-8; it gets the permissions of a new file
    under the current umask.

    Raises [`InputError`][] before anything is written if the folder does not
    exist, is not writable, or `path` is a folder.

    **Example:**

    >>> import pathlib, tempfile
    >>> from nqs_engine._io import atomic_output
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_output(path) as f:
    ...     _ = f.write("done\\n")
    >>> path.read_text()
    'done\\n'
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a file name for the output")
    if not os.path.isdir(folder):
        raise InputError(f"{path}: output folder {folder} does not exist")
    with OUTPUTS_LOCK:
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        except OSError as exc:
            raise InputError(f"{path}: cannot write to folder {folder}: {exc.strerror}") from None
        if _TRACKING[0]:
            _TRACKED.add(tmp)
    try:
        text = {} if binary else {"newline": "", "encoding": "utf-8"}
        with os.fdopen(fd, "wb" if binary else "w", **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        with OUTPUTS_LOCK:
            os.replace(tmp, path)
            if _TRACKING[0]:
                _TRACKED.discard(tmp)
                _TRACKED.add(path)
    except BaseException:
        with OUTPUTS_LOCK:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            _TRACKED.discard(tmp)
        raise


def json_text(data: Any) -> str:
    """`data` as indented JSON text; non-finite floats are refused (`ValueError`)."""
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write `data` as indented JSON to `path`, atomically (see [`atomic_output`][]).

    Non-finite floats are refused (`ValueError`): JSON has no NaN or infinity.
    """
    text = json_text(data)
    with atomic_output(path) as f:
        f.write(text)


__all__ = [
    "Chunk",
    "Column",
    "CsvColumns",
    "InputError",
    "RUN_COLUMNS",
    "atomic_output",
    "check_values",
    "json_text",
    "locate_columns",
    "read_json",
    "to_float",
    "write_json",
]
