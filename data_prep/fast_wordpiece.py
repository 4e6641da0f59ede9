"""Token ids of many sentences at once: exactly `WordPieceTokenizer.encode_batch`'s, 3-5x faster.

Tokenising was half of data_prep's CPU time, and most of the Rust tokenizer's time per sentence goes into
bookkeeping that packing never uses (normalised-string alignments, offsets, token strings, one Encoding
object per sentence). But BERT's tokenisation never looks across whitespace, so a sentence's ids are the
concatenation of its whitespace-separated words' ids, and those are cached: a corpus has few distinct words.

Why a word's ids do not depend on its neighbours, for text without C0/C1 control characters:

* BertNormalizer works character by character: it drops NUL, U+FFFD and the "other" categories (Cc, Cf,
  Cn, Co), maps whitespace to a space, puts spaces around CJK ideographs and (uncased) lower-cases and
  strips accents (NFD never reorders across a space, which is a starter). The characters str.split()
  splits at are exactly those it maps to a space, except the C0/C1 controls U+001C-U+001F and U+0085
  (whitespace to Python, dropped by BERT: "a\\x1cb" is one word to BERT): a sentence with any Cc character
  goes to the real tokenizer whole, as does everything when the tokenizer has added tokens (those are
  matched in the raw text, across word boundaries).
* BertPreTokenizer splits at whitespace and isolates punctuation; WordPiece works on one pre-token at a time.

A new word made of printable ASCII (99 % of them) is split into pre-tokens here with one regex -- runs of
[A-Za-z0-9] and single other characters, because every printable ASCII character that is not a letter,
digit or space is punctuation to BERT (Rust's `is_ascii_punctuation`) and the normaliser changes none of
them except by lower-casing -- and each new pre-token is word-pieced by the real tokenizer (normaliser
included), thousands in one call, whose `word_ids` say which pieces belong to which pre-token. Other new
words go to the real tokenizer one text each. tests/test_data_prep_text.py checks the equality on
adversarial and random Unicode text, cased and uncased; bench/data_prep_bench.py checks that the shards stay
byte-identical on the real corpora.
"""

from __future__ import annotations

import re
from itertools import chain

from biobert.tokenizer import WordPieceTokenizer

_PRE_TOKEN = re.compile(r"[A-Za-z0-9]+|[^ A-Za-z0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Cc: where str.split() and BERT disagree
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x21-\x7e]")  # in a word (no spaces): needs the real tokenizer


class SentenceEncoder:
    """`encode(sentences)`: `tokenizer.encode_batch(sentences)` plus each sentence's word count.

    `words` maps a whitespace-separated word ("cells.", "(p<0.05)", "TNF-α") to its ids, `pieces` an
    ASCII pre-token ("cells", ".") to its ids. Both are bounded (cleared when full): memory stays flat on
    any corpus, and the ids never depend on what is cached.
    """

    def __init__(self, tokenizer: WordPieceTokenizer, max_cache: int = 400_000):
        self.backend = tokenizer.backend
        self.max_cache = max_cache
        self.words: dict[str, tuple[int, ...]] = {}  # tuples of ints: untracked by the cyclic GC
        self.pieces: dict[str, tuple[int, ...]] = {}
        self.fast = not self.backend.get_added_tokens_decoder()

    def _slow(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]

    def encode(self, sentences: list[str]) -> tuple[list[list[int]], list[int]]:
        """Token ids (no special tokens) and number of whitespace-separated words of each sentence."""
        if not self.fast or not sentences:
            return self._slow(sentences), [len(s.split()) for s in sentences]
        if not _CONTROL.search("".join(sentences)):  # one scan over the batch; almost always true
            return self._fast(sentences)
        fast = [not _CONTROL.search(s) for s in sentences]
        quick = zip(*self._fast([s for s, f in zip(sentences, fast) if f]))
        slow = iter(self._slow([s for s, f in zip(sentences, fast) if not f]))
        ids, counts = [], []
        for sentence, f in zip(sentences, fast):
            sentence_ids, n = next(quick) if f else (next(slow), len(sentence.split()))
            ids.append(sentence_ids)
            counts.append(n)
        return ids, counts

    def _fast(self, sentences: list[str]) -> tuple[list[list[int]], list[int]]:
        if len(self.words) > self.max_cache or len(self.pieces) > self.max_cache:
            self.words.clear()
            self.pieces.clear()
        words = [s.split() for s in sentences]
        new = set(chain.from_iterable(words)).difference(self.words)
        if new:
            self._learn(new)
        get = self.words.__getitem__
        return [list(chain.from_iterable(map(get, ws))) for ws in words], list(map(len, words))

    def _learn(self, words: set[str]) -> None:
        ascii_words = sorted(w for w in words if not _NOT_PRINTABLE_ASCII.search(w))
        other = sorted(words.difference(ascii_words))
        if other:
            self.words.update(zip(other, map(tuple, self._slow(other))))
        split = [_PRE_TOKEN.findall(w) for w in ascii_words]
        new = set(chain.from_iterable(split)).difference(self.pieces)
        if new:
            self._learn_pieces(sorted(new))
        get = self.pieces.__getitem__
        self.words.update(zip(ascii_words, (tuple(chain.from_iterable(map(get, ps))) for ps in split)))

    def _learn_pieces(self, pre_tokens: list[str], chunk: int = 4096) -> None:
        for start in range(0, len(pre_tokens), chunk):
            part = pre_tokens[start : start + chunk]
            # Space-separated pre-tokens pre-tokenise to exactly themselves: word_ids index `part`.
            enc = self.backend.encode(" ".join(part), add_special_tokens=False)
            groups: list[list[int]] = [[] for _ in part]
            for token, word in zip(enc.ids, enc.word_ids):
                groups[word].append(token)
            if not all(groups):  # cannot happen (WordPiece gives [UNK] at worst); stay exact if it does
                groups = self._slow(part)
            self.pieces.update(zip(part, map(tuple, groups)))
