r"""Monte-Carlo simulation of SGD on a finite noisy quadratic, to check the closed form.

The closed form of [`nqs_engine.risk`][] is the expectation of the loss of SGD on
a random noisy quadratic; this module runs that SGD, seed by seed, so that tests
can compare the two statistically. It is a reference, not a fast path: the cost
is `num_seeds * N * K` Gaussian draws.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import FloatArray, FloatScalar, RealLike
from ._misc import vector
from ._params import DEFAULT_LR, PARAM_NAMES, NQSParams, check_params
from ._quadrature import hurwitz_zeta


class SimulationResult(eqx.Module):
    r"""Monte-Carlo estimate of the NQS loss from independent SGD runs (seeds).

    Seed $i$ has weights $w^{(i)} = w^{(i)}_{bias} + w^{(i)}_{noise}$ after the run
    (see [`nqs_engine.simulate_sgd`][]) and loss

    $$\ell_i = e_{irr} + \tfrac12 P\,\zeta(p, N+1)
      + \tfrac12 \sum_{n=1}^N \lambda_n \big(w^{(i)}_n\big)^2 .$$

    **Fields:**

    - `mean`: $\bar\ell$, the sample mean of the losses; estimates `risk(...).total`.
    - `stderr`: its standard error, $s_\ell / \sqrt{S}$ (sample standard deviation
      with $S - 1$ degrees of freedom, $S$ seeds).
    - `excess_bias_mean`, `excess_bias_stderr`: mean and standard error of
      $\tfrac12 \sum_n \lambda_n (w_{bias,n})^2$, the noise-free iterate's excess
      risk; estimates `risk(...).bias`.
    - `excess_variance_mean`, `excess_variance_stderr`: the same for
      $\tfrac12 \sum_n \lambda_n (w_{noise,n})^2$, the iterate driven by gradient
      noise alone from $w = 0$; estimates `risk(...).variance`.
    - `losses`: the per-seed losses $\ell_i$, shape `(num_seeds,)`.

    The cross term $\sum_n \lambda_n w_{bias,n} w_{noise,n}$ has mean zero (the
    noise is independent of the initial weights), so
    `mean` $\approx e_{irr} + e_{appx}$ + `excess_bias_mean` + `excess_variance_mean`
    up to Monte-Carlo error.
    """

    mean: FloatScalar
    stderr: FloatScalar
    excess_bias_mean: FloatScalar
    excess_bias_stderr: FloatScalar
    excess_variance_mean: FloatScalar
    excess_variance_stderr: FloatScalar
    losses: FloatArray


_MAX_STEPS = 2**31 - 1


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _concrete_vector(x: Any, name: str, num: int) -> np.ndarray:
    """A finite float64 vector of `num` entries (a scalar is repeated), or a ValueError."""
    if isinstance(x, jax.core.Tracer):
        raise ValueError(
            f"{name} must be concrete: simulate_sgd checks its inputs eagerly, "
            "call it outside jit / vmap"
        )
    return vector(x, name, size=num, broadcast="scalar", meaning="one entry per segment")


def _segments(B, K, lr, segments):
    """Validate the run's description; return (lrs, batches) as float64 numpy, steps as ints."""
    if segments is None:
        if B is None or K is None:
            raise ValueError("B and K are required unless segments is given")
        if not _is_int(K) or K < 0:
            raise ValueError(f"K (steps) must be a non-negative Python int, got {K!r}")
        lrs = _concrete_vector(DEFAULT_LR if lr is None else lr, "lr", 1)
        batches = _concrete_vector(B, "B", 1)
        steps = (int(K),)
    else:
        if B is not None or K is not None or lr is not None:
            raise ValueError(
                "pass either (B, K, lr) for a constant run or segments, not both; "
                "with segments, leave B and K as None and lr unset"
            )
        if not isinstance(segments, Sequence) or len(segments) != 3:
            raise ValueError(
                "segments must be a triple (lrs, batch_sizes, steps) of per-segment values"
            )
        lrs_in, batches_in, steps_in = segments
        if not isinstance(steps_in, Sequence) or len(steps_in) == 0:
            raise ValueError(
                f"segments' steps must be a non-empty sequence of Python ints, got {steps_in!r}"
            )
        if not all(_is_int(k) and k >= 0 for k in steps_in):
            raise ValueError(
                f"segments' steps must be non-negative Python ints, "
                f"got {list(steps_in)!r}"
            )
        steps = tuple(int(k) for k in steps_in)
        lrs = _concrete_vector(lrs_in, "segments' lrs", len(steps))
        batches = _concrete_vector(batches_in, "segments' batch sizes", len(steps))
    if np.any(batches <= 0):
        raise ValueError(f"batch sizes must be > 0, got {batches.tolist()}")
    if sum(steps) > _MAX_STEPS:
        raise ValueError(
            f"at most {_MAX_STEPS} steps in all (an int32 step counter), got {sum(steps)}"
        )
    return lrs, batches, steps


