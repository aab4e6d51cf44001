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


#: The suite's files in decreasing order of their wall time (summed over their tests, from
#: `--junitxml` of a full run on the 2-core machine, 2026-12-07; seconds in brackets). The
#: README's test command runs them in this order (`--no-loadscope-reorder` in pyproject),
#: each file on one xdist worker, so the long files start first and the short ones fill
#: the end (longest first on two workers ends within 7/6 of the shortest possible
#: session, Graham's bound), whereas
#: xdist's own order (most tests first) left the long, few-test files (CLI fits of curves,
#: notebooks, interrupts) to the end, with one worker idle while the other ran them.
#: Files not listed (each under 20 s) follow in collection order. The order only
#: schedules work; no test depends on it.
LONGEST_FIRST = (
    "tests/test_curve_fitting.py",  # 141
    "tests/test_notebooks.py",  # 128
    "tests/test_plan.py",  # 118
    "tests/test_schedule.py",  # 87
    "tests/test_ladders.py",  # 85
    "tests/test_risk.py",  # 75
    "tests/test_plot.py",  # 64
    "tests/test_curves.py",  # 58
    "tests/test_interrupts.py",  # 56
    "tests/test_fit.py",  # 53
    "tests/test_sum_rule.py",  # 49
    "tests/test_chinchilla.py",  # 47
    "tests/test_sweep_distributed.py",  # 32
    "tests/test_prefix.py",  # 26
    "nqs_engine/_fit/_bootstrap.py",  # 25
    "tests/test_cli.py",  # 22
    "tests/test_sweep.py",  # 20
    "tests/test_cli_fit.py",  # 20
)


def pytest_collection_modifyitems(session, config, items):
    """Order the collected tests by `LONGEST_FIRST` (a stable sort: within a file, and among
    the files not listed, the collection order stays)."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


@pytest.fixture
def getkey():
    """A fresh, deterministic PRNG key on every call."""
    counter = itertools.count()
    return lambda: jax.random.key(next(counter))
