r"""A synthetic Pythia-like ladder whose losses come from the engine itself.

For notebooks, examples and tests that need a ladder of runs without the measured
data: the design of isoFLOP and isotoken runs mimics the Pythia / OpenWebText2
ladder (`pythia_owt2_runs.csv`), the losses are the NQS's, with noise.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._misc import positive_integer, positive_scalar
from ._params import NQSParams, preset
from ._risk._risk import risk

#: The design (see the docstring of [`synthetic_ladder`][]): per split, the isoFLOP
#: budgets (FLOPs), smallest model and number of doublings; the isotoken model sizes,
#: tokens per parameter, batch sizes and the fewest steps a run may take.
_ISOFLOP = {"train": ((1e15, 4e15, 1.5e16, 6e16), 2.5e5, 11),
            "test": ((2.4e17, 9.5e17, 3.8e18, 1.5e19, 6e19), 8e6, 9)}
_ISOTOKEN = {"train": ((1e7, (1.5, 6, 12, 25), 96 * 2.0 ** np.arange(10), 40),
                       (1e8, (0.15, 0.6), 192 * 2.0 ** np.arange(7), 40)),
             "test": ((1e7, (50, 100, 1600), 48 * 2.0 ** np.arange(14), 100),)}
#: Tokens per parameter an isoFLOP run may have.
_TOKENS_PER_PARAM = (0.5, 700.0)


def _isoflop(budgets, smallest, sizes, seq_len):
    C, N = np.meshgrid(np.asarray(budgets, float), smallest * 2.0 ** np.arange(sizes),
                       indexing="ij")  # budget-major, as a ladder is listed
    C, N = C.ravel(), N.ravel()
    D = C / (6.0 * N)
    keep = (D / N >= _TOKENS_PER_PARAM[0]) & (D / N <= _TOKENS_PER_PARAM[1])
    N, D = N[keep], D[keep]
    # K ~ 6 B, as in the measured ladder; at least one sequence and one step at any seq_len
    B = np.maximum(1.0, np.round(np.sqrt(D / (6.0 * seq_len))))
    return N, B, np.maximum(1.0, np.round(D / (B * seq_len)))


def _isotoken(N, tokens_per_param, batches, min_steps, seq_len):
    tpp, B = np.meshgrid(np.asarray(tokens_per_param, float), np.asarray(batches, float),
                         indexing="ij")
    tpp, B = tpp.ravel(), B.ravel()
    K = np.round(tpp * N / (B * seq_len))
    keep = K >= min_steps
    return np.full(int(keep.sum()), float(N)), B[keep], K[keep]


def synthetic_ladder(
    params: NQSParams | None = None,
    lr: float | None = None,
    *,
    noise: float = 0.01,
    seed: int = 0,
    seq_len: int = 128,
) -> dict[str, np.ndarray]:
    r"""A Pythia-like ladder of constant-schedule runs with losses from the plain NQS.

    The design copies the shape of the Pythia / OpenWebText2 ladder: 64 training
    runs up to about $6 \times 10^{16}$ FLOPs and 64 test runs up to about
    $6 \times 10^{19}$ (1000x), each split holding

    - **isoFLOP** runs: for budgets $C$ and model sizes $N$ doubling from a smallest
      one, $D = C / (6N)$ tokens (kept when $0.5 \le D/N \le 700$), batch
      $B = \max(1, \mathrm{round}\sqrt{D / (6\,\ell)})$ sequences of $\ell$ = `seq_len`
      tokens and $K = \max(1, \mathrm{round}(D / (B \ell)))$ steps;
    - **isotoken** runs: a fixed $N$ and tokens per parameter $D/N$, the batch
      size doubling, $K = \mathrm{round}((D/N) N / (B \ell))$ (kept when $K$ reaches
      a floor: 40 steps for training runs, 100 for test runs).

    Train: budgets $10^{15}$, $4 \times 10^{15}$, $1.5 \times 10^{16}$,
    $6 \times 10^{16}$ from $N = 2.5 \times 10^5$; isotoken at $N = 10^7$ and $10^8$.
    Test: budgets $2.4 \times 10^{17}$ to $6 \times 10^{19}$ from $N = 8 \times 10^6$;
    isotoken at $N = 10^7$ with up to 1600 tokens per parameter.

    Each loss is the plain risk $L(N, B, K)$ of `params` at step size `lr`
    ([`nqs_engine.risk`][]; default the `pythia-owt2` preset) times log-normal noise,
    $y = L \cdot e^{\sigma \varepsilon}$, $\varepsilon \sim \mathcal N(0, 1)$ drawn by
    `numpy.random.default_rng(seed)`, $\sigma$ = `noise` (0 gives the noiseless losses).

    **Returns** a dict of numpy columns in the order of the measured ladder's file:
    `N`, `B`, `K`, `loss` (floats), `split` (`"train"`/`"test"`), `type`
    (`"isoflop"`/`"isotoken"`) and `filtered` (all `False`).

    **Example:**

    >>> import numpy as np, nqs_engine as nqs
    >>> runs = nqs.synthetic_ladder(seed=0)
    >>> [int(np.sum(runs["split"] == s)) for s in ("train", "test")]
    [64, 64]
    >>> C = 6 * runs["N"] * runs["B"] * runs["K"] * 128
    >>> f"{C[runs['split'] == 'train'].max():.1e}", f"{C[runs['split'] == 'test'].max():.1e}"
    ('6.0e+16', '6.0e+19')
    >>> clean = nqs.synthetic_ladder(noise=0.0)
    >>> params, lr = nqs.preset("pythia-owt2")
    >>> bool(np.allclose(clean["loss"], nqs.risk(params, clean["N"], clean["B"],
    ...                                          clean["K"], lr=lr).total))
    True
    """
    noise = positive_scalar(noise, "noise", allow_zero=True)
    seq_len = positive_integer(seq_len, "seq_len")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if (params is None) != (lr is None):
        raise ValueError("give params and lr together, or neither (the pythia-owt2 preset)")
    if params is None:
        params, lr = preset("pythia-owt2")

    parts = []  # (split, type, N, B, K) per block of the design
    for split in ("train", "test"):
        parts.append((split, "isoflop", *_isoflop(*_ISOFLOP[split], seq_len)))
        for design in _ISOTOKEN[split]:
            parts.append((split, "isotoken", *_isotoken(*design, seq_len)))
    N, B, K = (np.concatenate([p[i] for p in parts]) for i in (2, 3, 4))
    split = np.concatenate([np.full(p[2].size, p[0]) for p in parts])
    kind = np.concatenate([np.full(p[2].size, p[1]) for p in parts])

    clean = np.asarray(risk(params, N, B, K, lr=lr).total, dtype=np.float64)
    loss = clean * np.exp(noise * np.random.default_rng(seed).standard_normal(clean.shape))
    return dict(N=N, B=B, K=K, loss=loss, split=split, type=kind,
                filtered=np.zeros(N.size, bool))
