"""Fetching from http, paths and file:// URLs; safe, all-or-nothing extraction."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import catdog.data.archive
from catdog.cli import run
from catdog.data import ingest
from catdog.data.archive import MARKER_NAME, extract
from catdog.data.fetch import fetch
from catdog.errors import DatasetError, DownloadError, UnsafeArchiveError
from rawhttp import chunked

ARCHIVE = b"PK-not-really-but-bytes-are-bytes" * 3000


class FileServer:
    """A tiny http server on 127.0.0.1 serving in-memory files.

    Attributes:
        files: URL path -> content.
        requests: Paths of the GET requests received, in order.
        drop_next: How many coming GETs to cut off halfway through the body.
        chunked: Send bodies with ``Transfer-Encoding: chunked`` (no Content-Length).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.drop_next = 0
        self.chunked = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                if server.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    body = chunked(body, 4096)
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_next:
                    server.drop_next -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def gets(self, path: str) -> int:
        return self.requests.count(path)


@pytest.fixture
def http_server() -> Iterator[FileServer]:
    server = FileServer()
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()
    thread.join()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def names(folder: Path) -> list[str]:
    """Everything under ``folder`` (hidden files too), relative and sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


# --- fetching ---------------------------------------------------------------


def test_http_download_and_no_second_download(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["/data/archive.zip"] = ARCHIVE
    url = http_server.url + "/data/archive.zip"
    first = fetch(url, tmp_path, sha256=sha256(ARCHIVE))
    assert first.downloaded and first.path == tmp_path / "archive.zip"
    assert first.path.read_bytes() == ARCHIVE
    assert (first.sha256, first.size) == (sha256(ARCHIVE), len(ARCHIVE))
    assert names(tmp_path) == ["archive.zip", "archive.zip.sha256"]

    second = fetch(url, tmp_path, sha256=sha256(ARCHIVE))
    assert not second.downloaded and second.sha256 == first.sha256
    assert http_server.gets("/data/archive.zip") == 1


def test_http_without_checksum_trusts_its_record(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["/a.zip"] = ARCHIVE
    assert fetch(http_server.url + "/a.zip", tmp_path).downloaded
    assert (tmp_path / "a.zip.sha256").read_text().split()[0] == sha256(ARCHIVE)
    assert not fetch(http_server.url + "/a.zip", tmp_path).downloaded
    (tmp_path / "a.zip.sha256").unlink()  # no record of a complete download: fetch again
    assert fetch(http_server.url + "/a.zip", tmp_path).downloaded
    assert http_server.gets("/a.zip") == 2


def test_http_checksum_mismatch_leaves_nothing(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["/a.zip"] = ARCHIVE
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(http_server.url + "/a.zip", tmp_path, sha256="0" * 64)
    assert names(tmp_path) == []


def test_dropped_connection_leaves_nothing_and_rerun_completes(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["/a.zip"] = ARCHIVE
    http_server.drop_next = 1
    with pytest.raises(DownloadError):
        fetch(http_server.url + "/a.zip", tmp_path)
    assert names(tmp_path) == []
    result = fetch(http_server.url + "/a.zip", tmp_path)
    assert result.downloaded and result.path.read_bytes() == ARCHIVE


def test_dropped_chunked_transfer_leaves_nothing_and_rerun_completes(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["/a.zip"] = ARCHIVE
    http_server.chunked = True  # no Content-Length: only the broken chunking tells
    http_server.drop_next = 1
    with pytest.raises(DownloadError, match="broke off"):
        fetch(http_server.url + "/a.zip", tmp_path)
    assert names(tmp_path) == []
    assert fetch(http_server.url + "/a.zip", tmp_path).path.read_bytes() == ARCHIVE


def test_cli_after_a_dropped_download_says_so_and_rerun_completes(
    http_server: FileServer, config_file: Path, sample_zip: Path, settings, capsys
) -> None:
    http_server.files["/sample_data.zip"] = sample_zip.read_bytes()
    http_server.drop_next = 1
    argv = [
        "--config",
        str(config_file),
        "--set",
        f"data.archives.petimages.source_url={http_server.url}/sample_data.zip",
    ]
    assert run(ingest.main, argv) == 1
    assert "broke off" in capsys.readouterr().err
    assert names(Path(settings.data.download_dir)) == [] and names(Path(settings.data.extract_dir)) == []
    assert run(ingest.main, argv) == 0
    assert (settings.data.archive_dir("petimages") / "PetImages" / "Cat" / "1.jpg").is_file()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("/missing.zip", "404"),
        ("/", "file name"),
    ],
    ids=["not found", "no file name"],
)
def test_http_errors(http_server: FileServer, tmp_path: Path, url: str, expected: str) -> None:
    with pytest.raises(DownloadError, match=expected):
        fetch(http_server.url + url, tmp_path)
    assert names(tmp_path) == []


def test_unreachable_server(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="cannot download"):
        fetch("http://127.0.0.1:9/a.zip", tmp_path)


def test_local_path_relative_to_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "a.zip").write_bytes(ARCHIVE)
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    Path("downloads_here").mkdir()
    result = fetch("../shared/a.zip", "downloads_here")
    assert result.downloaded and result.path == Path("downloads_here/a.zip")
    assert result.path.read_bytes() == ARCHIVE
    assert not fetch("../shared/a.zip", "downloads_here").downloaded


def test_local_copy_of_other_size_is_fetched_again(tmp_path: Path) -> None:
    source = tmp_path / "a.zip"
    source.write_bytes(ARCHIVE)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    fetch(str(source), downloads)
    source.write_bytes(ARCHIVE + b"more")
    again = fetch(str(source), downloads)
    assert again.downloaded and again.size == len(ARCHIVE) + 4


def test_file_url(tmp_path: Path) -> None:
    source = tmp_path / "dir with space" / "a.zip"
    source.parent.mkdir()
    source.write_bytes(ARCHIVE)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    result = fetch(source.as_uri(), downloads, sha256=sha256(ARCHIVE).upper())
    assert result.path.read_bytes() == ARCHIVE


def test_local_checksum_mismatch_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "a.zip"
    source.write_bytes(ARCHIVE)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(str(source), downloads, sha256="f" * 64)
    assert names(downloads) == []


def test_damaged_copy_is_replaced_when_checksum_configured(tmp_path: Path) -> None:
    source = tmp_path / "a.zip"
    source.write_bytes(ARCHIVE)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "a.zip").write_bytes(b"damaged")
    result = fetch(str(source), downloads, sha256=sha256(ARCHIVE))
    assert result.downloaded and result.path.read_bytes() == ARCHIVE


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://example.com/a.zip", "unsupported URL scheme"),
        ("file://otherhost/a.zip", "another host"),
        ("no/such/archive.zip", "cannot read the archive"),
    ],
)
def test_bad_sources(tmp_path: Path, url: str, expected: str) -> None:
    with pytest.raises(DownloadError, match=expected):
        fetch(url, tmp_path)
    assert names(tmp_path) == []


# --- extracting -------------------------------------------------------------


def make_zip(path: Path, members: list[tuple[str, bytes]], *, mode: int | None = None) -> Path:
    """Write a zip; ``mode`` (st_mode bits) marks the last member as a Unix special file."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for i, (name, content) in enumerate(members):
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None and i == len(members) - 1:
                info.create_system = 3
                info.external_attr = mode << 16
            archive.writestr(info, content)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                archive.addfile(info, io.BytesIO(member[1]))
    return path


