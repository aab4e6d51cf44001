"""Fitting loss models: batched minimisation, the one fit and the one bootstrap."""

from ._bootstrap import BootstrapResult as BootstrapResult
from ._bootstrap import bootstrap as bootstrap
from ._compat import ChinchillaBootstrap as ChinchillaBootstrap
from ._compat import ChinchillaFit as ChinchillaFit
from ._compat import bootstrap_chinchilla as bootstrap_chinchilla
from ._compat import fit_chinchilla as fit_chinchilla
from ._fit import FitResult as FitResult
from ._fit import LOSSES as LOSSES
from ._fit import fit as fit
