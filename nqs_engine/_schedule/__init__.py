"""Schedules: the `Schedule` module, its constructors, and the SPEC language."""

from ._schedule import Schedule as Schedule
from ._schedule import ScheduleSpec as ScheduleSpec
from ._schedule import parse_schedule as parse_schedule
from ._spec import SPEC_HELP as SPEC_HELP
