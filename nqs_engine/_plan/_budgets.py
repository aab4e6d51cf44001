r"""The limits of a plan (compute, tokens, memory, time, ranges) and their feasible sets.

Compute $C = 6 N B K \ell$, data $B K \ell \le D_{max}$ and time
$6 N K \min(B\ell, \tau)/F \le T_{max}$ each cap the number of steps, so a plan
takes $K(N, B)$ = the least of the caps ([`log_steps`][]); the remaining limits
(steps $\ge K_{min}$ under every cap, memory, the ranges of $N$ and $B$) bound
$\log B$ by a decreasing function of $\log N$ ([`log_b_high`][]). Everything here
is eager NumPy, vectorised over budgets (and usable under JAX through `xp`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import equinox as eqx
import numpy as np

from .._misc import vector

# Relative slack below which a limit counts as binding.
BINDING = 1e-3


class Hardware(eqx.Module):
    r"""The memory and throughput model behind `max_memory` and `max_time` of [`nqs_engine.plan`][].

    - memory in bytes: $M(N, B) = N\,(m_{state} + m_{act}\,B\,\ell)$, training state
      plus the activations of one batch of $B$ sequences of $\ell$ tokens.
      `bytes_per_param` $= m_{state}$ defaults to 16 (mixed-precision Adam: fp32
      master weights and two moments, 16-bit weights and gradients).
      `activation_bytes` $= m_{act}$ is bytes per parameter per token held: a
      transformer with $N = 12 L d^2$ stores about $34 L d$ bytes per token
      without recomputation (Korthikanti et al., 2022), i.e. $2.8/d$ per
      parameter; the default 0.0028 is $d = 1024$. Set it to match your
      architecture, activation checkpointing or micro-batching (0 models
      unlimited gradient accumulation).
    - time in seconds: $T = 6\,N\,K\,\min(B\ell, \tau)/F$: each accelerator
      sustains `device_flops` $= F$ FLOP/s (default 4e14, an H100 at ~40% of
      its dense bf16 peak) on `tokens_per_device` $= \tau$ tokens per step
      (default 16384); larger batches use proportionally more accelerators.

    **Example:**

    >>> from nqs_engine import Hardware
    >>> hw = Hardware()
    >>> round(hw.memory(1e9, 256, 2048) / 2**30)   # GiB: 1B model, a batch of 256 x 2048 tokens
    1382
    >>> round(float(hw.time(1e9, 256, 10_000, 2048)) / 3600, 2)   # hours for 10k steps
    0.68
    """

    bytes_per_param: float = 16.0
    activation_bytes: float = 0.0028
    device_flops: float = 4e14
    tokens_per_device: float = 16384.0

    def __check_init__(self):
        for name in ("bytes_per_param", "device_flops", "tokens_per_device"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"Hardware.{name} must be a positive number, got {value!r}")
        act = self.activation_bytes
        if not (isinstance(act, (int, float)) and math.isfinite(act) and act >= 0):
            raise ValueError(f"Hardware.activation_bytes must be a number >= 0, got {act!r}")

    def memory(self, N: Any, B: Any, seq_len: Any) -> Any:
        """Bytes to train a model of N parameters at batch B (sequences of seq_len tokens)."""
        return N * (self.bytes_per_param + self.activation_bytes * B * seq_len)

    def time(self, N: Any, B: Any, K: Any, seq_len: Any) -> Any:
        """Seconds for K steps (see the class docstring)."""
        return 6 * N * K * np.minimum(B * seq_len, self.tokens_per_device) / self.device_flops


# ---------------------------------------------------------------------------
# Budgets and their feasible sets (NumPy, eager, vectorised over budgets)
# ---------------------------------------------------------------------------


def log_steps(log_n, log_b, log_c, log_d, log_tf, log_tau, log_s, xp):
    r"""$\log K$ with $K = \min(C/(6NB\ell),\ D_{max}/(B\ell),\ T_{max}F/(6N\min(B\ell, \tau)))$."""
    by_compute = log_c - log_n - log_b
    by_tokens = log_d - log_b
    by_time = log_tf - log_n - xp.minimum(log_b + log_s, log_tau + 0 * log_b)
    return xp.minimum(xp.minimum(by_compute, by_tokens), by_time)


def log_b_high(log_n, log_c, log_d, log_tf, log_tau, log_s, log_k_min, log_b_max, max_memory, hw, xp):
    """Largest log B at log N: b_range, memory, and every cap allowing K >= min_steps."""
    high = xp.minimum(log_b_max, log_c - log_k_min - log_n)  # compute
    high = xp.minimum(high, log_d - log_k_min + 0 * log_n)  # tokens
    # time: N min(B l, tau) <= T F / (6 K_min); binds B only where N tau exceeds it
    room_t = log_tf - log_k_min - log_n
    high = xp.minimum(high, xp.where(room_t >= log_tau, xp.inf, room_t - log_s))
    room = max_memory * xp.exp(-log_n) - hw.bytes_per_param
    if hw.activation_bytes > 0:
        safe = xp.where(room > 0, room, 1.0)
        mem = xp.where(room > 0, xp.log(safe / (hw.activation_bytes * xp.exp(log_s))), -xp.inf)
    else:
        mem = xp.where(room >= 0, xp.inf, -xp.inf)
    return xp.minimum(high, mem)


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Limits of M budgets as float64 arrays of shape (M,); `inf` = no limit."""

    compute: np.ndarray
    seq_len: np.ndarray
    max_tokens: np.ndarray
    max_memory: np.ndarray
    max_time: np.ndarray
    min_steps: np.ndarray
    n_range: tuple[float, float]
    b_range: tuple[float, float]
    hardware: Hardware

    @property
    def size(self) -> int:
        return self.compute.shape[0]

    def steps(self, N, B):
        """K = the largest step count every cap allows (compute, tokens, time); (M,)+ arrays."""
        c = lambda a: a.reshape(a.shape + (1,) * (np.ndim(N) - 1))  # noqa: E731
        log_k = log_steps(np.log(N), np.log(B), *(c(v) for v in self.log_caps()), np)
        return np.exp(log_k)

    def log_caps(self):
        """(log C/(6 l), log D_max/l, log T_max F/6, log tau, log l) per budget."""
        hw = self.hardware
        with np.errstate(divide="ignore"):
            return (
                np.log(self.compute / (6 * self.seq_len)),
                np.log(self.max_tokens / self.seq_len),
                np.log(self.max_time * hw.device_flops / 6),
                np.full(self.size, math.log(hw.tokens_per_device)),
                np.log(self.seq_len),
            )

    # Bounds on log B at a given log N (free batch size); arrays (M, ...) -> (M, ...).
    def log_b_low(self) -> np.ndarray:
        """Smallest log B (b_range)."""
        return np.full(self.size, math.log(self.b_range[0]))

    def log_b_high(self, log_n, xp=np):
        """Largest log B at log N: b_range, memory, and K >= min_steps under every cap."""
        c = lambda a: a.reshape(a.shape + (1,) * (log_n.ndim - 1))  # noqa: E731
        caps = self.log_caps()
        log_k_min = c(np.log(self.min_steps))
        return log_b_high(log_n, *(c(v) for v in caps), log_k_min, math.log(self.b_range[1]),
                           c(self.max_memory), self.hardware, xp)

    def log_n_range(self, log_b_low: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
        """[a, b] in log N where some B in [B_low, B_high(N)] is feasible; and the sources."""
        hw = self.hardware
        log_c, log_d, log_tf, log_tau, log_s = self.log_caps()
        log_k_min = np.log(self.min_steps)
        with np.errstate(divide="ignore"):
            lows = {"n_range": np.full(self.size, math.log(self.n_range[0]))}
            b_low = np.exp(log_b_low)
            highs = {
                "n_range": np.full(self.size, math.log(self.n_range[1])),
                "min_steps": log_c - log_k_min - log_b_low,
                "max_time": log_tf - log_k_min - np.minimum(log_b_low + log_s, log_tau),
                "max_memory": np.log(
                    self.max_memory / (hw.bytes_per_param + hw.activation_bytes * b_low * self.seq_len)
                ),
                # tokens: B_low l K_min <= D_max, or nothing is feasible
                "max_tokens": np.where(log_d - log_k_min >= log_b_low, np.inf, -np.inf),
            }
        a = np.max(np.stack(list(lows.values())), axis=0)
        b = np.min(np.stack(list(highs.values())), axis=0)
        return a, b, [lows, highs]

    def metrics(self, N, B, K) -> dict[str, np.ndarray]:
        """Tokens, compute, memory and time of plans (arrays broadcasting with (M,))."""
        s = self.seq_len.reshape(self.seq_len.shape + (1,) * (np.ndim(N) - 1))
        return {
            "tokens": B * K * s,
            "compute": 6 * N * B * K * s,
            "memory": self.hardware.memory(N, B, s),
            "time": self.hardware.time(N, B, K, s),
        }

    def binding(self, N, B, K) -> list[tuple[str, ...]]:
        """Names of the limits each budget's plan (N, B, K of shape (M,)) meets."""
        m = self.metrics(N, B, K)
        rel = {
            "compute": 1 - m["compute"] / self.compute,
            "max_tokens": 1 - m["tokens"] / self.max_tokens,
            "max_memory": 1 - m["memory"] / self.max_memory,
            "max_time": 1 - m["time"] / self.max_time,
            "min_steps": K / self.min_steps - 1,
            "n_range": np.minimum(N / self.n_range[0] - 1, 1 - N / self.n_range[1]),
            "b_range": np.minimum(B / self.b_range[0] - 1, 1 - B / self.b_range[1]),
        }
        return [tuple(k for k, v in rel.items() if v[i] < BINDING) for i in range(self.size)]


def _describe(name: str, value: float) -> str:
    return f"{name}={value:.4g}"


def infeasible_message(budgets: Budgets, i: int, a, b, sources, log_b_low) -> str:
    """Why budget i has no feasible plan, naming the limits in conflict."""
    _, highs = sources
    b_lo = math.exp(log_b_low[i])
    n_lo = math.exp(a[i])
    high_name = min(highs, key=lambda k: highs[k][i])
    why = {
        "n_range": lambda: f"the largest model size allowed (n_range) is N = {budgets.n_range[1]:.4g}",
        "min_steps": lambda: f"compute={budgets.compute[i]:.4g} FLOPs buys fewer than "
        f"{_describe('min_steps', budgets.min_steps[i])} steps of B = {b_lo:.4g} at N = {n_lo:.4g}",
        "max_time": lambda: f"{_describe('max_time', budgets.max_time[i])} s allows fewer than "
        f"{_describe('min_steps', budgets.min_steps[i])} steps of B = {b_lo:.4g} at N = {n_lo:.4g}",
        "max_memory": lambda: f"{_describe('max_memory', budgets.max_memory[i])} bytes does not hold "
        f"N = {n_lo:.4g} at B = {b_lo:.4g}",
        "max_tokens": lambda: f"{_describe('max_tokens', budgets.max_tokens[i])} is fewer than "
        f"{_describe('min_steps', budgets.min_steps[i])} steps of B = {b_lo:.4g} sequences",
    }[high_name]()
    return (f"infeasible budget at compute={budgets.compute[i]:.4g}: no run with N >= {n_lo:.4g} "
            f"(n_range) and B >= {b_lo:.4g} (b_range) fits: {why}")


def budget_array(value, name: str, size: int, default: float):
    """A limit as a float64 array of `size` budgets (`default` where not given), checked > 0."""
    arr = np.asarray(default if value is None else value, dtype=float)
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a number or a 1-D array, got shape {arr.shape}")
    if arr.ndim == 0 and not arr > 0:
        raise ValueError(f"{name} must be > 0, got {float(arr):g}")
    if arr.ndim == 1 and arr.size not in (1, size):
        raise ValueError(f"{name} has {arr.size} values but compute has {size}")
    return vector(arr, name, size=size, broadcast=True, finite=False, check=lambda v: v > 0,
                  requirement="must be > 0")


def checked_range(value, name: str, default: tuple[float, float]) -> tuple[float, float]:
    """`(low, high)` with 0 < low <= high, both finite (`default` when `value` is None)."""
    lo, hi = default if value is None else value
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, finite; got {value!r}")
    return lo, hi


__all__ = ["BINDING", "Budgets", "Hardware", "budget_array", "checked_range", "infeasible_message",
           "log_b_high", "log_steps"]
