"""Loss models: the interface every consumer takes, and its implementations."""

from ._base import AbstractFitSpace as AbstractFitSpace
from ._base import AbstractLossModel as AbstractLossModel
from ._base import FitDefaults as FitDefaults
from ._base import MODEL_KINDS as MODEL_KINDS
from ._base import model_from_dict as model_from_dict
from ._chinchilla import Chinchilla as Chinchilla
from ._nqs import AbstractNQS as AbstractNQS
from ._nqs import NQS as NQS
from ._nqs import WeightNormNQS as WeightNormNQS
from ._nqs import nqs_model as nqs_model
from ._nqs import as_model as as_model
from ._nqs_lr import LearningRateNQS as LearningRateNQS
from ._nqs_sizes import SizedNQS as SizedNQS
from ._nqs_norm import NormSizedNQS as NormSizedNQS
