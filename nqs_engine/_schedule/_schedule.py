r"""Piecewise-constant schedules of step size and batch size.

A schedule is a list of segments $s = 1..S$, each with a step-size multiplier
$m_s$ (the step size is $\gamma_s = m_s \gamma_0$, $\gamma_0$ the peak `lr`), a batch
size $B_s$ and a step count $k_s$; it runs $K = \sum_s k_s$ steps. SPEC section 1
gives the risk of such a run in closed form, segment by segment.

Smooth schedules (warmup, cosine, the decay of warmup-stable-decay) are
discretised into equal-length pieces whose multiplier is the *mean* of the
continuous curve over the piece: this keeps $\sum_t \gamma_t$, which sets how far
every direction has been optimised, exact. [`Schedule.from_arrays`][] converts
per-step arrays exactly (run-length encoding) or, with `segments=`, into equal
pieces that keep both $\sum_t \gamma_t$ and the injected noise $\sum_t \gamma_t^2 / B_t$.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import FloatArray, RealLike
from ._spec import SpecPart, parse_segments, parse_spec


def _float(x):
    return jnp.asarray(np.asarray(x, dtype=np.float64) if not hasattr(x, "dtype") else x)


class Schedule(eqx.Module):
    r"""A piecewise-constant schedule: step-size multipliers, batch sizes and step counts.

    **Fields** (arrays whose last axis runs over the $S$ segments; leading axes are
    a batch of schedules, broadcasting against $N$ and the parameters):

    - `lr`: multipliers $m_s \ge 0$ of the peak step size (1 = the peak);
    - `batch`: batch sizes $B_s > 0$;
    - `steps`: step counts $k_s \ge 0$ (real values are allowed and differentiable;
      zero-step segments are no-ops, useful for padding to a common $S$).

    **Example:**

    >>> import nqs_engine as nqs
    >>> sched = nqs.Schedule.step_decay(1000, 64, boundaries=(0.5, 0.75), factors=(0.1, 0.01))
    >>> sched.lr.tolist(), sched.steps.tolist()
    ([1.0, 0.1, 0.01], [500.0, 250.0, 250.0])
    >>> float(sched.total_steps)
    1000.0
    """

    lr: FloatArray = eqx.field(converter=_float)
    batch: FloatArray = eqx.field(converter=_float)
    steps: FloatArray = eqx.field(converter=_float)

    def __check_init__(self):
        shapes = [self.lr.shape, self.batch.shape, self.steps.shape]
        if any(len(s) == 0 for s in shapes):
            raise ValueError(
                "Schedule fields must have a last axis of segments; got shapes "
                f"lr{shapes[0]}, batch{shapes[1]}, steps{shapes[2]}"
            )
        try:
            np.broadcast_shapes(*shapes)
        except ValueError:
            raise ValueError(
                "Schedule fields must broadcast; got shapes "
                f"lr{shapes[0]}, batch{shapes[1]}, steps{shapes[2]}"
            ) from None
        if np.broadcast_shapes(*shapes)[-1] == 0:
            raise ValueError("a Schedule needs at least one segment")

    @property
    def num_segments(self) -> int:
        """$S$, the number of segments (static)."""
        return np.broadcast_shapes(self.lr.shape, self.batch.shape, self.steps.shape)[-1]

    @property
    def shape(self) -> tuple[int, ...]:
        """The batch shape of the schedules (all axes but the last)."""
        return np.broadcast_shapes(self.lr.shape, self.batch.shape, self.steps.shape)[:-1]

    @property
    def total_steps(self) -> FloatArray:
        """$K = \\sum_s k_s$."""
        return jnp.sum(self.steps, axis=-1)

    def broadcast(self) -> "Schedule":
        """The same schedule with all three fields broadcast to one shape."""
        shape = np.broadcast_shapes(self.lr.shape, self.batch.shape, self.steps.shape)
        return Schedule(*(jnp.broadcast_to(a, shape) for a in (self.lr, self.batch, self.steps)))

    def truncate(self, k: RealLike) -> "Schedule":
        r"""The first `k` steps of this schedule (later segments keep zero steps).

        Segment $i$ keeps $\min(k_i, \max(0, k - s_i))$ steps, $s_i$ its start; a
        segment that ends at or before $k$ (in the float cumulative sum of the steps)
        keeps its own $k_i$ exactly, as [`nqs_engine.trajectory`][] does, so a cut at a
        segment's end (the schedule's own end included) gives that prefix bit for bit:
        $k - s_i$ would round a short segment after a long one (0.001 steps after
        43648 come back as 0.000999999997).

        **Example:**

        >>> import nqs_engine as nqs
        >>> nqs.Schedule.step_decay(100, 8, (0.5,), (0.1,)).truncate(70).steps.tolist()
        [50.0, 20.0]
        >>> s = nqs.Schedule([0.0, 1.0], [8.0, 8.0], [43648.0, 0.001])
        >>> s.truncate(s.total_steps).steps.tolist()
        [43648.0, 0.001]
        """
        k = jnp.asarray(k)[..., None]
        # Starts as an exclusive cumulative sum: `ends - steps` rounds, and a start
        # one ulp below a boundary would leak a sliver of the next segment into a
        # cut made exactly at that boundary.
        ends = jnp.cumsum(self.steps, axis=-1)
        starts = jnp.concatenate([jnp.zeros_like(ends[..., :1]), ends[..., :-1]], axis=-1)
        cut = jnp.clip(k - starts, 0, self.steps)
        return Schedule(self.lr, self.batch, jnp.where(k >= ends, self.steps, cut))

    def pad(self, num_segments: int) -> "Schedule":
        """Append zero-step segments up to `num_segments` (to stack schedules of different S).

        The padding repeats the last segment's multiplier and batch size with no
        steps, so it changes neither the risk nor any check.
        """
        extra = num_segments - self.num_segments
        if extra < 0:
            raise ValueError(f"cannot pad {self.num_segments} segments down to {num_segments}")
        s = self.broadcast()

        def ext(a, last):
            filler = jnp.repeat(last[..., None], extra, axis=-1)
            return jnp.concatenate([a, filler], axis=-1)

        return Schedule(
            ext(s.lr, s.lr[..., -1]),
            ext(s.batch, s.batch[..., -1]),
            ext(s.steps, jnp.zeros_like(s.steps[..., -1])),
        )

    @classmethod
    def concatenate(cls, *schedules: "Schedule") -> "Schedule":
        r"""One schedule that runs `schedules` one after the other.

        The segments are joined along the last axis, $S = \sum_i S_i$, and the
        batch shapes broadcast against each other; the risk of the result is the
        recurrence of [`nqs_engine.schedule_risk`][] carried from one schedule
        into the next, and $K = \sum_i K_i$. (In a SPEC string, `+` means something
        else: two schedules over the same run at once; see [`Schedule.from_spec`][].)

        **Example:** a warmup, then a constant phase, then a decay at a larger batch.

        >>> import nqs_engine as nqs
        >>> run = nqs.Schedule.concatenate(
        ...     nqs.Schedule.warmup(1_000, 256, warmup=0.5, pieces=2),
        ...     nqs.Schedule.constant(8_000, 256),
        ...     nqs.Schedule.constant(1_000, 512, lr=0.1))
        >>> run.lr.tolist(), float(run.total_steps)
        ([0.25, 0.75, 1.0, 1.0, 0.1], 10000.0)
        """
        if not schedules:
            raise ValueError("concatenate needs at least one schedule")
        for i, s in enumerate(schedules):
            if not isinstance(s, Schedule):
                raise TypeError(f"schedule {i} must be a Schedule, got {type(s).__name__}")
        try:
            return _concat(*schedules)
        except ValueError:
            shapes = ", ".join(str(s.shape) for s in schedules)
            raise ValueError(f"the schedules' batch shapes must broadcast, got {shapes}") from None

    @classmethod
    def stack(cls, schedules: Sequence["Schedule"]) -> "Schedule":
        r"""A batch of schedules (leading axis, one per schedule) from schedules of any
        numbers of segments: each is padded ([`Schedule.pad`][]) to the most segments.

        **Example:** two runs of different lengths and segment counts.

        >>> import nqs_engine as nqs
        >>> s = nqs.Schedule.stack([nqs.Schedule.constant(100, 8),
        ...                         nqs.Schedule.step_decay(300, 16, (0.5,), (0.1,))])
        >>> s.shape, s.steps.tolist()
        ((2,), [[100.0, 0.0], [150.0, 150.0]])
        """
        schedules = list(schedules)
        if not schedules:
            raise ValueError("stack needs at least one schedule")
        for i, s in enumerate(schedules):
            if not isinstance(s, Schedule):
                raise TypeError(f"schedule {i} must be a Schedule, got {type(s).__name__}")
            if s.shape != ():
                raise ValueError(f"schedule {i} is a batch of shape {s.shape}; stack takes "
                                 "single schedules")
        width = max(s.num_segments for s in schedules)
        padded = [s.pad(width) for s in schedules]
        return cls(*(jnp.stack([getattr(s, f) for s in padded]) for f in ("lr", "batch", "steps")))

    @classmethod
    def from_spec(cls, spec: str, K: RealLike, B: RealLike) -> "Schedule":
        r"""The schedule a SPEC string describes, for runs of `K` steps at batch size `B`.

        The language of the command line's `schedule` column and `--schedule`
        (`nqs-engine predict --help` lists it): `constant`, `cosine`, `wsd`,
        `warmup`, `step` and `batch`, with options, and `SPEC+SPEC` for two
        schedules over the same run at once, cut at the change points of both,
        their step-size multipliers $m_s$ and batch multipliers multiplied.
        Fractions are of `K` and cut points round down to whole steps, so the
        result is the schedule the command line evaluates. `K` and `B` broadcast
        (a batch of runs); a bad SPEC raises a `ValueError` that quotes it.

        **Example:** a cosine decay with warmup, and the batch doubled half way.

        >>> import nqs_engine as nqs
        >>> s = nqs.Schedule.from_spec("cosine:pieces=4,warmup=0.1,warmup_pieces=1+batch:0.5=2",
        ...                            K=1_000, B=256)
        >>> s.steps.tolist(), s.batch.tolist()
        ([100.0, 225.0, 175.0, 50.0, 225.0, 225.0], [256.0, 256.0, 256.0, 512.0, 512.0, 512.0])
        """
        if not isinstance(spec, str):
            raise TypeError(f"spec must be a SPEC string such as 'cosine', got {type(spec).__name__}")
        parsed = parse_schedule(spec)
        K = np.asarray(K, dtype=np.float64)
        B = np.asarray(B, dtype=np.float64)
        try:
            shape = np.broadcast_shapes(K.shape, B.shape)
        except ValueError:
            raise ValueError(f"K{K.shape} and B{B.shape} must broadcast") from None
        for name, value, ok in (("K", K, K >= 0), ("B", B, B > 0)):
            if not np.all(np.isfinite(value) & ok):
                raise ValueError(f"{name} must be finite and {'>= 0' if name == 'K' else '> 0'}, "
                                 f"got {float(value[~(np.isfinite(value) & ok)].ravel()[0]):g}")
        return parsed.build(np.broadcast_to(K, shape), np.broadcast_to(B, shape))

    # ------------------------------------------------------------------
    # Constructors
    # ------------------------------------------------------------------

    @classmethod
    def constant(cls, K: RealLike, B: RealLike, lr: RealLike = 1.0) -> "Schedule":
        """One segment: `K` steps at batch `B` and multiplier `lr`.

        **Example:**

        >>> import nqs_engine as nqs
        >>> nqs.Schedule.constant(1000, 32).steps.tolist()
        [1000.0]
        """
        K, B, lr = (jnp.asarray(_float(v))[..., None] for v in (K, B, lr))
        return cls(*jnp.broadcast_arrays(lr, B, K))

    @classmethod
    def piecewise(
        cls,
        K: RealLike,
        boundaries: Sequence[float],
        lr: Sequence[float],
        batch: Sequence[float] | RealLike,
    ) -> "Schedule":
        r"""Segments cut at fractions of `K`: segment $i$ runs from $\lfloor f_{i-1} K\rfloor$
        to $\lfloor f_i K \rfloor$ ($f_0 = 0$, $f_S = 1$), with multiplier `lr[i]` and
        batch `batch[..., i]`: the last axis of `batch` runs over segments (length
        $S$, or 1 for one batch size throughout; a scalar is one for all; leading
        axes are a batch of schedules).

        **Example:** batch doubling at a third and two thirds of the run.

        >>> import nqs_engine as nqs
        >>> s = nqs.Schedule.piecewise(900, (1/3, 2/3), lr=(1, 1, 1), batch=(32, 64, 128))
        >>> s.steps.tolist(), s.batch.tolist()
        ([300.0, 300.0, 300.0], [32.0, 64.0, 128.0])
        """
        f = np.asarray(boundaries, dtype=np.float64)
        if f.ndim != 1 or np.any(np.diff(f) < 0) or np.any((f < 0) | (f > 1)):
            raise ValueError(f"boundaries must be increasing fractions in [0, 1], got {boundaries}")
        S = f.size + 1
        lr_arr = np.asarray(lr, dtype=np.float64)
        if lr_arr.shape != (S,):
            raise ValueError(f"lr needs {S} values (one per segment), got {len(np.atleast_1d(lr))}")
        K = jnp.asarray(_float(K))
        cuts = jnp.floor(jnp.asarray(f) * K[..., None])
        edges = jnp.concatenate(
            [jnp.zeros_like(cuts[..., :1]), cuts, K[..., None]], axis=-1
        )
        steps = jnp.diff(edges, axis=-1)
        b = jnp.asarray(_float(batch))
        if b.ndim == 0:
            b = b[None]
        if b.shape[-1] not in (1, S):
            raise ValueError(
                f"batch needs {S} values (one per segment) on its last axis, or 1; got shape {b.shape}"
            )
        b = jnp.broadcast_to(b, np.broadcast_shapes(b.shape, steps.shape))
        steps = jnp.broadcast_to(steps, b.shape)
        return cls(jnp.broadcast_to(jnp.asarray(lr_arr), steps.shape), b, steps)

    @classmethod
    def step_decay(
        cls,
        K: RealLike,
        B: RealLike,
        boundaries: Sequence[float] = (0.5, 0.75),
        factors: Sequence[float] = (0.1, 0.01),
    ) -> "Schedule":
        """Multiplier 1, then `factors[i]` from fraction `boundaries[i]` of `K` on.

        **Example:**

        >>> import nqs_engine as nqs
        >>> nqs.Schedule.step_decay(100, 8, (0.5,), (0.5,)).lr.tolist()
        [1.0, 0.5]
        """
        if len(factors) != len(boundaries):
            raise ValueError("step_decay needs one factor per boundary")
        return cls.piecewise(K, boundaries, (1.0, *factors), jnp.asarray(_float(B))[..., None])

    @classmethod
    def batch_ramp(
        cls,
        K: RealLike,
        batches: Sequence[float],
        boundaries: Sequence[float] | None = None,
        lr: float = 1.0,
    ) -> "Schedule":
        """Batch size `batches[i]` on segment i, changing at fractions `boundaries` of `K`
        (default: equal thirds, quarters, ...). Multiplier `lr` throughout.

        **Example:** double the batch half way.

        >>> import nqs_engine as nqs
        >>> nqs.Schedule.batch_ramp(1000, (256, 512)).batch.tolist()
        [256.0, 512.0]
        """
        S = len(batches)
        if S < 1:
            raise ValueError("batch_ramp needs at least one batch size")
        if boundaries is None:
            boundaries = tuple(i / S for i in range(1, S))
        return cls.piecewise(K, boundaries, (lr,) * S, tuple(batches))

    @classmethod
    def _smooth(cls, K, B, pieces, curve_mean):
        """Equal pieces of [0, K] with multiplier `curve_mean(t0, t1)` (fractions of K)."""
        K = jnp.asarray(_float(K))
        edges = jnp.floor(jnp.linspace(0.0, 1.0, pieces + 1) * K[..., None])
        t0, t1 = edges[..., :-1], edges[..., 1:]
        steps = t1 - t0
        safe_K = jnp.where(K > 0, K, 1.0)[..., None]
        lr = curve_mean(t0 / safe_K, t1 / safe_K)
        return cls(lr, jnp.broadcast_to(jnp.asarray(_float(B))[..., None], steps.shape), steps)

    @classmethod
    def _ramp(cls, K, B, warmup, pieces):
        """The linear warmup from 0 to the peak over the first fraction `warmup` of `K`."""
        return cls._smooth(jnp.floor(K * warmup), B, pieces, lambda a, b: (a + b) / 2)

    @classmethod
    def warmup(
        cls, K: RealLike, B: RealLike, warmup: float = 0.01, pieces: int = 8
    ) -> "Schedule":
        r"""Linear warmup from 0 to the peak over the first fraction `warmup` of `K`
        (in `pieces` equal pieces, multiplier the mean of the ramp over each), then
        constant.

        **Example:**

        >>> import nqs_engine as nqs
        >>> nqs.Schedule.warmup(1000, 8, warmup=0.1, pieces=2).lr.tolist()
        [0.25, 0.75, 1.0]
        """
        _check_fraction("warmup", warmup)
        K = jnp.asarray(_float(K))
        ramp = cls._ramp(K, B, warmup, pieces)
        rest = K - ramp.total_steps
        return _concat(ramp, cls.constant(rest, B))

    @classmethod
    def cosine(
        cls,
        K: RealLike,
        B: RealLike,
        pieces: int = 32,
        warmup: float = 0.0,
        final: float = 0.0,
        warmup_pieces: int = 4,
    ) -> "Schedule":
        r"""Cosine decay $m(t) = f + (1 - f)\,\tfrac12 (1 + \cos \pi t)$ from the peak to
        `final` $= f$ over the run after an optional linear warmup (fraction
        `warmup`), in `pieces` equal pieces whose multiplier is the exact mean of
        the curve over the piece. `final` may be an array: one per schedule of a
        batch (broadcasting against `K` and `B`).

        **Example:**

        >>> import nqs_engine as nqs
        >>> s = nqs.Schedule.cosine(1000, 64, pieces=4)
        >>> [round(v, 4) for v in s.lr.tolist()]
        [0.9502, 0.6865, 0.3135, 0.0498]
        """
        _check_fraction("warmup", warmup)
        final = _check_fraction("final", final, scalar=False)

        def mean(a, b):
            width = jnp.where(b > a, b - a, 1.0)
            avg_cos = (jnp.sin(jnp.pi * b) - jnp.sin(jnp.pi * a)) / (jnp.pi * width)
            avg_cos = jnp.where(b > a, avg_cos, jnp.cos(jnp.pi * a))
            return final + (1 - final) * 0.5 * (1 + avg_cos)

        K = jnp.asarray(_float(K))
        if warmup == 0:
            return cls._smooth(K, B, pieces, mean)
        ramp = cls._ramp(K, B, warmup, warmup_pieces)
        return _concat(ramp, cls._smooth(K - ramp.total_steps, B, pieces, mean))

    @classmethod
    def wsd(
        cls,
        K: RealLike,
        B: RealLike,
        decay: float = 0.2,
        pieces: int = 8,
        warmup: float = 0.0,
        final: float = 0.0,
        warmup_pieces: int = 4,
    ) -> "Schedule":
        r"""Warmup-stable-decay: optional linear warmup (fraction `warmup`), constant
        peak, then a linear decay to `final` over the last fraction `decay` of `K`
        (in `pieces` pieces, multiplier the mean of the line over each); `final` may
        be an array, one per schedule of a batch.

        **Example:**

        >>> import nqs_engine as nqs
        >>> s = nqs.Schedule.wsd(1000, 64, decay=0.2, pieces=2)
        >>> s.lr.tolist(), s.steps.tolist()
        ([1.0, 0.75, 0.25], [800.0, 100.0, 100.0])
        """
        _check_fraction("decay", decay)
        _check_fraction("warmup", warmup)
        final = _check_fraction("final", final, scalar=False)
        K = jnp.asarray(_float(K))
        decay_steps = jnp.floor(K * decay)
        tail = cls._smooth(decay_steps, B, pieces, lambda a, b: 1 - (1 - final) * (a + b) / 2)
        parts = []
        if warmup > 0:
            parts.append(cls._ramp(K, B, warmup, warmup_pieces))
        used = sum((p.total_steps for p in parts), jnp.zeros_like(K)) + decay_steps
        parts += [cls.constant(K - used, B), tail]
        return _concat(*parts)

    @classmethod
    def from_arrays(
        cls,
        lr_per_step: np.ndarray,
        batch_per_step: np.ndarray | float,
        segments: int | None = None,
        *,
        checkpoints: Any = None,
        ratio: float = 1.5,
        max_len: int = 64,
    ) -> "Schedule":
        r"""A schedule from per-step multipliers $m_t$ and batch sizes $B_t$, $t = 1..K$.

        - default: exact. Consecutive steps with equal $(m_t, B_t)$ merge into one
          segment (run-length encoding); the risk is that of the per-step run.
        - `segments=S`: $S$ equal-length pieces (the last takes the remainder).
        - `checkpoints=steps`: pieces graded toward the checkpoints where the loss
          will be read. Every checkpoint is a segment edge, as are both ends of
          every stretch of two or more equal steps (so constant stretches and
          jumps stay exact); each stretch that varies is cut into pieces of
          $1, r, r^2, \ldots$ steps going back from its right edge ($r$ = `ratio`),
          at most `max_len` steps long. The steps just before a checkpoint, which
          the fast directions remember, are so resolved one by one, and far from
          it pieces grow. With the defaults ($r = 1.5$, 64) the loss at every
          checkpoint (every 128 steps) of the warmup-cosine, warmup-stable-decay
          and step schedules of the Multi-Power Law curves (24k to 72k steps, a
          2160-step warmup from 0) is within 3e-5 of the per-step run, relative
          (6.5e-5 nats), at parameters fitted to those curves, and within 1e-4
          relative at the Pythia preset, whose top direction sits near the edge of
          stability (`lr * Q` = 1.77); see `tests/test_curve_fitting.py`. `ratio=inf` keeps one piece per stretch
          between edges (`max_len` still applies): coarser, cheaper, for searches.

        A piece gets $m = \overline{m_t}$ and $B = m^2 / \overline{m_t^2 / B_t}$,
        which keeps $\sum_t \gamma_t$ (how far each direction has moved) and the
        injected noise $\sum_t \gamma_t^2 / B_t$ of every piece exact; the remaining
        error is second order in the variation within a piece.

        Host-side (NumPy) conversion; not traceable.

        **Example:**

        >>> import numpy as np, nqs_engine as nqs
        >>> s = nqs.Schedule.from_arrays(np.array([1, 1, 1, 0.5, 0.5]), 16)
        >>> s.lr.tolist(), s.steps.tolist()
        ([1.0, 0.5], [3.0, 2.0])
        >>> ramp = np.arange(1, 11) / 10                          # a 10-step warmup
        >>> nqs.Schedule.from_arrays(ramp, 8, checkpoints=[5, 10]).steps.tolist()
        [2.0, 2.0, 1.0, 2.0, 2.0, 1.0]
        """
        m = np.asarray(lr_per_step, dtype=np.float64)
        if m.ndim != 1 or m.size == 0:
            raise ValueError("lr_per_step must be a non-empty 1-D array")
        b = np.broadcast_to(np.asarray(batch_per_step, dtype=np.float64), m.shape)
        if not (np.all(np.isfinite(m)) and np.all(m >= 0)):
            i = int(np.argmax(~np.isfinite(m) | (m < 0)))
            raise ValueError(f"lr_per_step[{i}] = {m[i]} must be finite and >= 0")
        if not (np.all(np.isfinite(b)) and np.all(b > 0)):
            i = int(np.argmax(~np.isfinite(b) | (b <= 0)))
            raise ValueError(f"batch_per_step[{i}] = {b[i]} must be finite and > 0")
        if segments is not None and checkpoints is not None:
            raise ValueError("give segments or checkpoints, not both")
        if checkpoints is not None:
            return cls._pieces(m, b, _graded_edges(m, b, checkpoints, ratio, max_len))
        if segments is None:
            change = np.flatnonzero((np.diff(m) != 0) | (np.diff(b) != 0)) + 1
            return cls._pieces(m, b, np.concatenate([[0], change, [m.size]]))
        if not (isinstance(segments, int) and 1 <= segments <= m.size):
            raise ValueError(f"segments must be an integer in 1..{m.size}, got {segments!r}")
        sizes = [p.size for p in np.array_split(np.arange(m.size), segments)]
        return cls._pieces(m, b, np.concatenate([[0], np.cumsum(sizes)]))

    @classmethod
    def from_runs(cls, lr_per_step: Sequence[Any], batch_per_step: Any = 1.0,
                  **options: Any) -> "Schedule":
        """A batch of schedules (leading axis) from per-step arrays of several runs of any
        lengths: [`Schedule.from_arrays`][] of each (with `options`), then [`Schedule.stack`][].

        `batch_per_step` is one array (or number) for all runs, or one per run.

        **Example:**

        >>> import numpy as np, nqs_engine as nqs
        >>> s = nqs.Schedule.from_runs([np.ones(5), np.r_[np.ones(3), 0.1 * np.ones(4)]], 64)
        >>> s.shape, s.steps.tolist()
        ((2,), [[5.0, 0.0], [3.0, 4.0]])
        """
        runs = list(lr_per_step)
        if not runs:
            raise ValueError("from_runs needs at least one run")
        batches = (list(batch_per_step) if isinstance(batch_per_step, (list, tuple))
                   else [batch_per_step] * len(runs))
        if len(batches) != len(runs):
            raise ValueError(f"batch_per_step has {len(batches)} runs, lr_per_step {len(runs)}")
        return cls.stack([cls.from_arrays(m, b, **options) for m, b in zip(runs, batches)])

    @classmethod
    def _pieces(cls, m: np.ndarray, b: np.ndarray, edges: np.ndarray) -> "Schedule":
        """The pieces between `edges` (step indices, 0 and K included): mean multiplier and
        the batch that keeps the injected noise of the piece."""
        c = np.concatenate([[0.0], np.cumsum(m)])
        c2 = np.concatenate([[0.0], np.cumsum(m * m / b)])
        cb = np.concatenate([[0.0], np.cumsum(b)])
        k = np.diff(edges).astype(np.float64)
        mean = np.diff(c[edges]) / k
        noise = np.diff(c2[edges]) / k
        with np.errstate(divide="ignore", invalid="ignore"):
            batch = np.where(noise > 0, mean**2 / noise, np.diff(cb[edges]) / k)
        # A piece of equal steps (no change of m or B inside it) keeps them exactly.
        changes = np.cumsum(np.r_[0, (np.diff(m) != 0) | (np.diff(b) != 0)])
        same = changes[edges[1:] - 1] == changes[edges[:-1]]
        mean = np.where(same, m[edges[:-1]], mean)
        batch = np.where(same, b[edges[:-1]], batch)
        return cls(mean, batch, k)


def _graded_edges(m, b, checkpoints, ratio, max_len) -> np.ndarray:
    """Segment edges for `from_arrays(checkpoints=...)` (see its docstring)."""
    K = m.size
    cps = np.asarray(checkpoints, dtype=np.float64).ravel()
    if cps.size == 0 or not np.all(np.isfinite(cps)) or np.any(cps != np.round(cps)):
        raise ValueError("checkpoints must be whole steps")
    if np.any((cps < 0) | (cps > K)):
        bad = cps[(cps < 0) | (cps > K)][0]
        raise ValueError(f"checkpoint {bad:g} lies outside the {K} steps of the run")
    if not (ratio >= 1):
        raise ValueError(f"ratio must be >= 1, got {ratio!r}")
    if not (isinstance(max_len, (int, np.integer)) and max_len >= 1):
        raise ValueError(f"max_len must be an integer >= 1, got {max_len!r}")
    edges = {0, K, *cps.astype(int).tolist()}
    change = np.flatnonzero((np.diff(m) != 0) | (np.diff(b) != 0)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [K]])
    long = stops - starts >= 2
    edges.update(starts[long].tolist())
    edges.update(stops[long].tolist())
    edges = np.array(sorted(edges))
    out = [0]
    for a, z in zip(edges[:-1], edges[1:]):
        if np.all(m[a:z] == m[a]) and np.all(b[a:z] == b[a]):
            out.append(int(z))
            continue
        cuts, length, e = [], 1.0, int(z)
        while e > a:  # back from the right edge, geometrically growing pieces
            step = int(min(max(1, round(length)), max_len)) if np.isfinite(length) else e - a
            e = max(int(a), e - min(step, max_len))
            cuts.append(e)
            length *= ratio
        out.extend(sorted(c for c in cuts if c > a))
        out.append(int(z))
    return np.unique(np.array(out, dtype=np.int64))


def _check_fraction(name, value, scalar=True):
    """A fraction in [0, 1]: a number (it sets the structure), or with `scalar=False` an array
    (it only sets values: one per schedule of a batch); returned with a trailing axis."""
    v = np.asarray(value, dtype=np.float64)
    if scalar and v.ndim:
        raise ValueError(f"{name} must be a number (it sets the schedule's segments), got an "
                         f"array of shape {v.shape}")
    bad = ~((v >= 0) & (v <= 1))
    if np.any(bad):
        raise ValueError(f"{name} must be a fraction in [0, 1], got {v[bad].ravel()[0]:g}")
    return float(v) if v.ndim == 0 else jnp.asarray(v)[..., None]


def _concat(*schedules: Schedule) -> Schedule:
    parts = [s.broadcast() for s in schedules]
    shape = np.broadcast_shapes(*(p.shape for p in parts))
    fields = []
    for name in ("lr", "batch", "steps"):
        arrays = [jnp.broadcast_to(getattr(p, name), (*shape, p.num_segments)) for p in parts]
        fields.append(jnp.concatenate(arrays, axis=-1))
    return Schedule(*fields)


# ---------------------------------------------------------------------------
# Schedules relative to a run: built from a SPEC or from explicit segments
# ---------------------------------------------------------------------------


def _part_builder(part: SpecPart) -> Callable[[Any], Schedule]:
    """K -> the part's Schedule, with batch sizes as multipliers of B."""
    o = dict(part.options)
    builders = {
        "constant": lambda K: Schedule.constant(K, 1.0, o["lr"]),
        "cosine": lambda K: Schedule.cosine(K, 1.0, **o),
        "wsd": lambda K: Schedule.wsd(K, 1.0, **o),
        "warmup": lambda K: Schedule.warmup(K, 1.0, warmup=o["warmup"], pieces=o["pieces"]),
        "step": lambda K: Schedule.step_decay(K, 1.0, o["fractions"], o["values"]),
        "batch": lambda K: Schedule.batch_ramp(K, (1.0, *o["values"]), o["fractions"]),
    }
    return builders[part.kind]


