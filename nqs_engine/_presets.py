"""The NQS parameter names, the default step size and the published presets, as plain data.

Nothing here imports JAX: the command line reads these for its help texts and
option checks before it loads any numerical module. [`nqs_engine.preset`][]
builds the parameter module from them.
"""

from __future__ import annotations

#: Default peak step size gamma0 (SPEC section 1): only gamma*Q and gamma*R are
#: identifiable, and 1.999 puts the top direction just inside the edge of stability.
DEFAULT_LR = 1.999

PARAM_NAMES = ("p", "q", "P", "Q", "e_irr", "R", "r")


#: Published fitted parameters of the NQS reference implementation for the
#: Pythia / OpenWebText2 ladder (sequence length 128), used with lr = 1.999.
#: Kept as plain floats so that nothing is converted before the caller has
#: chosen float32 or float64; build the module with [`nqs_engine.preset`][].
PRESETS: dict[str, dict[str, float]] = {
    "pythia-owt2": dict(
        p=1.1131253732848405,
        q=0.584242820729791,
        P=3.3926855412266743,
        Q=0.8853327469240055,
        e_irr=0.35449737765209993,
        R=8.410028810517371,
        r=2.5829307382669966,
        lr=DEFAULT_LR,
    ),
}
