"""Where the test suite's time goes: a pytest plugin that records, per test, its wall time
and the time JAX spends tracing, lowering and compiling programs for it (issue #13).

Run the suite with it (from the repository root, the README's test command plus the
plugin; xdist workers report to the controller through a scratch folder)::

    PYTHONPATH=benchmarks python -m pytest -p suite_profile

It listens to JAX's own monitoring events (``jax.monitoring``: the durations of
``/jax/core/compile/jaxpr_trace_duration``, ``.../jaxpr_to_mlir_module_duration`` and
``.../backend_compile_duration``, the last with the compiled function's name) and
writes ``results/suite_profile.json``: the session's wall time, the sum over tests of
wall, trace, lowering and XLA compile time, the programs that cost the most compile
time (name, count, seconds) and the 30 slowest tests with their share of compilation.
Subprocesses (notebook kernels, CLI processes) are timed as wall time only. On
2026-12-07 it showed XLA compilation at 56% of the in-process test time.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import shutil
import tempfile
import time

import pytest

_FOLDER_ENV = "NQS_SUITE_PROFILE_DIR"
_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "compile_s",
}

_current: dict = {"test": None, "own_folder": False}
_tests: dict = collections.defaultdict(collections.Counter)
_programs: dict = collections.defaultdict(collections.Counter)
_started = time.perf_counter()


def _listener(event: str, duration: float, **kwargs) -> None:
    key = _EVENTS.get(event)
    if key is None or _current["test"] is None:
        return
    _tests[_current["test"]][key] += duration
    if key == "compile_s":
        _tests[_current["test"]]["compiles"] += 1
        name = str(kwargs.get("fun_name", "?"))
        _programs[name]["seconds"] += duration
        _programs[name]["count"] += 1


def pytest_configure(config):
    import jax.monitoring

    jax.monitoring.register_event_duration_secs_listener(_listener)
    if not os.environ.get("PYTEST_XDIST_WORKER") and _FOLDER_ENV not in os.environ:
        os.environ[_FOLDER_ENV] = tempfile.mkdtemp(prefix="nqs-suite-profile-")
        _current["own_folder"] = True  # the controller removes it once merged


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current["test"] = item.nodeid
    start = time.perf_counter()
    yield
    _tests[item.nodeid]["wall_s"] += time.perf_counter() - start
    _current["test"] = None


def _dump(path: pathlib.Path) -> None:
    payload = {"tests": {k: dict(v) for k, v in _tests.items()},
               "programs": {k: dict(v) for k, v in _programs.items()}}
    path.write_text(json.dumps(payload))


def _merge(folder: pathlib.Path) -> tuple[dict, dict]:
    tests: dict = collections.defaultdict(collections.Counter)
    programs: dict = collections.defaultdict(collections.Counter)
    for part in sorted(folder.glob("*.json")):
        data = json.loads(part.read_text())
        for name, row in data["tests"].items():
            tests[name].update(row)
        for name, row in data["programs"].items():
            programs[name].update(row)
    return tests, programs


def pytest_sessionfinish(session, exitstatus):
    folder = pathlib.Path(os.environ[_FOLDER_ENV])
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is not None:  # a worker: hand its part to the controller
        _dump(folder / f"{worker}.json")
        return
    if _tests:  # no xdist: this process ran the tests itself
        _dump(folder / "main.json")
    tests, programs = _merge(folder)
    if _current["own_folder"]:
        shutil.rmtree(folder, ignore_errors=True)
    if not tests:
        return
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from _common import save

    total = collections.Counter()
    for row in tests.values():
        total.update(row)
    slowest = sorted(tests.items(), key=lambda kv: -kv[1].get("wall_s", 0.0))[:30]
    costly = sorted(programs.items(), key=lambda kv: -kv[1]["seconds"])[:30]
    payload = {
        "session_wall_s": round(time.perf_counter() - _started, 1),
        "num_tests": len(tests),
        "sum_over_tests": {k: round(float(total[k]), 1) for k in
                           ("wall_s", "trace_s", "lower_s", "compile_s", "compiles")},
        "compile_share_of_test_wall": round(float(total["compile_s"] / total["wall_s"]), 3)
        if total["wall_s"] else None,
        "programs_by_compile_time": [
            {"program": name, "count": int(row["count"]), "seconds": round(row["seconds"], 1)}
            for name, row in costly],
        "slowest_tests": [
            {"test": name, **{k: round(float(v), 2) for k, v in row.items()}}
            for name, row in slowest],
        "command": "PYTHONPATH=benchmarks python -m pytest -p suite_profile",
    }
    path = save("suite_profile", payload)
    session.config._nqs_suite_profile = (payload, path)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    found = getattr(config, "_nqs_suite_profile", None)
    if found is None:
        return
    payload, path = found
    s = payload["sum_over_tests"]
    write = terminalreporter.write_line
    write(f"suite profile: {payload['num_tests']} tests, session {payload['session_wall_s']} s; "
          f"summed over tests: wall {s['wall_s']} s, XLA compile {s['compile_s']} s "
          f"({s['compiles']:.0f} programs), trace {s['trace_s']} s, lowering {s['lower_s']} s")
    for row in payload["programs_by_compile_time"][:10]:
        write(f"  {row['seconds']:7.1f} s  {row['count']:5d} x  {row['program']}")
    write(f"suite profile -> {path}")
