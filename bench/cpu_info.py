"""The CPU's name for the benchmarks' records (/proc/cpuinfo's first "model name"), one helper for all."""

from __future__ import annotations

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
