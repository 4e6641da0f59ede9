"""Citation markers in PMC paragraphs (data_prep/pmc.py puts them in, `resolve_markers` takes them out).

An `<xref>` to a reference, figure, table or supplementary file is wrapped in control characters (which XML 1.0
forbids, so they cannot occur in the input) and resolved once the paragraph's text is assembled: a bracket group
made only of such markers, separators and label words ("[1, 2]", "[3–5]", "(Fig. 2A; Table 1)", "(Smith et al.,
2005)") goes away with the space before it; in a mixed group only the marker parts go ("(n = 12; Table 2)" ->
"(n = 12)"). A marker in running text goes when it is a bare number (superscript citations) and stays when it is
part of the sentence ("as shown in Figure 2", "Smith et al. (2005) found"). Footnote/affiliation markers and
dropped inline elements (formulas, graphics) leave a gap marker, so "(<formula>)" goes too. Brackets without a
marker are never touched.
"""

from __future__ import annotations

import re

# Markers put into the text in place of cross-references; XML 1.0 cannot contain these characters.
CITE, CITE_END, FLOAT, FLOAT_END, GAP = "\x01", "\x02", "\x03", "\x04", "\x05"
_SPAN = re.compile("\x01[^\x01-\x04]*\x02|\x03[^\x01-\x04]*\x04")
_GROUP = re.compile(r"\([^()\[\]\x01-\x05]*[\x01-\x05][^()\[\]]*\)|\[[^()\[\]\x01-\x05]*[\x01-\x05][^()\[\]]*\]")
# What may surround markers in a group that is only a reference list: numbers, ranges, panel letters,
# "Fig."/"Table"/"see"/"e.g."/"reviewed in" and the like; author names only next to an author-year citation.
# Checked word by word (not one big alternation) so that no input can make the regex backtrack for long.
_SEPARATORS = re.compile(r"[\s\-–—−‐,;:&.*/\u200b-\u200f\u202a-\u202e\u2060\ufeff]+")
_REF_WORD = re.compile(
    r"\d+[a-z]?|[a-z]\d*[a-z]?|s\d+[a-z]?|and|or|see|also|cf|for|in|reviewed|reviews?|details|"
    r"refs?|references?|therein|figs?|figures?|tables?|tab|eqs?|equations?|additional|files?|"
    r"supplement(?:ary|al)?|suppl|materials?|data|information|appendix|panels?|movies?|videos?|"
    r"online|et|al|respectively|but|as|by|with",
    re.IGNORECASE,
)
_NAME_WORD = re.compile(r"[A-Z\u00c0-\u00de][\w'’]*|van|von|de|der|den|del|da|di|du|la|le|dos|das")
_AUTHOR_YEAR = re.compile(r"\b(?:1[89]\d\d|20\d\d)[a-z]?\b|\bet al\b")
_STRAY_GAPS = re.compile(r"\x05(?:[\s,;–\-]*\x05)*")
_NO_SPACE_BEFORE = ".,;:!?)]"


def _split_outside_spans(text: str, separators: str) -> list[str]:
    """Split before each separator that is not inside a marker span (citation text has commas too)."""
    pieces, start, inside = [], 0, False
    for i, ch in enumerate(text):
        if ch in "\x01\x03":
            inside = True
        elif ch in "\x02\x04":
            inside = False
        elif ch in separators and not inside:
            pieces.append(text[start:i])
            start = i
    pieces.append(text[start:])
    return pieces


def _only_reference_words(text: str, allow_names: bool = False) -> bool:
    """Whether `text`, markers removed, is separators plus reference words (plus author names if allowed)."""
    for word in _SEPARATORS.split(re.sub("[\x01-\x05]", " ", _SPAN.sub(" ", text))):
        if word and not (_REF_WORD.fullmatch(word) or (allow_names and _NAME_WORD.fullmatch(word))):
            return False
    return True


def _is_reference(piece: str, allow_names: bool = False) -> bool:
    """Whether a piece of a bracket group holds markers and nothing of the sentence around them."""
    if not any(c in piece for c in "\x01\x03\x05"):
        return False
    author_year = allow_names and ("\x01" in piece or "\x05" in piece) and _AUTHOR_YEAR.search(piece) is not None
    return _only_reference_words(piece, allow_names=author_year)


def _resolve_group(match: re.Match) -> str:
    """Drop the reference parts of one innermost bracket group that holds a marker.

    ";" separates whole citations ("Smith et al., 2005; Jones, 2006"), so a ";"-part that is an author-year
    citation goes as a whole; otherwise ","-parts made only of markers and reference words go.
    """
    group = match.group()
    kept, dropped = [], False
    for part in _split_outside_spans(group[1:-1], ";"):
        if _is_reference(part.lstrip(";"), allow_names=True):
            dropped = True
            continue
        pieces = _split_outside_spans(part, ",")
        remaining = [p for p in pieces if not _is_reference(p.lstrip(";,"))]
        dropped |= len(remaining) < len(pieces)
        if remaining:
            kept.append("".join(remaining))
    if not dropped:
        return group
    body = "".join(kept).lstrip(";, ")
    if _only_reference_words(body):
        return GAP  # "(Tables 1, 2)" with only "1" linked, "(e.g., [3])": nothing of the sentence left
    return group[0] + body + group[-1]


def _resolve_span(match: re.Match) -> str:
    """A marker outside any bracket group: keep it when it is words of the sentence, else a gap."""
    span = match.group()
    inner = span[1:-1]
    bracketed = inner.strip()[:1] in "([" and inner.strip()[-1:] in ")]"
    if bracketed or (span[0] == CITE and not re.search(r"[^\W\d_]{2}", inner)):
        return GAP
    return inner


def _close_gap(match: re.Match) -> str:
    text, start, end = match.string, match.start(), match.end()
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    if not before or not after or after in _NO_SPACE_BEFORE or before in "([":
        return ""
    return " " if match.group() != GAP else ""


def resolve_markers(text: str) -> str:
    """Remove citation/float markers and the punctuation they leave; see the module docstring."""
    if not any(c in text for c in "\x01\x03\x05"):
        return text
    previous = None
    while previous != text:  # innermost groups first; a removed group may empty its enclosing one
        previous, text = text, _GROUP.sub(_resolve_group, text)
    text = _SPAN.sub(_resolve_span, text)
    text = re.sub("[\x01-\x04]", "", text)  # markers whose brackets straddled two xrefs
    text = _STRAY_GAPS.sub(GAP, text)
    return re.sub("\\s*\x05\\s*", _close_gap, text)
