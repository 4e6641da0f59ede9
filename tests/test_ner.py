"""NER reading, label map, windowed encoding, collation and decoding (finetune/tasks/ner.py).

The windowing tests exist because losing or double-counting words of long sentences is the classic silent
NER bug: every word must be labelled and predicted by exactly one window.
"""

from __future__ import annotations

import os
import random
import string
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from biobert.errors import UserError
from biobert.tokenizer import SPECIAL_TOKENS, load_tokenizer
from finetune.conlleval import conlleval
from finetune.tasks.ner import (
    IGNORE_INDEX,
    Sentence,
    build_label_map,
    collate_ner,
    decode_ner,
    encode_ner,
    label_list,
    read_ner_tsv,
    write_predictions,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "ner"
SHARED_DATA = Path(os.environ.get("BIOBERT_SHARED_DATA", REPO.parent / "shared" / "data"))

# Words of the long synthetic sentence, chosen for their piece counts under the tiny vocabulary:
# 1 piece, 2 pieces (brca ##1, tumor ##s), 3 pieces (il - 2), 0 pieces (a control character -> [UNK]).
LONG_WORDS = ["the", "brca1", "tumors", "il-2", "cancer", "\x07", "of", "anemia", "zq"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A tiny uncased WordPiece vocabulary: special tokens, the fixtures' words, letters and a few pieces."""
    words = set()
    for name in ("bio.tsv", "typed.tsv"):
        for line in (FIXTURES / name).read_text().splitlines():
            if line.strip():
                words.add(line.split("\t")[0].lower())
    pieces = {"brca", "##1", "tumor", "##s", "il", "-", "2", "cancer", "anemia", "the", "of", ".", ","}
    letters = set(string.ascii_lowercase) | {"##" + c for c in string.ascii_lowercase}
    vocab = list(SPECIAL_TOKENS) + sorted((words | pieces | letters) - set(SPECIAL_TOKENS))
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("".join(tok + "\n" for tok in vocab), encoding="utf-8")
    return load_tokenizer(path)


def _write(tmp_path: Path, text: str, name: str = "data.tsv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------------------- reader


def test_read_fixture_sentences_and_line_numbers():
    sentences = read_ner_tsv(FIXTURES / "bio.tsv")
    assert [len(s.words) for s in sentences] == [14, 12, 5]
    assert [s.line_no for s in sentences] == [1, 16, 29]
    assert sentences[1].words[6:8] == ["breast", "cancer"] and sentences[1].labels[6:8] == ["B", "I"]
    assert sentences[0].source == str(FIXTURES / "bio.tsv")


def test_read_tolerates_crlf_trailing_space_and_missing_final_blank(tmp_path):
    path = _write(tmp_path, "\r\n\r\nA\tB \r\nb\tI\t\r\n\r\n\r\n\r\nc\tO\r\nd\tB")
    sentences = read_ner_tsv(path, {"O", "B", "I"})
    assert [(s.words, s.labels, s.line_no) for s in sentences] == [
        (["A", "b"], ["B", "I"], 3),
        (["c", "d"], ["O", "B"], 8),
    ]


def test_read_keeps_unusual_characters_inside_words(tmp_path):
    # str.splitlines() would break this line in two at U+2028.
    path = _write(tmp_path, "a\u2028b\tO\n\x07\tO\n")
    assert read_ner_tsv(path)[0].words == ["a\u2028b", "\x07"]


def test_read_three_columns_names_file_and_line():
    path = FIXTURES / "three_columns.tsv"
    with pytest.raises(UserError) as err:
        read_ner_tsv(path)
    message = str(err.value)
    assert f"{path}:4:" in message
    assert "found 3" in message and "expected exactly 2" in message


def test_read_space_separated_line_says_no_tab(tmp_path):
    path = _write(tmp_path, "a\tO\nb O\n")
    with pytest.raises(UserError, match=r"data\.tsv:2: found 1 .*no tab.*expected exactly 2"):
        read_ner_tsv(path)


def test_read_label_outside_label_set(tmp_path):
    path = _write(tmp_path, "a\tO\n\nb\tB-Disease\n")
    with pytest.raises(UserError) as err:
        read_ner_tsv(path, {"O", "B", "I"})
    message = str(err.value)
    assert f"{path}:3:" in message and "'B-Disease'" in message and "['B', 'I', 'O']" in message


def test_read_rejects_non_iob_label_without_label_set(tmp_path):
    path = _write(tmp_path, "a\tO\nb\tDisease\n")
    with pytest.raises(UserError, match=r"data\.tsv:2: label 'Disease' is not an IOB/IOBES tag"):
        read_ner_tsv(path)


def test_read_empty_word(tmp_path):
    with pytest.raises(UserError, match=r"data\.tsv:1: empty word"):
        read_ner_tsv(_write(tmp_path, "\tO\n"))


def test_read_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match=r"nope\.tsv: no such file"):
        read_ner_tsv(tmp_path / "nope.tsv")
    empty = _write(tmp_path, "\n\r\n  \n", "empty.tsv")
    with pytest.raises(UserError, match=r"empty\.tsv: no sentences found"):
        read_ner_tsv(empty)
    assert read_ner_tsv(empty, allow_empty=True) == []


# ---------------------------------------------------------------------------------------- label map


def test_label_map_is_ordered_by_name_not_frequency():
    seen = ["I-Disease"] * 50 + ["B-Chemical"] * 9 + ["O"] * 100 + ["I-Chemical"]
    assert build_label_map(seen) == ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    assert build_label_map(reversed(seen)) == build_label_map(seen)
    assert build_label_map(["I", "O", "B"]) == ["O", "B", "I"]
    assert build_label_map([]) == ["O"]
    assert build_label_map(["S-X", "B-Y"]) == ["O", "B-X", "I-X", "E-X", "S-X", "B-Y", "I-Y", "E-Y", "S-Y"]
    with pytest.raises(ValueError):
        build_label_map(["Disease"])


def test_label_list_over_splits():
    typed = read_ner_tsv(FIXTURES / "typed.tsv")
    assert label_list(typed, typed[:1]) == ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    assert label_list(read_ner_tsv(FIXTURES / "bio.tsv")) == ["O", "B", "I"]


# ------------------------------------------------------------------------------------------ encoding


def _long_sentence(n_words: int, seed: int = 0) -> Sentence:
    rng = random.Random(seed)
    words = [LONG_WORDS[i % len(LONG_WORDS)] for i in range(n_words)]
    labels, previous = [], "O"
    for _ in words:
        previous = rng.choice(["O", "O", "B", "I"] if previous != "O" else ["O", "O", "B"])
        labels.append(previous)
    return Sentence(words, labels, 1)


def _owners(features, sentences):
    owners = [[[] for _ in s.words] for s in sentences]
    for i, f in enumerate(features):
        for w in f.word_index:
            if w >= 0:
                owners[f.sentence_index][w].append(i)
    return owners


def _gold_logits(features, sentences, label2id):
    """One-hot logits: the gold label at each word's owning position, a wrong label everywhere else."""
    n = len(label2id)
    logits = []
    for f in features:
        scores = np.zeros((len(f.input_ids), n), dtype=np.float32)
        sentence = sentences[f.sentence_index]
        for pos, w in enumerate(f.word_index):
            gold = label2id[sentence.labels[w if w >= 0 else 0]]
            scores[pos, gold if w >= 0 else (gold + 1) % n] = 1.0
        logits.append(scores)
    return logits


def test_short_sentence_single_window(tokenizer):
    sentences = read_ner_tsv(FIXTURES / "bio.tsv")
    label2id = {label: i for i, label in enumerate(label_list(sentences))}
    features, stats = encode_ner(sentences, tokenizer, label2id)
    assert stats["sentences"] == stats["windows"] == 3 and stats["split_sentences"] == 0
    assert stats["words"] == 31
    f = features[2]  # IL-2 deficiency causes anemia .  -> il - 2 | deficiency | causes | anemia | .
    assert f.input_ids[0] == tokenizer.cls_id and f.input_ids[-1] == tokenizer.sep_id
    assert f.word_index == [-1, 0, -1, -1, 1, 2, 3, 4, -1]
    b, o = label2id["B"], label2id["O"]
    assert f.label_ids == [IGNORE_INDEX, o, IGNORE_INDEX, IGNORE_INDEX, o, o, b, o, IGNORE_INDEX]


def test_long_sentence_every_word_predicted_exactly_once(tokenizer):
    sentences = [_long_sentence(300), _long_sentence(7, seed=1)]
    label2id = {"O": 0, "B": 1, "I": 2}
    features, stats = encode_ner(sentences, tokenizer, label2id, max_len=32, stride=8)
    assert stats["split_sentences"] == 1 and stats["windows"] == len(features) > 10
    assert stats["words"] == 307 and stats["unk_words"] == 300 // len(LONG_WORDS) + 1
    assert all(len(f.input_ids) <= 32 for f in features)
    assert all(len(owner) == 1 for row in _owners(features, sentences) for owner in row)
    for f in features:  # labels exactly where a word is owned, and they are the gold labels
        sentence = sentences[f.sentence_index]
        assert [p for p, w in enumerate(f.word_index) if w >= 0] == [
            p for p, label in enumerate(f.label_ids) if label != IGNORE_INDEX
        ]
        assert all(f.label_ids[p] == label2id[sentence.labels[w]] for p, w in enumerate(f.word_index) if w >= 0)
    windows = [f.word_span for f in features if f.sentence_index == 0]
    assert windows[0][0] == 0 and windows[-1][1] == 300
    assert all(b[0] < a[1] and a[0] < b[0] for a, b in zip(windows, windows[1:]))  # overlap, progress

    id2label = {i: label for label, i in label2id.items()}
    predictions = decode_ner(features, _gold_logits(features, sentences, label2id), sentences, id2label)
    assert [len(p) for p in predictions] == [300, 7]
    assert predictions == [s.labels for s in sentences]
    assert conlleval([s.labels for s in sentences], predictions)["f1"] == 1.0


def test_window_owner_has_most_context(tokenizer):
    # 10 one-piece words, room for 6 per window, step 4: windows [0, 6) and [4, 10) share words 4 and 5.
    # Word 4 is 1 piece from window 0's cut edge but 0 from window 1's; word 5 is the other way round.
    sentence = Sentence(["the"] * 10, ["O"] * 10, 1)
    features, _ = encode_ner([sentence], tokenizer, {"O": 0}, max_len=8, stride=2)
    assert [f.word_span for f in features] == [(0, 6), (4, 10)]
    assert [f.owned for f in features] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_word_longer_than_window_is_cut_not_lost(tokenizer):
    sentence = Sentence(["the", "il-2-il-2-il-2", "the"], ["O", "B", "O"], 1)
    features, stats = encode_ner([sentence], tokenizer, {"O": 0, "B": 1}, max_len=8, stride=2)
    assert stats["cut_words"] == 1 and all(len(f.input_ids) <= 8 for f in features)
    assert all(len(owner) == 1 for owner in _owners(features, [sentence])[0])


def test_encode_rejects_unknown_label_and_bad_window(tokenizer):
    sentences = read_ner_tsv(FIXTURES / "typed.tsv")
    with pytest.raises(UserError, match=r"typed\.tsv:3: label 'B-Disease' is not in the model's label map"):
        encode_ner(sentences, tokenizer, {"O": 0, "B-Chemical": 1, "I-Chemical": 2})
    with pytest.raises(UserError, match="stride"):
        encode_ner(sentences, tokenizer, {"O": 0}, max_len=32, stride=30)


def test_decode_raises_when_a_window_is_missing(tokenizer):
    sentences = [_long_sentence(60)]
    label2id = {"O": 0, "B": 1, "I": 2}
    features, _ = encode_ner(sentences, tokenizer, label2id, max_len=16, stride=4)
    logits = _gold_logits(features, sentences, label2id)
    with pytest.raises(RuntimeError, match="got no prediction"):
        decode_ner(features[:-1], logits[:-1], sentences, ["O", "B", "I"])


def test_collate_pads_to_longest(tokenizer):
    sentences = read_ner_tsv(FIXTURES / "bio.tsv")
    features, _ = encode_ner(sentences, tokenizer, {"O": 0, "B": 1, "I": 2})
    batch = collate_ner(features[1:], tokenizer.pad_id)
    lengths = [len(f.input_ids) for f in features[1:]]
    width = max(lengths)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert all(t.shape == (2, width) and t.dtype == torch.long for t in batch.values())
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    short = lengths.index(min(lengths))
    assert batch["input_ids"][short, min(lengths) :].eq(tokenizer.pad_id).all()
    assert batch["labels"][short, min(lengths) :].eq(IGNORE_INDEX).all()
    assert batch["token_type_ids"].eq(0).all()
    assert batch["input_ids"][short, : min(lengths)].tolist() == features[1 + short].input_ids


def test_write_predictions_conlleval_format(tmp_path):
    sentences = read_ner_tsv(FIXTURES / "typed.tsv")
    predictions = [s.labels for s in sentences]
    out = tmp_path / "out" / "test_predictions.txt"
    write_predictions(out, sentences, predictions)
    blocks = out.read_text().split("\n\n")
    assert blocks[-1] == "" and len(blocks) == 3
    assert blocks[0].splitlines()[0] == "Cisplatin\tB-Chemical\tB-Chemical"
    with pytest.raises(ValueError, match="6 words but 5 predictions"):
        write_predictions(out, sentences, [predictions[0][:5], predictions[1]])


# --------------------------------------------------------------------------- real data (opt-in)


@pytest.mark.skipif(
    not (SHARED_DATA / "ner" / "NCBI-disease").is_dir(),
    reason=f"shared NER data not found at {SHARED_DATA} (set BIOBERT_SHARED_DATA)",
)
def test_ncbi_disease_reads_and_encodes_without_losing_words():
    vocab = SHARED_DATA / "vocab" / "bert-base-uncased-vocab.txt"
    if not vocab.is_file():
        pytest.skip(f"{vocab} not found")
    tok = load_tokenizer(vocab)
    splits = {
        name: read_ner_tsv(SHARED_DATA / "ner" / "NCBI-disease" / f"{name}.tsv", {"O", "B", "I"})
        for name in ("train", "devel", "test")
    }
    assert {name: len(s) for name, s in splits.items()} == {"train": 5424, "devel": 923, "test": 940}
    label2id = {label: i for i, label in enumerate(label_list(*splits.values()))}
    assert list(label2id) == ["O", "B", "I"]
    for name, sentences in splits.items():
        start = time.perf_counter()
        features, stats = encode_ner(sentences, tok, label2id, max_len=128)
        print(f"NCBI-disease {name}: {stats} ({time.perf_counter() - start:.2f}s)")
        assert stats["words"] == sum(len(s.words) for s in sentences)
        owned = sum(len(f.owned) for f in features)
        assert owned == stats["words"]
        # Decode the windowed sentences only (decoding all of them adds seconds and tests nothing new).
        split = sorted({f.sentence_index for f in features if f.window_index > 0})
        assert len(split) == stats["split_sentences"]
        long_sentences = [sentences[i] for i in split]
        features, _ = encode_ner(long_sentences, tok, label2id, max_len=128)
        predictions = decode_ner(
            features, _gold_logits(features, long_sentences, label2id), long_sentences, list(label2id)
        )
        assert predictions == [s.labels for s in long_sentences]


@pytest.mark.skipif(not (SHARED_DATA / "vocab").is_dir(), reason="shared vocabularies not present")
def test_casing_is_inferred_from_real_vocabularies():
    from biobert.tokenizer import load_tokenizer

    assert load_tokenizer(SHARED_DATA / "vocab" / "bert-base-uncased-vocab.txt").lowercase is True
    assert load_tokenizer(SHARED_DATA / "vocab" / "bert-base-cased-vocab.txt").lowercase is False
