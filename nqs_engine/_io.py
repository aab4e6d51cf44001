"""Inputs and outputs of the command line: CSV runs, JSON parameters, schedule SPECs
and files, and atomic output.

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
import functools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np

from ._params import PARAM_NAMES, PRESETS, NQSParams, preset
from ._schedule import Schedule


class InputError(Exception):
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
            names = ", ".join(c.name for c in self.required)
            raise InputError(f"{self.path} is empty: expected a header row with columns {names}")
        self.header: tuple[str, ...] = tuple(header)
        stripped = [field.strip() for field in header]
        found = ", ".join(repr(name) for name in stripped)
        self.index: dict[str, int] = {}
        wanted = [(c.name, c.meaning, True) for c in self.required]
        wanted += [(c.name, c.meaning, False) for c in optional]
        wanted += [(name, meaning, True) for name, meaning in self.text]
        for name, meaning, needed in wanted:
            hits = [i for i, field in enumerate(stripped) if field == name]
            if not hits and needed:
                raise InputError(
                    f"{self.path}: missing column {name!r} ({meaning}); columns found: {found}"
                )
            if len(hits) > 1:
                raise InputError(
                    f"{self.path}: column {name!r} appears {len(hits)} times in the header"
                )
            if hits:
                self.index[name] = hits[0]
        #: The numeric columns checked in every row: the required ones, then the
        #: optional ones present in the header.
        self.columns = self.required + tuple(c for c in optional if c.name in self.index)
        for name in reserved:
            if name in stripped:
                raise InputError(
                    f"{self.path}: already has a column named {name!r}, which the output "
                    "adds; rename or drop it"
                )
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
            v = _to_float(texts, lambda i: self._where(start + i, column.name))
            finite = np.isfinite(v)
            if not finite.all():
                i = int(np.argmin(finite))
                raise InputError(
                    f"{self._where(start + i, column.name)}: value {texts[i]!r} is not finite"
                )
            ok = column.valid(v)
            if not ok.all():
                i = int(np.argmin(ok))
                raise InputError(
                    f"{self._where(start + i, column.name)}: {column.name} ({column.meaning}) "
                    f"{column.requirement}, got {texts[i]!r}"
                )
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


def _to_float(texts: list[str], where: Callable[[int], str]) -> np.ndarray:
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


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{what} must be a number, got {json.dumps(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float
        raise InputError(f"{what} is too large: {value}") from None


def params_from_mapping(
    values: Mapping[str, Any], source: str
) -> tuple[NQSParams, float | None]:
    """The parameters `p, q, P, Q, e_irr, R, r` and the optional `lr` from a mapping.

    Each must be a single number; other keys are ignored. Raises
    [`InputError`][] naming `source` and the missing or malformed key. Domain
    checks are left to [`nqs_engine.check_params`][].
    """
    if not isinstance(values, Mapping):
        raise InputError(
            f"{source}: expected a JSON object with keys {', '.join(PARAM_NAMES)}, "
            f"got a {type(values).__name__}"
        )
    missing = [name for name in PARAM_NAMES if name not in values]
    if missing:
        raise InputError(
            f"{source}: missing parameter(s) {', '.join(missing)}; "
            f"expected all of {', '.join(PARAM_NAMES)} (and optionally lr)"
        )
    numbers = {
        name: _number(values[name], f"{source}: parameter {name!r}") for name in PARAM_NAMES
    }
    lr = None if values.get("lr") is None else _number(values["lr"], f"{source}: 'lr'")
    return NQSParams(**numbers), lr


def load_params(source: str) -> tuple[NQSParams, float | None, str]:
    """Parameters from a preset name or a JSON file: `(params, lr or None, description)`.

    A name in [`nqs_engine.PRESETS`][] selects that preset (write `./NAME` for a
    file of the same name); anything else is read as a JSON object holding
    `p, q, P, Q, e_irr, R, r` and optionally `lr`. Must be called with the
    desired float precision already chosen (the CLI enables float64 first).

    **Example:**

    >>> from nqs_engine._io import load_params
    >>> params, lr, where = load_params("pythia-owt2")
    >>> lr, where
    (1.999, "preset 'pythia-owt2'")
    """
    if source in PRESETS:
        params, lr = preset(source)
        return params, lr, f"preset {source!r}"
    if not os.path.exists(source):
        raise InputError(
            f"{source}: no such file, nor a preset name (presets: {', '.join(sorted(PRESETS))})"
        )
    params, lr = params_from_mapping(read_json(source), source)
    return params, lr, source


# ---------------------------------------------------------------------------
# Schedules: the SPEC language and schedule files
# ---------------------------------------------------------------------------

#: The SPEC language, as the CLI's help and the README describe it.
SPEC_HELP = """\
  A SPEC describes a schedule relative to each run's K steps and batch
  size B: fractions F are fractions of K (cut points rounded down to whole
  steps), step-size multipliers M multiply the peak step size lr, batch
  multipliers X multiply B.
    constant               peak step size and batch B throughout (the default)
    constant:lr=M          multiplier M throughout
    cosine[:OPTS]          cosine decay from the peak to `final` x peak, after
                           an optional linear warmup; OPTS (defaults):
                           pieces=32, warmup=0, final=0, warmup_pieces=4
    wsd[:OPTS]             warmup-stable-decay: peak, then a linear decay to
                           `final` x peak over the last fraction `decay`;
                           OPTS: decay=0.2, pieces=8, warmup=0, final=0,
                           warmup_pieces=4
    warmup:F[,pieces=P]    linear warmup over the first fraction F (in P
                           pieces, default 8), then the peak
    step:F=M[,F=M...]      multiplier M from fraction F of the run on
                           (fractions increasing in (0, 1))
    batch:F=X[,F=X...]     batch X*B from fraction F of the run on
    SPEC+SPEC              both at once: their multipliers multiply, cut at
                           the change points of both
  Smooth curves are cut into `pieces` equal pieces, each at the mean of
  the curve over it. Items may be separated by ';' instead of ',' (handy
  in a CSV cell; else quote the cell). Examples:
    cosine:pieces=32,warmup=0.01,final=0.1   step:0.5=0.1,0.75=0.01
    wsd:decay=0.2+batch:0.5=2   warmup:0.01   step:0.5=0.1;0.75=0.01
