"""The seven NQS parameters, their domain, and named presets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._custom_types import FloatArray

from ._presets import DEFAULT_LR as DEFAULT_LR
from ._presets import PARAM_NAMES as PARAM_NAMES
from ._presets import PRESETS as PRESETS

# name -> (lower bound, inclusive?, human-readable domain)
_DOMAIN = {
    "p": (1.0, False, "p > 1 (the tail sum over directions must converge)"),
    "q": (0.0, False, "q > 0"),
    "P": (0.0, False, "P > 0"),
    "Q": (0.0, False, "Q > 0"),
    "e_irr": (0.0, True, "e_irr >= 0"),
    "R": (0.0, False, "R > 0"),
    "r": (-math.inf, False, "r finite"),
}


class NQSParams(eqx.Module):
    r"""The parameters $\theta = (p, q, P, Q, e_{irr}, R, r)$ of the Noisy Quadratic System.

    In direction $n = 1, 2, \ldots$ of the quadratic's eigenbasis:

    - curvature $\lambda_n = Q n^{-q}$;
    - expected initial excess risk $\tfrac12 P n^{-p}$;
    - per-example gradient-noise variance $R n^{-r}$ (a batch of $B$ divides it by $B$);
    - $e_{irr}$ is the irreducible loss.

    The model is valid for $p > 1$, $q > 0$, $P, Q, R > 0$ and $e_{irr} \ge 0$.
    Every field is an array leaf, so a batch of parameter sets is one
    `NQSParams` whose leaves carry a leading batch shape (they broadcast against
    each other and against $N, B, K$ in [`nqs_engine.risk`][]); `jax.vmap` and
    `jax.grad` reach every field.

    Values are not checked on construction (a traced value cannot be); call
    [`nqs_engine.check_params`][] for an eager check with a readable message.
    [`nqs_engine.risk`][] checks them again with `eqx.error_if` under `jit`.

    **Arguments:** `p, q, P, Q, e_irr, R, r`, each a real number or array.

    **Example:**

    >>> import nqs_engine as nqs
    >>> theta = nqs.NQSParams(p=1.5, q=1.0, P=10.0, Q=1.0, e_irr=1.0, R=1.0, r=1.0)
    >>> float(theta.p)
    1.5
    >>> sorted(theta.to_dict())
    ['P', 'Q', 'R', 'e_irr', 'p', 'q', 'r']
    """

    p: FloatArray = eqx.field(converter=jnp.asarray)
    q: FloatArray = eqx.field(converter=jnp.asarray)
    P: FloatArray = eqx.field(converter=jnp.asarray)
    Q: FloatArray = eqx.field(converter=jnp.asarray)
    e_irr: FloatArray = eqx.field(converter=jnp.asarray)
    R: FloatArray = eqx.field(converter=jnp.asarray)
    r: FloatArray = eqx.field(converter=jnp.asarray)

    def __check_init__(self):
        shapes = []
        for name in PARAM_NAMES:
            value = getattr(self, name)
            if not (
                jnp.issubdtype(value.dtype, jnp.floating)
                or jnp.issubdtype(value.dtype, jnp.integer)
            ):
                raise ValueError(
                    f"NQSParams.{name} must be real-valued, got dtype {value.dtype}"
                )
            shapes.append(value.shape)
        try:
            np.broadcast_shapes(*shapes)
        except ValueError:
            desc = ", ".join(f"{n}{s}" for n, s in zip(PARAM_NAMES, shapes))
            raise ValueError(
                f"NQSParams fields must broadcast against each other; got shapes {desc}"
            ) from None

    @property
    def shape(self) -> tuple[int, ...]:
        """The broadcast batch shape of the seven fields (`()` for one parameter set)."""
        return np.broadcast_shapes(*(getattr(self, n).shape for n in PARAM_NAMES))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict of Python floats (scalar) or nested lists (batched).

        **Example:**

        >>> import nqs_engine as nqs
        >>> nqs.NQSParams(1.5, 1.0, 10.0, 1.0, 1.0, 1.0, 1.0).to_dict()["P"]
        10.0
        """
        return {n: np.asarray(getattr(self, n)).tolist() for n in PARAM_NAMES}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "NQSParams":
        """Build from a mapping holding the seven keys `p, q, P, Q, e_irr, R, r`.

        Extra keys are ignored (a PARAMS.json may carry `lr`, diagnostics, ...);
        a missing or non-numeric key raises `ValueError` naming it.

        **Example:**

        >>> import nqs_engine as nqs
        >>> d = dict(p=1.5, q=1.0, P=10.0, Q=1.0, e_irr=1.0, R=1.0, r=1.0, lr=1.999)
        >>> float(nqs.NQSParams.from_dict(d).Q)
        1.0
        """
        missing = [n for n in PARAM_NAMES if n not in values]
        if missing:
            raise ValueError(
                f"missing NQS parameter(s) {', '.join(missing)}; "
                f"expected all of {', '.join(PARAM_NAMES)}"
            )
        kwargs = {}
        for name in PARAM_NAMES:
            value = values[name]
            if isinstance(value, bool) or value is None:
                raise ValueError(f"NQS parameter {name!r} must be a number, got {value!r}")
            try:
                kwargs[name] = np.asarray(value, dtype=float)
            except (TypeError, ValueError):
                raise ValueError(
                    f"NQS parameter {name!r} must be a number, got {value!r}"
                ) from None
        return cls(**kwargs)


