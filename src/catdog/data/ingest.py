"""Fetch the dataset archives and unpack them safely: ``python -m catdog.data.ingest``.

Each archive in ``data.archives`` (its ``source_url``: http, https, a
``file://`` URL or a plain path) is streamed into ``data.download_dir`` through a temporary file, checked against its
``sha256`` when one is configured, and renamed into place, so a failed or
interrupted download never leaves a partial file. Its name is the last
segment of the URL's decoded path and must be a plain file name; a download
longer than ``data.max_download_bytes`` is stopped and discarded. A copy
already there is not fetched again when it is re-hashed and matches the
configured sha256 or, without one, the ``<archive>.sha256`` record written
after each completed download.

Zip and tar (optionally compressed) archives are checked member by member
before anything is written: absolute paths, ``..``, links, device files, a
total size above ``data.max_extract_bytes`` and more than
``data.max_members`` members are refused. Members are unpacked into a
temporary folder inside ``data.extract_dir/<name>`` and renamed into place
only when all succeeded: an earlier extraction is renamed aside, the new one
renamed in, and the old one deleted only then (or renamed back if the swap
fails). A marker records the archive's sha256 and its top-level entries so
the next run skips the work; entries it names are checked like archive
members before anything is done with them.

An archive with no ``source_url`` (one with no public download) or whose
local copy is missing stops the command before anything is fetched, with one
message saying what to point ``source_url`` at and how.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO

import requests
from tqdm import tqdm

from catdog.cli import make_parser, run, settings_from_args
from catdog.config import ArchiveSettings
from catdog.dirs import atomic_write, ensure_dirs, file_sha256, write_text_atomic
from catdog.errors import DatasetError, DownloadError, UnsafeArchiveError

log = logging.getLogger("catdog.data.ingest")  # not __name__: that is "__main__" under -m

CHUNK_SIZE = 1 << 20
HTTP_TIMEOUT = (30.0, 60.0)  # seconds to connect, seconds between received bytes
MARKER_NAME = ".catdog-extracted.json"
MAX_NAME_BYTES = 255  # the longest file name common file systems take
_TMP_PREFIX = ".catdog-"


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


@dataclasses.dataclass(frozen=True)
class ExtractResult:
    """What an extraction produced.

    Attributes:
        extract_dir: The folder the archive was unpacked into.
        entries: Top-level names the archive created there.
        files: Number of files unpacked.
        size: Their total size in bytes.
        extracted: False when the same archive had already been unpacked.
    """

    extract_dir: Path
    entries: tuple[str, ...]
    files: int
    size: int
    extracted: bool


@dataclasses.dataclass(frozen=True)
class _Member:
    """An archive member that passed the safety checks."""

    parts: tuple[str, ...]
    is_dir: bool
    size: int
    handle: object  # ZipInfo or TarInfo, passed back to the archive's opener


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
    remote, location, name = _parse_source(source_url)
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


def extract(
    archive: str | os.PathLike,
    extract_dir: str | os.PathLike,
    *,
    max_bytes: int,
    max_members: int | None = None,
    archive_sha256: str | None = None,
    progress: bool = False,
) -> ExtractResult:
    """Unpack a zip or tar archive into ``extract_dir``, safely and all-or-nothing.

    Args:
        archive: The zip, tar, tar.gz, tar.bz2 or tar.xz file.
        extract_dir: Folder to unpack into (created if missing).
        max_bytes: Refuse archives whose members add up to more than this.
        max_members: Refuse archives with more members than this; None: no limit.
        archive_sha256: The archive's digest if already known (saves a pass).
        progress: Show a progress bar on stderr.

    Returns:
        What was unpacked, or what an earlier run unpacked from the same archive.

    Raises:
        UnsafeArchiveError: A member has an absolute path, ``..``, is a link
            or special file, the total size is over ``max_bytes`` or the
            count over ``max_members``; nothing has been written.
        DatasetError: The archive is damaged or not an archive, a top-level
            entry already exists and was not unpacked by us, or the disk is full.
    """
    archive = Path(archive)
    target = Path(extract_dir)
    if not archive.is_file():
        raise DatasetError(f"archive {str(archive)!r} does not exist")
    digest = archive_sha256 or file_sha256(archive)
    marker = _read_marker(target / MARKER_NAME, target)
    if marker.get("sha256") == digest and all((target / e).exists() for e in marker.get("entries", [])):
        log.info("%s was already extracted into %s; skipping", archive.name, target)
        return ExtractResult(target, tuple(marker["entries"]), marker["files"], marker["size"], extracted=False)

    try:
        with _open_archive(archive) as (members, opener):
            total, entries = _plan(members, archive.name, target, marker, max_bytes, max_members)
            staging = Path(tempfile.mkdtemp(dir=target, prefix=f"{_TMP_PREFIX}extracting-"))
            try:
                _unpack(members, opener, staging, total, archive.name, progress)
                files = sum(1 for m in members if not m.is_dir)
                record = {
                    "archive": archive.name,
                    "sha256": digest,
                    "entries": list(entries),
                    "files": files,
                    "size": total,
                }
                _swap_into_place(staging, target, entries, marker.get("entries", []), record)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise DatasetError(f"cannot extract {archive.name}: the archive is damaged or unsupported ({exc})") from exc
    except OSError as exc:
        raise DatasetError(f"cannot extract {archive.name}: {exc.strerror or exc}") from exc

    log.info("extracted %s files (%s bytes) from %s into %s", f"{files:,}", f"{total:,}", archive.name, target)
    return ExtractResult(target, entries, files, total, extracted=True)


# --- fetching ---------------------------------------------------------------


def _parse_source(source_url: str) -> tuple[bool, str, str]:
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


# --- extracting -------------------------------------------------------------


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tuple[list[_Member], Callable[[_Member], IO[bytes]]]]:
    """Open a zip or tar archive; yields its checked members and a member opener."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            yield [m for m in map(_zip_member, zf.infolist()) if m], lambda m: zf.open(m.handle)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tf:
            yield [m for m in map(_tar_member, tf.getmembers()) if m], lambda m: tf.extractfile(m.handle)
    else:
        raise DatasetError(f"{archive.name} is not a zip or tar archive, or it is damaged")


