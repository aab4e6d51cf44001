r"""The SPEC language of schedules relative to a run, as a grammar: text to parts.

A SPEC describes a schedule relative to each run's $K$ steps and batch size
$B$ (see `SPEC_HELP`, which the command line prints). [`parse_spec`][] reads one
into a tuple of [`SpecPart`][]s, each a schedule kind with its validated
options; `+` joins parts that act at once. The text is all it looks at: the
schedules themselves are built from the parts by
[`nqs_engine._schedule._schedule.ScheduleSpec`][], so this module depends on
nothing else in the package. A malformed SPEC raises `ValueError` with a
one-line message that quotes it and says what was expected.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._misc import suggest

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

#: The schedule kinds of the language.
KINDS = ("constant", "cosine", "wsd", "warmup", "step", "batch")

#: The most pieces a smooth curve may be cut into.
MAX_PIECES = 4096


@dataclasses.dataclass(frozen=True)
class SpecPart:
    """One schedule of a SPEC (the text between `+` signs), parsed and validated.

    **Fields:** `kind` (one of [`KINDS`][]); `options`, its options as a tuple of
    `(name, value)` pairs (defaults filled in): for `step` and `batch` the pairs
    `("fractions", (...))` and `("values", (...))`; `peak`, the largest step-size
    multiplier the part can produce.

    **Example:**

    >>> from nqs_engine._schedule._spec import parse_spec
    >>> part, = parse_spec("step:0.5=0.1")
    >>> part.kind, dict(part.options), part.peak
    ('step', {'fractions': (0.5,), 'values': (0.1,)}, 1.0)
    """

    kind: str
    options: tuple[tuple[str, Any], ...]
    peak: float

    def option(self, name: str) -> Any:
        """The value of option `name`."""
        return dict(self.options)[name]


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


def _spec_count(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PIECES:
        raise _SpecError(f"{what} must be an integer from 1 to {MAX_PIECES}, got {text!r}")
    return value


# name -> (parser, default) for the keyword options of each smooth kind.
_KEYWORD_OPTIONS = {
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
    options = _KEYWORD_OPTIONS[kind]
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


def _parse_part(text: str) -> SpecPart:
    """One SPEC without '+'."""
    kind, sep, body = text.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise _SpecError(f"unknown schedule {kind!r}; expected one of {', '.join(KINDS)}")
    if sep and not body.strip():
        raise _SpecError(f"nothing after '{kind}:'; drop the ':' or add options")
    items = _split_items(kind, body if sep else None)
    if kind in _KEYWORD_OPTIONS:
        o = _keywords(kind, items)
        if kind == "constant" and o["lr"] < 0:
            raise _SpecError(f"lr must be >= 0, got {o['lr']:g}")
        if kind == "wsd" and o["warmup"] + o["decay"] > 1:
            raise _SpecError(f"warmup + decay must be <= 1, got {o['warmup']:g} + {o['decay']:g}")
        peak = o["lr"] if kind == "constant" else 1.0
        return SpecPart(kind, tuple(o.items()), float(peak))
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
        return SpecPart(kind, (("warmup", fraction), ("pieces", pieces)), 1.0)
    meaning, positive = ("multiplier", False) if kind == "step" else ("batch multiplier", True)
    fractions, values = _pairs(kind, items, meaning, positive)
    peak = max(1.0, *values) if kind == "step" else 1.0
    return SpecPart(kind, (("fractions", fractions), ("values", values)), float(peak))


def _split_parts(text: str) -> list[str]:
    # '+' joins SPECs, except as the sign of an exponent (1e+3).
    return [part.strip() for part in re.split(r"(?<![0-9.][eE])\+", text)]


def parse_spec(text: str) -> tuple[SpecPart, ...]:
    """Parse a SPEC (see `SPEC_HELP`) into its parts; `ValueError` if malformed.

    The message quotes the SPEC and says what was expected; callers prefix
    where the SPEC came from.

    **Example:**

    >>> from nqs_engine._schedule._spec import parse_spec
    >>> [p.kind for p in parse_spec("cosine:pieces=16,warmup=0.01+batch:0.5=2")]
    ['cosine', 'batch']
    >>> parse_spec("cosine:pieces=0")
    Traceback (most recent call last):
    ...
    ValueError: schedule 'cosine:pieces=0': pieces must be an integer from 1 to 4096, got '0'
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"schedule {text!r}: empty; expected a SPEC such as constant, cosine or step:0.5=0.1"
        )
    parts = []
    try:
        for part in _split_parts(text):
            if not part:
                raise _SpecError("empty schedule around '+'")
            parts.append(_parse_part(part))
    except _SpecError as exc:
        raise ValueError(f"schedule {text!r}: {exc}") from None
    return tuple(parts)


#: The keys of a schedule given as explicit segments.
SEGMENT_KEYS = ("lr", "batch", "steps")


def parse_segments(data: Any, source: str) -> dict[str, np.ndarray]:
    """Explicit segments `{"lr": [...], "steps": [...], "batch": [...]}` (batch optional), validated.

    One entry per segment: `lr` multipliers of the peak step size (>= 0),
    `batch` multipliers of each run's B (> 0, default 1), `steps` relative
    lengths (>= 0, not all 0). Returns float64 arrays under the three keys;
    `ValueError` naming `source` and the bad key or entry otherwise.

    **Example:**

    >>> from nqs_engine._schedule._spec import parse_segments
    >>> parse_segments({"lr": [1, 0.1], "steps": [3, 1]}, "s.json")["batch"].tolist()
    [1.0, 1.0]
    """
    if not isinstance(data, Mapping):
        raise ValueError(
            f'{source}: expected a JSON object {{"lr": [...], "steps": [...], "batch": [...]}}, '
            f"got a {type(data).__name__}"
        )
    unknown = [k for k in data if k not in SEGMENT_KEYS]
    if unknown:
        raise ValueError(
            f"{source}: unknown key {unknown[0]!r}{suggest(str(unknown[0]), SEGMENT_KEYS)}; "
            "expected lr, steps and optionally batch"
        )
    for key in ("lr", "steps"):
        if key not in data:
            raise ValueError(
                f"{source}: missing key {key!r}; expected lr, steps and optionally batch"
            )
    arrays = {}
    for key in SEGMENT_KEYS:
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, list) or not value:
            raise ValueError(
                f"{source}: {key!r} must be a non-empty list of numbers (one per segment)"
            )
        numbers = []
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{source}: {key}[{i}] must be a number, got {v!r}")
            numbers.append(float(v))
        arrays[key] = np.array(numbers)
    S = arrays["lr"].size
    arrays.setdefault("batch", np.ones(S))
    for key in SEGMENT_KEYS:
        a = arrays[key]
        if a.size != S:
            raise ValueError(
                f"{source}: {key!r} has {a.size} entries, 'lr' has {S}; give one per segment"
            )
        rule = (a > 0) if key == "batch" else (a >= 0)
        bad = ~np.isfinite(a) | ~rule
        if bad.any():
            i = int(np.argmax(bad))
            need = "> 0" if key == "batch" else ">= 0"
            raise ValueError(f"{source}: {key}[{i}] = {a[i]:g} must be finite and {need}")
    if arrays["steps"].sum() <= 0:
        raise ValueError(f"{source}: 'steps' are all 0; they give the segments' relative lengths")
    return arrays


__all__ = ["KINDS", "MAX_PIECES", "SEGMENT_KEYS", "SPEC_HELP", "SpecPart", "parse_segments",
           "parse_spec"]
