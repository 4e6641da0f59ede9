"""Entity-level scores (finetune/conlleval.py) against hand-computed cases.

The expected numbers were worked out by hand from conlleval.pl's rules, written next to each case, and
cross-checked against the Perl script itself during development.
"""

from __future__ import annotations

import pytest

from finetune.conlleval import conlleval, end_of_chunk, start_of_chunk, strict_iob2


def counts(result: dict) -> tuple[int, int, int]:
    return result["true_chunks"], result["pred_chunks"], result["correct_chunks"]


def test_chunk_boundary_rules():
    assert start_of_chunk("O", "I", "", "")  # I after O opens a chunk
    assert not start_of_chunk("B", "I", "", "")
    assert start_of_chunk("B", "B", "", "")  # B always opens one
    assert start_of_chunk("B", "I", "X", "Y")  # so does a type change
    assert end_of_chunk("B", "B", "", "") and end_of_chunk("I", "O", "", "")
    assert not end_of_chunk("B", "I", "X", "X") and end_of_chunk("B", "I", "X", "Y")
    assert not end_of_chunk("O", "I", "", "X")  # leaving O never ends a chunk


def test_adjacent_entities():
    # B B is two one-word entities; predicting B I merges them into one wrong two-word entity.
    assert counts(conlleval([["B", "B"]], [["B", "B"]])) == (2, 2, 2)
    result = conlleval([["B", "B"]], [["B", "I"]])
    assert counts(result) == (2, 1, 0) and result["f1"] == 0.0
    # B I B I is two two-word entities; B I I I is one four-word entity matching neither.
    assert counts(conlleval([["B", "I", "B", "I"]], [["B", "I", "B", "I"]])) == (2, 2, 2)
    assert counts(conlleval([["B", "I", "B", "I"]], [["B", "I", "I", "I"]])) == (2, 1, 0)
    # One right, one wrong: P = 1/1, R = 1/2, F1 = 2 * 1 * 0.5 / 1.5 = 2/3.
    result = conlleval([["B", "I", "B", "I"]], [["B", "I", "B", "O"]])
    assert counts(result) == (2, 2, 1) and result["precision"] == 0.5 and result["recall"] == 0.5
    result = conlleval([["B", "I", "O", "B"]], [["B", "I", "O", "O"]])
    assert (result["precision"], result["recall"]) == (1.0, 0.5) and result["f1"] == pytest.approx(2 / 3)


def test_i_after_o_starts_a_chunk_in_conlleval_but_not_in_strict_mode():
    gold, pred = [["O", "I", "I", "O"]], [["O", "B", "I", "O"]]
    # conlleval repairs the gold "I I" into an entity spanning words 1-2, which the prediction matches.
    result = conlleval(gold, pred)
    assert counts(result) == (1, 1, 1) and result["f1"] == 1.0
    assert result["token_accuracy"] == 0.75  # word 1: gold I, predicted B
    # Strict IOB2 ignores the orphan I's: no gold entity, so the predicted one is a false positive.
    strict = strict_iob2(gold, pred)
    assert counts(strict) == (0, 1, 0) and strict["precision"] == strict["recall"] == strict["f1"] == 0.0


