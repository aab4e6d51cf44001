r"""Large sweeps: a loss model over an outer-product grid, sharded over devices.

A sweep scores every cell of the grid $N \times B \times K$ (or $N \times B \times C$
at fixed compute) under one model, with its planning loss
([`nqs_engine.AbstractLossModel.planning_loss`][]: constant-schedule runs). The
grid is flattened, padded to a multiple of the device count and split into one
contiguous block per device (`jax.sharding.NamedSharding` over a one-axis
`Mesh`); inside a single `jax.jit`, `jax.shard_map` maps each device over its
own cells in chunks, so memory per device stays bounded by the chunk. The
compiled program is cached per mesh, chunk, grid shape and model structure: a
second sweep of the same shape does not recompile, whatever the parameters.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import equinox as eqx

from ._chunk import chunked_map
from ._misc import positive_scalar, vector
from ._model import as_model
from ._quadrature import SumRule

#: Name of the single mesh axis the flattened grid is split along.
AXIS = "d"

# name -> (test on finite float64 values, requirement in words, meaning)
_AXES = {
    "N": (lambda v: v >= 1, ">= 1", "model sizes"),
    "B": (lambda v: v > 0, "> 0", "batch sizes"),
    "K": (lambda v: v >= 0, ">= 0", "step counts"),
    "compute": (lambda v: v > 0, "> 0", "compute budgets (FLOPs)"),
}


def sweep(
    params: Any,
    N: Any,
    B: Any,
    K: Any = None,
    *,
    compute: Any = None,
    seq_len: float | None = None,
    lr: float | None = None,
    rule: SumRule | None = None,
    devices: Sequence[jax.Device] | None = None,
    chunk: int = 2048,
) -> jax.Array:
    r"""A loss model's constant-schedule loss over the grid $N \times B \times K$.

    `params` is a loss model ([`nqs_engine.NQS`][], [`nqs_engine.Chinchilla`][], ...) or
    `NQSParams` with the step size `lr` (the plain NQS). For the plain NQS, with
    $\lambda_n = Q n^{-q}$ and $a_n = 1 - \gamma\lambda_n$ ($\gamma$ = `lr`),
    cell $(i, j, k)$ holds

    $$L(N_i, B_j, K_k) = e_{irr} + \tfrac12 P\,\zeta(p, N_i+1)
       + \sum_{n \le N_i} \tfrac12 P n^{-p} a_n^{2K_k}
       + \sum_{n \le N_i} \tfrac12 \lambda_n R n^{-r}\,\frac{\gamma^2}{B_j}\,
         \frac{1 - a_n^{2K_k}}{1 - a_n^2},$$

    the same value as `nqs_engine.risk(params, N[:, None, None], B[None, :, None],
    K[None, None, :], lr=lr, rule=rule).total`, computed on all `devices` at once.

    **At fixed compute.** Pass `compute=C` (FLOPs, a 1-D array) and `seq_len`
    (tokens per sequence) instead of `K`: the grid is then $N \times B \times C$
    and each cell runs the (continuous, not rounded) number of steps

    $$K = \frac{C}{6\,N\,B\,\mathrm{seq\_len}}$$

    that spends its budget at $6N$ FLOPs per token. A cell with $K < 1$ cannot
    take a single step within its budget: it is *infeasible* and holds `inf`
    (not `nan`: `inf` is a valid "worse than anything" loss, so `argmin` over
    $N$ or $B$ at fixed $C$ skips infeasible cells, while a `nan` would poison
    `min` and `argmin`).

    **Arguments:**

    - `params`: one loss model, or one [`nqs_engine.NQSParams`][] (scalar fields).
    - `N`, `B`: 1-D arrays of model sizes ($\ge 1$) and batch sizes ($> 0$).
    - `K`: 1-D array of step counts ($\ge 0$); give exactly one of `K` and `compute`.
    - `compute`: 1-D array of compute budgets in FLOPs ($> 0$), with `seq_len` ($> 0$).
    - `lr`: with `NQSParams`, the constant step size $\gamma$ (default 1.999).
    - `rule`: with `NQSParams`, the quadrature; the default `PLAN_RULE` has a
      relative error below 1e-8 and is about 2.7 times faster than
      [`nqs_engine.SumRule`][]`()`. A model uses its `search_rule`.
    - `devices`: the devices to shard over (default: all local devices).
    - `chunk`: cells evaluated together on a device; bounds memory.

    **Returns:** an array of shape `(len(N), len(B), len(K or compute))`, float64
    if the caller enabled `jax_enable_x64`, else float32.

    Raises `ValueError` before any computation, naming the argument and the
    offending value (and its index), for an axis that is not 1-D, empty or out
    of range, and for parameters outside the model's or the rule's domain.

    **Example:**

    >>> import jax.numpy as jnp, nqs_engine as nqs
    >>> from nqs_engine import sweep
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> N, B, K = jnp.array([1e7, 1e8, 1e9]), jnp.array([64.0, 256.0]), jnp.array([1e3, 1e4, 1e5])
    >>> L = sweep(params, N, B, K, lr=lr, rule=nqs.SumRule())
    >>> L.shape
    (3, 2, 3)
    >>> ref = nqs.risk(params, N[:, None, None], B[None, :, None], K, lr=lr).total
    >>> bool(jnp.all(jnp.abs(L - ref) <= 1e-5 * ref))
    True
    >>> at_C = sweep(params, N, B, compute=jnp.array([1e12, 1e18]), seq_len=128, lr=lr)
    >>> at_C.shape
    (3, 2, 2)
    >>> at_C[:, :, 0].tolist()   # 1e12 FLOPs: 2 steps of (1e7, 64), under 1 step elsewhere
    [[..., inf], [inf, inf], [inf, inf]]
    """
    model = as_model(params, lr, None, rule)
    by_compute = compute is not None
    if by_compute == (K is not None):
        raise ValueError("give exactly one of K (step counts) and compute (FLOP budgets)")
    if by_compute:
        if seq_len is None:
            raise ValueError("compute needs seq_len (tokens per sequence)")
        seq = positive_scalar(seq_len, "seq_len")
    elif seq_len is not None:
        raise ValueError("seq_len is only used with compute; with K it has no effect")
    else:
        seq = 1.0
    axes = [_axis(N, "N"), _axis(B, "B"), _axis(compute if by_compute else K,
                                                 "compute" if by_compute else "K")]
    total = math.prod(a.size for a in axes)
    if total >= 2**31 - 1:
        raise ValueError(f"the grid has {total:,} cells; at most {2**31 - 2:,} are supported")
    if model.shape != ():
        raise ValueError(f"params must be one parameter set, got a batch of shape {model.shape}; "
                         "sweep each set separately")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    devices = tuple(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices is empty: give at least one device")
    if len(set(devices)) != len(devices):
        raise ValueError("devices lists a device more than once")

    dtype = jnp.result_type(float)
    mesh = Mesh(np.array(devices), (AXIS,))
    program = _program(mesh, int(chunk), by_compute)
    flat = program(model, *(jnp.asarray(a, dtype) for a in axes), jnp.asarray(seq, dtype))
    return flat[:total].reshape(tuple(a.size for a in axes))


def _axis(values: Any, name: str) -> np.ndarray:
    """`values` as a 1-D float64 NumPy array, checked against the range of axis `name`."""
    test, requirement, meaning = _AXES[name]
    if np.ndim(values) != 1:
        raise ValueError(f"{name} must be a 1-D array of {meaning}, got shape {np.shape(values)}")
    return vector(values, name, check=test,
                  requirement=f"is out of range: {meaning} must be finite and {requirement}")


@functools.lru_cache(maxsize=32)
def _program(mesh: Mesh, chunk: int, by_compute: bool):
    """The jitted sweep for one mesh, chunk and mode (jit caches shapes and model structure).

    `(model, N, B, X, seq_len) -> loss`, X being K or the compute budgets; the
    loss is flat over the grid (N slowest, X fastest), padded to a multiple of
    the device count and sharded along the mesh axis.
    """
    sharding = NamedSharding(mesh, P(AXIS))
    num_devices = mesh.devices.size

    def per_device(model, seq_len, n, b, k):
        m = n.shape[0]
        size = min(chunk, m)
        blocks = -(-m // size)

        def block(cells):
            return model.planning_loss(*cells, seq_len)

        shaped = [jnp.pad(v, (0, blocks * size - m), mode="edge").reshape(blocks, size)
                  for v in (n, b, k)]
        return chunked_map(block, tuple(shaped), 1).reshape(-1)[:m]

    mapped = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(), P(), P(AXIS), P(AXIS), P(AXIS)),
        out_specs=P(AXIS),
    )

    @eqx.filter_jit
    def run(model, N, B, X, seq_len):
        nB, nX = B.shape[0], X.shape[0]
        total = N.shape[0] * nB * nX
        padded = -(-total // num_devices) * num_devices
        # Padding cells repeat the last cell: valid inputs, dropped by the caller.
        cell = jnp.minimum(jnp.arange(padded), total - 1)
        i, rest = jnp.divmod(cell, nB * nX)
        j, k = jnp.divmod(rest, nX)
        n, b, x = (jax.lax.with_sharding_constraint(v, sharding) for v in (N[i], B[j], X[k]))
        if not by_compute:
            return mapped(model, seq_len, n, b, x)
        steps = x / (6 * n * b * seq_len)
        feasible = steps >= 1
        out = mapped(model, seq_len, n, b, jnp.where(feasible, steps, 1))
        return jnp.where(feasible, out, jnp.inf)

    return run


__all__ = ["sweep"]
