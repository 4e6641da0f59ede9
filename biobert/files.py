"""File and provenance helpers every stage shares: atomic JSON, content digests, the git commit."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def file_sha256(path: str | Path) -> str:
    """The full hex sha256 of a file's bytes, read in 1 MiB blocks (checkpoints are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def short_sha256(path: str | Path) -> str:
    """16 hex digits of file_sha256: enough to tell data files apart in configs and results."""
    return file_sha256(path)[:16]


def write_json(path: str | Path, data: dict, *, sort_keys: bool = True, indent: int = 2) -> None:
    """tmp + fsync + rename: a reader (or a resumed run) sees the complete file or none, even after a power
    loss. The tmp name carries the pid, so concurrent writers (ranks, Slurm parts) never share one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=indent, sort_keys=sort_keys, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def git_sha(short: bool = False) -> str:
    """The checkout's commit, "-dirty" when tracked files differ from it; "unknown" outside a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", *(["--short"] if short else []), "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
