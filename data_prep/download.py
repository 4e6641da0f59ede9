"""`python -m data_prep download`: fetch PubMed baseline/update files and PMC Open Access bulk packages.

The full PubMed baseline is 1,200+ files (~40 GB) and PMC OA is ~100 GB, so every step must survive an
interrupted run: a file is written to `<name>.part`, resumed with an HTTP `Range` request, verified
against NCBI's published `<name>.md5` and only then renamed to its final name. A file under its final
name is therefore always complete, and a re-run skips it. `download_manifest.json` records what each file
is (url, bytes, md5, whether it was verified) and is rewritten after every finished file.

Standard library only (`urllib.request`), so the downloader runs on login nodes without the training
environment. Every request has a timeout, and failures are retried a bounded number of times with
exponential backoff; a file that still fails is reported by name after the other files are done.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from biobert.errors import UserError, exit_on_user_error
from biobert.files import write_json

PUBMED_URL = "https://ftp.ncbi.nlm.nih.gov/pubmed/"
PMC_URL = "https://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_bulk/oa_comm/xml/"
MANIFEST = "download_manifest.json"
USER_AGENT = "biobert-data-prep/1 (python urllib)"
CHUNK = 1 << 20

PUBMED_FILE = re.compile(r"^pubmed\d{2}n\d{4}\.xml\.gz$")
# oa_comm_xml.PMC000xxxxxx.baseline.2024-06-18.tar.gz and oa_comm_xml.incr.2024-06-19.tar.gz
PMC_FILE = re.compile(r"^oa_[a-z]+_xml\.(?:(?P<baseline>PMC\w+\.baseline)|incr)\.[\w-]+\.tar\.gz$")
HREF = re.compile(r"""<a\s[^>]*?href\s*=\s*["']([^"'#?]+)["']""", re.IGNORECASE)
# NCBI writes "MD5(pubmed25n0001.xml.gz)= <hex>"; md5sum writes "<hex>  <name>".
MD5_LINE = re.compile(
    r"MD5\s*\((?P<name>[^)]+)\)\s*=\s*(?P<hex>[0-9a-fA-F]{32})|^(?P<bare>[0-9a-fA-F]{32})\b", re.MULTILINE
)


class RetryableError(Exception):
    """A transient failure (connection reset, timeout, 5xx, short read): worth another try."""


@dataclass
class Options:
    timeout: float = 60.0  # seconds per socket operation, not per file
    retries: int = 5  # further tries after the first, per request
    backoff: float = 2.0  # seconds before the first retry; doubles each time


@dataclass
class RemoteFile:
    name: str
    url: str
    rel_path: str  # where it goes under --out
    md5_url: str | None  # None: NCBI publishes no checksum for it (PMC packages); its size is recorded


def _open(url: str, opts: Options, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=opts.timeout)  # noqa: S310 (http/https checked in main)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # Range not satisfiable: the caller decides what that means
            return e  # type: ignore[return-value]
        if e.code >= 500 or e.code == 429:
            raise RetryableError(f"HTTP {e.code} {e.reason}") from None
        raise UserError(
            f"{url}: HTTP {e.code} {e.reason}; check --base_url (and that the file still "
            "exists on the server: NCBI replaces the baseline once a year)"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise RetryableError(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None


def _with_retries(what: str, opts: Options, action):
    """Run `action()`, retrying RetryableError with exponential backoff; UserError passes straight through."""
    for attempt in range(opts.retries + 1):
        try:
            return action()
        except RetryableError as e:
            if attempt == opts.retries:
                raise UserError(
                    f"{what}: failed after {opts.retries + 1} tries ({e}); check the network and "
                    "re-run: finished files are kept and partial ones resume"
                ) from None
            delay = opts.backoff * 2**attempt
            _log(f"{what}: {e}; retrying in {delay:.1f}s ({attempt + 1}/{opts.retries})")
            time.sleep(delay)


def _read_text(url: str, opts: Options) -> str:
    def action() -> str:
        with _open(url, opts) as response:
            try:
                return response.read().decode("utf-8", errors="replace")
            except (OSError, http.client.HTTPException) as e:
                raise RetryableError(f"{type(e).__name__}: {e}") from None

    return _with_retries(url, opts, action)


def list_directory(url: str, opts: Options) -> list[str]:
    """File names linked from an HTTP directory index (NCBI's FTP-over-HTTPS listing), in listing order."""
    names = []
    for href in HREF.findall(_read_text(url, opts)):
        name = href.rstrip("/").rsplit("/", 1)[-1]
        if name and not href.endswith("/") and name not in names:
            names.append(name)
    return names


def _parse_md5(text: str, name: str, url: str) -> str:
    match = MD5_LINE.search(text)
    if match is None:
        raise UserError(f"{url}: no MD5 checksum found in {text[:80]!r}; expected 'MD5({name})= <32 hex>'")
    if match.group("name") is not None and match.group("name").strip() != name:
        raise UserError(
            f"{url}: checksum is for {match.group('name')!r}, not {name!r}; the server's listing is "
            "inconsistent, try again later"
        )
    return (match.group("hex") or match.group("bare")).lower()


def _md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, part: Path, opts: Options) -> int:
    """Download `url` into `part`, resuming from its current size; return the final size in bytes.

    A server that answers a Range request with 200 (ignores Range) sends the whole file: `part` restarts.
    """

    def attempt() -> int:
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = _open(url, opts, headers)
        with response:
            if response.status == 416:  # nothing after `offset`: complete if that is the whole file
                total = (response.headers.get("Content-Range") or "").rpartition("/")[2]
                if total.isdigit() and int(total) == offset:
                    return offset
                part.unlink()
                raise RetryableError(f"server refused resuming at byte {offset:,}; restarting")
            if response.status == 206:
                if not (response.headers.get("Content-Range") or "").startswith(f"bytes {offset}-"):
                    part.unlink()
                    raise RetryableError("server sent a different byte range than asked; restarting")
                mode, start = "ab", offset
            else:
                mode, start = "wb", 0
            length = response.headers.get("Content-Length")
            expected = start + int(length) if length and length.isdigit() else None
            with open(part, mode) as out:
                try:
                    while block := response.read(CHUNK):
                        out.write(block)
                except (OSError, http.client.HTTPException) as e:
                    raise RetryableError(f"connection lost at byte {out.tell():,} ({type(e).__name__})") from None
                size = out.tell()
        if expected is not None and size != expected:
            raise RetryableError(f"short read: {size:,} of {expected:,} bytes")
        return size

    return _with_retries(url, opts, attempt)