"""

_SPEC_KINDS = ("constant", "cosine", "wsd", "warmup", "step", "batch")


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """A schedule relative to a run's length and batch size, as parsed from a SPEC or file.

    **Fields:**

    - `text`: the SPEC (or a description of the file) it came from.
    - `num_segments`: the number of segments of every schedule it builds.
    - `peak`: the largest step-size multiplier it can produce (whatever K).
    - `parts`: the schedules combined (`SPEC+SPEC`), each a traceable function
      from K (an array) to a [`nqs_engine.Schedule`][] whose batch sizes are
      multipliers of B.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._io import parse_schedule
    >>> spec = parse_schedule("step:0.5=0.1+batch:0.75=2")
    >>> spec.num_segments, spec.peak
    (3, 1.0)
    >>> s = spec.build(np.array([1000.0]), np.array([64.0]))
    >>> s.lr.tolist(), s.batch.tolist(), s.steps.tolist()
    ([[1.0, 0.1, 0.1]], [[64.0, 64.0, 128.0]], [[500.0, 250.0, 250.0]])
    """

    text: str
    num_segments: int
    peak: float
    parts: tuple[Callable[[Any], Schedule], ...] = dataclasses.field(repr=False)

    def build(self, K: Any, B: Any, num_segments: int | None = None) -> Schedule:
        """The schedules of runs of `K` steps at base batch size `B` (arrays of one shape),
        padded with empty segments to `num_segments` if given.

        Compiled (once per spec, shape and `num_segments`): building op by op would
        cost more than the risk itself on large chunks.
        """
        dtype = jnp.result_type(float)
        K, B = (jnp.asarray(np.asarray(v, dtype=np.float64), dtype=dtype) for v in (K, B))
        return _build_schedule(self, K, B, num_segments or self.num_segments)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _build_schedule(spec: ScheduleSpec, K, B, num_segments: int) -> Schedule:
    lr, batch, steps = _schedule_arrays(spec.parts[0](K))
    for part in spec.parts[1:]:
        lr, batch, steps = _combine((lr, batch, steps), _schedule_arrays(part(K)))
    return Schedule(lr, batch * B[..., None], steps).pad(num_segments)


def _schedule_arrays(schedule: Schedule):
    s = schedule.broadcast()
    return s.lr, s.batch, s.steps


def _combine(a, b):
    """Two schedules over the same steps at once: cut at both's change points, multiply."""
    shape = jnp.broadcast_shapes(a[0].shape[:-1], b[0].shape[:-1])
    a = [jnp.broadcast_to(x, (*shape, x.shape[-1])) for x in a]
    b = [jnp.broadcast_to(x, (*shape, x.shape[-1])) for x in b]
    ends_a, ends_b = jnp.cumsum(a[2], axis=-1), jnp.cumsum(b[2], axis=-1)
    inner = jnp.sort(jnp.concatenate([ends_a[..., :-1], ends_b[..., :-1]], axis=-1), axis=-1)
    ends = jnp.concatenate([inner, ends_a[..., -1:]], axis=-1)
    steps = jnp.diff(ends, axis=-1, prepend=jnp.zeros_like(ends[..., :1]))

    def index(seg_ends):  # the segment holding each piece (pieces end at `ends`)
        count = (seg_ends[..., None, :] < ends[..., :, None]).sum(axis=-1)
        return jnp.minimum(count, seg_ends.shape[-1] - 1)

    ia, ib = index(ends_a), index(ends_b)
    pick = lambda x, i: jnp.take_along_axis(x, i, axis=-1)  # noqa: E731
    return pick(a[0], ia) * pick(b[0], ib), pick(a[1], ia) * pick(b[1], ib), steps


