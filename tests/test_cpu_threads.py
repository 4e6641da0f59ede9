"""biobert.engine._cpu_threads: a rank's share of the cores, never more threads than its process already has."""

from __future__ import annotations

import os

import torch

from biobert import engine


def test_a_callers_thread_count_is_kept_and_a_rank_gets_its_share(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    try:
        torch.set_num_threads(1)  # a worker of a pool, as bench/learning_curve.py's
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
        engine._cpu_threads()
        assert torch.get_num_threads() == 1
        torch.set_num_threads(max(1, os.cpu_count() or 1))  # torch's default-sized pool: cut to the rank's share
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(max(1, os.cpu_count() or 1)))
        engine._cpu_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
