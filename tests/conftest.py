"""Test-suite configuration: float64 on for the suite, a PRNG-key fixture, hypothesis profile."""

import itertools
import os

import hypothesis
import jax
import pytest

# The CLI keeps compiled programs in ~/.cache; the suite writes nothing there.
os.environ.setdefault("NQS_ENGINE_NO_CACHE", "1")

# The library never changes global JAX settings; the suite opts in to float64 here.
jax.config.update("jax_enable_x64", True)

# JAX compiles on first use, so per-example deadlines are meaningless.
hypothesis.settings.register_profile("nqs", deadline=None, print_blob=True)
hypothesis.settings.load_profile("nqs")


@pytest.fixture
def getkey():
    """A fresh, deterministic PRNG key on every call."""
    counter = itertools.count()
    return lambda: jax.random.key(next(counter))