def _count_segments(build: Callable[[Any], Schedule]) -> int:
    """The segment count of `build`'s schedules, found by tracing (no computation)."""
    shapes = jax.eval_shape(build, jax.ShapeDtypeStruct((), jnp.result_type(float)))
    return np.broadcast_shapes(shapes.lr.shape, shapes.batch.shape, shapes.steps.shape)[-1]


class _SpecError(Exception):
    """A malformed SPEC; the message says what was expected."""


def _spec_number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _SpecError(f"{what} must be a number, got {text!r}") from None
    if not np.isfinite(value):
        raise _SpecError(f"{what} must be finite, got {text!r}")
    return value


def _spec_fraction(text: str, what: str) -> float:
    value = _spec_number(text, what)
    if not 0 <= value <= 1:
        raise _SpecError(f"{what} must be a fraction in [0, 1], got {text!r}")
    return value


#: The most pieces a smooth curve may be cut into.
MAX_PIECES = 4096


def _spec_count(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PIECES:
        raise _SpecError(f"{what} must be an integer from 1 to {MAX_PIECES}, got {text!r}")
    return value


# name -> (parser, default) for the keyword options of each smooth kind.
_SMOOTH_OPTIONS = {
    "cosine": {
        "pieces": (_spec_count, 32), "warmup": (_spec_fraction, 0.0),
        "final": (_spec_fraction, 0.0), "warmup_pieces": (_spec_count, 4),
    },
    "wsd": {
        "decay": (_spec_fraction, 0.2), "pieces": (_spec_count, 8),
        "warmup": (_spec_fraction, 0.0), "final": (_spec_fraction, 0.0),
        "warmup_pieces": (_spec_count, 4),
    },
    "constant": {"lr": (_spec_number, 1.0)},
}


def _split_items(kind: str, body: str | None) -> list[tuple[str | None, str]]:
    """`a=1,b=2,3` -> [("a", "1"), ("b", "2"), (None, "3")]."""
    if body is None:
        return []
    items = []
    for item in re.split("[,;]", body):
        item = item.strip()
        if not item:
            raise _SpecError(f"empty item in {kind}'s list (stray ',' or ';'?)")
        key, sep, value = item.partition("=")
        items.append((key.strip(), value.strip()) if sep else (None, item))
    return items


def _keywords(kind: str, items) -> dict[str, Any]:
    options = _SMOOTH_OPTIONS[kind]
    names = ", ".join(options)
    values = {name: default for name, (_, default) in options.items()}
    seen = set()
    for key, text in items:
        if key is None:
            raise _SpecError(f"{kind} takes NAME=VALUE options ({names}), got {text!r}")
        if key not in options:
            raise _SpecError(f"unknown option {key!r} for {kind}; expected one of {names}")
        if key in seen:
            raise _SpecError(f"option {key!r} given twice")
        seen.add(key)
        values[key] = options[key][0](text, key)
    return values


def _pairs(kind: str, items, meaning: str, positive: bool):
    """FRACTION=VALUE pairs with fractions strictly increasing in (0, 1)."""
    example = {"step": "step:0.5=0.1,0.75=0.01", "batch": "batch:0.5=2"}[kind]
    if not items:
        raise _SpecError(f"{kind} needs FRACTION={meaning.upper()} pairs, e.g. {example}")
    fractions, values = [], []
    for key, text in items:
        if key is None:
            raise _SpecError(
                f"{kind} needs FRACTION={meaning.upper()} pairs, e.g. {example}; got {text!r}"
            )
        f = _spec_number(key, "a fraction")
        if not 0 < f < 1:
            raise _SpecError(f"fractions must lie in (0, 1), got {key!r}")
        if fractions and f <= fractions[-1]:
            raise _SpecError(f"fractions must increase, got {key!r} after {fractions[-1]:g}")
        v = _spec_number(text, meaning)
        if (v <= 0) if positive else (v < 0):
            raise _SpecError(f"{meaning} must be {'> 0' if positive else '>= 0'}, got {text!r}")
        fractions.append(f)
        values.append(v)
    return tuple(fractions), tuple(values)


def _parse_part(text: str) -> tuple[Callable[[np.ndarray], Schedule], float]:
    """One SPEC without '+': (K -> Schedule with batch multipliers, peak multiplier)."""
    kind, sep, body = text.partition(":")
    kind = kind.strip()
    if kind not in _SPEC_KINDS:
        raise _SpecError(f"unknown schedule {kind!r}; expected one of {', '.join(_SPEC_KINDS)}")
    if sep and not body.strip():
        raise _SpecError(f"nothing after '{kind}:'; drop the ':' or add options")
    items = _split_items(kind, body if sep else None)
    if kind in ("cosine", "wsd", "constant"):
        o = _keywords(kind, items)
        if kind == "constant":
            if o["lr"] < 0:
                raise _SpecError(f"lr must be >= 0, got {o['lr']:g}")
            return (lambda K: Schedule.constant(K, 1.0, o["lr"])), o["lr"]
        if kind == "cosine":
            return (lambda K: Schedule.cosine(K, 1.0, **o)), 1.0
        if o["warmup"] + o["decay"] > 1:
            raise _SpecError(f"warmup + decay must be <= 1, got {o['warmup']:g} + {o['decay']:g}")
        return (lambda K: Schedule.wsd(K, 1.0, **o)), 1.0
    if kind == "warmup":
        if not items or items[0][0] is not None:
            raise _SpecError(
                "warmup needs its fraction first, e.g. warmup:0.01 or warmup:0.01,pieces=8"
            )
        fraction = _spec_fraction(items[0][1], "warmup")
        pieces = 8
        for key, value in items[1:]:
            if key != "pieces":
                got = key or value
                raise _SpecError(f"warmup takes only pieces=P after its fraction, got {got!r}")
            pieces = _spec_count(value, "pieces")
        return (lambda K: Schedule.warmup(K, 1.0, warmup=fraction, pieces=pieces)), 1.0
    if kind == "step":
        fractions, factors = _pairs(kind, items, "multiplier", positive=False)
        return (lambda K: Schedule.step_decay(K, 1.0, fractions, factors)), max(1.0, *factors)
    fractions, factors = _pairs(kind, items, "batch multiplier", positive=True)
    return (lambda K: Schedule.batch_ramp(K, (1.0, *factors), fractions)), 1.0


def _split_parts(text: str) -> list[str]:
    # '+' joins SPECs, except as the sign of an exponent (1e+3).
    return [part.strip() for part in re.split(r"(?<![0-9.][eE])\+", text)]


@functools.lru_cache(maxsize=4096)
def parse_schedule(text: str) -> ScheduleSpec:
    """Parse a SPEC (see `SPEC_HELP`) into a [`ScheduleSpec`][].

    Raises [`InputError`][] with a one-line message that quotes the SPEC and
    says what was expected; callers prefix where the SPEC came from.

    **Example:**

    >>> from nqs_engine._io import parse_schedule
    >>> parse_schedule("cosine:pieces=16,warmup=0.01").num_segments
    20
    >>> parse_schedule("cosine:pieces=0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nqs_engine._io.InputError: schedule 'cosine:pieces=0': pieces must be an integer ... got '0'
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(
            f"schedule {text!r}: empty; expected a SPEC such as constant, cosine or step:0.5=0.1"
        )
    builders, peak = [], 1.0
    try:
        for part in _split_parts(text):
            if not part:
                raise _SpecError("empty schedule around '+'")
            build, part_peak = _parse_part(part)
            builders.append(build)
            peak *= part_peak
        # Trace each part: its segment count, and any error of the constructors
        # that the checks above missed.
        S = sum(_count_segments(build) for build in builders) - (len(builders) - 1)
    except _SpecError as exc:
        raise InputError(f"schedule {text!r}: {exc}") from None
    except ValueError as exc:
        raise InputError(f"schedule {text!r}: {exc}") from None
    return ScheduleSpec(text=text.strip(), num_segments=S, peak=float(peak), parts=tuple(builders))


_FILE_KEYS = ("lr", "batch", "steps")


def load_schedule_file(path: str | os.PathLike[str]) -> ScheduleSpec:
    """A schedule file: `{"lr": [...], "steps": [...], "batch": [...]}` (batch optional).

    One entry per segment. `lr` holds step-size multipliers of the peak (>= 0),
    `batch` multipliers of each run's B (> 0, default 1), and `steps` relative
    segment lengths (>= 0, not all 0): segment i of a run of K steps ends at
    floor(K * (steps[0] + ... + steps[i]) / sum(steps)). So steps that add up
    to K reproduce the segments exactly; fractions of 1 scale to any K.

    **Example:**

    >>> import json, pathlib, tempfile
    >>> from nqs_engine._io import load_schedule_file
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.json"
    >>> _ = path.write_text(json.dumps({"lr": [1, 0.1], "steps": [3, 1], "batch": [1, 2]}))
    >>> s = load_schedule_file(path).build(1000.0, 256.0)
    >>> s.lr.tolist(), s.batch.tolist(), s.steps.tolist()
    ([1.0, 0.1], [256.0, 512.0], [750.0, 250.0])
    """
    path = os.fspath(path)
    data = read_json(path)
    if not isinstance(data, Mapping):
        raise InputError(
            f'{path}: expected a JSON object {{"lr": [...], "steps": [...], "batch": [...]}}, '
            f"got a {type(data).__name__}"
        )
    unknown = [k for k in data if k not in _FILE_KEYS]
    if unknown:
        raise InputError(
            f"{path}: unknown key {unknown[0]!r}; expected lr, steps and optionally batch"
        )
    for key in ("lr", "steps"):
        if key not in data:
            raise InputError(
                f"{path}: missing key {key!r}; expected lr, steps and optionally batch"
            )
    arrays = {}
    for key in _FILE_KEYS:
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, list) or not value:
            raise InputError(
                f"{path}: {key!r} must be a non-empty list of numbers (one per segment)"
            )
        arrays[key] = np.array([_number(v, f"{path}: {key}[{i}]") for i, v in enumerate(value)])
    S = arrays["lr"].size
    arrays.setdefault("batch", np.ones(S))
    for key in _FILE_KEYS:
        a = arrays[key]
        if a.size != S:
            raise InputError(
                f"{path}: {key!r} has {a.size} entries, 'lr' has {S}; give one per segment"
            )
        rule = (a > 0) if key == "batch" else (a >= 0)
        bad = ~np.isfinite(a) | ~rule
        if bad.any():
            i = int(np.argmax(bad))
            need = "> 0" if key == "batch" else ">= 0"
            raise InputError(f"{path}: {key}[{i}] = {a[i]:g} must be finite and {need}")
    if arrays["steps"].sum() <= 0:
        raise InputError(f"{path}: 'steps' are all 0; they give the segments' relative lengths")
    lr, batch, weights = arrays["lr"], arrays["batch"], arrays["steps"]
    cumulative = np.cumsum(weights)

    def build(K):
        K = K[..., None]
        # multiply before dividing: exact when the weights add up to K
        cuts = jnp.minimum(jnp.floor(cumulative[:-1] * K / cumulative[-1]), K)
        ends = jnp.concatenate([cuts, K], axis=-1)
        steps = jnp.diff(ends, axis=-1, prepend=jnp.zeros_like(K))
        return Schedule(jnp.broadcast_to(lr, steps.shape), jnp.broadcast_to(batch, steps.shape),
                        steps)

    return ScheduleSpec(text=f"schedule file {path}", num_segments=S, peak=float(lr.max()),
                        parts=(build,))


# ---------------------------------------------------------------------------
# Atomic output
# ---------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], binary: bool = False) -> Iterator[IO[Any]]:
    """Open a text (or, with `binary=True`, binary) file that replaces `path` only if
    the `with` block completes.

    Writes to a hidden temporary file in `path`'s folder, then flushes it to
    disk and moves it onto `path` with `os.replace`. On any exception
    (`KeyboardInterrupt` included) the temporary file is deleted and `path`,
    existing or not, is left untouched. The file is opened with `newline=""`
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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"{path}: cannot write to folder {folder}: {exc.strerror}") from None
    try:
        text = {} if binary else {"newline": "", "encoding": "utf-8"}
        with os.fdopen(fd, "wb" if binary else "w", **text) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
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
    "SPEC_HELP",
    "Chunk",
    "Column",
    "CsvColumns",
    "InputError",
    "RUN_COLUMNS",
    "atomic_output",
    "ScheduleSpec",
    "load_params",
    "load_schedule_file",
    "parse_schedule",
    "params_from_mapping",
    "read_json",
    "write_json",
]
