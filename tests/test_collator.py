import numpy as np
import torch

from pretrain.collator import MaskingCollator

CLS, SEP, PAD, MASK, VOCAB = 2, 3, 0, 4, 1000


def make_batch(rng, n=64):
    seqs, seps = [], []
    for _ in range(n):
        a = rng.integers(10, VOCAB, rng.integers(5, 40)).tolist()
        b = rng.integers(10, VOCAB, rng.integers(5, 40)).tolist()
        seqs.append(np.array([CLS] + a + [SEP] + b + [SEP]))
        seps.append(len(a) + 1)
    return {"input_ids": seqs, "sep_index": np.array(seps), "next_sentence_label": np.zeros(n, dtype=np.int8)}


def test_masking_follows_bert_rules():
    rng = np.random.default_rng(0)
    examples = make_batch(rng, 400)
    torch.manual_seed(0)
    out = MaskingCollator(VOCAB, PAD, CLS, SEP, MASK)(examples)
    ids, flat, labels = out["input_ids"], out["masked_index"], out["masked_labels"]
    original = torch.full_like(ids, PAD)
    for i, s in enumerate(examples["input_ids"]):
        original[i, : len(s)] = torch.from_numpy(s)
    rows = flat // ids.shape[1]
    # exactly round(15% of real non-special tokens) per sequence, never a special or padding position
    for i, s in enumerate(examples["input_ids"]):
        assert int((rows == i).sum()) == max(1, round((len(s) - 3) * 0.15))
    assert not torch.isin(original.view(-1)[flat], torch.tensor([CLS, SEP, PAD])).any()
    assert torch.equal(labels, original.view(-1)[flat])
    unmasked = torch.ones(ids.numel(), dtype=torch.bool)
    unmasked[flat] = False
    assert torch.equal(ids.view(-1)[unmasked], original.view(-1)[unmasked])
    became_mask = (ids.view(-1)[flat] == MASK).float().mean().item()
    kept = (ids.view(-1)[flat] == labels).float().mean().item()
    assert 0.76 < became_mask < 0.84 and 0.07 < kept < 0.14
    # segment ids: 0 through the first [SEP], 1 after it, 0 on padding
    tt, am = out["token_type_ids"], out["attention_mask"]
    for i, sep in enumerate(examples["sep_index"]):
        assert tt[i, : sep + 1].sum() == 0 and tt[i, sep + 1 : am[i].sum()].all()
    assert (tt[am == 0] == 0).all()


def test_masking_is_a_function_of_the_seed():
    examples = make_batch(np.random.default_rng(1), 8)
    collate = MaskingCollator(VOCAB, PAD, CLS, SEP, MASK)
    torch.manual_seed(5)
    a = collate(examples)["masked_index"]
    torch.manual_seed(5)
    b = collate(examples)["masked_index"]
    assert torch.equal(a, b)


CONT = tuple(range(500, VOCAB))  # ids 500.. are "##" continuation pieces in these tests


def make_word_batch(rng, n=64):
    """Sequences of words of 1-4 pieces: a word-start id in [10, 500), then 0-3 continuation ids."""
    seqs, seps = [], []
    for _ in range(n):
        ids = [CLS]
        for _ in range(rng.integers(5, 60)):
            ids.append(int(rng.integers(10, 500)))
            ids.extend(int(t) for t in rng.integers(500, VOCAB, rng.integers(0, 4)))
        ids.append(SEP)
        seqs.append(np.array(ids))
        seps.append(len(ids) - 1)
    return {"input_ids": seqs, "sep_index": np.array(seps), "next_sentence_label": np.full(n, -1, dtype=np.int8)}


def words_of(seq):
    """Lists of positions, one list per word ([CLS]/[SEP] excluded)."""
    words = []
    for pos, t in enumerate(seq):
        if t in (CLS, SEP, PAD):
            continue
        if t >= 500 and words and words[-1][-1] == pos - 1:
            words[-1].append(pos)
        else:
            words.append([pos])
    return words


def masked_word_stats(examples, out):
    ids, flat = out["input_ids"], out["masked_index"]
    length = ids.shape[1]
    masked = set(flat.tolist())
    partial, whole, all_mask, words_masked, tokens = 0, 0, 0, 0, []
    for i, seq in enumerate(examples["input_ids"]):
        n = 0
        for word in words_of(seq.tolist()):
            hit = [i * length + p in masked for p in word]
            if any(hit) and not all(hit):
                partial += 1
            if all(hit):
                words_masked += 1
                n += len(word)
                became = [int(ids[i, p]) == MASK for p in word]
                whole += all(became) or not any(became)
                all_mask += all(became)
        tokens.append((n, len(seq) - 2))
    return partial, whole, all_mask, words_masked, tokens


def test_whole_word_masking_never_masks_part_of_a_word_and_keeps_the_token_budget():
    rng = np.random.default_rng(3)
    examples = make_word_batch(rng, 300)
    torch.manual_seed(0)
    collate = MaskingCollator(VOCAB, PAD, CLS, SEP, MASK, whole_word=True, continuation_ids=CONT)
    out = collate({k: (list(v) if k == "input_ids" else v) for k, v in examples.items()})
    original = [torch.from_numpy(s) for s in examples["input_ids"]]
    flat, labels, ids = out["masked_index"], out["masked_labels"], out["input_ids"]
    assert torch.equal(
        labels,
        torch.cat([torch.nn.functional.pad(s, (0, ids.shape[1] - len(s)), value=PAD) for s in original]).view(-1)[flat],
    )
    partial, whole, all_mask, words_masked, tokens = masked_word_stats(examples, out)
    assert partial == 0  # no word is ever partly masked
    assert whole == words_masked  # 80/10/10 per word: all pieces [MASK], or none of them
    assert 0.74 < all_mask / words_masked < 0.86
    for n, real in tokens:  # the budget is in tokens: at most round(15%), rarely more than one word under
        budget = max(1, round(real * 0.15))
        assert 1 <= n <= budget or n <= 4
    masked_fraction = sum(n for n, _ in tokens) / sum(real for _, real in tokens)
    assert 0.13 < masked_fraction <= 0.151


def test_token_level_masking_does_split_words():
    """The check above can fail: token-level masking (the default) masks single pieces of words."""
    examples = make_word_batch(np.random.default_rng(3), 300)
    torch.manual_seed(0)
    out = MaskingCollator(VOCAB, PAD, CLS, SEP, MASK)(examples)
    partial, *_ = masked_word_stats(examples, out)
    assert partial > 100


def test_whole_word_masking_is_a_function_of_the_seed_and_needs_continuation_ids():
    import pytest

    examples = make_word_batch(np.random.default_rng(4), 16)
    collate = MaskingCollator(VOCAB, PAD, CLS, SEP, MASK, whole_word=True, continuation_ids=CONT)
    torch.manual_seed(9)
    a = collate(examples)["masked_index"]
    torch.manual_seed(9)
    assert torch.equal(a, collate(examples)["masked_index"])
    with pytest.raises(ValueError, match="continuation"):
        MaskingCollator(VOCAB, PAD, CLS, SEP, MASK, whole_word=True)
