"""Downloader against a local NCBI look-alike on 127.0.0.1: listing, md5, skip, resume, retry, --limit.

The server serves a temp directory laid out like ftp.ncbi.nlm.nih.gov (directory listings copied in
NCBI's format) and honours `Range: bytes=N-` like NCBI does; switches make it ignore Range or drop a
connection half-way, so that each recovery path is exercised for real over a socket.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import write_pubmed_xml
from data_prep.download import Options, list_directory, main, plan_pmc, plan_pubmed

FIXTURES = Path(__file__).parent / "fixtures" / "data_prep" / "dl"
OPTS = ["--timeout", "5", "--retries", "2", "--backoff", "0.01"]


class RangeHandler(BaseHTTPRequestHandler):
    """Static files with `Range: bytes=N-` support; a directory URL serves its index.html."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        path = server.root / self.path.lstrip("/")
        if self.path.endswith("/"):
            path = path / "index.html"
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        range_header = self.headers.get("Range")
        if range_header and not server.ignore_range:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = server.cut_once.pop(self.path, None)  # simulate a dropped connection after `cut` bytes
        self.wfile.write(body[:cut] if cut is not None else body)
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def ncbi(tmp_path):
    """A served tree: pubmed/baseline (3 files, the 3rd with a WRONG .md5), pubmed/updatefiles, PMC OA."""
    root = tmp_path / "www"
    base, upd, pmc = root / "pubmed" / "baseline", root / "pubmed" / "updatefiles", root / "pmc"
    for d in (base, upd, pmc):
        d.mkdir(parents=True)
    shutil.copy(FIXTURES / "pubmed_baseline_index.html", base / "index.html")
    shutil.copy(FIXTURES / "pubmed_updatefiles_index.html", upd / "index.html")
    shutil.copy(FIXTURES / "pmc_oa_comm_xml_index.html", pmc / "index.html")
    for i, (d, name) in enumerate(
        [
            (base, "pubmed25n0001.xml.gz"),
            (base, "pubmed25n0002.xml.gz"),
            (base, "pubmed25n0003.xml.gz"),
            (upd, "pubmed25n1275.xml.gz"),
        ]
    ):
        write_pubmed_xml(d / name, 40, seed=i, first_pmid=1000 * (i + 1))
        md5 = hashlib.md5((d / name).read_bytes()).hexdigest()
        if name.endswith("0003.xml.gz"):
            md5 = "0123456789abcdef0123456789abcdef"
        (d / (name + ".md5")).write_text(f"MD5({name})= {md5}\n")
    for name in (
        "oa_comm_xml.PMC000xxxxxx.baseline.2024-12-18",
        "oa_comm_xml.PMC001xxxxxx.baseline.2024-12-18",
        "oa_comm_xml.incr.2024-12-19",
    ):
        (pmc / (name + ".tar.gz")).write_bytes(gzip.compress(name.encode() * 100))
        (pmc / (name + ".filelist.csv")).write_text("Article File,Accession ID\n")
    (pmc / "oa_comm_xml.PMC000xxxxxx.baseline.2024-12-18.filelist.txt").write_text("Article File\n")

    server = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    server.root, server.requests, server.ignore_range, server.cut_once = root, [], False, {}
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield server, url, root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _gets(server, name: str) -> list[str | None]:
    return [rng for path, rng in server.requests if path.endswith("/" + name)]