def _count_segments(build: Callable[[Any], Schedule]) -> int:
    """The segment count of `build`'s schedules, found by tracing (no computation)."""
    shapes = jax.eval_shape(build, jax.ShapeDtypeStruct((), jnp.result_type(float)))
    return np.broadcast_shapes(shapes.lr.shape, shapes.batch.shape, shapes.steps.shape)[-1]


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """A schedule relative to a run's length and batch size, from a SPEC or explicit segments.

    **Fields:**

    - `text`: the SPEC (or a description of the segments' source) it came from.
    - `num_segments`: the number of segments of every schedule it builds.
    - `peak`: the largest step-size multiplier it can produce (whatever K).
    - `parts`: the schedules combined (`SPEC+SPEC`), each a traceable function
      from K (an array) to a [`nqs_engine.Schedule`][] whose batch sizes are
      multipliers of B.

    **Example:**

    >>> import numpy as np
    >>> from nqs_engine._schedule import parse_schedule
    >>> spec = parse_schedule("step:0.5=0.1+batch:0.75=2")
    >>> spec.num_segments, spec.peak
    (3, 1.0)
    >>> s = spec.build(np.array([1000.0]), np.array([64.0]))
    >>> s.lr.tolist(), s.batch.tolist(), s.steps.tolist()
    ([[1.0, 0.1, 0.1]], [[64.0, 64.0, 128.0]], [[500.0, 250.0, 250.0]])
    """

    text: str
    num_segments: int
    peak: float
    parts: tuple[Callable[[Any], Schedule], ...] = dataclasses.field(repr=False)

    @classmethod
    def from_segments(cls, data: Mapping[str, Any], source: str) -> "ScheduleSpec":
        r"""Explicit segments `{"lr": [...], "steps": [...], "batch": [...]}` (batch optional).

        One entry per segment. `lr` holds step-size multipliers of the peak
        (>= 0), `batch` multipliers of each run's B (> 0, default 1), and `steps`
        relative segment lengths (>= 0, not all 0): segment i of a run of K
        steps ends at $\lfloor K (w_0 + \ldots + w_i) / \sum_j w_j \rfloor$. So steps
        that add up to K reproduce the segments exactly; fractions of 1 scale to
        any K. `ValueError` naming `source` for a bad key or entry.

        **Example:**

        >>> from nqs_engine._schedule import ScheduleSpec
        >>> spec = ScheduleSpec.from_segments({"lr": [1, 0.1], "steps": [3, 1], "batch": [1, 2]},
        ...                                   "s.json")
        >>> s = spec.build(1000.0, 256.0)
        >>> s.lr.tolist(), s.batch.tolist(), s.steps.tolist()
        ([1.0, 0.1], [256.0, 512.0], [750.0, 250.0])
        """
        arrays = parse_segments(data, source)
        lr, batch, weights = arrays["lr"], arrays["batch"], arrays["steps"]
        cumulative = np.cumsum(weights)

        def build(K):
            K = K[..., None]
            # multiply before dividing: exact when the weights add up to K
            cuts = jnp.minimum(jnp.floor(cumulative[:-1] * K / cumulative[-1]), K)
            ends = jnp.concatenate([cuts, K], axis=-1)
            steps = jnp.diff(ends, axis=-1, prepend=jnp.zeros_like(K))
            return Schedule(jnp.broadcast_to(lr, steps.shape),
                            jnp.broadcast_to(batch, steps.shape), steps)

        return cls(text=source, num_segments=int(lr.size), peak=float(lr.max()), parts=(build,))

    def build(self, K: Any, B: Any, num_segments: int | None = None) -> Schedule:
        """The schedules of runs of `K` steps at base batch size `B` (arrays of one shape),
        padded with empty segments to `num_segments` if given.

        Compiled (once per spec, shape and `num_segments`): building op by op would
        cost more than the risk itself on large chunks.
        """
        dtype = jnp.result_type(float)
        K, B = (jnp.asarray(np.asarray(v, dtype=np.float64), dtype=dtype) for v in (K, B))
        return _build_schedule(self, K, B, num_segments or self.num_segments)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _build_schedule(spec: ScheduleSpec, K, B, num_segments: int) -> Schedule:
    lr, batch, steps = _schedule_arrays(spec.parts[0](K))
    for part in spec.parts[1:]:
        lr, batch, steps = _combine((lr, batch, steps), _schedule_arrays(part(K)))
    return Schedule(lr, batch * B[..., None], steps).pad(num_segments)


