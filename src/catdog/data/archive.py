"""Unpack a zip or tar archive safely and all-or-nothing.

Zip and tar (optionally compressed) archives are checked member by member
before anything is written: absolute paths, ``..``, links, device files, a
total size above the limit and more members than allowed are refused.
Members are unpacked into a temporary folder inside the target and renamed
into place only when all succeeded: an earlier extraction is renamed aside,
the new one renamed in, and the old one deleted only then (or renamed back if
the swap fails). A marker records the archive's sha256 and its top-level
entries so the next run skips the work; entries it names are checked like
archive members before anything is done with them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

from tqdm import tqdm

from catdog.dirs import file_sha256
from catdog.errors import DatasetError, UnsafeArchiveError

log = logging.getLogger(__name__)

MARKER_NAME = ".catdog-extracted.json"
_TMP_PREFIX = ".catdog-"
COPY_CHUNK = 1 << 20  # bytes copied from a member at a time


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
                for chunk in iter(lambda: source.read(COPY_CHUNK), b""):
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