def _zip_member(info: zipfile.ZipInfo) -> _Member | None:
    parts = _member_parts(info.filename)
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode):  # Unix: the high bits are st_mode
        _check_type(info.filename, stat.S_ISLNK(mode), stat.S_ISREG(mode) or stat.S_ISDIR(mode))
    if not parts:
        return None
    return _Member(parts, info.is_dir(), 0 if info.is_dir() else info.file_size, info)


def _tar_member(info: tarfile.TarInfo) -> _Member | None:
    _check_type(info.name, info.issym() or info.islnk(), info.isreg() or info.isdir())
    parts = _member_parts(info.name)
    if not parts:
        return None
    return _Member(parts, info.isdir(), info.size if info.isreg() else 0, info)


def _check_type(name: str, is_link: bool, is_plain: bool) -> None:
    if is_link:
        raise UnsafeArchiveError(f"archive member {name!r} is a link; links are not extracted")
    if not is_plain:
        raise UnsafeArchiveError(f"archive member {name!r} is a device or other special file")


def _member_parts(name: str) -> tuple[str, ...]:
    """Split a member name into safe path parts, refusing anything that could escape."""
    text = name.replace("\\", "/")
    if text.startswith("/") or re.match(r"[A-Za-z]:", text):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    parts = tuple(part for part in text.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafeArchiveError(f"archive member {name!r} points outside the target folder ('..')")
    if any("\0" in part for part in parts):
        raise UnsafeArchiveError(f"archive member {name!r} has a NUL byte in its name")
    return parts


def _check_members(members: Sequence[_Member], max_bytes: int, label: str, max_members: int | None = None) -> int:
    """Refuse duplicates, more than ``max_members`` members and a total over ``max_bytes``; return the total."""
    if max_members is not None and len(members) > max_members:
        raise UnsafeArchiveError(
            f"{label} holds {len(members):,} members, more than the limit of {max_members:,} (data.max_members)"
        )
    seen = set()
    for member in members:
        if not member.is_dir and member.parts in seen:
            raise UnsafeArchiveError(f"archive member {'/'.join(member.parts)!r} appears twice")
        seen.add(member.parts)
    total = sum(m.size for m in members)
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"{label} would unpack to {total:,} bytes, more than the limit of {max_bytes:,} (data.max_extract_bytes)"
        )
    return total


