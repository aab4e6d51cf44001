r"""The NQS expected risk of constant and scheduled runs: the functional face.

[`risk`][] and [`schedule_risk`][] broadcast the parameters, $N$, the step size and
the schedules against each other, check every input, and sum the closed form of
`_kernel` over the directions with a [`nqs_engine.SumRule`][]. [`prepare_inputs`][]
is the shared front end (type checks, broadcasting, flattening and padding to
few row counts) of every functional evaluator: risk, trajectories, weight norm.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._breakdown import AbstractBreakdown
from .._chunk import bucket_rows, chunked_map, pad_rows
from .._custom_types import FloatArray, RealLike
from .._misc import positive_integer
from .._params import DEFAULT_LR, PARAM_NAMES, NQSParams
from .._quadrature import SumRule
from .._schedule import Schedule
from ._kernel import approximation_term, check_values, config_sum


class RiskBreakdown(AbstractBreakdown):
    r"""The NQS expected risk and its four terms, all of one broadcast shape.

    $L = e_{irr} + e_{appx} + e_{bias} + e_{var}$ with

    - `irreducible` $= e_{irr}$;
    - `approximation` $= \tfrac12 P\,\zeta(p, N + 1)$, the directions $n > N$ that
      a model of size $N$ cannot move;
    - `bias` $= \sum_{n \le N} \tfrac12 P n^{-p}\, b_n$, the initial excess risk not yet
      optimised away;
    - `variance` $= \sum_{n \le N} \tfrac12 \lambda_n R n^{-r}\, v_n$, the excess risk
      from gradient noise;
    - `total` $= L$.

    **Example:**

    >>> import nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> out = nqs.risk(params, N=1e8, B=256, K=10_000)
    >>> bool(abs(out.total - (out.irreducible + out.approximation + out.bias + out.variance)) < 1e-5)
    True
    """

    irreducible: FloatArray
    approximation: FloatArray
    bias: FloatArray
    variance: FloatArray
    total: FloatArray
    TERMS: ClassVar[tuple[str, ...]] = ("irreducible", "approximation", "bias", "variance")

    @classmethod
    def from_terms(cls, irreducible, approximation, bias, variance, shape=None) -> "RiskBreakdown":
        """The breakdown with `total` as the sum of the four terms (broadcast, then reshaped)."""
        terms = jnp.broadcast_arrays(irreducible, approximation, bias, variance)
        total = terms[0] + terms[1] + terms[2] + terms[3]
        parts = [*terms, total]
        if shape is not None:
            parts = [a.reshape(shape) for a in parts]
        names = ("irreducible", "approximation", "bias", "variance", "total")
        return cls(**dict(zip(names, parts)))


def float_array(x, name):
    """`x` as a floating JAX array (integers and booleans converted); ValueError naming `name`."""
    if isinstance(x, jax.Array):
        if jnp.issubdtype(x.dtype, jnp.floating):
            return x
        if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool:
            return x.astype(jnp.result_type(float))
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number or array, got {x!r}") from None
    return jnp.asarray(arr, dtype=jnp.result_type(float))


@eqx.filter_jit
def term_sums(theta, N, lrs, batches, steps, rule, batch_size, term, check=True, scan=False):
    """Sum of one risk term over directions for flat arrays of configurations.

    theta (7, C), N (C,), segments (C, S). Each term is its own compiled program
    with a single reduction per configuration: XLA's CPU backend fuses such a
    reduction with everything that feeds it, whereas two reductions sharing their
    producers force those producers into memory (several times slower).
    `check=False` skips the domain checks (the fitter's line searches probe
    far-away trial points and judge them by their value instead). `scan=True` scans
    the segments (see `_kernel.direction_terms`): the fitter's form, differentiated.
    """
    if check:
        N = check_values(theta, N, lrs, batches, steps, rule)

    def one(args):
        th, n, lr, b, k = args
        return config_sum(tuple(th), n, lr, b, k, rule, term, scan)

    return chunked_map(one, (theta.T, N, lrs, batches, steps), batch_size)


@eqx.filter_jit
def checked(theta, N, lrs, batches, steps, rule):
    """`N` after the domain checks of `check_values`, as a program of its own.

    `eqx.error_if` raises through a host callback, and JAX's persistent cache
    keeps no program holding one: with the checks apart, the large programs of
    `term_sums` load from the cache in a fresh process and only this small one
    is compiled again (tens of milliseconds instead of about a second).
    """
    return check_values(theta, N, lrs, batches, steps, rule)


def risk_terms(theta, N, lrs, batches, steps, rule, batch_size, check=True, scan=False):
    """The four risk terms (irreducible, approximation, bias, variance) for flat configurations
    (`scan` as in [`term_sums`][])."""
    if check:
        N = checked(theta, N, lrs, batches, steps, rule)
    bias = term_sums(theta, N, lrs, batches, steps, rule, batch_size, "bias", False, scan)
    variance = term_sums(theta, N, lrs, batches, steps, rule, batch_size, "variance", False,
                         scan)
    return theta[4], approximation_term(theta[0], theta[2], N, rule), bias, variance


def risk(
    params: NQSParams,
    N: RealLike,
    B: RealLike,
    K: RealLike,
    *,
    lr: RealLike = DEFAULT_LR,
    rule: SumRule = SumRule(),
    chunk: int = 2048,
) -> RiskBreakdown:
    r"""The NQS expected risk after $K$ SGD steps at batch size $B$ on a model of size $N$.

    For a constant schedule (step size $\gamma$ = `lr`, batch $B$, $K$ steps), with
    $\lambda_n = Q n^{-q}$ and $a_n = 1 - \gamma\lambda_n$:

    $$L = e_{irr} + \tfrac12 P\,\zeta(p, N+1)
       + \sum_{n=1}^{N} \tfrac12 P n^{-p} a_n^{2K}
       + \sum_{n=1}^{N} \tfrac12 \lambda_n R n^{-r}\,\frac{\gamma^2}{B}\,
         \frac{1 - a_n^{2K}}{1 - a_n^2}.$$

    Sums over $N$ up to $10^{12}$ directions are taken by [`nqs_engine.SumRule`][]
    (an exact head and a quadrature tail); relative error near 1e-12 in float64
    and 1e-6 in float32. $N$, $B$, $K$ are treated as continuous, so `jax.grad`
    and `jax.jacfwd` give derivatives in all of them and in every parameter
    (for $N <$ `rule.head` the sum is over $n \le \lfloor N \rfloor$).

    **Arguments:**

    - `params`: the [`nqs_engine.NQSParams`][]; its fields may carry batch shapes.
    - `N`, `B`, `K`: model size (directions), batch size, steps. Arrays broadcast
      against each other, against the fields of `params` and against `lr`.
    - `lr`: peak step size $\gamma_0$ (default 1.999).
    - `rule`: the quadrature structure (static).
    - `chunk`: configurations evaluated together; bounds memory for huge grids.
      The configurations are padded to one of few row counts (past 64 rows, at
      most 1/16 more work), so calls of nearby sizes share one compiled program.

    **Returns:** a [`nqs_engine.RiskBreakdown`][] of the broadcast shape.

    Out-of-domain values raise (through `eqx.error_if`, also under `jit` and
    `vmap`) an error naming the parameter and its range, as does a diverging step
    size ($\gamma Q \ge 2$). The computation runs in the floating dtype of the
    inputs: float32 unless the caller enabled `jax_enable_x64`.

    **Example:**

    >>> import jax, jax.numpy as jnp
    >>> import nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> out = nqs.risk(params, N=jnp.array([1e7, 1e8]), B=256, K=10_000, lr=lr)
    >>> out.total.shape
    (2,)
    >>> bool(out.total[1] < out.total[0])   # a bigger model reaches a lower loss
    True
    >>> dL_dN = jax.grad(lambda n: nqs.risk(params, n, 256.0, 1e4).total)(1e8)
    >>> bool(dL_dN < 0)
    True
    """
    B = float_array(B, "B")
    K = float_array(K, "K")
    segments = (jnp.ones((1,), B.dtype), B[..., None], K[..., None])
    prepared = prepare_inputs(params, N, lr, segments, rule, names=("B", "K"), chunk=chunk)
    return prepared.breakdown(*risk_terms(*prepared.flat, rule, prepared.batch))


class PreparedInputs(eqx.Module):
    """Inputs broadcast to one batch shape and flattened: theta (7, C), N (C,), segments (C, S).

    With bucketing (`prepare_inputs(chunk=...)`) the C rows are `size` configurations padded
    by repeating the last one (see `bucket_rows`); `breakdown` drops the padding and
    `batch` is the batch size of `chunked_map` over the rows.
    """

    theta: FloatArray
    N: FloatArray
    lr: FloatArray
    lrs: FloatArray
    batches: FloatArray
    steps: FloatArray
    extras: tuple
    shape: tuple = eqx.field(static=True)
    batch: int = eqx.field(static=True, default=1)

    @property
    def flat(self):
        return self.theta, self.N, self.lrs, self.batches, self.steps

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def breakdown(self, irreducible, approximation, bias, variance, shape=None) -> "RiskBreakdown":
        """The `RiskBreakdown` (of this batch shape, or `shape`) from the terms of the padded rows."""
        shape = self.shape if shape is None else tuple(shape)
        return _take_breakdown(irreducible, approximation, bias, variance, self.size, shape)


NO_BUCKET = object()


def prepare_inputs(params, N, lr, segments, rule, names=("schedule",), extras=(), chunk=NO_BUCKET):
    """Check types, broadcast params, N, lr, the segments' batch shape and `extras`; flatten.

    `segments` = (multipliers, batch sizes, steps), arrays whose last axis is the
    segment axis; step sizes are lr * multipliers. `extras` are further arrays
    (name, value) that broadcast like N. Given `chunk` (an int, None for no
    chunking, or a function of the number of configurations that returns one of
    those), the rows are padded to `bucket_rows(size, chunk)`, so that calls of
    nearby sizes share the compiled programs downstream.
    """
    if not isinstance(params, NQSParams):
        raise TypeError(f"params must be an NQSParams, got {type(params).__name__}")
    if not isinstance(rule, SumRule):
        raise TypeError(f"rule must be a SumRule, got {type(rule).__name__}")
    fields = [float_array(getattr(params, n), f"params.{n}") for n in PARAM_NAMES]
    N = float_array(N, "N")
    lr = float_array(lr, "lr")
    extra_arrays = [float_array(v, name) for name, v in extras]
    segs = [float_array(v, "schedule") for v in segments]
    scalars = [*fields, N, lr, *extra_arrays]
    dtype = jnp.result_type(*scalars, *segs)
    seg_shape = np.broadcast_shapes(*(a.shape for a in segs))
    S = seg_shape[-1]
    seg_batch = seg_shape[:-1]
    labels = [*PARAM_NAMES, "N", "lr", *(name for name, _ in extras)]
    try:
        shape = np.broadcast_shapes(*(a.shape for a in scalars), seg_batch)
    except ValueError:
        desc = ", ".join(f"{n}{a.shape}" for n, a in zip(labels, scalars))
        what = "/".join(names)
        raise ValueError(
            f"N, {what}, lr and the parameters must broadcast; got {desc}, {what}{seg_batch}"
        ) from None
    shape = tuple(shape)
    size = int(np.prod(shape, dtype=np.int64))
    if callable(chunk):
        chunk = chunk(size)
    elif chunk is not NO_BUCKET and chunk is not None:
        positive_integer(chunk, "chunk")
    rows, batch = (size, max(1, size)) if chunk is NO_BUCKET else bucket_rows(size, chunk)
    return _flatten_inputs(scalars, segs, shape, S, np.dtype(dtype), rows, batch)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _flatten_inputs(scalars, segs, shape, S, dtype, rows, batch):
    """The broadcasting, flattening and padding of `prepare_inputs` as one small compiled
    program (run op by op, its thirty-odd array operations each compile for every
    new shape, 0.2 s in all on a CPU)."""
    flat = [pad_rows(jnp.broadcast_to(a.astype(dtype), shape).reshape(-1), rows)
            for a in scalars]
    mult, batches, steps = (
        pad_rows(jnp.broadcast_to(a.astype(dtype), (*shape, S)).reshape(-1, S), rows)
        for a in segs
    )
    lr_f = flat[8]
    return PreparedInputs(
        theta=jnp.stack(flat[:7]),
        N=flat[7],
        lr=lr_f,
        lrs=lr_f[:, None] * mult,
        batches=batches,
        steps=steps,
        extras=tuple(flat[9:]),
        shape=shape,
        batch=batch,
    )


@functools.partial(jax.jit, static_argnums=(4, 5))
def _take_breakdown(irreducible, approximation, bias, variance, size, shape):
    """`RiskBreakdown.from_terms` of the first `size` rows, compiled as one program."""
    terms = (a[:size] for a in (irreducible, approximation, bias, variance))
    return RiskBreakdown.from_terms(*terms, shape=shape)


def schedule_risk(
    params: NQSParams,
    N: RealLike,
    schedule: Schedule,
    *,
    lr: RealLike = DEFAULT_LR,
    rule: SumRule = SumRule(),
    chunk: int = 2048,
) -> RiskBreakdown:
    r"""The NQS expected risk at the end of a piecewise-constant schedule.

    Segment $s$ runs $k_s$ steps at step size $\gamma_s = m_s\,\gamma_0$ ($\gamma_0$ =
    `lr`, $m_s$ = `schedule.lr`) and batch size $B_s$. Each direction starts at
    $b = 1$, $v = 0$ and, with $a_s = 1 - \gamma_s\lambda_n$,

    $$b \leftarrow b\,a_s^{2k_s}, \qquad
      v \leftarrow v\,a_s^{2k_s} + \frac{\gamma_s^2}{B_s}\frac{1 - a_s^{2k_s}}{1 - a_s^2};$$

    then bias $= \sum_{n \le N} \tfrac12 P n^{-p} b_n$ and variance
    $= \sum_{n \le N} \tfrac12 \lambda_n R n^{-r} v_n$, summed as in [`nqs_engine.risk`][]
    (same accuracy). The schedule's batch shape broadcasts against `N`, `lr` and
    the parameters; up to 16 segments are unrolled, longer schedules scanned.

    **Example:** annealing the step size lowers the final loss.

    >>> import nqs_engine as nqs
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> const = nqs.Schedule.constant(20_000, 256)
    >>> decay = nqs.Schedule.step_decay(20_000, 256, boundaries=(0.8,), factors=(0.1,))
    >>> a = nqs.schedule_risk(params, 1e8, const, lr=lr).total
    >>> b = nqs.schedule_risk(params, 1e8, decay, lr=lr).total
    >>> bool(b < a)
    True
    """
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    segments = (schedule.lr, schedule.batch, schedule.steps)
    prepared = prepare_inputs(params, N, lr, segments, rule, chunk=chunk)
    return prepared.breakdown(*risk_terms(*prepared.flat, rule, prepared.batch))


__all__ = ["RiskBreakdown", "risk", "schedule_risk"]