def test_listing_and_plans(ncbi):
    _, url, _ = ncbi
    opts = Options(timeout=5, retries=0)
    names = list_directory(url + "pubmed/baseline/", opts)
    assert names[:3] == ["README.txt", "pubmed25n0001.xml.gz", "pubmed25n0001.xml.gz.md5"]
    assert "pubmed" not in names and len(names) == 7  # the parent-directory link is not a file
    both = plan_pubmed(url + "pubmed/", "both", opts)
    assert [r.rel_path for r in both] == [
        "baseline/pubmed25n0001.xml.gz",
        "baseline/pubmed25n0002.xml.gz",
        "baseline/pubmed25n0003.xml.gz",
        "updatefiles/pubmed25n1275.xml.gz",
    ]
    assert both[0].md5_url == url + "pubmed/baseline/pubmed25n0001.xml.gz.md5"
    baseline = plan_pmc(url + "pmc/", "baseline", False, opts)
    assert [r.name for r in baseline] == [
        "oa_comm_xml.PMC000xxxxxx.baseline.2024-12-18.tar.gz",
        "oa_comm_xml.PMC001xxxxxx.baseline.2024-12-18.tar.gz",
    ]
    assert all(r.md5_url is None for r in baseline)  # PMC publishes no .md5 here: size is recorded instead
    incr = plan_pmc(url + "pmc/", "incremental", True, opts)
    assert [r.name for r in incr] == ["oa_comm_xml.incr.2024-12-19.tar.gz", "oa_comm_xml.incr.2024-12-19.filelist.csv"]


def test_download_with_limit_then_skip_on_rerun(ncbi, tmp_path, capsys):
    server, url, root = ncbi
    out = tmp_path / "out"
    argv = ["pubmed", "--out", str(out), "--base_url", url + "pubmed/", "--limit", "2", *OPTS]
    result = main(argv)
    assert result["downloaded"] == ["baseline/pubmed25n0001.xml.gz", "baseline/pubmed25n0002.xml.gz"]
    for name in ("pubmed25n0001.xml.gz", "pubmed25n0002.xml.gz"):
        assert (out / "baseline" / name).read_bytes() == (root / "pubmed" / "baseline" / name).read_bytes()
    assert not (out / "baseline" / "pubmed25n0003.xml.gz").exists()  # --limit 2
    assert not list(out.rglob("*.part"))
    manifest = json.loads((out / "download_manifest.json").read_text())
    entry = manifest["files"][0]
    data = (root / "pubmed" / "baseline" / "pubmed25n0001.xml.gz").read_bytes()
    assert entry["file"] == "baseline/pubmed25n0001.xml.gz" and entry["url"].endswith("/pubmed25n0001.xml.gz")
    assert entry["bytes"] == len(data) and entry["md5"] == hashlib.md5(data).hexdigest() and entry["verified"]
    assert "md5 ok" in capsys.readouterr().err

    server.requests.clear()
    again = main(argv)
    assert again["downloaded"] == [] and len(again["skipped"]) == 2
    assert _gets(server, "pubmed25n0001.xml.gz") == []  # only the small .md5 files were fetched again
    assert json.loads((out / "download_manifest.json").read_text())["files"] == manifest["files"]


def test_partial_file_resumes_with_range_request(ncbi, tmp_path):
    server, url, root = ncbi
    data = (root / "pubmed" / "baseline" / "pubmed25n0001.xml.gz").read_bytes()
    part = tmp_path / "out" / "baseline" / "pubmed25n0001.xml.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:100])
    main(["pubmed", "--out", str(tmp_path / "out"), "--base_url", url + "pubmed/", "--limit", "1", *OPTS])
    assert _gets(server, "pubmed25n0001.xml.gz") == ["bytes=100-"]
    assert (tmp_path / "out" / "baseline" / "pubmed25n0001.xml.gz").read_bytes() == data
    assert not part.exists()


def test_dropped_connection_is_retried_and_resumed(ncbi, tmp_path):
    server, url, root = ncbi
    data = (root / "pubmed" / "updatefiles" / "pubmed25n1275.xml.gz").read_bytes()
    server.cut_once["/pubmed/updatefiles/pubmed25n1275.xml.gz"] = 500
    result = main(
        ["pubmed", "--out", str(tmp_path / "out"), "--base_url", url + "pubmed/", "--what", "updatefiles", *OPTS]
    )
    assert result["downloaded"] == ["updatefiles/pubmed25n1275.xml.gz"]
    assert _gets(server, "pubmed25n1275.xml.gz") == [None, "bytes=500-"]
    assert (tmp_path / "out" / "updatefiles" / "pubmed25n1275.xml.gz").read_bytes() == data