def _plan(
    members: Sequence[_Member], label: str, target: Path, marker: dict, max_bytes: int, max_members: int | None
) -> tuple[int, tuple[str, ...]]:
    """Check an archive's members against the limits, ``target`` and its free space before writing anything.

    Returns:
        The bytes the members unpack to and their top-level entries.
    """
    total = _check_members(members, max_bytes, label, max_members)
    entries = tuple(sorted({m.parts[0] for m in members}))
    if not entries:
        raise DatasetError(f"{label} is empty")
    _check_no_foreign_entries(target, entries, marker.get("entries", []))
    target.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target).free
    if total > free:
        raise DatasetError(f"{label} needs {total:,} bytes but {target} has only {free:,} free")
    return total, entries


def _check_no_foreign_entries(target: Path, entries: Sequence[str], ours: Sequence[str]) -> None:
    """Refuse to replace top-level entries that an earlier extraction did not create."""
    for entry in entries:
        if entry.startswith(_TMP_PREFIX) or entry == MARKER_NAME:
            raise UnsafeArchiveError(f"archive member {entry!r} uses a name reserved for catdog's own files")
        if (target / entry).exists() and entry not in ours:
            raise DatasetError(
                f"{target / entry} already exists and was not extracted by catdog; "
                "move it away or choose another data.extract_dir"
            )


def _unpack(
    members: list[_Member],
    opener: Callable[[_Member], IO[bytes]],
    staging: Path,
    total: int,
    label: str,
    progress: bool,
) -> None:
    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"extract {label}", disable=not progress
    ) as bar:
        for member in members:
            path = staging.joinpath(*member.parts)
            if member.is_dir:
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("xb") as out, opener(member) as source:
                for chunk in iter(lambda: source.read(CHUNK_SIZE), b""):
                    out.write(chunk)
                    bar.update(len(chunk))