def download_one(remote: RemoteFile, out_dir: Path, known: dict | None, opts: Options) -> dict:
    """Fetch and verify one file unless it is already there and verified; return its manifest entry.

    A checksum mismatch deletes the file and downloads it once more from scratch, then raises UserError.
    """
    final = out_dir / remote.rel_path
    part = final.with_name(final.name + ".part")
    final.parent.mkdir(parents=True, exist_ok=True)
    expected = _parse_md5(_read_text(remote.md5_url, opts), remote.name, remote.md5_url) if remote.md5_url else None
    if final.exists():
        size = final.stat().st_size
        if known and known.get("bytes") == size and (expected is None or known.get("md5") == expected):
            return {**known, "skipped": True}
        md5 = _md5_of(final)
        if expected is None or md5 == expected:
            return _entry(remote, size, md5, expected is not None, skipped=True)
        _log(f"{final}: existing file does not match {remote.md5_url}; downloading it again")
        final.unlink()
    for attempt in range(2):
        start = time.monotonic()
        size = fetch(remote.url, part, opts)
        md5 = _md5_of(part)
        if expected is None or md5 == expected:
            os.replace(part, final)
            seconds = time.monotonic() - start
            _log(
                f"{remote.rel_path}: {size / 1e6:,.1f} MB in {seconds:.1f}s "
                f"({size / 1e6 / max(seconds, 1e-6):.1f} MB/s), md5 {'ok' if expected else 'not published'}"
            )
            return _entry(remote, size, md5, expected is not None)
        part.unlink()
        if attempt == 0:
            _log(f"{remote.rel_path}: md5 {md5} does not match the published {expected}; downloading again")
    raise UserError(
        f"{remote.url}: md5 of the download ({md5}) does not match {remote.md5_url} ({expected}) "
        "twice; the file was deleted. Re-run later (NCBI may be updating the file) or report it"
    )