def tar_special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def declare_size(path: Path, size: int) -> Path:
    """Rewrite every uncompressed size a zip records (local and central headers) as ``size``."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        while at != -1:
            if data[at + offset - 4 : at + offset] != b"\x00" * 4:  # leave empty entries alone
                data[at + offset : at + offset + 4] = size.to_bytes(4, "little")
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))
    return path


GOOD = ("PetImages/Cat/1.jpg", b"meow")
UNSAFE = [
    ("zip slip", lambda p: make_zip(p / "a.zip", [GOOD, ("../evil", b"x")]), "outside the target folder"),
    ("zip slip deep", lambda p: make_zip(p / "a.zip", [GOOD, ("PetImages/../../evil", b"x")]), "outside"),
    ("zip backslash slip", lambda p: make_zip(p / "a.zip", [GOOD, ("..\\evil", b"x")]), "outside"),
    ("zip absolute", lambda p: make_zip(p / "a.zip", [GOOD, ("/tmp/evil", b"x")]), "absolute path"),
    ("zip drive letter", lambda p: make_zip(p / "a.zip", [GOOD, ("C:/evil", b"x")]), "absolute path"),
    (
        "zip symlink",
        lambda p: make_zip(p / "a.zip", [GOOD, ("PetImages/link", b"/etc/passwd")], mode=stat.S_IFLNK | 0o777),
        "is a link",
    ),
    (
        "zip device",
        lambda p: make_zip(p / "a.zip", [GOOD, ("PetImages/dev", b"")], mode=stat.S_IFCHR | 0o666),
        "special file",
    ),
    ("zip bomb", lambda p: make_zip(p / "a.zip", [GOOD, ("PetImages/zeros", bytes(3_000_000))]), "more than the limit"),
    (
        "zip bomb, declared size only",
        lambda p: declare_size(make_zip(p / "a.zip", [GOOD, ("PetImages/zeros", b"small")]), 0xF000_0000),
        "more than the limit",
    ),
    ("tar slip", lambda p: make_tar(p / "a.tgz", [GOOD, ("../evil", b"x")]), "outside the target folder"),
    ("tar slip deep", lambda p: make_tar(p / "a.tgz", [GOOD, ("PetImages/../../evil", b"x")]), "outside"),
    ("tar absolute", lambda p: make_tar(p / "a.tgz", [GOOD, ("/tmp/evil", b"x")]), "absolute path"),
    (
        "tar symlink",
        lambda p: make_tar(p / "a.tgz", [GOOD, tar_special("PetImages/link", tarfile.SYMTYPE, "/etc/passwd")]),
        "is a link",
    ),
    (
        "tar hardlink",
        lambda p: make_tar(p / "a.tgz", [GOOD, tar_special("PetImages/hard", tarfile.LNKTYPE, "/etc/passwd")]),
        "is a link",
    ),
    (
        "tar hardlink inside",  # harmless-looking, but a link all the same
        lambda p: make_tar(p / "a.tgz", [GOOD, tar_special("PetImages/hard", tarfile.LNKTYPE, GOOD[0])]),
        "is a link",
    ),
    ("tar device", lambda p: make_tar(p / "a.tgz", [GOOD, tar_special("PetImages/dev", tarfile.CHRTYPE)]), "special"),
    ("tar fifo", lambda p: make_tar(p / "a.tgz", [GOOD, tar_special("PetImages/fifo", tarfile.FIFOTYPE)]), "special"),
    ("tar bomb", lambda p: make_tar(p / "a.tgz", [GOOD, ("PetImages/zeros", bytes(3_000_000))]), "more than the limit"),
    (
        "duplicate member",
        lambda p: make_zip(p / "a.zip", [GOOD, ("PetImages/Cat/1.jpg", b"other")]),
        "appears twice",
    ),
]


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile warns while we build the bad archive
@pytest.mark.parametrize(("build", "expected"), [c[1:] for c in UNSAFE], ids=[c[0] for c in UNSAFE])
def test_unsafe_archive_is_refused_and_nothing_written(tmp_path: Path, build: Callable, expected: str) -> None:
    source = tmp_path / "source"
    source.mkdir()
    archive = build(source)
    target = tmp_path / "work" / "raw"
    before = names(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=expected):
        extract(archive, target, max_bytes=1_000_000)
    assert names(tmp_path) == before  # not even the target folder was created
    assert not list(tmp_path.rglob("evil")) and not Path("/tmp/evil").exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: b"this is not an archive at all" * 10,
        lambda data: data.replace(b"meow-meow-meow", b"woof-woof-woof"),  # CRC mismatch
    ],
    ids=["truncated", "not an archive", "bad crc"],
)
def test_corrupt_archive_fails_and_leaves_nothing(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("PetImages/Cat/1.jpg", b"meow-meow-meow" * 10)
    path.write_bytes(damage(path.read_bytes()))
    target = tmp_path / "raw"
    with pytest.raises(DatasetError, match="a.zip"):
        extract(path, target, max_bytes=1_000_000)
    assert names(target) == []


def test_a_zip_understating_its_size_is_cut_at_the_declared_size_and_leaves_nothing(tmp_path: Path) -> None:
    # The header says 10 bytes; 3 MB of zeros are inside. Extraction stops at
    # the declared size, the checksum then fails, and nothing stays behind.
    archive = declare_size(make_zip(tmp_path / "a.zip", [("PetImages/zeros", bytes(3_000_000))]), 10)
    target = tmp_path / "raw"
    with pytest.raises(DatasetError, match="damaged"):
        extract(archive, target, max_bytes=1_000)
    assert names(target) == []


@pytest.mark.parametrize("suffix", ["zip", "tgz"])
def test_after_a_corrupt_archive_a_good_one_extracts(tmp_path: Path, suffix: str) -> None:
    members = [GOOD, ("PetImages/Dog/1.jpg", bytes(range(256)) * 40)]
    good = (make_zip if suffix == "zip" else make_tar)(tmp_path / f"good.{suffix}", members)
    corrupt = tmp_path / f"corrupt.{suffix}"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    target = tmp_path / "raw"
    with pytest.raises(DatasetError, match=f"corrupt.{suffix}"):
        extract(corrupt, target, max_bytes=1_000_000)
    assert names(target) == []
    result = extract(good, target, max_bytes=1_000_000)
    assert result.extracted and result.files == 2
    assert (target / GOOD[0]).read_bytes() == GOOD[1]


@pytest.mark.parametrize("suffix", ["zip", "tar", "tar.gz", "tar.bz2", "tar.xz"])
def test_extracts_zip_and_tar(tmp_path: Path, suffix: str) -> None:
    files = {"PetImages/Cat/1.jpg": b"meow", "PetImages/Dog/1.jpg": b"woof", "README.txt": b"hi"}
    path = tmp_path / f"a.{suffix}"
    if suffix == "zip":
        make_zip(path, list(files.items()))
    else:
        with tarfile.open(path, "w:" + suffix.partition(".")[2].replace("tar", "")) as archive:
            for name, content in files.items():
                info = tarfile.TarInfo("./" + name)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    target = tmp_path / "raw"
    result = extract(path, target, max_bytes=1_000)
    assert result.extracted and result.entries == ("PetImages", "README.txt")
    assert (result.files, result.size) == (3, 10)
    assert {n: (target / n).read_bytes() for n in files} == files
    assert names(target) == sorted([*files, "PetImages", "PetImages/Cat", "PetImages/Dog", MARKER_NAME])


def test_second_extraction_is_skipped_and_new_archive_replaces_old(tmp_path: Path) -> None:
    target = tmp_path / "raw"
    old = make_zip(tmp_path / "old.zip", [("PetImages/Cat/1.jpg", b"old"), ("PetImages/Cat/2.jpg", b"old")])
    assert extract(old, target, max_bytes=100).extracted
    skipped = extract(old, target, max_bytes=100)
    assert not skipped.extracted and skipped.files == 2
    marker = json.loads((target / MARKER_NAME).read_text())
    assert marker["sha256"] == hashlib.sha256(old.read_bytes()).hexdigest()

    new = make_zip(tmp_path / "new.zip", [("PetImages/Cat/1.jpg", b"new")])
    assert extract(new, target, max_bytes=100).extracted
    assert names(target) == [MARKER_NAME, "PetImages", "PetImages/Cat", "PetImages/Cat/1.jpg"]
    assert (target / "PetImages/Cat/1.jpg").read_bytes() == b"new"


def test_foreign_folder_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "raw"
    (target / "PetImages").mkdir(parents=True)
    (target / "PetImages" / "mine.txt").write_text("keep me")
    archive = make_zip(tmp_path / "a.zip", [GOOD])
    with pytest.raises(DatasetError, match="was not extracted by catdog"):
        extract(archive, target, max_bytes=100)
    assert names(target) == ["PetImages", "PetImages/mine.txt"]


# --- command line -----------------------------------------------------------


def test_cli_from_http_twice(http_server: FileServer, config_file: Path, sample_zip: Path, settings, capsys) -> None:
    http_server.files["/sample_data.zip"] = sample_zip.read_bytes()
    argv = [
        "--config",
        str(config_file),
        "--set",
        f"data.archives.petimages.source_url={http_server.url}/sample_data.zip",
    ]
    assert ingest.main(argv) == 0
    assert "fetched from http://127.0.0.1" in capsys.readouterr().out
    assert (settings.data.archive_dir("petimages") / "PetImages" / "Cat" / "1.jpg").is_file()
    assert ingest.main([*argv, "--set", f"data.archives.petimages.sha256={sha256(sample_zip.read_bytes())}"]) == 0
    out = capsys.readouterr().out
    assert "not fetched again" in out and "already extracted" in out
    assert http_server.gets("/sample_data.zip") == 1


def test_cli_exit_codes(config_file: Path, sample_zip: Path, tmp_path: Path, capsys) -> None:
    assert run(ingest.main, ["--config", str(config_file), "--set", "data.archives.petimages.sha256=" + "ab" * 32]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert run(ingest.main, ["--config", str(config_file), "--set", "data.max_extract_bytes=10"]) == 1
    assert "more than the limit" in capsys.readouterr().err
    assert names(tmp_path / "raw") == []
    assert run(ingest.main, ["--config", str(config_file), "--set", "data.archives.petimages.folder=Pets"]) == 1
    assert "holds no Pets/ folder" in capsys.readouterr().err


def test_cli_ingests_every_archive_into_its_own_folder(
    config_file: Path, sample_zip: Path, tmp_path: Path, capsys
) -> None:
    """Two archives unpack side by side; --only limits the run to the named ones."""
    import zipfile

    extra = tmp_path / "source" / "extra.zip"
    with zipfile.ZipFile(extra, "w") as archive:
        archive.writestr("Extra/Other/flowers_1.jpg", b"petals")
    archives = (
        "--set",
        f"data.archives={{petimages: {{source_url: '{sample_zip}', sha256: null, folder: PetImages}}, "
        f"extra: {{source_url: '{extra}', sha256: null, folder: Extra}}}}",
    )
    assert ingest.main(["--config", str(config_file), *archives, "--only", "extra"]) == 0
    assert [name for name in names(tmp_path / "raw") if "/" not in name] == ["extra"]
    assert ingest.main(["--config", str(config_file), *archives]) == 0
    out = capsys.readouterr().out
    assert "[petimages]" in out and "[extra]" in out
    assert (tmp_path / "raw" / "extra" / "Extra" / "Other" / "flowers_1.jpg").read_bytes() == b"petals"
    assert (tmp_path / "raw" / "petimages" / "PetImages" / "Cat" / "1.jpg").is_file()
    with pytest.raises(SystemExit):
        ingest.main(["--config", str(config_file), "--only", "nope"])


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "{source_url: null, sha256: null, folder: Extra, sources: [https://example.org/pets]}",
            ["archive 'extra' has no public download", "data.archives.extra.sources"],
        ),
        ("{source_url: copies/Extra.zip, sha256: null, folder: Extra}", ["archive 'extra' is not at", "Extra.zip"]),
    ],
    ids=["no source", "local copy missing"],
)
def test_an_archive_without_a_copy_says_what_to_do_before_fetching_anything(
    config_file: Path, sample_zip: Path, tmp_path: Path, capsys, extra: str, expected: list[str]
) -> None:
    """A fresh clone: one line naming the archive, where it comes from and the override; nothing fetched."""
    archives = (
        f"data.archives={{petimages: {{source_url: '{sample_zip}', sha256: null, folder: PetImages}}, extra: {extra}}}"
    )
    assert run(ingest.main, ["--config", str(config_file), "--set", archives]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    for text in [
        *expected,
        "--set data.archives.extra.source_url=PATH",
        "--config-overlay",
        "config.local-datasets.yaml",
        "--only petimages",
    ]:
        assert text in err
    assert not (tmp_path / "downloads").exists()


def test_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        extract(tmp_path / "nope.zip", tmp_path / "raw", max_bytes=100)


# --- hostile sources, archives and markers --------------------------------------


def test_an_encoded_path_in_the_url_cannot_escape_the_download_folder(http_server: FileServer, tmp_path: Path) -> None:
    downloads = tmp_path / "a" / "b" / "downloads"
    downloads.mkdir(parents=True)
    http_server.files["/x/../../escaped.zip"] = ARCHIVE  # what the server sees once it decodes the path
    http_server.files["/x/..%2F..%2Fescaped.zip"] = ARCHIVE
    result = fetch(http_server.url + "/x/..%2F..%2Fescaped.zip", downloads)
    assert result.path == downloads / "escaped.zip" and result.path.read_bytes() == ARCHIVE
    assert names(tmp_path / "a") == ["b", "b/downloads", "b/downloads/escaped.zip", "b/downloads/escaped.zip.sha256"]


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/a%00.zip", "not a plain file name"),
        ("/x/%2E%2E", "cannot tell the archive's file name"),
        ("/.hidden.zip", "not a plain file name"),
        ("/a%0Ab.zip", "not a plain file name"),
        ("/a%5C..%5Cb.zip", "not a plain file name"),
        ("/" + "n" * 300 + ".zip", "not a plain file name"),
    ],
)
def test_names_that_are_not_plain_file_names_are_refused(http_server: FileServer, tmp_path: Path, path, expected):
    with pytest.raises(DownloadError, match=expected):
        fetch(http_server.url + path, tmp_path)
    assert names(tmp_path) == [] and http_server.requests == []


@pytest.mark.parametrize("chunked_body", [False, True], ids=["content-length", "chunked"])
def test_a_download_over_the_size_limit_is_stopped_and_discarded(http_server: FileServer, tmp_path: Path, chunked_body):
    http_server.chunked = chunked_body
    http_server.files["/big.zip"] = b"x" * (40 * 1024)
    with pytest.raises(DownloadError, match="data.max_download_bytes"):
        fetch(http_server.url + "/big.zip", tmp_path, max_bytes=10 * 1024)
    assert names(tmp_path) == []
    assert fetch(http_server.url + "/big.zip", tmp_path, max_bytes=40 * 1024).size == 40 * 1024


def test_a_local_archive_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "source" / "a.zip"
    source.parent.mkdir()
    source.write_bytes(ARCHIVE)
    (tmp_path / "downloads").mkdir()
    with pytest.raises(DownloadError, match="more than the limit"):
        fetch(str(source), tmp_path / "downloads", max_bytes=len(ARCHIVE) - 1)
    assert names(tmp_path / "downloads") == []


def test_a_replaced_archive_is_not_trusted_through_its_old_record(http_server: FileServer, tmp_path: Path) -> None:
    http_server.files["/a.zip"] = ARCHIVE
    fetch(http_server.url + "/a.zip", tmp_path)
    (tmp_path / "a.zip").write_bytes(b"Z" * len(ARCHIVE))  # same size, other bytes, record left as it was
    again = fetch(http_server.url + "/a.zip", tmp_path)
    assert again.downloaded and (tmp_path / "a.zip").read_bytes() == ARCHIVE
    assert http_server.gets("/a.zip") == 2


def test_an_archive_with_too_many_members_is_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "many.zip", [(f"PetImages/Cat/{i}.jpg", b"") for i in range(2000)])
    with pytest.raises(UnsafeArchiveError, match="2,000 members.*data.max_members"):
        extract(archive, tmp_path / "raw", max_bytes=10, max_members=1000)
    assert names(tmp_path / "raw") == []
    assert extract(archive, tmp_path / "raw", max_bytes=10, max_members=2000).files == 2000


def test_a_marker_naming_a_folder_outside_is_not_trusted(tmp_path: Path) -> None:
    target = tmp_path / "raw"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    target.mkdir()
    marker = {"archive": "x.zip", "sha256": "0" * 64, "entries": ["../victim"], "files": 1, "size": 1}
    (target / MARKER_NAME).write_text(json.dumps(marker))
    archive = make_zip(tmp_path / "a.zip", [("PetImages/Cat/1.jpg", b"new")])
    assert extract(archive, target, max_bytes=100).extracted
    assert (victim / "precious.txt").read_text() == "keep me"
    assert names(target) == [MARKER_NAME, "PetImages", "PetImages/Cat", "PetImages/Cat/1.jpg"]


def test_a_failed_swap_leaves_the_earlier_extraction_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "raw"
    old = make_zip(tmp_path / "old.zip", [("A/1.txt", b"old"), ("B/2.txt", b"old")])
    extract(old, target, max_bytes=100)
    before = names(target)
    real_replace = catdog.data.archive.os.replace

    def failing_replace(source, destination):
        if Path(source).name == "B" and Path(source).parent.name.startswith(".catdog-extracting-"):
            raise OSError(28, "No space left on device")
        return real_replace(source, destination)

    monkeypatch.setattr(catdog.data.archive.os, "replace", failing_replace)
    new = make_zip(tmp_path / "new.zip", [("A/1.txt", b"new"), ("B/2.txt", b"new")])
    with pytest.raises(DatasetError, match="No space left"):
        extract(new, target, max_bytes=100)
    monkeypatch.undo()
    assert names(target) == before
    assert (target / "A/1.txt").read_bytes() == b"old" and (target / "B/2.txt").read_bytes() == b"old"
    assert not extract(old, target, max_bytes=100).extracted  # the old marker still describes what is there
