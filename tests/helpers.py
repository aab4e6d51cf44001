"""Reference problems and independent brute-force computations for the tests."""

from __future__ import annotations

import pathlib

import numpy as np
import scipy.special

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
REASON_NO_DATA = f"shared data folder {DATA} is absent (see ../shared/data/README.md)"


def brute_force_terms(N, theta, K, B, lr, chunk=1 << 22):
    """(e_irr, e_appx, e_bias, e_var, total) by summing every direction n <= N in numpy.

    Written independently of the engine: the per-direction closed form of SPEC
    section 1 in float64, with log1p/expm1 so that small gamma*lambda does not
    cancel; exact up to the rounding of a float64 sum (pairwise in numpy).
    """
    p, q, P, Q, e_irr, R, r = (float(theta[k]) for k in ("p", "q", "P", "Q", "e_irr", "R", "r"))
    n_max = int(np.floor(N))
    bias = var = 0.0
    for start in range(1, n_max + 1, chunk):
        n = np.arange(start, min(n_max, start + chunk - 1) + 1, dtype=np.float64)
        lam = Q * n**-q
        x = lr * lam
        with np.errstate(divide="ignore", invalid="ignore"):
            log_abs_a = np.where(x < 0.5, np.log1p(-np.minimum(x, 0.5)), np.log(np.abs(1.0 - x)))
            y = 2.0 * K * log_abs_a
            a2k = np.where(x == 1.0, 1.0 if K == 0 else 0.0, np.exp(y))  # 0^0 = 1
            # (1 - a^{2K}) / (1 - a^2); equals 1 at a = 0 (x = 1) when K > 0.
            geo = np.where(x == 1.0, 1.0 if K > 0 else 0.0, -np.expm1(y) / (x * (2.0 - x)))
        bias += np.sum(0.5 * P * n**-p * a2k)
        var += np.sum(0.5 * lam * R * n**-r * (lr * lr / B) * geo)
    approx = 0.5 * P * scipy.special.zeta(p, N + 1.0)
    return e_irr, approx, bias, var, e_irr + approx + bias + var


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.abs(a - b) / np.abs(b)