def _standard_normal(key, N, dtype):
    """N standard normals, drawn in float32 and cast to `dtype`.

    Threefry float64 normals are about 3x slower to draw and to compile; the
    2^-24 quantisation of float32 draws is far below any Monte-Carlo error that
    a feasible number of seeds can resolve.
    """
    return jax.random.normal(key, (N,), jnp.float32).astype(dtype)


@eqx.filter_jit
def _simulate(theta, lrs, batches, steps, key, *, N: int, num_seeds: int):
    """Per-seed (loss, excess bias, excess variance), each of shape (num_seeds,).

    `N`, `num_seeds` and the number of segments fix the program; the step sizes,
    batch sizes and step counts are traced (a new `K` does not recompile).
    """
    p, q, P, Q, e_irr, R, r = theta
    dtype = theta.dtype
    n = jnp.arange(1, N + 1, dtype=dtype)
    lam = Q * n**-q
    init_std = jnp.sqrt(P * n**-p / lam)  # so that (1/2) lam E[w0^2] = (1/2) P n^-p
    per_example_std = jnp.sqrt(R * n**-r)
    num_segments = lrs.shape[0]

    def one_seed(seed_key):
        init_key, noise_key = jax.random.split(seed_key)
        w_bias = init_std * _standard_normal(init_key, N, dtype)
        w_noise = jnp.zeros((N,), dtype)
        done = 0  # steps taken so far: step t of the run draws from fold_in(noise_key, t)
        for s in range(num_segments):  # static number of segments
            gamma = lrs[s]
            noise_std = per_example_std / jnp.sqrt(batches[s])

            def step(t, carry, gamma=gamma, noise_std=noise_std):
                wb, wn = carry
                xi = noise_std * _standard_normal(jax.random.fold_in(noise_key, t), N, dtype)
                wb = wb - gamma * (lam * wb)
                wn = wn - gamma * (lam * wn + xi)
                return wb, wn

            w_bias, w_noise = jax.lax.fori_loop(done, done + steps[s], step, (w_bias, w_noise))
            done = done + steps[s]
        excess = 0.5 * jnp.sum(lam * (w_bias + w_noise) ** 2)
        excess_bias = 0.5 * jnp.sum(lam * w_bias**2)
        excess_variance = 0.5 * jnp.sum(lam * w_noise**2)
        return excess, excess_bias, excess_variance

    excess, excess_bias, excess_variance = jax.vmap(one_seed)(jax.random.split(key, num_seeds))
    approximation = 0.5 * P * hurwitz_zeta(p, jnp.asarray(N + 1, dtype))
    return e_irr + approximation + excess, excess_bias, excess_variance


def _mean_stderr(x):
    return jnp.mean(x), jnp.std(x, ddof=1) / math.sqrt(x.shape[0])


