"""Small helpers shared across the package: the one validator of input vectors,
choices with suggestions, and index reporting.

Everything here is plain NumPy and raises `ValueError` with a message that
names the argument, the offending index and value, and the rule it breaks.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


def first_bad(bad: np.ndarray) -> int | tuple[int, ...]:
    """The index of the first True of `bad`: an int for 1-D arrays, else a tuple.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._misc import first_bad
    >>> first_bad(np.array([False, True, True])), first_bad(np.array([[False], [True]]))
    (1, (1, 0))
    """
    bad = np.asarray(bad)
    index = np.unravel_index(int(np.argmax(bad.ravel())), bad.shape)
    return int(index[0]) if len(index) == 1 else tuple(int(i) for i in index)


def vector(
    values: Any,
    name: str,
    *,
    size: int | None = None,
    broadcast: bool | str = False,
    check: Callable[[np.ndarray], np.ndarray] | None = None,
    requirement: str = "",
    meaning: str = "",
    allow_empty: bool = False,
    finite: bool = True,
) -> np.ndarray:
    r"""`values` as a 1-D float64 NumPy array, validated elementwise.

    The single validator of numeric input vectors in the package. It refuses,
    with a `ValueError` naming `name`, the index and the value:

    - anything that does not convert to numbers;
    - a shape other than 1-D (a scalar becomes one element, or `size` of them
      with `broadcast`);
    - a length other than `size` (after NumPy broadcasting when `broadcast=True`;
      `broadcast="scalar"` repeats scalars only);
    - an empty vector (unless `allow_empty`);
    - non-finite values (unless `finite=False`), and values where
      `check(values)` is False (`requirement` says the rule in words).

    **Example:**

    >>> from nqs_engine._misc import vector
    >>> vector([1, 2.5], "N").tolist()
    [1.0, 2.5]
    >>> vector(3, "B", size=2, broadcast=True).tolist()
    [3.0, 3.0]
    >>> vector([1e8, -1], "N", check=lambda v: v >= 1, requirement="must be >= 1")
    Traceback (most recent call last):
    ...
    ValueError: N[1] = -1 must be >= 1
    """
    label = f"{name} ({meaning})" if meaning else name
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be numeric, got {_short(values)}") from None
    if a.ndim == 0 and not (broadcast and size is not None):
        a = a.reshape(1)
    if size is not None and (broadcast is True or (broadcast == "scalar" and a.ndim == 0)):
        try:
            a = np.broadcast_to(a, (size,)).copy()
        except ValueError:
            raise ValueError(
                f"{label} must have shape ({size},) or broadcast to it, got shape {a.shape}"
            ) from None
    if a.ndim != 1:
        raise ValueError(f"{label} must be a 1-D array, got shape {a.shape}")
    if size is not None and a.shape[0] != size:
        raise ValueError(f"{label} must have {size} entries, got {a.shape[0]}")
    if a.size == 0 and not allow_empty:
        raise ValueError(f"{label} is empty: give at least one value")
    bad = ~np.isfinite(a) if finite else np.isnan(a)
    if check is not None:
        ok = np.zeros(a.shape, bool)
        good = ~bad
        ok[good] = np.asarray(check(a[good]), dtype=bool)
        bad = bad | ~ok
    if bad.any():
        i = first_bad(bad)
        rule = requirement or "must be finite"
        if finite and requirement and "finite" not in requirement:
            rule = f"{requirement} (and finite)" if not np.isfinite(a[i]) else requirement
        raise ValueError(f"{name}[{i}] = {a[i]:g} {rule}")
    return a


def positive_scalar(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """`value` as a finite Python float > 0 (or >= 0 with `allow_zero`); ValueError naming `name`.

    **Example:**

    >>> from nqs_engine._misc import positive_scalar
    >>> positive_scalar("2.5", "seq_len")
    2.5
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {_short(value)}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, "
                         f"got {v:g}")
    return v


def positive_integer(value: Any, name: str) -> int:
    """`value` as a Python int >= 1 (an int or NumPy integer, not a bool); ValueError naming
    `name` otherwise.

    **Example:**

    >>> from nqs_engine._misc import positive_integer
    >>> positive_integer(512, "chunk")
    512
    >>> positive_integer(0, "chunk")
    Traceback (most recent call last):
    ...
    ValueError: chunk must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {_short(value)}")
    return int(value)


def suggest(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the known name nearest to `name`, or `""`.

    Matches case-insensitively first (`LR` -> `lr`), then by similarity.

    **Example:**

    >>> from nqs_engine._misc import suggest
    >>> suggest("LR", ["lr", "p", "q"]), suggest("e_ir", ["e_irr", "R"]), suggest("zz", ["lr"])
    (" (did you mean 'lr'?)", " (did you mean 'e_irr'?)", '')
    """
    known = list(known)
    lower = {k.lower(): k for k in known}
    if name.lower() in lower:
        return f" (did you mean {lower[name.lower()]!r}?)"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """`value` if it is one of `choices`, else a ValueError listing them (with a suggestion).

    **Example:**

    >>> from nqs_engine._misc import check_choice
    >>> check_choice("loss", "mse", ("mse", "huber"))
    'mse'
    """
    if not isinstance(value, str) or value not in choices:
        hint = suggest(value, choices) if isinstance(value, str) else ""
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}{hint}")
    return value


def check_keys(mapping: Any, known: Iterable[str], where: str) -> None:
    """Refuse a key of `mapping` that is not in `known`, naming it and the nearest known one.

    **Example:**

    >>> from nqs_engine._misc import check_keys
    >>> check_keys({"LR": 1.0}, ["lr", "p"], "params.json")
    Traceback (most recent call last):
    ...
    ValueError: params.json: unknown key 'LR' (did you mean 'lr'?); known keys: lr, p
    """
    known = list(known)
    for key in mapping:
        if key not in known:
            raise ValueError(
                f"{where}: unknown key {key!r}{suggest(str(key), known)}; "
                f"known keys: {', '.join(known)}"
            )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["check_choice", "check_keys", "first_bad", "positive_scalar", "suggest", "vector"]
