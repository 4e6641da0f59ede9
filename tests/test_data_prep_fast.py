"""The fast paths of data_prep give exactly what the plain ones give: the cached WordPiece encoder against
the real tokenizer (cased and uncased, adversarial and random Unicode text), `write_examples` against one
`write` per example, and the ASCII fast path of `clean_text` against the general one."""

import random
import string
import unicodedata

import pyarrow as pa
import pytest

from biobert.corpus import text_clean
from biobert.tokenizer import load_tokenizer
from conftest import SHARED_DATA, write_vocab
from data_prep.fast_wordpiece import SentenceEncoder
from data_prep.packing import Example
from data_prep.shards import ShardWriter

REAL_VOCAB = SHARED_DATA / "vocab" / "bert-base-cased-vocab.txt"
TRICKY = [
    "",
    " ",
    "Cells grew.",
    "  double  spaces  and trailing ",
    "(p<0.05), [Ca2+]i; IL-6/IL-10 = 3.5 ± 0.2 %",
    "a\tb\nc\rd",
    "x\x00y\x1cz\x1fw\x7fv\x85u",
    "non\u00a0breaking\u2009thin\u3000ideographic\u2028line",
    "zero\u200bwidth soft\u00adhyphen \ufeffbom \ufffdreplacement",
    "Ünïcödé café naïve CAFÉ Straße İstanbul ΣΟΦΟΣ",
    "TNF-α and β-catenin, 5 µm, 37 °C, ≥ 2",
    "中文字符 mixed with 日本語 text",
    "emoji 🧬 and math 𝛼",
    "combining e\u0301 and a\u0300 marks \u0301alone",
    "x" * 150 + " long word",
    "under_score back`tick ~tilde^",
    "[SEP] literal [CLS] and [UNK] tokens",
    "###hash ##piece",
    "'quotes' \"double\" `back`",
]


def _random_text(rng: random.Random, n: int, ascii_only: bool = False) -> str:
    pools = [string.ascii_letters + string.digits, string.punctuation, " " * 8]
    if not ascii_only:
        pools += [
            "αβγµ±≥–—é中\u00a0\u200b\u0301\u2009\ufffd\x1c\x85\t\n",
            "".join(chr(rng.randrange(0x80, 0x3000)) for _ in range(40)),
        ]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n))


@pytest.fixture(params=["cased", "uncased"])
def tokenizer(request, tmp_path):
    if request.param == "cased" and REAL_VOCAB.is_file():
        return load_tokenizer(REAL_VOCAB)
    return load_tokenizer(
        write_vocab(tmp_path / "vocab.txt", lowercase=request.param == "uncased"), lowercase=request.param == "uncased"
    )


def test_encoder_equals_the_tokenizer_on_tricky_and_random_text(tokenizer):
    rng = random.Random(0)
    texts = TRICKY + [_random_text(rng, rng.randint(0, 80), ascii_only=i % 3 == 0) for i in range(3000)]
    expected = tokenizer.encode_batch(texts)
    encoder = SentenceEncoder(tokenizer, max_cache=500)  # small: the cache is cleared along the way
    for start in range(0, len(texts), 97):  # batches with and without control characters
        ids, words = encoder.encode(texts[start : start + 97])
        assert ids == expected[start : start + 97]
        assert words == [len(t.split()) for t in texts[start : start + 97]]
    ascii_only = [t for t in texts if t.isascii() and t.isprintable()]
    assert len(ascii_only) > 900 and encoder.encode(ascii_only)[0] == tokenizer.encode_batch(ascii_only)


def test_every_python_whitespace_character_is_a_word_boundary_to_bert(tokenizer):
    """The encoder splits at str.split() whitespace; outside the C0/C1 controls (which it leaves to the real
    tokenizer) BERT must treat each of those characters as a space, too."""
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace() and not 0 <= c <= 0x1F and not 0x7F <= c <= 0x9F]
    assert len(spaces) > 15
    for c in spaces:
        assert tokenizer.encode_batch([f"ab{c}cd"]) == tokenizer.encode_batch(["ab cd"]), hex(ord(c))


def test_clean_text_fast_path_equals_the_general_one():
    rng = random.Random(1)
    texts = [_random_text(rng, rng.randint(0, 60)) for _ in range(2000)]
    texts += [
        "".join(rng.choice(string.printable + "\x00\x01\x7f\x1c\x1f\x0b\x0c") for _ in range(40)) for _ in range(2000)
    ]

    def general(text: str) -> str:  # clean_text without its ASCII fast path
        if not text.isascii():
            text = text_clean._INVISIBLE.sub("", unicodedata.normalize("NFC", text))
        return " ".join(text_clean._CONTROL.sub(" ", text).split())

    for text in texts:
        assert text_clean.clean_text(text) == general(text), repr(text)


def _rows(path):
    return pa.ipc.open_stream(pa.memory_map(str(path))).read_all()


@pytest.mark.parametrize("shard_size, batch_rows", [(7, 3), (50, 1000), (100_000, 16)])
def test_write_examples_gives_the_same_files_as_write(tmp_path, shard_size, batch_rows):
    rng = random.Random(shard_size)
    examples = [
        Example([rng.randrange(30_000) for _ in range(rng.randint(3, 40))], rng.randint(1, 2), rng.choice([0, 1, -1]))
        for _ in range(230)
    ]
    one = ShardWriter(tmp_path / "one", 30_000, shard_size, batch_rows)
    for ex in examples:
        one.write(ex.input_ids, ex.sep_index, ex.next_sentence_label)
    many = ShardWriter(tmp_path / "many", 30_000, shard_size, batch_rows)
    pos = 0
    while pos < len(examples):
        n = rng.randint(0, 25)
        assert many.write_examples(examples[pos : pos + n]) == sum(len(e.input_ids) for e in examples[pos : pos + n])
        pos += n
    a, b = one.close(), many.close()
    assert [s["sha256"] for s in a] == [s["sha256"] for s in b] and len(a) == -(-230 // shard_size)
    table = pa.concat_tables([_rows(tmp_path / s["file"]) for s in a])
    assert table.column("input_ids").to_pylist() == [e.input_ids for e in examples]
    assert table.column("next_sentence_label").to_pylist() == [e.next_sentence_label for e in examples]