def _swap_into_place(
    staging: Path, target: Path, entries: Sequence[str], previous: Sequence[str], record: dict
) -> None:
    """Move freshly unpacked entries and their marker into ``target``, replacing our previous extraction.

    The previous entries and marker are renamed aside first and deleted only
    once every new entry is in place; if a rename fails, what was moved is
    moved back, so ``target`` holds either the old extraction or the new one.
    """
    (staging / MARKER_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    retired = Path(tempfile.mkdtemp(dir=target, prefix=f"{_TMP_PREFIX}replaced-"))
    moved_aside: list[str] = []
    moved_in: list[str] = []
    try:
        for entry in [*previous, MARKER_NAME]:
            if (target / entry).exists():
                os.replace(target / entry, retired / entry)
                moved_aside.append(entry)
        for entry in [*entries, MARKER_NAME]:
            os.replace(staging / entry, target / entry)
            moved_in.append(entry)
    except BaseException:
        try:
            for entry in reversed(moved_in):
                os.replace(target / entry, staging / entry)
            for entry in reversed(moved_aside):
                os.replace(retired / entry, target / entry)
        except OSError:
            # Keep the old extraction where it is rather than delete the only copy.
            log.error("could not move the earlier extraction back; it is kept in %s", retired)
            raise
        shutil.rmtree(retired, ignore_errors=True)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _read_marker(path: Path, target: Path) -> dict:
    """The record of an earlier extraction, or ``{}`` if there is none or it cannot be trusted.

    Its entries are later renamed and deleted, so each must be a plain
    top-level name inside ``target``, checked like an archive member's.
    """
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(marker, dict):
        return {}
    entries = marker.get("entries")
    valid = (
        isinstance(marker.get("sha256"), str)
        and isinstance(marker.get("files"), int)
        and isinstance(marker.get("size"), int)
        and isinstance(entries, list)
        and all(isinstance(entry, str) and _is_plain_entry(entry) for entry in entries)
    )
    if not valid:
        log.warning("ignoring %s: not a record catdog wrote (its entries must be plain names in %s)", path, target)
        return {}
    return marker


def _is_plain_entry(entry: str) -> bool:
    try:
        parts = _member_parts(entry)
    except UnsafeArchiveError:
        return False
    return parts == (entry,) and not entry.startswith(_TMP_PREFIX) and entry != MARKER_NAME


# --- command line -----------------------------------------------------------


def _require_sources(archives: dict[str, ArchiveSettings]) -> None:
    """Refuse to start when an archive has no source, or its local copy is not there.

    Raises:
        DownloadError: One line naming the first such archive, where its photos
            come from and how to point its ``source_url`` at a copy.
    """
    problems = {name: _source_problem(name, archive) for name, archive in archives.items()}
    missing = [name for name, problem in problems.items() if problem]
    if not missing:
        return
    name = missing[0]
    archive = archives[name]
    key = f"data.archives.{name}.source_url"
    origin = (
        f"; its photos come from the public datasets listed in data.archives.{name}.sources" if archive.sources else ""
    )
    which = f" (sha256 {archive.sha256})" if archive.sha256 else ""
    message = (
        f"{problems[name]}{origin}. Put a copy of the archive{which} anywhere and point {key} at it: "
        f"--set {key}=PATH (or a URL), or an overlay file, --config-overlay FILE "
        "(this repository's config.local-datasets.yaml names the team's copies in ../shared/datasets)"
    )
    if len(missing) > 1:
        message += f"; the same goes for {', '.join(map(repr, missing[1:]))}"
    ready = [other for other in archives if other not in missing]
    if ready:
        message += f"; or ingest only the others: {' '.join(f'--only {other}' for other in ready)}"
    raise DownloadError(message)


def _source_problem(name: str, archive: ArchiveSettings) -> str | None:
    """Why archive ``name`` cannot be fetched before anything is tried, or None."""
    key = f"data.archives.{name}.source_url"
    if archive.source_url is None:
        return f"archive {name!r} has no public download to fetch ({key} is null)"
    remote, location, _ = _parse_source(archive.source_url)
    if remote or Path(location).is_file():
        return None
    return f"archive {name!r} is not at {location!r} ({key})"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m catdog.data.ingest``: fetch and unpack every configured archive."""
    parser = make_parser("python -m catdog.data.ingest", "Fetch the dataset archives and unpack them safely.")
    parser.add_argument(
        "--only", metavar="NAME", action="append", help="ingest only this archive of data.archives (repeatable)"
    )
    args = parser.parse_args(argv)
    settings = settings_from_args(args)
    data = settings.data
    unknown = sorted(set(args.only or ()) - set(data.archives))
    if unknown:
        parser.error(f"--only {unknown[0]!r} is not in data.archives ({', '.join(data.archives)})")
    chosen = {name: archive for name, archive in data.archives.items() if not args.only or name in args.only}
    _require_sources(chosen)  # before any download: a missing copy should not wait for a long one
    ensure_dirs(settings)

    for name, archive in chosen.items():
        fetched = fetch(
            archive.source_url,
            data.download_dir,
            sha256=archive.sha256,
            max_bytes=data.max_download_bytes,
            progress=True,
        )
        unpacked = extract(
            fetched.path,
            data.archive_dir(name),
            max_bytes=data.max_extract_bytes,
            max_members=data.max_members,
            archive_sha256=fetched.sha256,
            progress=True,
        )
        how = "fetched from " + archive.source_url if fetched.downloaded else "already there, not fetched again"
        checked = f"  (matches data.archives.{name}.sha256)" if archive.sha256 else "  (no sha256 configured to check)"
        done = "extracted" if unpacked.extracted else "already extracted, skipped"
        print(f"[{name}]")
        print(f"archive    {fetched.path}  ({fetched.size:,} bytes; {how})")
        print(f"sha256     {fetched.sha256}{checked}")
        print(f"unpacked   {unpacked.extract_dir}/  ({unpacked.files:,} files, {unpacked.size:,} bytes; {done})")
        if not (data.archive_dir(name) / archive.folder).is_dir():
            raise DatasetError(
                f"archive {name!r} holds no {archive.folder}/ folder (it holds {', '.join(unpacked.entries)}); "
                f"check data.archives.{name}.folder"
            )
    print(f"dataset    {data.dataset_dir}/  (next: python -m catdog.data.validate)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
