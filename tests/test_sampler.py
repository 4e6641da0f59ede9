import numpy as np
import pytest

from biobert.sampler import BatchLayout, BatchSource, EpochSampler, rank_micro_batches


def test_position_determines_the_batch_not_the_history():
    a = EpochSampler(100, 8, seed=3)
    fresh = EpochSampler(100, 8, seed=3)
    seq = [a.global_batch_at(p).tolist() for p in range(0, 400, 8)]
    assert fresh.global_batch_at(200).tolist() == seq[25]
    assert EpochSampler(100, 8, seed=4).global_batch_at(0).tolist() != seq[0]


def test_epochs_cover_each_example_once_and_reshuffle():
    s = EpochSampler(100, 8, seed=1, drop_last=True)
    assert s.steps_per_epoch == 12
    epoch0 = np.concatenate([s.global_batch_at(p) for p in range(0, 96, 8)])
    epoch1 = np.concatenate([s.global_batch_at(p) for p in range(96, 192, 8)])
    assert len(set(epoch0.tolist())) == 96 and len(set(epoch1.tolist())) == 96
    assert epoch0.tolist() != epoch1.tolist()


def test_no_drop_last_pads_with_the_epochs_first_examples():
    s = EpochSampler(10, 4, seed=0, shuffle=False, drop_last=False)
    assert s.steps_per_epoch == 3
    assert s.global_batch_at(8).tolist() == [8, 9, 0, 1]
    assert s.global_batch_at(12).tolist() == [0, 1, 2, 3]


def test_ranks_and_micro_steps_partition_the_global_batch():
    indices = np.arange(24)
    seen = []
    for rank in range(3):
        parts = rank_micro_batches(indices, BatchLayout(24, 4, 2, 3, rank))
        assert all(len(p) == 4 for p in parts)
        seen += [i for p in parts for i in p.tolist()]
    assert sorted(seen) == list(range(24))


def test_misaligned_position_and_layout_are_errors():
    s = EpochSampler(50, 8, seed=0)
    with pytest.raises(ValueError, match="multiple of the global batch"):
        s.global_batch_at(4)
    with pytest.raises(ValueError, match="inconsistent"):
        BatchSource(s, BatchLayout(8, 4, 1, 1, 0), lambda ix: ix)


def test_group_by_length_keeps_each_epoch_complete_and_batches_homogeneous():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, 1000)
    s = EpochSampler(1000, 32, seed=1, drop_last=False, lengths=lengths, group_size=10)
    batches = [s.global_batch_at(p) for p in range(0, s.samples_per_epoch, 32)]
    epoch = np.concatenate(batches)
    assert set(epoch.tolist()) == set(range(1000))
    padded_grouped = sum(lengths[b].max() * len(b) for b in batches)
    plain = EpochSampler(1000, 32, seed=1, drop_last=False)
    padded_plain = sum(lengths[plain.global_batch_at(p)].max() * 32 for p in range(0, plain.samples_per_epoch, 32))
    assert padded_grouped < 0.7 * padded_plain
    assert (
        s.global_batch_at(64).tolist()
        == EpochSampler(1000, 32, 1, drop_last=False, lengths=lengths, group_size=10).global_batch_at(64).tolist()
    )


def test_prefetched_batches_equal_collated_ones_and_a_stale_prefetch_is_dropped():
    """The background collator is a pure function of (position, step): masks drawn from a generator seeded
    from (seed, step, rank), never from the training thread's global state."""
    import torch

    from biobert.sampler import BatchLayout, BatchSource, EpochSampler

    def fetch(ix, generator):
        return {"input_ids": torch.as_tensor(ix), "draw": torch.rand(3, generator=generator)}

    layout = BatchLayout(8, 4, 2, 1, 0)
    ahead = BatchSource(EpochSampler(100, 8, 1), layout, fetch, seed=7)
    plain = BatchSource(EpochSampler(100, 8, 1), layout, fetch, seed=7, prefetch=False)
    ahead.prefetch(16, 2)
    torch.manual_seed(123)  # the training thread's state does not matter
    got, want = ahead.get(16, 2), plain.get(16, 2)
    assert got.tokens == want.tokens == 8
    for a, b in zip(got.micro_batches, want.micro_batches):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["draw"], b["draw"])
    ahead.prefetch(24, 3)  # a rollback asks for another position: the prefetched one is not used
    other = ahead.get(16, 2)
    assert torch.equal(other.micro_batches[0]["draw"], want.micro_batches[0]["draw"])
    ahead.close()
    ahead.prefetch(24, 3)  # usable again after close (a new thread)
    assert ahead.get(24, 3).tokens == 8
    ahead.close()