def _entry(remote: RemoteFile, size: int, md5: str, verified: bool, skipped: bool = False) -> dict:
    return {
        "file": remote.rel_path,
        "url": remote.url,
        "bytes": size,
        "md5": md5,
        "verified": verified,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "skipped": skipped,
    }


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def plan_pubmed(base_url: str, what: str, opts: Options) -> list[RemoteFile]:
    remotes = []
    for sub in ["baseline", "updatefiles"] if what == "both" else [what]:
        url = urljoin(base_url, sub + "/")
        names = set(list_directory(url, opts))
        files = sorted(n for n in names if PUBMED_FILE.match(n))
        if not files:
            raise UserError(
                f"{url}: no pubmedNNnNNNN.xml.gz files listed; check --base_url (it should be the "
                f"directory that holds baseline/ and updatefiles/, default {PUBMED_URL})"
            )
        remotes += [RemoteFile(n, urljoin(url, n), f"{sub}/{n}", urljoin(url, n + ".md5")) for n in files]
        missing_md5 = [n for n in files if n + ".md5" not in names]
        if missing_md5:  # NCBI always publishes them; a listing without them is a mirror or a changed layout
            raise UserError(
                f"{url}: no .md5 files listed for {len(missing_md5)} file(s), e.g. {missing_md5[0]}; "
                "point --base_url at NCBI or a complete mirror"
            )
    return remotes


def plan_pmc(base_url: str, what: str, filelists: bool, opts: Options) -> list[RemoteFile]:
    names = list_directory(base_url, opts)
    listed = set(names)
    packages = sorted(
        n
        for n in listed
        if (m := PMC_FILE.match(n)) and (what == "both" or (what == "baseline") == bool(m.group("baseline")))
    )
    if not packages:
        raise UserError(
            f"{base_url}: no OA bulk packages (oa_*_xml.*.tar.gz) listed; check --base_url (default {PMC_URL})"
        )
    remotes = []
    for name in packages:
        md5 = urljoin(base_url, name + ".md5") if name + ".md5" in listed else None
        remotes.append(RemoteFile(name, urljoin(base_url, name), name, md5))
        stem = name[: -len(".tar.gz")]
        if filelists:  # the .csv lists every article (PMCID, PMID, licence, retraction) in the package
            remotes += [
                RemoteFile(f, urljoin(base_url, f), f, None)
                for f in (stem + ".filelist.csv", stem + ".filelist.txt")
                if f in listed
            ]
    return remotes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep download", description=__doc__.split("\n\n")[0])
    p.add_argument("source", choices=("pubmed", "pmc"))
    p.add_argument("--out", required=True, help="download directory (pubmed: baseline/ and updatefiles/ inside)")
    p.add_argument(
        "--what",
        choices=("baseline", "updatefiles", "incremental", "both"),
        default="baseline",
        help="pubmed: baseline|updatefiles|both; pmc: baseline|incremental|both (default baseline)",
    )
    p.add_argument("--base_url", default=None, help=f"pubmed default {PUBMED_URL}; pmc default {PMC_URL}")
    p.add_argument("--limit", type=int, default=None, help="only the first N files (in name order)")
    p.add_argument("--jobs", type=int, default=2, help="parallel downloads (NCBI asks for few connections)")
    p.add_argument("--filelists", action="store_true", help="pmc: also fetch each package's .filelist.csv/.txt")
    p.add_argument("--timeout", type=float, default=Options.timeout, help="seconds per network operation")
    p.add_argument("--retries", type=int, default=Options.retries, help="retries per request after the first")
    p.add_argument("--backoff", type=float, default=Options.backoff, help="seconds before the first retry")
    return p


