"""Test-suite configuration: float64 on for the suite, a PRNG-key fixture, hypothesis profile."""

import itertools

import hypothesis
import jax
import pytest

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
