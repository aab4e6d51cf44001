"""Planning: the best N, B, K (and schedule) for budgets under limits, and the frontier."""

from ._budgets import Hardware as Hardware
from ._frontier import Frontier as Frontier
from ._frontier import frontier as frontier
from ._plan import BATCH_MODES as BATCH_MODES
from ._plan import METHODS as METHODS
from ._plan import Plan as Plan
from ._plan import plan as plan
from ._schedule_search import ScheduleSearch as ScheduleSearch
from ._schedule_search import optimize_schedule as optimize_schedule
