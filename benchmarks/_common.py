"""Shared helpers for the benchmark scripts: device description and atomic JSON output."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import tempfile

import jax

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


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
    """Write `payload` (plus device info) to results/NAME.json atomically; return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"device_info": device_info(), **payload}
    path = RESULTS / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=RESULTS, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)
    return path
