"""WordPiece tokenizer loading shared by data preparation, pre-training and fine-tuning.

One loader so that the vocabulary hash written into shard manifests is computed exactly the way the
pre-training run recomputes it from the model directory: a mismatch between the shards' tokenizer and the
model's is then caught before any compute.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.decoders import WordPiece as WordPieceDecoder
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.processors import TemplateProcessing

from biobert.errors import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class WordPieceTokenizer:
    """A BERT WordPiece tokenizer plus the facts every stage needs to agree on."""

    backend: Tokenizer  # HF `tokenizers` fast tokenizer; no post-processor (we add [CLS]/[SEP] ourselves)
    vocab_file: Path
    vocab: dict[str, int]
    lowercase: bool
    vocab_hash: str  # sha256 of the vocabulary entries in id order, plus the casing flag

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return self.vocab["[PAD]"]

    @property
    def unk_id(self) -> int:
        return self.vocab["[UNK]"]

    @property
    def cls_id(self) -> int:
        return self.vocab["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self.vocab["[SEP]"]

    @property
    def mask_id(self) -> int:
        return self.vocab["[MASK]"]

    def special_ids(self) -> dict[str, int]:
        return {"pad": self.pad_id, "unk": self.unk_id, "cls": self.cls_id, "sep": self.sep_id, "mask": self.mask_id}

    def continuation_ids(self) -> tuple[int, ...]:
        """Ids of WordPiece "##" pieces: each continues the word of the piece before it."""
        return tuple(sorted(i for tok, i in self.vocab.items() if tok.startswith("##")))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids without special tokens, one list per text (multi-threaded in Rust)."""
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def encode_words(self, words: list[str]):
        """Encode pre-split words; the returned Encoding has `.ids` and `.word_ids`."""
        return self.backend.encode(words, is_pretokenized=True, add_special_tokens=False)

    def save(self, out_dir: str | Path) -> None:
        """Write vocab.txt + tokenizer_config.json + tokenizer.json so `AutoTokenizer` loads the directory."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ordered = sorted(self.vocab.items(), key=lambda kv: kv[1])
        (out / "vocab.txt").write_text("".join(tok + "\n" for tok, _ in ordered), encoding="utf-8")
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.lowercase,
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
            "model_max_length": 512,
        }
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        full = Tokenizer.from_str(self.backend.to_str())
        full.post_processor = TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", self.cls_id), ("[SEP]", self.sep_id)],
        )
        full.save(str(out / "tokenizer.json"))


def _read_vocab(vocab_file: Path) -> dict[str, int]:
    vocab: dict[str, int] = {}
    try:
        lines = vocab_file.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise UserError(f"{vocab_file}: not UTF-8 text ({e}); a WordPiece vocab.txt has one token per line") from None
    if lines and lines[-1] == "":
        lines.pop()
    for line_no, token in enumerate(lines, start=1):
        token = token.rstrip("\r")
        if token in vocab:
            raise UserError(f"{vocab_file}:{line_no}: duplicate token {token!r}; a vocab.txt lists each once")
        vocab[token] = len(vocab)
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise UserError(f"{vocab_file}: missing BERT special tokens {missing}; is this a WordPiece vocab.txt?")
    return vocab


def _infer_lowercase(path: Path, vocab: dict[str, int]) -> bool:
    config = path / "tokenizer_config.json" if path.is_dir() else None
    if config is not None and config.is_file():
        value = json.loads(config.read_text()).get("do_lower_case")
        if isinstance(value, bool):
            return value
    # An uncased vocabulary has no A-Z outside the bracketed special tokens (non-ASCII symbols such as
    # "ℝ" count as upper case to str.isupper even in uncased vocabularies, so only ASCII is looked at).
    return not any(any("A" <= c <= "Z" for c in tok) for tok in vocab if not tok.startswith("["))


def vocab_hash(vocab: dict[str, int], lowercase: bool) -> str:
    digest = hashlib.sha256()
    for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        digest.update(tok.encode("utf-8") + b"\n")
    digest.update(b"lowercase=" + str(lowercase).encode())
    return digest.hexdigest()[:16]


def load_tokenizer(path: str | Path, lowercase: bool | None = None) -> WordPieceTokenizer:
    """Load from a `vocab.txt` file or a Hugging Face model/tokenizer directory holding one.

    Casing comes from `lowercase`, else the directory's tokenizer_config.json, else the vocabulary itself.
    """
    path = Path(path)
    vocab_file = path / "vocab.txt" if path.is_dir() else path
    if not vocab_file.is_file():
        raise UserError(
            f"{vocab_file}: no such vocabulary file; pass a vocab.txt or a BERT model directory that contains one"
        )
    vocab = _read_vocab(vocab_file)
    if lowercase is None:
        lowercase = _infer_lowercase(path, vocab)
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    backend.pre_tokenizer = BertPreTokenizer()
    backend.decoder = WordPieceDecoder(prefix="##")
    return WordPieceTokenizer(
        backend=backend,
        vocab_file=vocab_file,
        vocab=vocab,
        lowercase=lowercase,
        vocab_hash=vocab_hash(vocab, lowercase),
    )
