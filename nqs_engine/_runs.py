r"""Observed training runs: the data every loss model predicts, fits and is judged on.

A [`Runs`][] holds one row per observation (a final loss, or a checkpoint of a
loss curve): the model size $N$, the run's schedule up to the observed step
(or only the tokens $D$ it has seen, for models that need no more), the loss,
a label grouping the checkpoints of one run, and any further per-run inputs a
model may read (the run's peak learning rate, its initial weight norm, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._custom_types import FloatArray
from ._misc import vector
from ._schedule import Schedule


class Runs(eqx.Module):
    r"""Observed runs: one row per observation (a final loss or a checkpoint).

    Row $i$ is a run of model size $N_i$ under a piecewise-constant schedule,
    observed after `step[i]` steps with loss `loss[i]`; `run[i]` labels the run it
    belongs to (several checkpoints of one run share a label, and the bootstrap
    resamples whole runs). Build it with [`Runs.from_arrays`][].

    **Fields:**

    - `N (n,)`: model sizes.
    - `schedule`: a [`nqs_engine.Schedule`][] with batch shape `(n,)`, already
      cut at the observed step; `None` for runs given by their tokens only.
    - `loss (n,)`: observed losses (`None` for runs to predict only).
    - `run (n,)`: integer labels; `step (n,)`: the observed step (NaN without a
      schedule).
    - `tokens (n,)`: tokens seen, $D = \ell \sum_s B_s k_s$ of the observed part
      ($\ell$ = `seq_len`), or as given.
    - `inputs`: further per-row inputs by name (e.g. `"lr"`, a run's peak
      learning rate; `"init_sq_norm"`), each `(n,)`.
    - `seq_len` (static): tokens per sequence.

    **Example:**

    >>> import nqs_engine as nqs
    >>> runs = nqs.Runs.from_arrays(N=[1e6, 1e7], B=64, K=1000, loss=[4.0, 3.5])
    >>> runs.size, runs.tokens.tolist(), float(runs.C[1])
    (2, [8192000.0, 8192000.0], 4.9152e+14)
    """

    N: FloatArray
    schedule: Schedule | None
    loss: FloatArray | None
    run: jax.Array
    step: FloatArray
    tokens: FloatArray
    inputs: dict[str, FloatArray]
    seq_len: float = eqx.field(static=True)

    @property
    def size(self) -> int:
        """Number of observations (rows)."""
        return int(self.N.shape[0])

    @property
    def num_runs(self) -> int:
        """Number of distinct runs."""
        return int(np.unique(np.asarray(self.run)).size)

    @property
    def peak(self) -> float:
        """The largest step-size multiplier any run takes a step at (1 without schedules)."""
        if self.schedule is None:
            return 1.0
        taken = np.where(np.asarray(self.schedule.steps) > 0, np.asarray(self.schedule.lr), 0)
        return float(np.max(taken)) if taken.size else 0.0

    @property
    def C(self) -> FloatArray:
        r"""Compute of each observation, $C = 6 N D$ FLOPs."""
        return 6 * self.N * self.tokens

    def needs_loss(self) -> FloatArray:
        """The observed losses; `ValueError` when the runs have none (prediction-only runs)."""
        if self.loss is None:
            raise ValueError("these runs have no observed losses (built without loss=)")
        return self.loss

    def needs_schedule(self, who: str) -> Schedule:
        """The schedules; `ValueError` naming `who` when the runs give only tokens."""
        if self.schedule is None:
            raise ValueError(f"{who} needs each run's batch size and steps (B and K, or a "
                             "schedule); these runs give only their tokens D")
        return self.schedule

    def subset(self, mask: Any) -> "Runs":
        """The rows where the boolean `mask` is true (run labels are kept).

        **Example:**

        >>> import numpy as np
        >>> import nqs_engine as nqs
        >>> runs = nqs.Runs.from_arrays(N=[1e6, 1e7, 1e8], B=64, K=1000, loss=[4.0, 3.5, 3.2])
        >>> runs.subset(np.array([True, False, True])).size
        2
        """
        keep = np.asarray(mask, dtype=bool)
        if keep.shape != (self.size,):
            raise ValueError(f"mask must have shape ({self.size},), got {keep.shape}")
        idx = np.flatnonzero(keep)
        return jax.tree.map(lambda a: a[idx], self)

    @classmethod
    def from_curves(
        cls,
        N: Any,
        step: Any,
        lr: Any,
        loss: Any = None,
        *,
        run: Any = None,
        B: Any = 1.0,
        K: Any = None,
        warmup: float = 0.0,
        peak: float | None = None,
        seq_len: float = 128,
        inputs: Mapping[str, Any] | None = None,
        ratio: float = 1.5,
        max_len: int = 64,
    ) -> "Runs":
        r"""Runs from the checkpoints of loss curves logged with their learning rate.

        Row $i$ is run `run[i]` (model size `N[i]`, batch `B[i]`) logged at step
        `step[i]` with learning rate `lr[i]` and loss `loss[i]`. Each run's per-step
        multipliers $m_t$, $t = 0..K-1$, are [`curve_multipliers`][]: the logged
        learning rates interpolated linearly, a linear warmup from 0 over the first
        `warmup` steps before the first logged one, divided by `peak` (default:
        each run's largest logged rate), so that the step size is
        $\gamma_t = \gamma_0 m_t$ (SPEC section 4). $K$ is the run's last logged step
        unless given (one value per row, equal within a run); the loss at step $s$
        is the loss after updates $t < s$. The schedule is compressed with every
        checkpoint on a segment edge ([`nqs_engine.Schedule.from_arrays`][] with
        `checkpoints=`, `ratio`, `max_len`), and the rows of a run share it, so a
        model predicts a run's checkpoints in one pass.

        **Example:** a 1000-step run with a 100-step warmup, logged every 100 steps.

        >>> import numpy as np, nqs_engine as nqs
        >>> step = np.arange(100.0, 1001.0, 100.0)
        >>> runs = nqs.Runs.from_curves(N=1e7, step=step, lr=np.full(10, 3e-4), run="a",
        ...                             warmup=100)
        >>> runs.size, runs.num_runs, float(runs.schedule.lr[-1][-1])
        (10, 1, 1.0)
        """
        step = vector(step, "step", check=lambda v: (v >= 1) & (v == np.round(v)),
                      requirement="must be a whole number of steps >= 1")
        n = step.size
        lr = vector(lr, "lr", size=n, broadcast=True, check=lambda v: v >= 0,
                    requirement="must be >= 0")
        N = vector(N, "N", size=n, broadcast=True, check=lambda v: v >= 1,
                   requirement="must be >= 1")
        B = vector(B, "B", size=n, broadcast=True, check=lambda v: v > 0,
                   requirement="must be > 0")
        labels_in = np.broadcast_to(np.asarray("run" if run is None else run), (n,))
        labels, row_run = np.unique(labels_in, return_inverse=True)
        row_run = row_run.reshape(n)
        if not (np.isfinite(warmup) and warmup >= 0):
            raise ValueError(f"warmup must be a number of steps >= 0, got {warmup}")
        if peak is not None and not (np.isfinite(peak) and peak > 0):
            raise ValueError(f"peak must be a learning rate > 0, got {peak}")
        N_run = _per_run(N, row_run, "N", labels)
        B_run = _per_run(B, row_run, "B", labels)
        last = np.zeros(labels.size)
        np.maximum.at(last, row_run, step)
        if K is None:
            K_run = last
        else:
            K_run = _per_run(vector(K, "K", size=n, broadcast=True, check=lambda v: v >= 1,
                                    requirement="must be >= 1"), row_run, "K", labels)
            short = K_run < last
            if short.any():
                r = int(np.argmax(short))
                raise ValueError(f"run {labels[r]!r} is logged at step {last[r]:g}, past its "
                                 f"K = {K_run[r]:g}")
        schedules = []
        for r in range(labels.size):  # one host-side schedule per run
            rows = row_run == r
            top = float(lr[rows].max()) if peak is None else float(peak)
            if not top > 0:
                raise ValueError(f"run {labels[r]!r}: every logged learning rate is 0")
            m = curve_multipliers(step[rows], lr[rows], int(K_run[r]), warmup, top)
            schedules.append(Schedule.from_arrays(m, B_run[r], checkpoints=step[rows],
                                                  ratio=ratio, max_len=max_len))
        stacked = Schedule.stack(schedules)
        per_row = jax.tree.map(lambda a: a[row_run], stacked)
        return cls.from_arrays(N, loss=loss, schedule=per_row, step=step, run=labels_in,
                               seq_len=seq_len, inputs=inputs)

    @classmethod
    def from_arrays(
        cls,
        N: Any,
        B: Any = None,
        K: Any = None,
        loss: Any = None,
        *,
        schedule: Schedule | None = None,
        step: Any = None,
        run: Any = None,
        D: Any = None,
        seq_len: float = 128,
        inputs: Mapping[str, Any] | None = None,
    ) -> "Runs":
        r"""Validate and assemble runs from arrays (eagerly; errors name the row).

        **Arguments:**

        - `N`: model sizes, `(n,)`, all $\ge 1$.
        - `B`, `K`: batch sizes and total steps of constant-schedule runs
          (broadcast to `(n,)`); or `schedule`; or `D`, tokens only (for models
          of $N$ and $D$ alone, such as Chinchilla).
        - `loss`: observed losses, `(n,)`, all $> 0$; `None` for runs to predict.
        - `schedule`: a [`nqs_engine.Schedule`][] of each run (batch shape `(n,)`
          or broadcastable), instead of `B` and `K`.
        - `step`: the step at which each loss was observed (a checkpoint); default
          the end of the run. The schedule is cut there ([`Schedule.truncate`][]).
        - `run`: a label per row grouping checkpoints of the same run (default:
          every row its own run). Rows of one run must share $N$ and schedule.
        - `seq_len`: tokens per sequence, for tokens and compute $C = 6 N D$.
        - `inputs`: further per-row inputs, name -> values broadcast to `(n,)`
          (finite); e.g. `{"lr": peak_learning_rates}`.

        **Example:**

        >>> import nqs_engine as nqs
        >>> runs = nqs.Runs.from_arrays(N=[1e6, 1e6], B=64, K=1000, loss=[4.0, 3.6],
        ...                             step=[500, 1000], run=["a", "a"])
        >>> runs.size, runs.num_runs, runs.step.tolist()
        (2, 1, [500.0, 1000.0])
        """
        N = vector(N, "N", check=lambda v: v >= 1, requirement="must be >= 1")
        n = N.shape[0]
        if loss is not None:
            loss = vector(loss, "loss", size=n, broadcast=True, check=lambda v: v > 0,
                          requirement="must be > 0 (fits work on log loss)")
        if not (np.isfinite(seq_len) and seq_len > 0):
            raise ValueError(f"seq_len must be finite and > 0, got {seq_len}")
        given = [name for name, v in (("B and K", B if B is not None else K),
                                      ("schedule", schedule), ("D", D)) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of B and K (constant schedules), schedule, or D "
                             f"(tokens); got {', '.join(given) or 'none'}")
        if D is not None:
            if step is not None:
                raise ValueError("step needs a schedule (B and K); with D only, each row is a "
                                 "final loss")
            tokens = vector(D, "D", size=n, broadcast=True, check=lambda v: v > 0,
                            requirement="must be > 0")
            schedule, step_arr = None, np.full(n, np.nan)
        else:
            if schedule is None:
                if B is None or K is None:
                    raise ValueError("give both B and K for constant schedules")
                B = vector(B, "B", size=n, broadcast=True, check=lambda v: v > 0,
                           requirement="must be > 0")
                K = vector(K, "K", size=n, broadcast=True, check=lambda v: v >= 0,
                           requirement="must be >= 0")
                schedule = Schedule.constant(jnp.asarray(K), jnp.asarray(B))
            else:
                schedule = _checked_schedule(schedule, n)
            total = np.asarray(schedule.total_steps, float)
            if step is None:
                step_arr = total
            else:
                step_arr = vector(step, "step", size=n, broadcast=True, check=lambda v: v >= 0,
                                  requirement="must be >= 0")
                over = step_arr > total * (1 + 1e-12)
                if over.any():
                    i = int(np.argmax(over))
                    raise ValueError(f"step[{i}] = {step_arr[i]:g} is past the end of its run "
                                     f"({total[i]:g} steps); a checkpoint must lie in [0, K]")
                schedule = schedule.truncate(jnp.asarray(np.minimum(step_arr, total)))
            tokens = seq_len * np.sum(np.asarray(schedule.batch) * np.asarray(schedule.steps), -1)
        labels = _labels(run, n)
        extra = {}
        for name, values in (inputs or {}).items():
            extra[str(name)] = jnp.asarray(vector(values, str(name), size=n, broadcast=True))
        return cls(
            N=jnp.asarray(N),
            schedule=schedule,
            loss=None if loss is None else jnp.asarray(loss),
            run=jnp.asarray(labels, dtype=jnp.int32),
            step=jnp.asarray(np.asarray(step_arr, float)),
            tokens=jnp.asarray(np.asarray(tokens, float)),
            inputs=extra,
            seq_len=float(seq_len),
        )


def _per_run(values: np.ndarray, row_run: np.ndarray, name: str, labels) -> np.ndarray:
    """One value per run from per-row values that must agree within each run."""
    first = np.zeros(labels.size, int)
    first[row_run[::-1]] = np.arange(row_run.size)[::-1]
    per_run = values[first]
    bad = values != per_run[row_run]
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] = {values[i]:g} differs from the other rows of run "
                         f"{labels[row_run[i]]!r} ({per_run[row_run[i]]:g})")
    return per_run


def curve_multipliers(step: np.ndarray, lr: np.ndarray, K: int, warmup: float,
                      peak: float) -> np.ndarray:
    r"""Per-step multipliers $m_t$, $t = 0..K-1$, of a run logged as (step, learning rate) pairs.

    $\eta(t)$ is the piecewise-linear interpolation of the logged values (held
    constant after the last); before the first logged step $s_0$ it ramps linearly
    from 0 over the first `warmup` steps to $\eta(s_0)$, or holds $\eta(s_0)$ when
    `warmup` is 0. $m_t = \eta(t) / $ `peak`.
    """
    order = np.argsort(step, kind="stable")
    s, v = step[order], lr[order]
    if warmup > s[0]:
        raise ValueError(f"warmup = {warmup:g} steps is longer than the first logged step "
                         f"{s[0]:g}: the log covers the warmup already; give warmup=0")
    knots_s, knots_v = s, v
    if warmup > 0:
        knots_s = np.concatenate([[0.0, warmup], s])
        knots_v = np.concatenate([[0.0, v[0]], v])
    t = np.arange(int(K), dtype=np.float64)
    return np.interp(t, knots_s, knots_v) / peak


def _checked_schedule(schedule: Schedule, n: int) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    S = schedule.num_segments
    try:
        arrays = [np.broadcast_to(np.asarray(a, float), (n, S)) for a in
                  (schedule.lr, schedule.batch, schedule.steps)]
    except ValueError:
        raise ValueError(
            f"schedule's batch shape {schedule.shape} does not broadcast to ({n},)"
        ) from None
    for a, name, ok, rule in zip(
        arrays, ("lr", "batch", "steps"),
        (lambda v: v >= 0, lambda v: v > 0, lambda v: v >= 0),
        (">= 0", "> 0", ">= 0"),
    ):
        bad = ~(np.isfinite(a) & ok(a))
        if bad.any():
            i, s = np.argwhere(bad)[0]
            raise ValueError(
                f"schedule.{name}[{i}, {s}] = {a[i, s]:g} must be finite and {rule}"
            )
    return Schedule(*(jnp.asarray(a) for a in arrays))


def _labels(run: Any, n: int) -> np.ndarray:
    if run is None:
        return np.arange(n)
    raw = np.asarray(run)
    if raw.shape != (n,):
        raise ValueError(f"run must have one label per row ({n}), got shape {raw.shape}")
    return np.unique(raw, return_inverse=True)[1].reshape(n)


__all__ = ["Runs"]
