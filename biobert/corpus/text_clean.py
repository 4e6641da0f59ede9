"""Text normalisation applied to every block of text before sentence splitting.

Done once here rather than left to the tokenizer so that word counts, sentence boundaries and the text a
user inspects all agree, and so that different readers (XML, plain text) produce identical strings.
"""

from __future__ import annotations

import re
import unicodedata

# C0/C1 control characters other than whitespace become a space (they often separate words in bad OCR
# or XML exports); zero-width and soft-hyphen format characters are dropped (they sit inside words).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_INVISIBLE = re.compile("[\u00ad\u200b-\u200d\u2060\ufeff]")


def clean_text(text: str) -> str:
    """NFC-normalise, drop control/invisible characters and collapse all whitespace runs to one space."""
    if text.isascii():
        # Fast path, same result: the ASCII controls that are whitespace to str.split are split at as the
        # space they would become; any other control character survives the split and fails isprintable.
        out = " ".join(text.split())
        if out.isprintable():
            return out
    else:
        text = unicodedata.normalize("NFC", text)
        text = _INVISIBLE.sub("", text)
    text = _CONTROL.sub(" ", text)
    return " ".join(text.split())
