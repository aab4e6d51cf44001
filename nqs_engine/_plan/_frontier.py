r"""The compute-optimal frontier: plans for many budgets, beside Chinchilla's allocation."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import numpy as np

from .._custom_types import RealLike
from .._model import Chinchilla, as_model
from .._model._chinchilla import ChinchillaParams, chinchilla_compute_optimal, chinchilla_loss
from ._plan import Plan, plan

class Frontier(eqx.Module):
    r"""The compute-optimal frontier of [`frontier`][]: NQS plans beside Chinchilla's allocation.

    **Fields** (one entry per budget): `compute`; the NQS [`Plan`][] `plan`;
    and, when Chinchilla parameters were given, `chinchilla_N`, `chinchilla_D`
    (tokens), its predicted `chinchilla_loss`, and `nqs_loss_at_chinchilla`: the
    NQS loss of Chinchilla's $(N, D)$ run at NQS's best batch size for that $N$
    (`nan` if that run is infeasible), i.e. what NQS predicts Chinchilla's
    choice costs.
    """

    compute: np.ndarray
    plan: Plan
    chinchilla_N: np.ndarray | None = None
    chinchilla_D: np.ndarray | None = None
    chinchilla_loss: np.ndarray | None = None
    nqs_loss_at_chinchilla: np.ndarray | None = None


def frontier(
    params: Any,
    compute: RealLike,
    *,
    seq_len: RealLike,
    lr: float | None = None,
    chinchilla: Any = None,
    **plan_options: Any,
) -> Frontier:
    r"""The compute-optimal $(N, B, K)$ and loss against compute $C$, beside Chinchilla's.

    Plans every budget in `compute` at once with [`plan`][] (`params` a loss model,
    or `NQSParams` with `lr`; keyword `plan_options` are passed on). With
    `chinchilla` (a [`nqs_engine.ChinchillaParams`][] or [`nqs_engine.Chinchilla`][]
    model), also Chinchilla's allocation
    $N_{opt}(C) = G (C/6)^{\beta/(\alpha+\beta)}$, $D_{opt} = C/(6 N_{opt})$, which has
    no batch size; NQS then scores that allocation at the batch size it would
    choose for that $N$ (a plan with $N$ fixed), so the two choices are
    compared on one model.

    **Example:**

    >>> import numpy as np, nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> ch = nqs.ChinchillaParams(E=2.186, A=245.8, B=451.3, alpha=0.404, beta=0.353)
    >>> f = nqs.frontier(params, np.geomspace(1e18, 1e21, 4), seq_len=128, lr=lr,
    ...                  chinchilla=ch, method="grid")
    >>> bool(np.all(np.diff(f.plan.N) > 0)), bool(np.all(np.diff(f.plan.loss) < 0))
    (True, True)
    >>> bool(np.all(f.plan.loss_exact <= f.nqs_loss_at_chinchilla + 1e-9))
    True
    """
    C = np.atleast_1d(np.asarray(compute, dtype=float))
    if C.ndim != 1:
        raise ValueError(f"compute must be a number or a 1-D array, got shape {C.shape}")
    model = as_model(params, lr, plan_options.pop("variant", None),
                            plan_options.pop("rule", None))
    best = plan(model, C, seq_len=seq_len, **plan_options)
    if chinchilla is None:
        return Frontier(compute=C, plan=best)
    if isinstance(chinchilla, Chinchilla):
        chinchilla = chinchilla.params
    if not isinstance(chinchilla, ChinchillaParams):
        raise TypeError(f"chinchilla must be a ChinchillaParams or a Chinchilla model, got "
                        f"{type(chinchilla).__name__}")
    n_opt, d_opt = (np.asarray(v, dtype=float) for v in chinchilla_compute_optimal(chinchilla, C))
    ch_loss = np.asarray(chinchilla_loss(chinchilla, n_opt, d_opt), dtype=float)
    # NQS's best run at Chinchilla's N: a plan with n_range pinned to that N.
    nqs_at = np.full(C.size, np.nan)
    options = {k: v for k, v in plan_options.items() if k != "n_range"}
    for i in range(C.size):  # one small plan per budget (its own pinned N range)
        try:
            at = plan(model, C[i], seq_len=seq_len, n_range=(n_opt[i], n_opt[i]), **options)
        except ValueError:
            continue
        nqs_at[i] = float(at.loss_exact)
    return Frontier(compute=C, plan=best, chinchilla_N=n_opt, chinchilla_D=d_opt,
                    chinchilla_loss=ch_loss, nqs_loss_at_chinchilla=nqs_at)


__all__ = ["Frontier", "frontier"]
