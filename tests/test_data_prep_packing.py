"""Packing invariants on synthetic token streams (no tokenizer needed: token ids are made up)."""

import random

import pytest

from data_prep.packing import Packer, truncate_pair

CLS, SEP = 1, 2


def synthetic_docs(n_docs: int, seed: int = 0) -> list[list[list[int]]]:
    """Documents whose token ids are unique per document (doc d uses ids d*10_000 + k)."""
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        next_id = d * 10_000 + 100
        doc = []
        for _ in range(rng.randint(2, 12)):
            n = rng.randint(1, 40)
            doc.append(list(range(next_id, next_id + n)))
            next_id += n
        docs.append(doc)
    return docs


def pack_all(docs, **kw):
    packer = Packer(cls_id=CLS, sep_id=SEP, **{"seq_len": 64, "mode": "nsp", "seed": 7, **kw})
    return [(d, ex) for d, doc in enumerate(docs) for ex in packer.pack(doc)], packer


def is_contiguous(ids: list[int]) -> bool:
    return all(b == a + 1 for a, b in zip(ids, ids[1:]))


@pytest.mark.parametrize("seq_len", [16, 64, 128, 512])
def test_nsp_examples_are_well_formed(seq_len):
    pairs, _ = pack_all(synthetic_docs(300), seq_len=seq_len)
    assert pairs
    for d, ex in pairs:
        ids, k = ex.input_ids, ex.sep_index
        assert len(ids) <= seq_len and ids[0] == CLS and ids[-1] == SEP and ids[k] == SEP
        assert ids.count(SEP) == 2 and ids.count(CLS) == 1
        a, b = ids[1:k], ids[k + 1 : -1]
        assert a and b and ex.next_sentence_label in (0, 1)
        assert all(t // 10_000 == d for t in a)  # segment A always comes from the document itself
        from_other_doc = all(t // 10_000 != d for t in b)
        assert from_other_doc == (ex.next_sentence_label == 1)
        if ex.next_sentence_label == 0 and len(ids) < seq_len:  # untruncated real pair: B follows A
            assert is_contiguous(a + b)


def test_nsp_labels_are_balanced_and_deterministic():
    docs = synthetic_docs(1500)
    pairs, packer = pack_all(docs, seq_len=128)
    labels = [ex.next_sentence_label for _, ex in pairs]
    assert 0.45 < sum(labels) / len(labels) < 0.55
    assert packer.no_random_doc <= 1  # only the first document has nothing to draw from
    again, _ = pack_all(docs, seq_len=128)
    assert [ex.input_ids for _, ex in again] == [ex.input_ids for _, ex in pairs]
    other_seed, _ = pack_all(docs, seq_len=128, seed=8)
    assert [ex.input_ids for _, ex in other_seed] != [ex.input_ids for _, ex in pairs]


def test_short_seq_prob_makes_some_short_examples():
    docs = synthetic_docs(400)
    never, _ = pack_all(docs, seq_len=128, short_seq_prob=0.0)
    often, _ = pack_all(docs, seq_len=128, short_seq_prob=1.0)
    mean = lambda pairs: sum(len(ex.input_ids) for _, ex in pairs) / len(pairs)  # noqa: E731
    assert mean(often) < 0.8 * mean(never)


def test_single_sentence_document_is_too_short_for_nsp_but_packs_for_mlm():
    doc = [[10, 11, 12, 13]]
    assert Packer(seq_len=16, mode="nsp", cls_id=CLS, sep_id=SEP, seed=0).pack(doc) is None
    (ex,) = Packer(seq_len=16, mode="mlm", cls_id=CLS, sep_id=SEP, seed=0, cross_document=False).pack(doc)
    assert ex.input_ids == [CLS, 10, 11, 12, 13, SEP] and ex.sep_index == 5 and ex.next_sentence_label == -1


def test_long_sentence_is_split_not_dropped():
    long_sentence = list(range(1000, 1300))
    packer = Packer(seq_len=32, mode="mlm", cls_id=CLS, sep_id=SEP, seed=0, short_seq_prob=0.0)
    examples = packer.pack([long_sentence]) + packer.flush()
    assert all(len(ex.input_ids) <= 32 for ex in examples)
    assert [t for ex in examples for t in ex.input_ids[1:-1]] == long_sentence
    nsp = Packer(seq_len=32, mode="nsp", cls_id=CLS, sep_id=SEP, seed=0).pack([long_sentence])
    assert len(nsp) >= 300 // 29 and all(len(ex.input_ids) <= 32 for ex in nsp)


def test_mlm_within_documents_fills_sequences_with_consecutive_sentences():
    docs = synthetic_docs(200)
    pairs, _ = pack_all(docs, seq_len=64, mode="mlm", short_seq_prob=0.0, cross_document=False)
    per_doc: dict[int, list[int]] = {}
    for d, ex in pairs:
        ids = ex.input_ids
        assert len(ids) <= 64 and ids[0] == CLS and ids[-1] == SEP and ex.sep_index == len(ids) - 1
        assert ex.next_sentence_label == -1 and SEP not in ids[1:-1]
        per_doc.setdefault(d, []).extend(ids[1:-1])
    for d, doc in enumerate(docs):  # every token kept, in order
        assert per_doc[d] == [t for sentence in doc for t in sentence]


@pytest.mark.parametrize("seq_len", [16, 64, 128])
def test_mlm_across_documents_has_no_padding_and_loses_no_token(seq_len):
    docs = synthetic_docs(300)
    packer = Packer(seq_len=seq_len, mode="mlm", cls_id=CLS, sep_id=SEP, seed=3, short_seq_prob=0.0)
    examples = [ex for doc in docs for ex in packer.pack(doc)]
    last = packer.flush()
    assert len(last) == 1 and packer.flush() == []
    for ex in examples:  # every example but the stream's last is full, or one short at a boundary
        ids = ex.input_ids
        assert seq_len - 1 <= len(ids) <= seq_len and ids[0] == CLS and ids[-1] == SEP
        assert ids[1] != SEP and ids[-2] != SEP and ex.sep_index == len(ids) - 1 and ex.next_sentence_label == -1
    full = sum(len(ex.input_ids) == seq_len for ex in examples)
    assert full >= 0.9 * len(examples)
    inner = [t for ex in examples + last for t in ex.input_ids[1:-1]]
    assert [t for t in inner if t != SEP] == [t for doc in docs for s in doc for t in s]  # all, in order
    # documents are separated by one [SEP] wherever the boundary falls inside an example
    for ex in examples + last:
        body = ex.input_ids[1:-1]
        for i, t in enumerate(body):
            if t == SEP:
                assert body[i - 1] // 10_000 + 1 == body[i + 1] // 10_000


def test_mlm_across_documents_is_deterministic_and_honours_short_seq_prob():
    docs = synthetic_docs(200)

    def run(**kw):
        packer = Packer(seq_len=64, mode="mlm", cls_id=CLS, sep_id=SEP, seed=5, **{"short_seq_prob": 0.0, **kw})
        return [ex.input_ids for doc in docs for ex in packer.pack(doc)] + [ex.input_ids for ex in packer.flush()]

    assert run() == run()
    short = run(short_seq_prob=0.5)
    assert sum(len(ids) < 40 for ids in short) > 0.2 * len(short)


def test_truncate_pair_trims_the_longer_side():
    rng = random.Random(0)
    a, b = truncate_pair(list(range(10)), list(range(100, 103)), 8, rng)
    assert len(a) == 5 and b == [100, 101, 102] and is_contiguous(a)
    a, b = truncate_pair([1], [2], 8, rng)
    assert (a, b) == ([1], [2])
