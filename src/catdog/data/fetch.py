"""Fetch a dataset archive into the download folder, verified and all-or-nothing.

The source (http, https, a ``file://`` URL or a plain path) is streamed
through a temporary file, checked against its ``sha256`` when one is given,
and renamed into place, so a failed or interrupted download never leaves a
partial file. Its name is the last segment of the URL's decoded path and must
be a plain file name; a download longer than ``max_bytes`` is stopped and
discarded. A copy already there is not fetched again when it is re-hashed and
matches the expected sha256 or, without one, the ``<archive>.sha256`` record
written after each completed download.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import requests
from tqdm import tqdm

from catdog.dirs import atomic_write, file_sha256, write_text_atomic
from catdog.errors import DownloadError

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
HTTP_TIMEOUT = (30.0, 60.0)  # seconds to connect, seconds between received bytes
MAX_NAME_BYTES = 255  # the longest file name common file systems take


@dataclasses.dataclass(frozen=True)
class FetchResult:
    """Where the archive is and how it got there.

    Attributes:
        path: The archive in the download folder.
        sha256: Its hex digest.
        size: Its size in bytes.
        downloaded: False when a verified copy was already there.
    """

    path: Path
    sha256: str
    size: int
    downloaded: bool


def fetch(
    source_url: str,
    download_dir: str | os.PathLike,
    *,
    sha256: str | None = None,
    max_bytes: int | None = None,
    progress: bool = False,
) -> FetchResult:
    """Fetch the archive into ``download_dir`` unless a verified copy is there.

    Args:
        source_url: ``http(s)://`` or ``file://`` URL, or a local path.
        download_dir: Folder to keep the archive in; it must exist.
        sha256: Expected hex digest, or None to skip verification.
        max_bytes: Stop and fail a download longer than this; None: no limit.
        progress: Show a progress bar on stderr.

    Returns:
        Where the archive is, its digest and whether it was fetched now.

    Raises:
        DownloadError: The source cannot be read, its name is not a plain
            file name, the transfer stopped early or ran past ``max_bytes``,
            or the checksum does not match; no partial file is left behind.
    """
    expected = sha256.lower() if sha256 else None
    remote, location, name = parse_source(source_url)
    dest = Path(download_dir) / name
    source_size = None
    if not remote:
        try:
            source_size = Path(location).stat().st_size
        except OSError as exc:
            raise DownloadError(f"cannot read the archive {location!r}: {exc.strerror or exc}") from exc

    existing = _verified_copy(dest, expected, source_size)
    if existing is not None:
        log.info("%s is already there and verified; not fetching it again", dest)
        return FetchResult(dest, existing, dest.stat().st_size, downloaded=False)

    log.info("fetching %s into %s", source_url, dest)
    opener = _http_chunks if remote else _file_chunks
    with opener(location) as (chunks, total):
        if max_bytes is not None and total is not None and total > max_bytes:
            raise DownloadError(
                f"{source_url} is {total:,} bytes, more than the limit of {max_bytes:,} (data.max_download_bytes)"
            )
        digest, size = _save_stream(chunks, total, dest, expected, source_url, progress, max_bytes)
    return FetchResult(dest, digest, size, downloaded=True)


def parse_source(source_url: str) -> tuple[bool, str, str]:
    """Return (is_remote, URL or local path, archive file name)."""
    parts = urllib.parse.urlsplit(source_url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        # Decode first, then take the last segment: "..%2Fx.zip" names "x.zip", never "../x.zip".
        name = PurePosixPath(urllib.parse.unquote(parts.path)).name
        return True, source_url, _plain_name(name, source_url)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise DownloadError(f"file:// URL {source_url!r} names another host; only local files are supported")
        location = urllib.request.url2pathname(parts.path)
    elif scheme == "" or len(scheme) == 1:  # no scheme, or a Windows drive letter
        location = source_url
    else:
        raise DownloadError(f"unsupported URL scheme {parts.scheme!r} in {source_url!r} (use http, https or file)")
    if "\0" in location:
        raise DownloadError(f"source {source_url!r} has a NUL byte in its path")
    path = Path(location).expanduser()
    if path.is_dir():
        raise DownloadError(f"source {source_url!r} is a folder, not an archive")
    return False, str(path), _plain_name(path.name, source_url)


def _plain_name(name: str, source_url: str) -> str:
    """Return ``name`` if it is a plain file name to save the archive under, else raise DownloadError."""
    if name in ("", ".", ".."):
        raise DownloadError(f"cannot tell the archive's file name from {source_url!r}; end the URL with it")
    if (
        any(c in name for c in "/\\")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
        or name.startswith(".")
        or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES
    ):
        raise DownloadError(
            f"the archive's file name {name!r} (from {source_url!r}) is not a plain file name; "
            "it must not start with '.' or hold slashes, backslashes or control characters"
        )
    return name


def _verified_copy(dest: Path, expected: str | None, source_size: int | None) -> str | None:
    """Return the digest of a trustworthy copy already at ``dest``, else None."""
    if not dest.is_file():
        return None
    if expected:
        digest = file_sha256(dest)
        if digest == expected:
            _write_sidecar(dest, digest)
            return digest
        log.warning("%s does not match the configured sha256; fetching it again", dest)
        return None
    recorded = _read_sidecar(dest)
    if recorded is None:
        return None
    if source_size is not None and dest.stat().st_size != source_size:
        log.info("%s differs in size from its source; fetching it again", dest)
        return None
    # The record says what was downloaded, not what is there now: the file may have been replaced since.
    if file_sha256(dest) != recorded:
        log.warning("%s no longer matches its recorded sha256; fetching it again", dest)
        return None
    return recorded


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _read_sidecar(dest: Path) -> str | None:
    try:
        digest = _sidecar(dest).read_text(encoding="utf-8").split()[0].lower()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return digest if re.fullmatch(r"[0-9a-f]{64}", digest) else None


def _write_sidecar(dest: Path, digest: str) -> None:
    write_text_atomic(_sidecar(dest), f"{digest}  {dest.name}\n")


@contextlib.contextmanager
def _http_chunks(url: str) -> Iterator[tuple[Iterator[bytes], int | None]]:
    """Stream an http(s) URL; yields the body's chunks and its announced size."""
    try:
        # identity: the archive's bytes as stored, so Content-Length counts them.
        response = requests.get(url, stream=True, timeout=HTTP_TIMEOUT, headers={"Accept-Encoding": "identity"})
    except requests.RequestException as exc:
        raise DownloadError(f"cannot download {url}: {exc}") from exc
    with response:
        try:
            response.raise_for_status()
        except requests.HTTPError as exc:
            raise DownloadError(f"cannot download {url}: {exc}") from exc
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.isdigit() and "Content-Encoding" not in response.headers else None
        yield response.iter_content(CHUNK_SIZE), total


