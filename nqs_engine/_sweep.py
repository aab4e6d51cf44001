r"""Large sweeps: a loss model over an outer-product grid, sharded over devices.

A sweep scores every cell of the grid $N \times B \times K$ (or $N \times B \times C$
at fixed compute) under one model, with its planning loss
([`nqs_engine.AbstractLossModel.planning_loss`][]: constant-schedule runs). The
grid is flattened, padded to a multiple of the device count and split into one
contiguous block per device (`jax.sharding.NamedSharding` over a one-axis
`Mesh`); inside a single `jax.jit`, `jax.shard_map` maps each device over its
own cells in chunks of fixed size, so a device holds its share of the result
and one chunk of work. The compiled program is cached per mesh, chunk, grid
shape and model structure: a second sweep of the same shape does not
recompile, whatever the parameters.

The mesh may span processes: started under `jax.distributed` (the
multi-controller runtime, one process per host), every process calls `sweep`
with the same arguments and `devices=jax.devices()`; each computes the cells
of its own devices and the grid is then all-gathered, so that every process
returns it whole. Each cell is computed by the same compiled arithmetic
whatever the number of devices or processes, so the grid is the same bit for
bit (tested on CPU with 1 to 4 devices and with 2 processes).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import equinox as eqx

from ._misc import positive_integer, positive_scalar, vector
from ._model import as_model
from ._quadrature import SumRule

#: Name of the single mesh axis the flattened grid is split along.
AXIS = "d"

#: Most cells of one call: cell indices stay below 2**31 (int32 without x64) with
#: room for the padding of up to 2**20 devices.
MAX_CELLS = 2**31 - 2**20

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
    - `devices`: the devices to shard over (default: all local devices). Pass
      `jax.devices()` after `jax.distributed.initialize(...)` to sweep on the
      devices of every process (each process must then call `sweep` with the
      same arguments, which is checked).
    - `chunk`: cells evaluated together on a device; bounds memory. Values depend
      on `chunk` in the last bits (the compiled arithmetic differs), never on the
      devices or processes.

    **Returns:** an array of shape `(len(N), len(B), len(K or compute))`, float64
    if the caller enabled `jax_enable_x64`, else float32. On several processes,
    a fully replicated global array: `np.asarray` gives each process the whole
    grid.

    **On several processes.** Launch one process per host (or per accelerator),
    the same script everywhere:

    ```python
    jax.distributed.initialize()   # SLURM / Open MPI: detected; else pass
                                   # coordinator_address="host0:1234", num_processes, process_id
    grid = np.asarray(nqs.sweep(model, N, B, K, devices=jax.devices()))
    if jax.process_index() == 0:
        np.save("grid.npy", grid)
    ```

    `nqs-engine sweep --coordinator HOST:PORT --num-processes M --process-id K`
    does the same in blocks of bounded memory and writes one file from process 0.

    Raises `ValueError` before any computation, naming the argument and the
    offending value (and its index), for an axis that is not 1-D, empty or out
    of range, a grid of more than `MAX_CELLS` cells, parameters outside the
    model's or the rule's domain, and (on several processes) arguments that
    differ between processes.

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
    if total > MAX_CELLS:
        raise ValueError(f"the grid has {total:,} cells; at most {MAX_CELLS:,} are supported "
                         "in one call (sweep larger grids in blocks of N, as "
                         "'nqs-engine sweep' does)")
    if model.shape != ():
        raise ValueError(f"params must be one parameter set, got a batch of shape {model.shape}; "
                         "sweep each set separately")
    positive_integer(chunk, "chunk")
    devices = tuple(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices is empty: give at least one device")
    if len(set(devices)) != len(devices):
        raise ValueError("devices lists a device more than once")

    processes = {d.process_index for d in devices}
    if jax.process_index() not in processes:
        raise ValueError(f"devices has none of this process's devices (it is process "
                         f"{jax.process_index()}; the devices are on process(es) "
                         f"{', '.join(map(str, sorted(processes)))})")

    dtype = jnp.result_type(float)
    mesh = Mesh(np.array(devices), (AXIS,))
    shape = tuple(a.size for a in axes)
    if len(processes) > 1:
        _check_same_everywhere(model, axes, seq, int(chunk), by_compute)
    program = _program(mesh, int(chunk), by_compute)
    flat = program(model, *_operands(axes, seq, dtype))
    if len(processes) > 1:
        return _gather(mesh, total, shape)(flat)
    return flat[:total].reshape(shape)


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

    `(model, N, B, X, seq_len, strides, total) -> loss`, X being K or the compute
    budgets, the arguments as [`_operands`][] makes them; the loss is flat over the
    grid (N slowest, X fastest), padded to a multiple of the device count and
    sharded along the mesh axis. The axes reach every device whole (they are
    small); each device derives its own cells from its position on the mesh, so
    a device holds its share of the result and one chunk of inputs, never a
    per-cell copy of the grid.
    """
    num_devices = mesh.devices.size

    def per_device(model, seq_len, N, B, X, strides, total):
        m = -(-total // num_devices)  # this device's share of the padded grid
        # Every block has exactly `chunk` cells, whatever the share, and there are at
        # least two (XLA inlines a loop of one trip and compiles its body differently):
        # a cell's value then comes from the same compiled arithmetic on any number of
        # devices or processes, bit for bit.
        blocks = max(2, -(-m // chunk))
        first = jax.lax.axis_index(AXIS) * m

        def block(index):
            local = jnp.minimum(index * chunk + jnp.arange(chunk), m - 1)
            # Padding cells repeat the last cell: valid inputs, dropped by the caller.
            cell = jnp.minimum(first + local, total - 1)
            i, rest = jnp.divmod(cell, strides[0])
            j, k = jnp.divmod(rest, strides[1])
            n, b, x = N[i], B[j], X[k]
            if not by_compute:
                return model.planning_loss(n, b, x, seq_len)
            steps = x / (6 * n * b * seq_len)
            feasible = steps >= 1
            loss = model.planning_loss(n, b, jnp.where(feasible, steps, 1), seq_len)
            return jnp.where(feasible, loss, jnp.inf)

        return jax.lax.map(block, jnp.arange(blocks)).reshape(-1)[:m]

    @eqx.filter_jit
    def run(model, N, B, X, seq_len, strides, total):
        mapped = jax.shard_map(
            functools.partial(per_device, total=total),
            mesh=mesh,
            in_specs=(P(), P(), P(), P(), P(), P()),
            out_specs=P(AXIS),
        )
        return mapped(model, seq_len, N, B, X, strides)

    return run


def _operands(axes: Sequence[np.ndarray], seq: float, dtype) -> tuple:
    """The arguments after `model` of a [`_program`][] for the grid of `axes`.

    Each axis is padded to at least two points (repeating its last) and the
    strides of the flat cell index are runtime values: the compiled program then
    cannot specialise on an axis of one point (a gather from it folded to a
    broadcast, products of broadcasts reassociated), so a cell's value does not
    depend on the grid it belongs to, and a grid swept in blocks equals the
    grid swept at once, bit for bit.
    """
    N, B, X = (np.concatenate([a, a[-1:]]) if a.size == 1 else a for a in axes)
    strides = np.array([axes[1].size * axes[2].size, axes[2].size])
    return (jnp.asarray(N, dtype), jnp.asarray(B, dtype), jnp.asarray(X, dtype),
            jnp.asarray(seq, dtype), jnp.asarray(strides), math.prod(a.size for a in axes))


@functools.lru_cache(maxsize=32)
def _gather(mesh: Mesh, total: int, shape: tuple[int, ...]):
    """Trim the padded flat loss and reshape it to the grid, replicated on every device
    of `mesh` (across processes: an all-gather, so that every process holds the grid)."""
    return jax.jit(lambda flat: flat[:total].reshape(shape),
                   out_shardings=NamedSharding(mesh, P()))


def _check_same_everywhere(model: Any, axes: Sequence[np.ndarray], seq: float, chunk: int,
                           by_compute: bool) -> None:
    """Refuse (ValueError, on every process) a sweep whose processes disagree on its inputs.

    Under the multi-controller runtime every process runs the same program on its
    own copy of the arguments; different copies would silently mix two grids.
    One small all-gather of a digest of the arguments rules that out.
    """
    from jax.experimental import multihost_utils

    digest = hashlib.sha256(repr((jax.tree_util.tree_structure(model), chunk, by_compute,
                                  seq)).encode())
    for a in (*axes, *jax.tree_util.tree_leaves(model)):
        a = np.asarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    mine = np.frombuffer(digest.digest(), np.uint8).astype(np.int32)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, mine.size)
    differ = [p for p in range(every.shape[0]) if not np.array_equal(every[p], every[0])]
    if differ:
        raise ValueError(f"sweep on {every.shape[0]} processes: process(es) "
                         f"{', '.join(map(str, differ))} passed other N, B, K (or compute), "
                         "seq_len, chunk or model than process 0; every process must call "
                         "sweep with the same arguments")


__all__ = ["sweep"]