def test_server_ignoring_range_restarts_the_file(ncbi, tmp_path):
    server, url, root = ncbi
    server.ignore_range = True
    part = tmp_path / "out" / "baseline" / "pubmed25n0001.xml.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 100)  # would corrupt the file if appended to
    main(["pubmed", "--out", str(tmp_path / "out"), "--base_url", url + "pubmed/", "--limit", "1", *OPTS])
    assert _gets(server, "pubmed25n0001.xml.gz") == ["bytes=100-"]  # asked, got 200, rewrote from byte 0
    assert (tmp_path / "out" / "baseline" / "pubmed25n0001.xml.gz").read_bytes() == (
        root / "pubmed" / "baseline" / "pubmed25n0001.xml.gz"
    ).read_bytes()


def test_md5_mismatch_retries_once_then_names_the_file(ncbi, tmp_path, capsys):
    server, url, _ = ncbi
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["pubmed", "--out", str(out), "--base_url", url + "pubmed/", "--jobs", "1", *OPTS])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "1 of 3 file(s) failed" in err and "pubmed25n0003.xml.gz" in err and "does not match" in err
    assert _gets(server, "pubmed25n0003.xml.gz") == [None, None]  # deleted and downloaded once more
    assert not (out / "baseline" / "pubmed25n0003.xml.gz").exists()
    assert not (out / "baseline" / "pubmed25n0003.xml.gz.part").exists()
    files = [e["file"] for e in json.loads((out / "download_manifest.json").read_text())["files"]]
    assert files == ["baseline/pubmed25n0001.xml.gz", "baseline/pubmed25n0002.xml.gz"]  # the good ones kept


def test_pmc_packages_record_size_when_no_md5_is_published(ncbi, tmp_path):
    _, url, root = ncbi
    out = tmp_path / "pmc"
    result = main(["pmc", "--out", str(out), "--base_url", url + "pmc/", "--limit", "3", "--filelists", *OPTS])
    assert result["downloaded"] == [
        "oa_comm_xml.PMC000xxxxxx.baseline.2024-12-18.filelist.csv",
        "oa_comm_xml.PMC000xxxxxx.baseline.2024-12-18.filelist.txt",
        "oa_comm_xml.PMC000xxxxxx.baseline.2024-12-18.tar.gz",
    ]
    entries = json.loads((out / "download_manifest.json").read_text())["files"]
    package = next(e for e in entries if e["file"].endswith(".tar.gz"))
    assert package["verified"] is False
    assert package["bytes"] == (root / "pmc" / package["file"]).stat().st_size


def test_bad_base_url_is_a_user_error(ncbi, tmp_path, capsys):
    _, url, _ = ncbi
    with pytest.raises(SystemExit):
        main(["pubmed", "--out", str(tmp_path / "o"), "--base_url", url + "nothing/", *OPTS])
    assert "HTTP 404" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pubmed", "--out", str(tmp_path / "o"), "--base_url", "ftp://example.org/", *OPTS])
    assert "http(s) URL" in capsys.readouterr().err


def test_complete_part_file_is_finished_without_downloading_again(ncbi, tmp_path):
    server, url, root = ncbi
    data = (root / "pubmed" / "baseline" / "pubmed25n0001.xml.gz").read_bytes()
    part = tmp_path / "out" / "baseline" / "pubmed25n0001.xml.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)  # interrupted between the last byte and the rename
    result = main(["pubmed", "--out", str(tmp_path / "out"), "--base_url", url + "pubmed/", "--limit", "1", *OPTS])
    assert result["downloaded"] == ["baseline/pubmed25n0001.xml.gz"]
    assert _gets(server, "pubmed25n0001.xml.gz") == [f"bytes={len(data)}-"]  # answered 416, nothing re-sent
    assert (tmp_path / "out" / "baseline" / "pubmed25n0001.xml.gz").read_bytes() == data
