"""Schedules: the `Schedule` module, its constructors, and the SPEC language.

`SPEC_HELP` (the grammar, for help texts) is imported at once; the JAX-backed
names on first use (PEP 562), so that help texts need no numerical import.
"""

import importlib
from typing import TYPE_CHECKING

from ._spec import SPEC_HELP as SPEC_HELP

_LAZY = {"Schedule": "._schedule", "ScheduleSpec": "._schedule", "parse_schedule": "._schedule"}

if TYPE_CHECKING:
    from ._schedule import Schedule as Schedule
    from ._schedule import ScheduleSpec as ScheduleSpec
    from ._schedule import parse_schedule as parse_schedule


def __getattr__(name: str):
    """Import `Schedule`, `ScheduleSpec` or `parse_schedule` on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value
