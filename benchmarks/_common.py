"""Shared helpers for the benchmark scripts: device description and atomic JSON output.

Results go to benchmarks/results/, or to the folder named by the environment
variable NQS_BENCH_RESULTS (run_all.py --quick sets it to a scratch folder so
that smoke runs leave the committed results alone).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import tempfile

import jax

RESULTS = pathlib.Path(
    os.environ.get("NQS_BENCH_RESULTS") or pathlib.Path(__file__).resolve().parent / "results"
).resolve()


def device_info() -> dict:
    """The JAX backend and device, the host and the library versions."""
    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "num_devices": jax.device_count(),
        "host_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save(name: str, payload: dict) -> pathlib.Path:
    """Write `payload` (plus device info) to results/NAME.json atomically; return the path.

    Off the CPU, NAME gains the backend (plan.json -> plan_gpu.json) unless it
    already names it, so a GPU run never replaces the CPU results.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = device_info()
    if info["backend"] != "cpu" and info["backend"] not in name.split("_"):
        name = f"{name}_{info['backend']}"
    payload = {"device_info": info, **payload}
    path = RESULTS / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=RESULTS, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the results private
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)  # never leave a half-written file behind
        raise
    return path