def test_type_changes():
    # B-X I-Y: conlleval sees X (word 0) and a new Y chunk (word 1); strict mode only sees X.
    gold, pred = [["B-X", "I-Y"]], [["B-X", "O"]]
    result = conlleval(gold, pred)
    assert counts(result) == (2, 1, 1)
    assert (result["precision"], result["recall"]) == (1.0, 0.5) and result["f1"] == pytest.approx(2 / 3)
    assert result["by_type"]["Y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}
    assert counts(strict_iob2(gold, pred)) == (1, 1, 1) and strict_iob2(gold, pred)["f1"] == 1.0
    # Right span, wrong type: not correct.
    assert counts(conlleval([["B-X", "I-X"]], [["B-Y", "I-Y"]])) == (1, 1, 0)
    # A predicted chunk whose type flips midway is two chunks, neither matching the gold X X.
    assert counts(conlleval([["B-X", "I-X"]], [["B-X", "I-Y"]])) == (1, 2, 0)


def test_chunks_end_at_sentence_boundaries():
    # The sentence break closes the gold B of sentence 0; sentence 1's leading I opens a new chunk.
    gold = [["O", "B"], ["I", "O"]]
    assert counts(conlleval(gold, gold)) == (2, 2, 2)
    # A chunk that ends the sentence (and the whole input) is counted as correct.
    assert counts(conlleval(gold, [["O", "B"], ["O", "O"]])) == (2, 1, 1)
    assert counts(conlleval([["O", "B", "I"]], [["O", "B", "I"]])) == (1, 1, 1)
    # Flattened into one sentence, the same labels are one entity.
    assert counts(conlleval([["O", "B", "I", "O"]], [["O", "B", "I", "O"]])) == (1, 1, 1)


def test_empty_predictions_and_all_o():
    result = conlleval([["B", "I", "O"]], [["O", "O", "O"]])
    assert counts(result) == (1, 0, 0)
    assert (result["precision"], result["recall"], result["f1"]) == (0.0, 0.0, 0.0)
    result = conlleval([["O", "O"], ["O"]], [["O", "O"], ["O"]])
    assert counts(result) == (0, 0, 0) and result["f1"] == 0.0 and result["by_type"] == {}
    assert result["tokens"] == 3 and result["token_accuracy"] == 1.0
    empty = conlleval([], [])
    assert empty["tokens"] == 0 and empty["f1"] == 0.0 and empty["token_accuracy"] == 0.0


def test_untyped_labels_report_the_empty_type():
    result = conlleval([["B", "I", "O", "B"]], [["B", "I", "O", "O"]])
    assert list(result["by_type"]) == [""] and result["by_type"][""]["support"] == 2


def test_known_conll_example_exact_numbers():
    # CoNLL-2003-style sentences; each line is (word, gold, predicted).
    sentences = [
        [
            ("EU", "B-ORG", "B-ORG"),
            ("rejects", "O", "O"),
            ("German", "B-MISC", "B-MISC"),
            ("call", "O", "O"),
            ("to", "O", "O"),
            ("boycott", "O", "O"),
            ("British", "B-MISC", "B-PER"),
            ("lamb", "O", "O"),
            (".", "O", "O"),
        ],
        [("Peter", "B-PER", "B-PER"), ("Blackburn", "I-PER", "O")],
        [("BRUSSELS", "B-LOC", "I-LOC"), ("1996-08-22", "O", "O")],
        [("The", "O", "O"), ("European", "B-ORG", "B-ORG"), ("Commission", "I-ORG", "I-ORG"), ("said", "O", "B-ORG")],
    ]
    gold = [[g for _, g, _ in s] for s in sentences]
    pred = [[p for _, _, p in s] for s in sentences]
    # Gold entities (6): EU/ORG, German/MISC, British/MISC, Peter Blackburn/PER, BRUSSELS/LOC,
    #   European Commission/ORG.
    # Predicted (7): EU/ORG, German/MISC, British/PER, Peter/PER, BRUSSELS/LOC (I-LOC after O opens a
    #   chunk), European Commission/ORG (ended by the B-ORG on "said", as the gold one is by O), said/ORG.
    # Correct (4): EU, German, BRUSSELS, European Commission. British has the wrong type, Peter the wrong
    #   span, said is spurious.
    # conlleval.pl prints: processed 17 tokens with 6 phrases; found: 7 phrases; correct: 4.
    #   accuracy: 76.47% (13/17: British, Blackburn, BRUSSELS and said are wrong);
    #   precision: 57.14% (4/7); recall: 66.67% (4/6); FB1: 61.54 (2*4 / (7+6) = 8/13).
    result = conlleval(gold, pred)
    assert counts(result) == (6, 7, 4) and result["tokens"] == 17
    assert result["token_accuracy"] == pytest.approx(13 / 17)
    assert result["precision"] == pytest.approx(4 / 7) and result["recall"] == pytest.approx(4 / 6)
    assert result["f1"] == pytest.approx(8 / 13)
    assert round(100 * result["f1"], 2) == 61.54
    by_type = result["by_type"]
    assert list(by_type) == ["LOC", "MISC", "ORG", "PER"]
    assert by_type["ORG"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2, "predicted": 3})
    assert by_type["MISC"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2, "predicted": 1}
    )
    assert by_type["PER"]["f1"] == 0.0 and by_type["LOC"]["f1"] == 1.0
    # Strict IOB2 drops the orphan I-LOC: 6 predicted, 3 correct.
    strict = strict_iob2(gold, pred)
    assert counts(strict) == (6, 6, 3) and strict["f1"] == 0.5
    assert strict["by_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0}


def test_iobes_extension():
    # conlleval.pl would merge S-X S-X into one chunk; IOBES means two single-word entities.
    assert counts(conlleval([["S-X", "S-X"]], [["S-X", "S-X"]])) == (2, 2, 2)
    assert counts(conlleval([["B-X", "E-X", "S-X"]], [["B-X", "I-X", "S-X"]])) == (2, 2, 2)
    assert counts(conlleval([["B-X", "E-X", "S-X"]], [["B-X", "I-X", "I-X"]])) == (2, 1, 0)
    with pytest.raises(ValueError, match="strict IOB2"):
        strict_iob2([["S-X"]], [["O"]])


def test_misaligned_input_is_an_error():
    with pytest.raises(ValueError, match="sentence 1: 1 gold labels but 2 predicted"):
        conlleval([["O"], ["O"]], [["O"], ["O", "O"]])
    with pytest.raises(ValueError, match="1 gold sentences but 2"):
        strict_iob2([["O"]], [["O"], ["O"]])
