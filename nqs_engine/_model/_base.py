r"""The loss-model interface: what every model provides, so that every consumer
(predict, fit, bootstrap, backtest, evaluate, plan, sweep, plot, the command
line) takes any model and never branches on which one it is.

A loss model $L_\theta$ maps a training run (model size $N$, its schedule of
batch sizes and steps or its tokens $D$, and any further inputs such as the
run's peak learning rate) to a predicted loss and its terms. A final
implementation owns its parameters $\theta$, how it sums what it sums (its
quadrature rule), and an unconstrained flat form $u \in \mathbb{R}^d$ of
$\theta$ for fitting (an [`AbstractFitSpace`][], fixed for one data set).

Adding a model is one new module: a final subclass of [`AbstractLossModel`][]
with a `kind` name registers itself, and the command line, the fit, the
bootstrap, the planner and the sweep then accept it by that name.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._breakdown import AbstractBreakdown
from .._custom_types import FloatArray
from .._misc import suggest
from .._runs import Runs

#: Registered models, by their `kind` (the `"model"` key of a parameters file).
MODEL_KINDS: dict[str, type] = {}

#: Keys a parameters file may carry besides a model's own: what the fit or the
#: command line records alongside (never read as parameters).
METADATA_KEYS = ("model", "seq_len", "diagnostics", "bootstrap", "note", "variant", "data")


class FitDefaults(eqx.Module):
    """How [`nqs_engine.fit`][] searches a model family unless told otherwise.

    **Fields:** `loss` (`"mse"` or `"huber"`), `starts` (candidates screened;
    `None`: every candidate the space proposes), `refine` (of them optimised
    together by L-BFGS), `max_steps`, `prune` (stop hopeless starts half way),
    `warm_starts` (distinct optima each bootstrap resample starts from),
    `bootstrap_steps` (iterations per resample), `method`, the optimiser:
    `"lm"` (Levenberg-Marquardt on the residuals) or `"lbfgs"`, and `polish_steps`:
    iterations from the best start on the model's accurate form of the data
    (`prepare(runs)`) after the search on its cheaper form (0: none), and
    `jacobian`: how Levenberg-Marquardt differentiates the residuals,
    `"forward"` (one pass per parameter) or `"reverse"` (one per residual, for
    models whose predictions only support reverse mode).
    """

    loss: str = "mse"
    starts: int | None = 4096
    refine: int = 16
    max_steps: int = 500
    prune: bool = True
    warm_starts: int = 1
    bootstrap_steps: int = 300
    method: str = "lm"
    polish_steps: int = 0
    jacobian: str = "forward"


class AbstractFitSpace(eqx.Module):
    r"""An unconstrained coordinate system $u \in \mathbb{R}^d$ over one model family.

    Made by [`AbstractLossModel.fit_space`][] for one data set (its bounds may
    depend on the data: the NQS keeps $\gamma_{max} Q < 2$ for the largest step
    size the runs take), so that every $u$ is a valid model and L-BFGS can run
    unconstrained.
    """

    @abc.abstractmethod
    def to_model(self, u: FloatArray) -> "AbstractLossModel":
        """The model at coordinates `u` (`(d,)`); pure JAX, differentiable."""

    @abc.abstractmethod
    def to_flat(self, model: "AbstractLossModel") -> np.ndarray:
        """The coordinates of `model` (`(d,)`, or `(M, d)` for a batch), host side."""

    @abc.abstractmethod
    def candidates(self, num: int | None, seed: int,
                   ranges: Mapping[str, tuple[float, float]] | None) -> np.ndarray:
        """`(M, d)` starting coordinates to screen (`num` of them, or the family's own set)."""

    @abc.abstractmethod
    def describe_bounds(self, model: "AbstractLossModel") -> list[str]:
        """Which of `model`'s parameters sit on a bound of this space (for diagnostics)."""


class AbstractLossModel(eqx.Module):
    r"""A loss model: parameters $\theta$ and a prediction $L_\theta(\text{run})$ with its terms.

    Final subclasses set the class attributes `kind` (a registry name, e.g.
    `"nqs"`), `label` (a short name for tables), `inputs` (the names of the
    optional per-run inputs it reads, e.g. `"init_sq_norm"`), `terms` (the `TERMS`
    of the breakdown it returns), `fit_defaults` ([`FitDefaults`][]) and `smooth_in_steps` (whether
    the loss is differentiable in the number of steps, which lets the planner
    refine by gradient), and implement the abstract methods below. The
    concrete methods here ([`predict`][], [`parameters`][]-based serialisation)
    are shared by all models and never overridden.
    """

    kind: ClassVar[str] = ""
    label: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()
    terms: ClassVar[tuple[str, ...]] = ()
    fit_defaults: ClassVar[FitDefaults] = FitDefaults()
    smooth_in_steps: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind", "")
        if kind:
            if kind in MODEL_KINDS and MODEL_KINDS[kind].__qualname__ != cls.__qualname__:
                raise ValueError(f"a loss model of kind {kind!r} is already registered "
                                 f"({MODEL_KINDS[kind].__qualname__})")
            MODEL_KINDS[kind] = cls

    # -- evaluation -----------------------------------------------------------------

    @abc.abstractmethod
    def __call__(self, N: Any, B: Any = None, K: Any = None, *, schedule: Any = None,
                 **inputs: Any) -> AbstractBreakdown:
        """The loss and its terms for runs of size `N` at batch `B` for `K` steps (or under
        `schedule`), with every input checked; extra per-run `inputs` by name."""

    @abc.abstractmethod
    def check(self) -> None:
        """Eagerly check the parameters (`ValueError` naming the first bad one)."""

    @abc.abstractmethod
    def check_peak(self, peak: float) -> None:
        """Refuse schedules whose largest step-size multiplier `peak` the model cannot run
        (`ValueError`); a model without step sizes accepts any."""

    @abc.abstractmethod
    def prepare(self, runs: Runs, *, search: bool = False) -> Any:
        """What [`predict_prepared`][] needs from `runs`, validated and laid out once.

        `search=True` asks for the cheaper form used inside searches (a coarser
        quadrature rule, say); the default is the accurate one.
        """

    @abc.abstractmethod
    def predict_prepared(self, data: Any) -> FloatArray:
        """`(n,)` predicted losses of the prepared runs: pure JAX, no checks, differentiable."""

    @abc.abstractmethod
    def fit_space(self, runs: Runs, weights: np.ndarray | None = None) -> AbstractFitSpace:
        """The unconstrained coordinates of this model's family for fitting `runs`.

        Checks first that the rows of positive `weights` (default: all) can
        identify the model (`ValueError` saying what is missing)."""

    @abc.abstractmethod
    def planning_loss(self, N: Any, B: Any, K: Any, seq_len: Any) -> FloatArray:
        r"""The loss of constant-schedule runs $(N, B, K)$ of `seq_len` tokens per sequence.

        Pure JAX, broadcasting, no checks (the caller ran [`check`][]), fast: the
        planner and the sweep score millions of candidates with it and
        differentiate it in $N$, $B$ (and $K$ where `smooth_in_steps`).
        """

    @abc.abstractmethod
    def parameters(self) -> dict[str, FloatArray]:
        """The fitted parameters by name (arrays; batched models give batched arrays)."""

    @abc.abstractmethod
    def options(self) -> dict[str, Any]:
        """The settings besides the parameters that a parameters file records (JSON-ready)."""

    @classmethod
    @abc.abstractmethod
    def from_values(cls, values: Mapping[str, Any], source: str) -> "AbstractLossModel":
        """The model from a mapping of its parameters and options (every key known, each
        value valid); `ValueError` naming `source` and the key otherwise."""

    # -- shared behaviour -----------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        """The batch shape of the parameters (`()` for one model)."""
        return np.broadcast_shapes(*(jnp.shape(v) for v in self.parameters().values()))

    def predict(self, runs: Runs) -> FloatArray:
        """Predicted loss of every row of `runs`: `(n,)`, or `(M, n)` for a batch of `M` models.

        Checks the parameters, and that the model can run the runs' schedules
        (their largest step-size multiplier, [`check_peak`][]), first: `ValueError`
        naming the problem.

        **Example:**

        >>> import nqs_engine as nqs
        >>> model = nqs.NQS.preset("pythia-owt2")
        >>> runs = nqs.Runs.from_arrays(N=[1e7, 1e8], B=256, K=5000)
        >>> model.predict(runs).shape
        (2,)
        """
        if not isinstance(runs, Runs):
            raise TypeError(f"runs must be a Runs, got {type(runs).__name__}")
        self.check()
        self.check_peak(runs.peak)
        data = self.prepare(runs)
        shape = self.shape
        if shape == ():
            return _predict(self, data)
        if len(shape) != 1:
            raise ValueError(f"predict takes one model or a 1-D batch of them, got batch shape "
                             f"{shape}")
        axes = jax.tree.map(lambda a: 0 if eqx.is_array(a) and a.ndim >= 1 and a.shape[0] == shape[0]
                            else None, self)
        return _predict_many(self, data, axes)

    def to_dict(self) -> dict[str, Any]:
        """The model as a JSON-ready mapping: `"model"` (its kind), parameters, options.

        **Example:**

        >>> import nqs_engine as nqs
        >>> d = nqs.NQS.preset("pythia-owt2").to_dict()
        >>> d["model"], round(d["p"], 4), d["lr"]
        ('nqs', 1.1131, 1.999)
        """
        values = {name: np.asarray(v).tolist() for name, v in self.parameters().items()}
        return {"model": self.kind, **values, **self.options()}


@eqx.filter_jit
def _predict(model, data):
    return model.predict_prepared(data)


@eqx.filter_jit
def _predict_many(models, data, axes):
    return eqx.filter_vmap(lambda m: m.predict_prepared(data), in_axes=(axes,))(models)


def model_kind(values: Mapping[str, Any], source: str, default: str = "nqs") -> type:
    """The registered model class a parameters mapping names (its `"model"` key, else `default`).

    **Example:**

    >>> from nqs_engine._model._base import model_kind
    >>> model_kind({"model": "chinchilla"}, "x.json").__name__
    'Chinchilla'
    """
    kind = values.get("model", default)
    if not isinstance(kind, str) or kind not in MODEL_KINDS:
        known = sorted(MODEL_KINDS)
        hint = suggest(kind, known) if isinstance(kind, str) else ""
        raise ValueError(f"{source}: unknown model {kind!r}{hint}; known models: "
                         f"{', '.join(known)}")
    return MODEL_KINDS[kind]


def model_from_dict(values: Mapping[str, Any], source: str = "parameters") -> AbstractLossModel:
    """The model a parameters mapping describes (as written by [`AbstractLossModel.to_dict`][]).

    The `"model"` key picks the registered class (default `"nqs"`, for files that
    predate it); that class reads its parameters and options, refusing unknown
    keys (with the nearest known one) and missing or non-numeric values.

    **Example:**

    >>> import nqs_engine as nqs
    >>> from nqs_engine._model._base import model_from_dict
    >>> model = model_from_dict({"model": "chinchilla", "E": 1.69, "A": 406.4, "B": 410.7,
    ...                          "alpha": 0.34, "beta": 0.28})
    >>> type(model).__name__, round(float(model.params.E), 2)
    ('Chinchilla', 1.69)
    """
    if not isinstance(values, Mapping):
        raise ValueError(f"{source}: expected a JSON object of parameters, got a "
                         f"{type(values).__name__}")
    cls = model_kind(values, source)
    return cls.from_values({k: v for k, v in values.items() if k not in METADATA_KEYS
                            or k == "variant"}, source)


def number(value: Any, what: str) -> float:
    """A JSON value as a float; `ValueError` naming `what` for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{what} is too large: {value}") from None


def read_values(values: Mapping[str, Any], source: str, required: tuple[str, ...],
                optional: Mapping[str, Any] = {}) -> dict[str, Any]:
    """`required` numeric keys and `optional` ones (with defaults) of a parameters mapping.

    Every other key is refused (naming it and the nearest known key), as is a
    missing or non-numeric value. Returns floats (or the defaults).
    """
    known = (*required, *optional)
    for key in values:
        if key not in known:
            raise ValueError(f"{source}: unknown key {key!r}{suggest(str(key), known)}; "
                             f"expected {', '.join(required)}"
                             + (f" and optionally {', '.join(optional)}" if optional else ""))
    missing = [k for k in required if k not in values]
    if missing:
        raise ValueError(f"{source}: missing parameter(s) {', '.join(missing)}; expected all of "
                         f"{', '.join(required)}")
    out = {k: number(values[k], f"{source}: parameter {k!r}") for k in required}
    for k, default in optional.items():
        out[k] = default if values.get(k) is None else number(values[k], f"{source}: {k!r}")
    return out


__all__ = [
    "AbstractFitSpace",
    "AbstractLossModel",
    "FitDefaults",
    "METADATA_KEYS",
    "MODEL_KINDS",
    "model_from_dict",
    "model_kind",
    "number",
    "read_values",
]
