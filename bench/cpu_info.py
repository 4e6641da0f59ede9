"""Where a benchmark ran, for its record: the CPU's name (/proc/cpuinfo's first "model name") and flags, and the
machine record every benchmark writes (machine()), one helper for all."""

from __future__ import annotations

import datetime as dt
import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path


def cpu_name(default: str = "unknown") -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return default
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), default)


def cpu_flags() -> set[str]:
    """The first CPU's feature flags (avx512_bf16, amx_bf16, ...); empty where /proc/cpuinfo is missing."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())


def machine(packages: Iterable[str] = ()) -> dict:
    """CPU (name, cores, the bf16 / AVX-512 flags that change speeds), memory, platform, Python, the versions of
    `packages` ("not installed" for a missing one), the load average at the start and the UTC date."""
    return {
        "cpu": cpu_name(platform.processor() or "unknown"),
        "cores": os.cpu_count(),
        "isa": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in packages},
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
