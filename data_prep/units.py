"""Units of work: which input files are prepared together, their names, and `--part i/N` slices.

A unit is one input file, or a group of consecutive single-article files of one folder (PMC `.nxml`): see
parallel.py for why. The plan depends only on the sorted input list and the file sizes, so every run and
every --part plans the same units.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from biobert.corpus.pubmed import read_pubmed
from biobert.errors import UserError
from data_prep.pmc import read_nxml
from data_prep.readers import READERS, reader_for

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


# Single-article files (PMC .nxml) are grouped into units of consecutive files of one folder, so that NSP
# has other documents to draw random-next segments from; a unit this size also keeps the per-unit costs
# (done marker, shard files, manifest entry) small next to the work.
GROUP_READERS = (read_nxml,)
GROUP_MAX_FILES = 1000
GROUP_MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class Unit:
    position: int  # in the sorted list of ALL units: the manifest's order
    name: str  # its shard folder and done-marker name
    paths: tuple[Path, ...]  # one input file, or a group of consecutive single-article files
    pubmed: bool

    @property
    def path(self) -> Path:
        return self.paths[0]

    @property
    def grouped(self) -> bool:
        return len(self.paths) > 1

    @property
    def label(self) -> str:
        return (
            self.path.name
            if not self.grouped
            else f"{self.path.name} .. {self.paths[-1].name} ({len(self.paths)} files)"
        )


def _file_names(files: list[Path]) -> list[str]:
    """Each input's name: its file name less the reader suffix; equal names get a hash of their folder."""

    def stem(p: Path) -> str:
        suffix = max((s for s in READERS if p.name.endswith(s)), key=len, default="")
        return _UNSAFE.sub("_", p.name[: len(p.name) - len(suffix)] or p.name)

    stems = Counter(stem(p).lower() for p in files)
    names = []
    for p in files:
        name = stem(p)
        if stems[name.lower()] > 1:
            name += "-" + hashlib.blake2b(str(p.parent).encode(), digest_size=4).hexdigest()
        names.append(name)
    return names


def _groups(files: list[Path]) -> list[list[int]]:
    """Indices of `files` (sorted) per unit: runs of single-article files of one folder, capped in files and
    bytes; every other file alone. Depends only on the sorted list and the sizes, so every run and every
    --part plans the same units."""
    groups: list[list[int]] = []
    size = 0
    for i, p in enumerate(files):
        groupable = reader_for(p) in GROUP_READERS
        last = groups[-1] if groups else None
        nbytes = p.stat().st_size if groupable else 0
        if (
            groupable
            and last is not None
            and files[last[-1]].parent == p.parent
            and reader_for(files[last[-1]]) in GROUP_READERS
            and len(last) < GROUP_MAX_FILES
            and size + nbytes <= GROUP_MAX_BYTES
        ):
            last.append(i)
            size += nbytes
        else:
            groups.append([i])
            size = nbytes
    return groups


def plan_units(files: list[Path]) -> list[Unit]:
    """One unit per input file, except runs of single-article files (see `_groups`); a group is named after
    its first and last file."""
    names = _file_names(files)
    units = []
    for position, group in enumerate(_groups(files)):
        name = names[group[0]] if len(group) == 1 else f"{names[group[0]]}--{names[group[-1]]}"
        paths = tuple(files[i] for i in group)
        units.append(Unit(position, name, paths, len(group) == 1 and reader_for(paths[0]) is read_pubmed))
    return units


def parse_part(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    m = re.fullmatch(r"(\d+)/(\d+)", spec.strip())
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise UserError(f"--part must be i/N with 0 <= i < N (e.g. --part $SLURM_ARRAY_TASK_ID/16), got {spec!r}")
    return int(m.group(1)), int(m.group(2))


def check_pubmed_names(units: list[Unit]) -> None:
    names = Counter(u.path.name for u in units if u.pubmed)
    for name in (n for n, k in names.items() if k > 1):
        folders = ", ".join(str(u.path.parent) for u in units if u.path.name == name)
        raise UserError(
            f"PubMed file {name} is given twice (in {folders}); its place in NCBI's update order "
            "is ambiguous: pass it once"
        )
