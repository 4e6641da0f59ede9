"""Text cleaning and the biomedical sentence splitter (hand-made tricky cases)."""

import time

import pytest

from biobert.corpus.sentences import split_sentences
from biobert.corpus.text_clean import clean_text


def test_clean_text_normalises_whitespace_controls_and_unicode():
    assert clean_text("  a\tb\n\nc\u00a0 d  ") == "a b c d"
    assert clean_text("x\x00y\x1fz\x7f") == "x y z"
    assert clean_text("co\u00adoper\u200bation") == "cooperation"
    assert clean_text("Cafe\u0301") == "Caf\u00e9"  # NFC
    assert clean_text("") == ""


SPLIT_CASES = [
    ("Cells grew. They died.", ["Cells grew.", "They died."]),
    ("As shown by Smith et al. The effect was large.", ["As shown by Smith et al. The effect was large."]),
    ("Common agents, e.g. Penicillin, failed.", ["Common agents, e.g. Penicillin, failed."]),
    ("The dose, i.e. 5 mg, was safe.", ["The dose, i.e. 5 mg, was safe."]),
    ("See Fig. 2 for details.", ["See Fig. 2 for details."]),
    ("See Figs. 2 and 3. They agree.", ["See Figs. 2 and 3.", "They agree."]),
    ("Treatment vs. Placebo was compared.", ["Treatment vs. Placebo was compared."]),
    ("The yield was approx. 30 percent.", ["The yield was approx. 30 percent."]),
    ("Dr. Jones treated the patients.", ["Dr. Jones treated the patients."]),
    ("Patient No. 5 relapsed.", ["Patient No. 5 relapsed."]),
    ("E. coli and S. aureus were isolated.", ["E. coli and S. aureus were isolated."]),
    ("Infection with S. Aureus was rare. It was treated.", ["Infection with S. Aureus was rare.", "It was treated."]),
    (
        "The difference was significant (p < 0.05). No harm occurred.",
        ["The difference was significant (p < 0.05).", "No harm occurred."],
    ),
    ("Mice received 3.5 mg daily. Weight fell.", ["Mice received 3.5 mg daily.", "Weight fell."]),
    ("Twelve mice died. 20 survived.", ["Twelve mice died.", "20 survived."]),
    ("Is it safe? We think so! Trials continue.", ["Is it safe?", "We think so!", "Trials continue."]),
    ("The pH rose. the buffer failed.", ["The pH rose. the buffer failed."]),  # lower case: no split
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("It was found (see ref. 4). Others disagree.", ["It was found (see ref. 4).", "Others disagree."]),
    ("Reported by J. Smith and colleagues. Data follow.", ["Reported by J. Smith and colleagues.", "Data follow."]),
    ("Levels of IL-6 rose. (Data not shown.) TNF fell.", ["Levels of IL-6 rose.", "(Data not shown.)", "TNF fell."]),
    ("Work done in the U.S. Army labs.", ["Work done in the U.S. Army labs."]),
    ("No final period", ["No final period"]),
    ("", []),
]


@pytest.mark.parametrize("text,expected", SPLIT_CASES)
def test_split_sentences_cases(text, expected):
    assert split_sentences(text) == expected


def test_split_sentences_keeps_every_character():
    text = "A b. C d? E f! G h (p < 0.05). I j et al. K."
    assert " ".join(split_sentences(text)) == text


def test_split_sentences_speed_is_reported(capsys):
    """Not a benchmark assertion: prints words/s so a slowdown is visible with `pytest -s`."""
    text = " ".join(c[0] for c in SPLIT_CASES) * 20
    words = len(text.split())
    start = time.perf_counter()
    for _ in range(20):
        split_sentences(text)
    rate = 20 * words / (time.perf_counter() - start)
    with capsys.disabled():
        print(f"\nsplit_sentences: {rate:,.0f} words/s")