def simulate_sgd(
    params: NQSParams,
    N: int,
    B: Optional[RealLike],
    K: Optional[int],
    *,
    key: jax.Array,
    lr: Optional[RealLike] = None,
    num_seeds: int = 4096,
    segments: Optional[tuple[RealLike, RealLike, Sequence[int]]] = None,
) -> SimulationResult:
    r"""Monte-Carlo SGD on an $N$-dimensional noisy quadratic: the NQS loss, simulated.

    In the eigenbasis, directions $n = 1..N$, with $\lambda_n = Q n^{-q}$, each seed
    draws independent initial weights and, at every step $t$, independent
    gradient noise,

    $$w_{0,n} \sim \mathcal N\!\big(0,\, P n^{-p} / \lambda_n\big), \qquad
      \xi_{t,n} \sim \mathcal N\!\big(0,\, R n^{-r} / B_s\big),$$

    and takes the SGD steps of each segment $s$ in turn (step size $\gamma_s$,
    batch size $B_s$, $k_s$ steps)

    $$w_{t+1,n} = w_{t,n} - \gamma_s\,(\lambda_n w_{t,n} + \xi_{t,n}).$$

    The loss of a seed is
    $e_{irr} + \tfrac12 P\,\zeta(p, N+1) + \tfrac12 \sum_{n \le N} \lambda_n w_{K,n}^2$
    (directions $n > N$ never move, so their expected excess risk, the
    approximation term, is added exactly). Its expectation is the closed form
    [`nqs_engine.risk`][]. By linearity $w = w_{bias} + w_{noise}$, where
    $w_{bias}$ follows the same recursion without noise from $w_0$ and
    $w_{noise}$ the recursion with noise from $0$; both are simulated, and
    their excess risks estimate `risk(...).bias` and `risk(...).variance`.

    Seeds run in parallel under `jax.vmap`, the steps of a segment under
    `jax.lax.fori_loop`. The program compiles once per `N`, `num_seeds`, number
    of segments and dtype; step sizes, batch sizes and step counts are traced,
    so a new `K` or `lr` does not recompile. Step $t$ of the run (counted over
    all segments) draws its noise from `fold_in(noise_key, t)`, one noise key
    per seed, so splitting a segment in two leaves every seed's loss unchanged.
    Runs in float64 when the caller enabled `jax_enable_x64`, otherwise float32
    (the standard normals themselves are drawn in float32 either way, for
    speed; their quantisation is far below the Monte-Carlo error). Inputs are
    checked eagerly: call it outside `jit`. Cost: `num_seeds * N * K` draws.

    **Arguments:**

    - `params`: a scalar [`nqs_engine.NQSParams`][].
    - `N`: the number of directions, a positive Python int.
    - `B`: batch size (> 0) of a constant run; `None` when `segments` is given.
    - `K`: steps of a constant run, a non-negative Python int; `None` with `segments`.
    - `key`: a `jax.random` key; the result is a deterministic function of it.
    - `lr`: step size $\gamma$ of a constant run (default 1.999); leave unset with
      `segments`.
    - `num_seeds`: independent runs, at least 2.
    - `segments`: a schedule `(lrs, batch_sizes, steps)`: two length-$S$ arrays and
      a sequence of $S$ non-negative Python ints. A constant run is
      `([lr], [B], [K])`.

    **Returns:** a `SimulationResult` (mean loss, its standard error, the bias and
    variance components and the per-seed losses).

    Raises `ValueError` for an invalid `N`, `K`, `num_seeds` or schedule, for
    parameters outside the model's domain, and for a diverging step size
    ($\gamma_s Q \ge 2$ in any segment).

    **Example:**

    >>> import jax
    >>> import nqs_engine as nqs
    >>> params = nqs.NQSParams(p=1.5, q=1.0, P=2.0, Q=1.0, e_irr=0.5, R=1.0, r=1.0)
    >>> sim = nqs.simulate_sgd(params, 16, 4.0, 20, key=jax.random.key(0), num_seeds=256)
    >>> sim.losses.shape
    (256,)
    >>> exact = nqs.risk(params, 16, 4.0, 20).total
    >>> bool(abs(sim.mean - exact) < 5 * sim.stderr)
    True
    """
    if not isinstance(params, NQSParams):
        raise TypeError(f"params must be an NQSParams, got {type(params).__name__}")
    if any(isinstance(getattr(params, name), jax.core.Tracer) for name in PARAM_NAMES):
        raise ValueError(
            "params must be concrete: simulate_sgd checks its inputs eagerly, "
            "call it outside jit / vmap"
        )
    if params.shape != ():
        raise ValueError(
            f"simulate_sgd takes one parameter set (scalar fields), got batch shape {params.shape}"
        )
    if not _is_int(N) or N < 1:
        raise ValueError(f"N (directions) must be a positive Python int, got {N!r}")
    if not _is_int(num_seeds) or num_seeds < 2:
        raise ValueError(f"num_seeds must be an int >= 2 (for a standard error), got {num_seeds!r}")
    if not isinstance(key, jax.Array):
        raise TypeError(f"key must be a jax.random key, got {type(key).__name__}")
    lrs, batches, steps = _segments(B, K, lr, segments)
    check_params(params, lrs)  # domain, lr > 0 and lr * Q < 2 in every segment

    dtype = jnp.result_type(float)
    theta = jnp.stack([jnp.asarray(getattr(params, name), dtype) for name in PARAM_NAMES])
    losses, excess_bias, excess_variance = _simulate(
        theta,
        jnp.asarray(lrs, dtype),
        jnp.asarray(batches, dtype),
        jnp.asarray(steps, jnp.int32),
        key,
        N=int(N),
        num_seeds=int(num_seeds),
    )
    mean, stderr = _mean_stderr(losses)
    bias_mean, bias_stderr = _mean_stderr(excess_bias)
    var_mean, var_stderr = _mean_stderr(excess_variance)
    return SimulationResult(
        mean=mean,
        stderr=stderr,
        excess_bias_mean=bias_mean,
        excess_bias_stderr=bias_stderr,
        excess_variance_mean=var_mean,
        excess_variance_stderr=var_stderr,
        losses=losses,
    )


__all__ = ["SimulationResult", "simulate_sgd"]
