"""nqs-engine: a JAX-native, differentiable engine for the Noisy Quadratic System loss model.

The public API is this file: everything a user needs is re-exported here.
Nothing here changes global JAX settings; enable float64 in your own script with
``jax.config.update("jax_enable_x64", True)`` before creating arrays.
"""

import importlib.metadata

from ._chinchilla import ChinchillaBootstrap as ChinchillaBootstrap
from ._chinchilla import ChinchillaFit as ChinchillaFit
from ._chinchilla import ChinchillaParams as ChinchillaParams
from ._chinchilla import CHINCHILLA_PRESETS as CHINCHILLA_PRESETS
from ._chinchilla import bootstrap_chinchilla as bootstrap_chinchilla
from ._chinchilla import chinchilla_preset as chinchilla_preset
from ._chinchilla import chinchilla_compute_optimal as chinchilla_compute_optimal
from ._chinchilla import chinchilla_loss as chinchilla_loss
from ._chinchilla import fit_chinchilla as fit_chinchilla
from ._evaluate import compute_gap as compute_gap
from ._evaluate import format_table as format_table
from ._evaluate import grouped_metrics as grouped_metrics
from ._evaluate import metrics as metrics
from ._fit import FIT_RULE as FIT_RULE
from ._fit import START_RANGES as START_RANGES
from ._fit import BootstrapResult as BootstrapResult
from ._fit import FitResult as FitResult
from ._fit import Runs as Runs
from ._fit import bootstrap as bootstrap
from ._fit import fit as fit
from ._fit import latin_hypercube_starts as latin_hypercube_starts
from ._fit import predict_runs as predict_runs
from ._params import DEFAULT_LR as DEFAULT_LR
from ._params import PARAM_NAMES as PARAM_NAMES
from ._params import PRESETS as PRESETS
from ._params import NQSParams as NQSParams
from ._params import check_params as check_params
from ._params import preset as preset
from ._plan import Frontier as Frontier
from ._plan import Hardware as Hardware
from ._plan import Plan as Plan
from ._plan import frontier as frontier
from ._plan import plan as plan
from ._evaluator import PLAN_RULE as PLAN_RULE
from ._sweep import sweep as sweep
from ._schedule_search import ScheduleSearch as ScheduleSearch
from ._schedule_search import optimize_schedule as optimize_schedule
from ._quadrature import SumRule as SumRule
from ._quadrature import hurwitz_zeta as hurwitz_zeta
from ._quadrature import sum_directions as sum_directions
from ._risk import RiskBreakdown as RiskBreakdown
from ._risk import risk as risk
from ._risk import schedule_risk as schedule_risk
from ._schedule import Schedule as Schedule
from ._trajectory import stair_width as stair_width
from ._trajectory import trajectory as trajectory
from ._trajectory import weight_norm_risk as weight_norm_risk
from ._simulate import SimulationResult as SimulationResult
from ._simulate import simulate_sgd as simulate_sgd

try:
    __version__ = importlib.metadata.version("nqs-engine")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"
