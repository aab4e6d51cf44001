r"""Reading real training logs: column mappings with formulas, budgets from run names.

Exports of real ladders name their columns their own way (`trainer.train_batch_size`,
`eval/paloma/macro_loss`), count parameters with the embeddings, carry the
budget in the run name and leave some cells empty. A **column mapping** says,
for each column the engine needs, which column or formula gives it:

    N=16*model.num_layers*model.hidden_dim^2, B=trainer.train_batch_size,
    K=trainer.num_train_steps, loss=`eval/paloma/macro_loss`, lr=optimizer.learning_rate,
    width=model.hidden_dim

A value that is exactly a header of the file is that column; otherwise it is a
formula of numbers, `+ - * / ^` (or `**`), parentheses, `sqrt`, `log`, `exp`,
and columns, written as they are in the header when they contain only letters,
digits, `_` and `.`, or between backticks otherwise. [`read_table`][] evaluates
the mapping on every row; an empty or non-numeric cell of a column the mapping
uses is an error naming the file, row and column, unless `drop_bad=True`, which
drops those rows and says how many. A **budget** can be read from a text column
by a regular expression with one group (`Name:isoflop-([0-9.]+e[+-]?[0-9]+)`).
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._columnar import read_rows, table_format

from ._io import InputError
from ._misc import suggest

_FUNCTIONS = {"sqrt": np.sqrt, "log": np.log, "exp": np.exp}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def parse_mapping(text: str) -> dict[str, str]:
    """`"N=expr,B=expr"` (commas inside parentheses or backticks kept) -> {"N": "expr", ...}.

    **Example:**

    >>> from nqs_engine._logs import parse_mapping
    >>> parse_mapping("N=16*L*d^2, B=batch, lr=sqrt(`a,b`)")
    {'N': '16*L*d^2', 'B': 'batch', 'lr': 'sqrt(`a,b`)'}
    """
    items, depth, quoted, current = [], 0, False, ""
    for ch in text:
        if ch == "`":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    out = {}
    for item in items:
        item = item.strip()
        if not item:
            raise ValueError(f"column mapping {text!r}: an empty item (stray ',')")
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ValueError(f"column mapping {text!r}: expected NAME=COLUMN or NAME=FORMULA, "
                             f"got {item!r}")
        if name in out:
            raise ValueError(f"column mapping {text!r}: {name!r} given twice")
        out[name] = value
    return out


@dataclasses.dataclass(frozen=True)
class Formula:
    """A column or formula of columns, compiled against a header (see the module docstring)."""

    text: str
    columns: tuple[str, ...]
    tree: Any = dataclasses.field(repr=False)

    @classmethod
    def compile(cls, text: str, header: Sequence[str], what: str) -> "Formula":
        """`text` against the file's `header`; `ValueError` naming `what` if it is not valid."""
        names = sorted(set(header), key=len, reverse=True)
        if text in header:
            return cls(text, (text,), ast.Name(id="c0", ctx=ast.Load()))
        used: list[str] = []

        def ref(name: str) -> str:
            if name not in used:
                used.append(name)
            return f"c{used.index(name)}"

        source, i = "", 0
        while i < len(text):
            ch = text[i]
            if ch == "`":
                j = text.find("`", i + 1)
                if j < 0:
                    raise ValueError(f"{what} = {text!r}: an unclosed backtick")
                name = text[i + 1 : j]
                if name not in header:
                    raise ValueError(f"{what} = {text!r}: no column {name!r} in the file"
                                     f"{suggest(name, list(header))}")
                source += ref(name)
                i = j + 1
                continue
            if ch.isalpha() or ch == "_":
                hit = next((n for n in names if text.startswith(n, i)
                            and not _continues(text, i + len(n))), None)
                word = _NAME.match(text, i).group(0)
                if hit is not None and len(hit) >= len(word.rstrip(".")):
                    source += ref(hit)
                    i += len(hit)
                    continue
                if word in _FUNCTIONS:
                    source += word
                    i += len(word)
                    continue
                known = ", ".join(header)
                raise ValueError(f"{what} = {text!r}: {word!r} is not a column of the file"
                                 f"{suggest(word, list(header))} nor one of "
                                 f"{', '.join(_FUNCTIONS)} (columns: {known}; quote names with "
                                 "other characters in backticks)")
            source += "**" if ch == "^" else ch
            i += 1
        try:
            tree = ast.parse(source, mode="eval").body
        except SyntaxError:
            raise ValueError(f"{what} = {text!r}: not a formula") from None
        _check_tree(tree, text, what)
        return cls(text, tuple(used), tree)

    def evaluate(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        """The formula on arrays (one per entry of `columns`), elementwise."""
        env = {f"c{i}": np.asarray(v, float) for i, v in enumerate(columns)}
        with np.errstate(all="ignore"):
            return np.asarray(_eval(self.tree, env), dtype=float)


def _continues(text: str, j: int) -> bool:
    return j < len(text) and (text[j].isalnum() or text[j] in "_.")


_BINARY = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.divide,
           ast.Pow: np.power}


