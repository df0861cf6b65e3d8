"""Fetch the dataset archives and unpack them safely: ``python -m catdog.data.ingest``.

For each archive in ``data.archives``: :func:`catdog.data.fetch.fetch` brings
its ``source_url`` into ``data.download_dir`` (verified, never partial), then
:func:`catdog.data.archive.extract` unpacks it into
``data.extract_dir/<name>`` (checked member by member, all-or-nothing).

An archive with no ``source_url`` (one with no public download) or whose
local copy is missing stops the command before anything is fetched, with one
message saying what to point ``source_url`` at and how.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from catdog.cli import make_parser, run, settings_from_args
from catdog.config import ArchiveSettings
from catdog.data.archive import extract
from catdog.data.fetch import fetch, parse_source
from catdog.dirs import ensure_dirs
from catdog.errors import DatasetError, DownloadError

log = logging.getLogger("catdog.data.ingest")  # not __name__: that is "__main__" under -m


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
    remote, location, _ = parse_source(archive.source_url)
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
    log.info("ingesting %s into %s", ", ".join(chosen), data.extract_dir)

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