def _schedule_arrays(schedule: Schedule):
    s = schedule.broadcast()
    return s.lr, s.batch, s.steps


def _combine(a, b):
    """Two schedules over the same steps at once: cut at both's change points, multiply."""
    shape = jnp.broadcast_shapes(a[0].shape[:-1], b[0].shape[:-1])
    a = [jnp.broadcast_to(x, (*shape, x.shape[-1])) for x in a]
    b = [jnp.broadcast_to(x, (*shape, x.shape[-1])) for x in b]
    ends_a, ends_b = jnp.cumsum(a[2], axis=-1), jnp.cumsum(b[2], axis=-1)
    inner = jnp.sort(jnp.concatenate([ends_a[..., :-1], ends_b[..., :-1]], axis=-1), axis=-1)
    ends = jnp.concatenate([inner, ends_a[..., -1:]], axis=-1)
    steps = jnp.diff(ends, axis=-1, prepend=jnp.zeros_like(ends[..., :1]))

    def index(seg_ends):  # the segment holding each piece (pieces end at `ends`)
        count = (seg_ends[..., None, :] < ends[..., :, None]).sum(axis=-1)
        return jnp.minimum(count, seg_ends.shape[-1] - 1)

    ia, ib = index(ends_a), index(ends_b)
    pick = lambda x, i: jnp.take_along_axis(x, i, axis=-1)  # noqa: E731
    return pick(a[0], ia) * pick(b[0], ib), pick(a[1], ia) * pick(b[1], ib), steps


@functools.lru_cache(maxsize=4096)
def parse_schedule(text: str) -> ScheduleSpec:
    """Parse a SPEC (see `SPEC_HELP`) into a [`ScheduleSpec`][]; `ValueError` if malformed.

    The message quotes the SPEC and says what was expected; callers prefix
    where the SPEC came from.

    **Example:**

    >>> from nqs_engine._schedule import parse_schedule
    >>> parse_schedule("cosine:pieces=16,warmup=0.01").num_segments
    20
    >>> parse_schedule("cosine:pieces=0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: schedule 'cosine:pieces=0': pieces must be an integer ... got '0'
    """
    parts = parse_spec(text)
    builders = tuple(_part_builder(part) for part in parts)
    peak = float(np.prod([part.peak for part in parts]))
    try:
        # Trace each part: its segment count, and any error the grammar's checks missed.
        S = sum(_count_segments(build) for build in builders) - (len(builders) - 1)
    except ValueError as exc:
        raise ValueError(f"schedule {text!r}: {exc}") from None
    return ScheduleSpec(text=text.strip(), num_segments=S, peak=peak, parts=builders)


__all__ = ["Schedule", "ScheduleSpec", "parse_schedule"]