def _check_tree(node, text, what):
    for child in ast.walk(node):
        if isinstance(child, ast.BinOp) and type(child.op) in _BINARY:
            continue
        if isinstance(child, ast.UnaryOp) and isinstance(child.op, (ast.USub, ast.UAdd)):
            continue
        if isinstance(child, ast.Constant) and isinstance(child.value, (int, float)):
            continue
        if isinstance(child, ast.Name) and (child.id.startswith("c") or child.id in _FUNCTIONS):
            continue
        if (isinstance(child, ast.Call) and isinstance(child.func, ast.Name)
                and child.func.id in _FUNCTIONS and len(child.args) == 1 and not child.keywords):
            continue
        if isinstance(child, (ast.Load, ast.operator, ast.unaryop)):
            continue
        raise ValueError(f"{what} = {text!r}: only numbers, columns, + - * / ^, parentheses "
                         f"and {', '.join(_FUNCTIONS)}() are allowed")


def _eval(node, env):
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    return _FUNCTIONS[node.func.id](_eval(node.args[0], env))


@dataclasses.dataclass
class Table:
    """Rows of a log file, mapped: `values` (name -> float64 array), `texts` (name -> strings),
    `budget` (float64 array or None), `rows` (1-based row numbers kept), `dropped`."""

    path: str
    header: tuple[str, ...]
    values: dict[str, np.ndarray]
    texts: dict[str, np.ndarray]
    budget: np.ndarray | None
    rows: np.ndarray
    dropped: int

    def __len__(self) -> int:
        return int(self.rows.size)


