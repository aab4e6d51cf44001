"""nqs-engine: a JAX-native, differentiable engine for the Noisy Quadratic System loss model.

The public API is this file: everything a user needs is re-exported here.
Nothing here changes global JAX settings; enable float64 in your own script with
``jax.config.update("jax_enable_x64", True)`` before creating arrays.
"""

# The names below are imported on first use (PEP 562), so that `import nqs_engine`
# (and the command line, which imports only what a command needs) starts fast:
# `nqs.risk` imports the risk modules, `nqs.fit` the fitting ones, and so on.

import importlib

# `typing` (and the modules it imports) would add ~12 ms before the command line's
# interrupt handling is installed; type checkers read this name as typing's.
TYPE_CHECKING = False

#: Public name -> the private module that defines it.
_EXPORTS = {
    "Backtest": "._backtest",
    "backtest": "._backtest",
    "compute_levels": "._backtest",
    "AbstractBreakdown": "._breakdown",
    "LOSSES": "._fit",
    "BootstrapResult": "._fit",
    "ChinchillaBootstrap": "._fit",
    "ChinchillaFit": "._fit",
    "FitResult": "._fit",
    "bootstrap": "._fit",
    "bootstrap_chinchilla": "._fit",
    "fit": "._fit",
    "fit_chinchilla": "._fit",
    "Table": "._logs",
    "parse_mapping": "._logs",
    "read_table": "._logs",
    "compute_gap": "._metrics",
    "format_table": "._metrics",
    "grouped_metrics": "._metrics",
    "metrics": "._metrics",
    "AbstractFitSpace": "._model",
    "AbstractLossModel": "._model",
    "AbstractNQS": "._model",
    "Chinchilla": "._model",
    "FitDefaults": "._model",
    "LearningRateNQS": "._model",
    "MODEL_KINDS": "._model",
    "NQS": "._model",
    "WeightNormNQS": "._model",
    "model_from_dict": "._model",
    "CHINCHILLA_PRESETS": "._model._chinchilla",
    "ChinchillaBreakdown": "._model._chinchilla",
    "ChinchillaParams": "._model._chinchilla",
    "chinchilla_compute_optimal": "._model._chinchilla",
    "chinchilla_loss": "._model._chinchilla",
    "chinchilla_preset": "._model._chinchilla",
    "FIT_RULE": "._model._nqs",
    "START_RANGES": "._model._nqs",
    "latin_hypercube_starts": "._model._nqs",
    "predict_runs": "._model._nqs",
    "SizedNQS": "._model._nqs_sizes",
    "NormSizedNQS": "._model._nqs_norm",
    "DEFAULT_LR": "._params",
    "PARAM_NAMES": "._params",
    "PRESETS": "._params",
    "NQSParams": "._params",
    "check_params": "._params",
    "preset": "._params",
    "Frontier": "._plan",
    "Hardware": "._plan",
    "Plan": "._plan",
    "ScheduleSearch": "._plan",
    "frontier": "._plan",
    "optimize_schedule": "._plan",
    "plan": "._plan",
    "SumRule": "._quadrature",
    "hurwitz_zeta": "._quadrature",
    "sum_directions": "._quadrature",
    "PLAN_RULE": "._risk._fast",
    "RiskBreakdown": "._risk._risk",
    "risk": "._risk._risk",
    "schedule_risk": "._risk._risk",
    "trajectory": "._risk._trajectory",
    "stair_width": "._risk._weight_norm",
    "weight_norm_risk": "._risk._weight_norm",
    "Runs": "._runs",
    "Schedule": "._schedule",
    "SimulationResult": "._simulate",
    "simulate_sgd": "._simulate",
    "sweep": "._sweep",
    "synthetic_ladder": "._synthetic",
}

if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
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
    from ._model._nqs_sizes import SizedNQS as SizedNQS
    from ._model._nqs_norm import NormSizedNQS as NormSizedNQS
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
    from ._synthetic import synthetic_ladder as synthetic_ladder

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import a public name on first use and keep it in the module (PEP 562)."""
    if name == "__version__":  # importlib.metadata costs ~20 ms: only when asked
        from importlib import metadata

        try:
            version = metadata.version("nqs-engine")
        except metadata.PackageNotFoundError:  # running from a source tree
            version = "0.0.0+unknown"
        globals()[name] = version
        return version
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names (imported or not) and the module's own attributes."""
    return sorted(set(globals()) | set(_EXPORTS) | {"__version__"})

