"""Rule-based sentence splitting tuned for biomedical abstracts.

A statistical splitter (punkt, scispaCy) is 10-100x slower and the corpus is billions of words; NSP only
needs boundaries that are right most of the time, and the errors that matter in this domain are the
systematic ones (abbreviations, species names, initials, decimals), which the rules below handle.
"""

from __future__ import annotations

import re

# Words that end in a period but rarely end a sentence (compared lower-case, without the final period).
# "etc." and "min." are deliberately absent: in abstracts they end sentences more often than not.
ABBREVIATIONS = frozenset(
    """
    al fig figs eq eqs ref refs tab vol vols no nos vs approx ca cf dr mr mrs ms prof st jr sr inc ltd co
    corp dept univ sect suppl ch chap pp sp spp subsp var cv ed eds viz resp est
""".split()
)

# Candidate boundary: '.' + optional closing quotes/brackets + whitespace, followed by an upper-case
# letter, a digit or an opening quote/bracket; or '?'/'!' + whitespace (split unconditionally).
_CANDIDATE = re.compile(r"""\.['")\]]*\s+(?=['"(\[]*[A-Z0-9\u00c0-\u00d6\u00d8-\u00de\u0391-\u03a9])|[?!]['")\]]*\s+""")
_DOTTED = re.compile(r"(?:[A-Za-z]\.){2,}")  # e.g. i.e. U.S.


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the word ending at `text[dot] == '.'` is an abbreviation, initial or species genus."""
    start = text.rfind(" ", 0, dot) + 1
    word = text[start : dot + 1].lstrip("([{\"'")
    if len(word) == 2 and word[0].isupper():  # initials "J. Smith", genus "E. Coli", "S. Aureus"
        return True
    if word[:-1].lower() in ABBREVIATIONS:
        return True
    return _DOTTED.fullmatch(word) is not None


def split_sentences(text: str) -> list[str]:
    """Split one clean text block (single spaces, see text_clean) into sentences, dropping empty ones."""
    sentences = []
    begin = 0
    for m in _CANDIDATE.finditer(text):
        if text[m.start()] == "." and _is_abbreviation(text, m.start()):
            continue
        end = m.end()
        piece = text[begin:end].strip()
        if piece:
            sentences.append(piece)
        begin = end
    tail = text[begin:].strip()
    if tail:
        sentences.append(tail)
    return sentences