def _validate(args: argparse.Namespace) -> None:
    scheme = urlsplit(args.base_url).scheme
    checks = [
        (scheme in ("http", "https"), f"--base_url must be an http(s) URL, got {args.base_url!r}"),
        (args.limit is None or args.limit >= 1, f"--limit must be >= 1, got {args.limit}"),
        (1 <= args.jobs <= 16, f"--jobs must be in [1, 16], got {args.jobs}"),
        (
            args.timeout > 0 and args.retries >= 0 and args.backoff >= 0,
            "--timeout must be > 0, --retries and --backoff >= 0",
        ),
        (
            args.what
            in (
                ("baseline", "updatefiles", "both") if args.source == "pubmed" else ("baseline", "incremental", "both")
            ),
            f"--what {args.what} is not available for {args.source}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def _load_manifest(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return {e["file"]: e for e in json.loads(path.read_text())["files"]}
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(
            f"{path}: unreadable download manifest ({e}); delete it (files are re-verified "
            "against their md5) and re-run"
        ) from None


def _write_manifest(path: Path, header: dict, entries: dict[str, dict]) -> None:
    files = [{k: v for k, v in e.items() if k != "skipped"} for _, e in sorted(entries.items())]
    write_json(path, {**header, "files": files}, sort_keys=False, indent=1)  # atomic: never half a manifest


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict:
    """Download, verify and record; returns {"downloaded", "skipped", "failed", "manifest"}.

    One file that keeps failing does not stop the others; the run then ends with a UserError naming it.
    """
    args = build_parser().parse_args(argv)
    args.base_url = args.base_url or (PUBMED_URL if args.source == "pubmed" else PMC_URL)
    args.base_url = args.base_url if args.base_url.endswith("/") else args.base_url + "/"
    _validate(args)
    opts = Options(timeout=args.timeout, retries=args.retries, backoff=args.backoff)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.source == "pubmed":
        remotes = plan_pubmed(args.base_url, args.what, opts)
    else:
        remotes = plan_pmc(args.base_url, args.what, args.filelists, opts)
    remotes = remotes[: args.limit] if args.limit else remotes
    manifest_path = out / MANIFEST
    entries = _load_manifest(manifest_path)
    header = {"source": args.source, "base_url": args.base_url, "what": args.what}
    _log(f"{len(remotes)} file(s) from {args.base_url} to {out}")
    downloaded, skipped, failed = [], [], {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(download_one, r, out, entries.get(r.rel_path), opts): r for r in remotes}
        for done, future in enumerate(as_completed(futures), start=1):
            remote = futures[future]
            try:
                entry = future.result()
            except UserError as e:
                failed[remote.rel_path] = str(e)
                _log(f"[{done}/{len(remotes)}] FAILED {e}")
                continue
            (skipped if entry["skipped"] else downloaded).append(remote.rel_path)
            if entry["skipped"]:
                _log(f"[{done}/{len(remotes)}] {remote.rel_path}: already complete, skipped")
            entries[remote.rel_path] = entry
            _write_manifest(manifest_path, header, entries)
    _write_manifest(manifest_path, header, entries)
    if failed:
        raise UserError(
            f"{len(failed)} of {len(remotes)} file(s) failed (the others are done and recorded in "
            f"{manifest_path}):\n" + "\n".join(failed.values())
        )
    _log(f"done: {len(downloaded)} downloaded, {len(skipped)} already complete; manifest {manifest_path}")
    return {
        "downloaded": sorted(downloaded),
        "skipped": sorted(skipped),
        "failed": failed,
        "manifest": str(manifest_path),
    }


if __name__ == "__main__":
    main()
