"""Corpus preparation: raw biomedical text in, packed WordPiece examples in Arrow shards out.

Every stage is a plain function or small class over plain Python data so that a later parallel driver can
run the per-file work (`pipeline.process_file`) in worker processes without changing the stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from data_prep.pipeline import PrepConfig


def prepare(cfg: PrepConfig) -> dict:
    """The stage's Python API: prepare (this `--part` of) the shards into `cfg.out` and return the manifest,
    written last. `python -m data_prep` parses its flags into a PrepConfig and calls this; orchestrators
    (the reproduction, Slurm arrays) build the PrepConfig themselves."""
    from data_prep.parallel import run

    return run(cfg)