def read_table(
    path: str | os.PathLike[str],
    mapping: Mapping[str, str],
    *,
    text: Sequence[str] = (),
    budget: str | None = None,
    drop_bad: bool = False,
) -> Table:
    r"""Read a CSV log and evaluate a column mapping on every row (module docstring).

    **Arguments:** `path`; `mapping` (target name -> column or formula); `text`
    columns to keep as strings (those the file has); `budget` as
    `COLUMN:REGEX` (the regex's first group, a number, from each row's text);
    `drop_bad`: drop rows with an empty, non-numeric or non-finite cell the
    mapping or the budget needs, instead of refusing them.

    **Returns:** a [`Table`][]. Raises [`nqs_engine._io.InputError`][] naming the file,
    row and column of the first bad cell (without `drop_bad`), a column or
    function a formula names that does not exist, or a file left with no rows.

    **Example:**

    >>> import pathlib, tempfile
    >>> from nqs_engine._logs import read_table
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
    >>> _ = path.write_text("Name,model.d,model.L,bs,eval/loss\n"
    ...                     "iso-1e+18-a,512,8,64,3.1\niso-3e+18-b,768,12,,2.9\n")
    >>> t = read_table(path, {"N": "16*model.L*model.d^2", "B": "bs", "loss": "`eval/loss`"},
    ...                budget="Name:iso-([0-9.e+]+)-", drop_bad=True)
    >>> t.values["N"].tolist(), t.budget.tolist(), t.dropped
    ([33554432.0], [1e+18], 1)
    """
    path = os.fspath(path)
    try:
        if table_format(path) == "parquet":
            rows = read_rows(path)
        else:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = [r for r in csv.reader(f) if r]
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    if not rows:
        raise InputError(f"{path} is empty: expected a header row")
    header = tuple(h.strip() for h in rows[0])
    data = rows[1:]
    width = len(header)
    for i, r in enumerate(data):
        if len(r) != width:
            raise InputError(f"{path}, row {i + 1}: has {len(r)} field(s), expected {width}")
    try:
        formulas = {name: Formula.compile(expr, header, name) for name, expr in mapping.items()}
    except ValueError as exc:
        raise InputError(f"{path}: column mapping: {exc}") from None
    columns = sorted({c for f in formulas.values() for c in f.columns})
    raw = {c: [r[header.index(c)].strip() for r in data] for c in columns}
    numbers, bad_rows = {}, np.zeros(len(data), bool)
    first_bad: dict[int, str] = {}
    for c in columns:
        v = np.full(len(data), np.nan)
        for i, cell in enumerate(raw[c]):  # a few hundred rows of a log, once
            try:
                v[i] = float(cell)
            except ValueError:
                pass
        bad = ~np.isfinite(v)
        for i in np.flatnonzero(bad & ~bad_rows):
            first_bad.setdefault(int(i), c)
        bad_rows |= bad
        numbers[c] = v
    bud = None
    if budget is not None:
        column, sep, pattern = budget.partition(":")
        if not sep or column not in header:
            raise InputError(f"{path}: budget {budget!r}: expected COLUMN:REGEX with a column of "
                             f"the file ({', '.join(header)})")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise InputError(f"{path}: budget {budget!r}: bad regular expression: {exc}") from None
        if regex.groups < 1:
            raise InputError(f"{path}: budget {budget!r}: the expression needs a group (...)")
        bud = np.full(len(data), np.nan)
        for i, r in enumerate(data):
            m = regex.search(r[header.index(column)])
            try:
                bud[i] = float(m.group(1)) if m else np.nan
            except ValueError:
                pass
            if not np.isfinite(bud[i]) and not bad_rows[i]:
                first_bad.setdefault(i, column)
                bad_rows[i] = True
    if bad_rows.any() and not drop_bad:
        i = int(np.flatnonzero(bad_rows)[0])
        c = first_bad[i]
        cell = data[i][header.index(c)]
        what = "empty" if not cell.strip() else f"{cell!r} is not a number"
        if budget is not None and c == budget.partition(":")[0]:
            what = f"{cell!r} holds no budget for {budget.partition(':')[2]!r}"
        raise InputError(f"{path}, row {i + 1}, column {c!r}: {what} (pass --drop-bad, or "
                         "drop_bad=True, to skip such rows)")
    keep = ~bad_rows
    if not keep.any():
        raise InputError(f"{path}: no rows left: every one of the {len(data)} rows has a bad cell "
                         f"(first: row 1, column {first_bad.get(0, '?')!r})")
    values = {}
    for name, f in formulas.items():
        v = f.evaluate([numbers[c][keep] for c in f.columns])
        bad = ~np.isfinite(v)
        if bad.any():
            i = int(np.flatnonzero(keep)[np.argmax(bad)])
            raise InputError(f"{path}, row {i + 1}: {name} = {f.text} is not finite there")
        values[name] = v
    texts = {t: np.array([r[header.index(t)].strip() for r, k in zip(data, keep) if k])
             for t in text if t in header}
    return Table(path=path, header=header, values=values, texts=texts,
                 budget=None if bud is None else bud[keep],
                 rows=np.flatnonzero(keep) + 1, dropped=int(bad_rows.sum()))


__all__ = ["Formula", "Table", "parse_mapping", "read_table"]
