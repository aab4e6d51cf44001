"""Test-suite configuration: float64 on for the suite, a PRNG-key fixture, hypothesis profile."""

import itertools
import os
import tempfile


def _shared_compile_cache() -> str:
    """A compilation cache for this test run, shared by its xdist workers and subprocesses.

    Every worker, CLI subprocess and notebook kernel compiles many of the same programs
    (the fitter's, the risk's); with one persistent cache per run each is compiled once.
    xdist gives all workers of a run the same PYTEST_XDIST_TESTRUNUID; without xdist the
    folder is this process's own. It lives in the temporary folder, never in ~/.cache.
    """
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        return tempfile.mkdtemp(prefix="nqs-engine-tests-xla-")
    path = os.path.join(tempfile.gettempdir(), f"nqs-engine-tests-xla-{run}")
    os.makedirs(path, exist_ok=True)
    return path


# Set before JAX is imported, so that this process and every subprocess read them.
_CACHE = _shared_compile_cache()
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ.setdefault("NQS_ENGINE_CACHE_DIR", _CACHE)

import hypothesis  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

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
