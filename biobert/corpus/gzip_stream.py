"""Gzip decompression for the corpus readers: ISA-L's igzip when installed, else the standard library's.

Decompression is ~6 % of the PubMed pipeline's CPU time with zlib and a third of that with ISA-L (`isal` on
PyPI, pinned in requirements.txt; same bytes out, same multi-member and trailer checks). Without it the
readers fall back to `gzip`/`zlib`. Readers of GzipFile catch `GZIP_ERRORS`, which includes ISA-L's own error type.

`inflate` / `DamageAsEnd` are for readers that must keep every complete record before a damage and say what
the damage is: GzipFile loses the bytes of the read that meets a truncation, and reports bytes appended
after the stream as "not a gzipped file" (which reads as "rename it"), where a re-download is the cure.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from typing import BinaryIO

try:
    from isal import igzip as _gzip
    from isal import isal_zlib as _zlib

    GZIP_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, _zlib.error)
except ImportError:  # pragma: no cover - isal is in requirements.txt
    _gzip, _zlib = gzip, zlib
    GZIP_ERRORS = (OSError, EOFError, zlib.error)

BadGzipFile = gzip.BadGzipFile  # igzip raises the standard library's


def open_gzip(raw: BinaryIO) -> BinaryIO:
    """A decompressing reader over an open binary file (multi-member streams included)."""
    return _gzip.GzipFile(fileobj=raw, mode="rb")


def decompressobj():
    """A streaming gzip decompressor (`zlib.decompressobj(31)`'s interface)."""
    return _zlib.decompressobj(31)


_MAGIC = b"\x1f\x8b"
_INFLATE_ERRORS = (zlib.error, _zlib.error)
REDOWNLOAD = (
    "re-download it (delete it and re-run `python -m data_prep download`, which checks every file "
    "against NCBI's published md5)"
)


class GzipDamage(Exception):
    """Where and how a gzip stream is damaged, as a sentence a user can act on.

    `inflate` raises it only after it has delivered every byte before the damage, so that a reader keeps all
    complete records; `offset` is a byte position in the compressed file.
    """

    def __init__(self, kind: str, offset: int, detail: str, advice: str = REDOWNLOAD):
        self.kind, self.offset, self.detail, self.advice = kind, offset, detail, advice
        super().__init__(f"{detail}; {advice}")


def _head(data: bytes) -> str:
    return repr(data[:16])


def _not_gzip(first: bytes) -> GzipDamage:
    plain = first.lstrip()[:1] == b"<"
    advice = "it looks like plain XML: rename it without .gz" if plain else f"if it is damaged, {REDOWNLOAD}"
    return GzipDamage(
        "not_gzip", 0, f"not a gzip file: it starts with {_head(first)}, not the gzip magic bytes 1f 8b", advice
    )


def _garbage(offset: int, data: bytes, raw: BinaryIO) -> GzipDamage:
    try:
        size = f"{os.fstat(raw.fileno()).st_size - offset:,} bytes"
    except (AttributeError, OSError, ValueError):
        size = "bytes"
    return GzipDamage(
        "trailing_garbage",
        offset,
        f"trailing garbage after the gzip stream at byte {offset:,} "
        f"({size} that are not gzip data, starting {_head(data)}): not "
        "the file as published (appended to by an interrupted or "
        "repeated download?)",
    )


def inflate(raw: BinaryIO, block: int = 1 << 16) -> Iterator[bytes]:
    """The decompressed bytes of a (multi-member) gzip stream, in pieces; GzipDamage after the last good byte.

    Unlike GzipFile, which raises inside the read that meets the damage (the bytes it decompressed in that
    read are lost to the caller) and calls trailing garbage "not a gzipped file", this says which damage it
    is and where: truncated (the file ends inside a member), trailing garbage (bytes after the last member
    that are not another member; zero padding is allowed, as gzip(1) allows it), corrupt data, or no gzip at
    all. OSError from `raw` itself (an unreadable file) is not damage and propagates unchanged. Corrupt data
    loses at most the output of one `block` of input (the decompressor raises instead of returning it), so
    the default is small; it costs nothing measurable.
    """
    pos, data, members, member_start = 0, b"", 0, 0  # pos: offset of data[0] in the compressed file
    inflater = None  # None: between members
    while True:
        if not data:
            data = raw.read(block)
            if not data:
                break
        if inflater is None:
            if members:
                rest = data.lstrip(b"\0")
                pos, data = pos + len(data) - len(rest), rest
                if not data:
                    continue
            while len(data) < len(_MAGIC) and (more := raw.read(block)):
                data += more
            if data[:2] != _MAGIC:
                raise _garbage(member_start, data, raw) if members else _not_gzip(data)
            inflater, member_start = decompressobj(), pos
        try:
            out = inflater.decompress(data)
        except _INFLATE_ERRORS as e:
            raise GzipDamage(
                "corrupt",
                pos,
                f"corrupt gzip data between byte {pos:,} and byte {pos + len(data):,} ({type(e).__name__}: {e})",
            ) from e
        if out:
            yield out
        if inflater.eof:
            rest = inflater.unused_data
            pos, data = pos + len(data) - len(rest), rest
            members, member_start, inflater = members + 1, pos, None  # member_start: where garbage would start
        else:
            pos, data = pos + len(data), b""
    if inflater is not None:
        raise GzipDamage(
            "truncated",
            pos,
            f"truncated gzip stream: the file ends at byte {pos:,}, inside the "
            f"compressed data that starts at byte {member_start:,} (an "
            "interrupted download or copy)",
        )


class DamageAsEnd:
    """A read()-able view of `inflate(raw)` for a parser: damage reads as the end of the data, and is kept.

    A streaming parser that meets an exception from its source stops where it is, and the complete records
    it has buffered but not yet reported are lost; at a clean end of data it reports them first. The reader
    checks `damage` afterwards and reports it (it explains a premature end better than the parser can).
    """

    def __init__(self, raw: BinaryIO):
        self._pieces, self._piece, self._at = inflate(raw), b"", 0
        self.damage: GzipDamage | None = None
        self.name = getattr(raw, "name", None)  # parsers name the source in their messages

    def _refill(self) -> bool:
        while self._at >= len(self._piece) and self.damage is None:
            try:
                self._piece, self._at = next(self._pieces), 0
            except StopIteration:
                return False
            except GzipDamage as e:
                self.damage = e
        return self._at < len(self._piece)

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (fewer at a piece boundary, as a raw read may); b"" at the end or at damage."""
        if size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if not self._refill():
            return b""
        out = self._piece[self._at : self._at + size]
        self._at += len(out)
        return out
