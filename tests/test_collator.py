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
        assert tt[i, : sep + 1].sum() == 0 and tt[i, sep + 1: am[i].sum()].all()
    assert (tt[am == 0] == 0).all()


def test_masking_is_a_function_of_the_seed():
    examples = make_batch(np.random.default_rng(1), 8)
    collate = MaskingCollator(VOCAB, PAD, CLS, SEP, MASK)
    torch.manual_seed(5)
    a = collate(examples)["masked_index"]
    torch.manual_seed(5)
    b = collate(examples)["masked_index"]
    assert torch.equal(a, b)