@contextlib.contextmanager
def _file_chunks(path: str) -> Iterator[tuple[Iterator[bytes], int | None]]:
    """Read a local file; yields its chunks and its size."""
    try:
        stream = open(path, "rb")  # noqa: SIM115 - opened here to turn its error into DownloadError, closed below
    except OSError as exc:
        raise DownloadError(f"cannot read the archive {path!r}: {exc.strerror or exc}") from exc
    with stream:
        yield iter(lambda: stream.read(CHUNK_SIZE), b""), os.fstat(stream.fileno()).st_size


def _save_stream(
    chunks: Iterator[bytes],
    total: int | None,
    dest: Path,
    expected: str | None,
    label: str,
    progress: bool,
    max_bytes: int | None = None,
) -> tuple[str, int]:
    """Write ``chunks`` to ``dest`` via a temporary file; return (sha256, size)."""
    digest = hashlib.sha256()
    size = 0
    with atomic_write(dest) as tmp:
        try:
            with (
                tmp.open("wb") as out,
                tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress
                ) as bar,
            ):
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise DownloadError(
                            f"the download of {label} ran past the limit of {max_bytes:,} bytes "
                            "(data.max_download_bytes); the partial file was discarded"
                        )
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        except requests.RequestException as exc:
            raise DownloadError(f"the download of {label} broke off after {size:,} bytes: {exc}") from exc
        except OSError as exc:
            raise DownloadError(f"cannot save {label} to {dest}: {exc.strerror or exc}") from exc
        if total is not None and size != total:
            raise DownloadError(f"the download of {label} stopped after {size:,} of {total:,} bytes")
        hexdigest = digest.hexdigest()
        if expected and hexdigest != expected:
            raise DownloadError(
                f"checksum mismatch for {label}: expected sha256 {expected}, got {hexdigest}; the file was discarded"
            )
        _sidecar(dest).unlink(missing_ok=True)
    _write_sidecar(dest, hexdigest)
    return hexdigest, size
