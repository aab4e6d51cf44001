"""nqs-engine: a JAX-native, differentiable engine for the Noisy Quadratic System loss model.

The public API is this file: everything a user needs is re-exported here.
Nothing here changes global JAX settings; enable float64 in your own script with
``jax.config.update("jax_enable_x64", True)`` before creating arrays.
"""

import importlib.metadata

from ._backtest import Backtest as Backtest
from ._backtest import backtest as backtest
from ._backtest import compute_levels as compute_levels
from ._breakdown import AbstractBreakdown as AbstractBreakdown
from ._fit import LOSSES as LOSSES
from ._fit import BootstrapResult as BootstrapResult
from ._fit import ChinchillaBootstrap as ChinchillaBootstrap
from ._fit import ChinchillaFit as ChinchillaFit
from ._fit import FitResult as FitResult
from ._fit import bootstrap as bootstrap
from ._fit import bootstrap_chinchilla as bootstrap_chinchilla
from ._fit import fit as fit
from ._fit import fit_chinchilla as fit_chinchilla
from ._logs import Table as Table
from ._logs import parse_mapping as parse_mapping
from ._logs import read_table as read_table
from ._metrics import compute_gap as compute_gap
from ._metrics import format_table as format_table
from ._metrics import grouped_metrics as grouped_metrics
from ._metrics import metrics as metrics
from ._model import AbstractFitSpace as AbstractFitSpace
from ._model import AbstractLossModel as AbstractLossModel
from ._model import AbstractNQS as AbstractNQS
from ._model import Chinchilla as Chinchilla
from ._model import FitDefaults as FitDefaults
from ._model import LearningRateNQS as LearningRateNQS
from ._model import MODEL_KINDS as MODEL_KINDS
from ._model import NQS as NQS
from ._model import WeightNormNQS as WeightNormNQS
from ._model import model_from_dict as model_from_dict
from ._model._chinchilla import CHINCHILLA_PRESETS as CHINCHILLA_PRESETS
from ._model._chinchilla import ChinchillaBreakdown as ChinchillaBreakdown
from ._model._chinchilla import ChinchillaParams as ChinchillaParams
from ._model._chinchilla import chinchilla_compute_optimal as chinchilla_compute_optimal
from ._model._chinchilla import chinchilla_loss as chinchilla_loss
from ._model._chinchilla import chinchilla_preset as chinchilla_preset
from ._model._nqs import FIT_RULE as FIT_RULE
from ._model._nqs import START_RANGES as START_RANGES
from ._model._nqs import latin_hypercube_starts as latin_hypercube_starts
from ._model._nqs import predict_runs as predict_runs
from ._params import DEFAULT_LR as DEFAULT_LR
from ._params import PARAM_NAMES as PARAM_NAMES
from ._params import PRESETS as PRESETS
from ._params import NQSParams as NQSParams
from ._params import check_params as check_params
from ._params import preset as preset
from ._plan import Frontier as Frontier
from ._plan import Hardware as Hardware
from ._plan import Plan as Plan
from ._plan import ScheduleSearch as ScheduleSearch
from ._plan import frontier as frontier
from ._plan import optimize_schedule as optimize_schedule
from ._plan import plan as plan
from ._quadrature import SumRule as SumRule
from ._quadrature import hurwitz_zeta as hurwitz_zeta
from ._quadrature import sum_directions as sum_directions
from ._risk._fast import PLAN_RULE as PLAN_RULE
from ._risk._risk import RiskBreakdown as RiskBreakdown
from ._risk._risk import risk as risk
from ._risk._risk import schedule_risk as schedule_risk
from ._risk._trajectory import trajectory as trajectory
from ._risk._weight_norm import stair_width as stair_width
from ._risk._weight_norm import weight_norm_risk as weight_norm_risk
from ._runs import Runs as Runs
from ._schedule import Schedule as Schedule
from ._simulate import SimulationResult as SimulationResult
from ._simulate import simulate_sgd as simulate_sgd
from ._sweep import sweep as sweep

try:
    __version__ = importlib.metadata.version("nqs-engine")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"