def check_params(params: NQSParams, lr: Any = DEFAULT_LR) -> None:
    r"""Eagerly check that `params` (and the step size `lr`) lie in the model's domain.

    Raises `ValueError` naming the first offending parameter, its value and the
    valid range: $p > 1$, $q > 0$, $P, Q, R > 0$, $e_{irr} \ge 0$, $r$ finite,
    $\gamma > 0$, and stability of the top direction, $\gamma Q < 2$
    (otherwise $|1 - \gamma\lambda_1| \ge 1$ and SGD diverges).
    Needs concrete values: call it outside `jit` (inside, [`nqs_engine.risk`][]
    performs the same checks with `eqx.error_if`).

    **Example:**

    >>> import nqs_engine as nqs
    >>> bad = nqs.NQSParams(p=0.9, q=1.0, P=10.0, Q=1.0, e_irr=1.0, R=1.0, r=1.0)
    >>> nqs.check_params(bad)
    Traceback (most recent call last):
    ...
    ValueError: parameter p = 0.9 is outside its domain: p > 1 (the tail sum over directions must converge)
    """
    for name in PARAM_NAMES:
        value = np.asarray(getattr(params, name), dtype=float)
        lower, inclusive, domain = _DOMAIN[name]
        bad = ~np.isfinite(value) | ((value < lower) if inclusive else (value <= lower))
        if np.any(bad):
            idx = np.argwhere(np.atleast_1d(bad))[0]
            where = "" if value.ndim == 0 else f" (at index {tuple(int(i) for i in idx)})"
            v = float(np.atleast_1d(value)[tuple(idx)])
            raise ValueError(f"parameter {name} = {v:g}{where} is outside its domain: {domain}")
    lr_arr = np.asarray(lr, dtype=float)
    if np.any(~np.isfinite(lr_arr) | (lr_arr <= 0)):
        raise ValueError(f"step size lr = {lr_arr.ravel()[0]:g} must be positive and finite")
    edge = lr_arr * np.asarray(params.Q, dtype=float)
    if np.any(edge >= 2):
        v = float(np.max(edge))
        raise ValueError(
            f"step size diverges: lr * Q = {v:g} >= 2, so |1 - lr * lambda_1| >= 1 and "
            "SGD blows up in the top direction; lower lr or Q"
        )


def preset(name: str) -> tuple[NQSParams, float]:
    """The named parameter preset and its step size, as `(params, lr)`.

    Presets: `"pythia-owt2"`, the reference implementation's published fit to the
    Pythia / OpenWebText2 ladder (non-embedding N, sequences of 128 tokens).

    **Example:**

    >>> import nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> round(float(params.p), 4), lr
    (1.1131, 1.999)
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    values = PRESETS[name]
    return NQSParams.from_dict(values), float(values["lr"])
