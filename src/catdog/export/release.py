"""Swap the shipped model as one unit: one folder per release, one link naming the current one.

``model.path`` (``model/model.h5``) is a symbolic link to
``releases/<name>/model.h5``, and that folder holds everything that belongs
to the model: ``metrics.json`` (its calibration), the LiteRT twins and their
records. Installing a release writes a whole new folder under a temporary
name, renames it into place, then replaces the link with one ``rename``
(a new link renamed onto the old). A crash at any moment leaves the old link
or the new one, each naming a complete folder: the app serves the old model
or the new one, never a model with another model's calibration or twin.

A reader follows the link once and reads every companion beside the file it
leads to (:func:`catdog.paths.served_model`). The folder the link left stays
(a worker starting at that moment may still be reading it); older ones, and
folders a crashed install left half-written, are removed by the next install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from catdog import paths
from catdog.dirs import file_sha256

STAGING_PREFIX = ".staging-"


def install(target: str | os.PathLike, files: Mapping[str, Path | bytes]) -> Path:
    """Install ``files`` as a new release and point ``target`` at it in one rename.

    Args:
        target: ``model.path``; a link (or, before the first release, a plain file) that becomes a
            link to the new release's file of the same name.
        files: File name in the release -> its source file or its content; must include ``target``'s name.

    Returns:
        The new release folder.
    """
    target = Path(target)
    if target.name not in files:
        raise ValueError(f"a release must hold {target.name!r}, got {sorted(files)}")
    releases = paths.releases_dir(target)
    releases.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=releases, prefix=STAGING_PREFIX))
    try:
        for name, source in files.items():
            if isinstance(source, bytes):
                (staging / name).write_bytes(source)
            else:
                shutil.copyfile(source, staging / name)
            os.chmod(staging / name, 0o644)
        os.chmod(staging, 0o755)
        _sync(staging, *(staging / name for name in files))
        release = _free_name(releases, file_sha256(staging / target.name))
        os.rename(staging, release)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = current(target)
    _point(target, release / target.name)
    _remove_all_but(releases, keep={release, previous})
    _remove_companions_beside(target)
    return release


def current(target: str | os.PathLike) -> Path | None:
    """The release folder ``target`` links to, or ``None`` (no link, or one outside the releases)."""
    target = Path(target)
    if not target.is_symlink():
        return None
    folder = paths.served_model(target).parent
    return folder if folder.parent == paths.releases_dir(target).resolve() else None


def _free_name(releases: Path, sha256: str) -> Path:
    """``<UTC time>-<short sha256>``, sorting in shipping order; a suffix if shipped twice in a second."""
    stem = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{sha256[:12]}"
    candidate, number = releases / stem, 1
    while candidate.exists():
        number += 1
        candidate = releases / f"{stem}-{number}"
    return candidate


def _point(target: Path, release_file: Path) -> None:
    """Replace ``target`` by a relative link to ``release_file`` in one rename."""
    for leftover in target.parent.glob(f".{target.name}.*.link"):  # a crashed install's
        leftover.unlink(missing_ok=True)
    link = target.with_name(f".{target.name}.{os.getpid()}.link")
    os.symlink(os.path.relpath(release_file, target.parent), link)
    os.replace(link, target)
    _sync(target.parent)


def _remove_all_but(releases: Path, keep: set[Path | None]) -> None:
    """Remove every release folder, and leftover staging folder, not in ``keep``."""
    kept = {path.resolve() for path in keep if path is not None}
    for folder in releases.iterdir():
        if folder.is_dir() and not folder.is_symlink() and folder.resolve() not in kept:
            shutil.rmtree(folder, ignore_errors=True)


def _remove_companions_beside(target: Path) -> None:
    """Remove the metrics and twins of an older layout, which lay beside ``model.path`` itself."""
    for precision in ("float", "int8"):
        for path in paths.litert_paths(target, precision):
            path.unlink(missing_ok=True)
    paths.shipped_metrics(target).unlink(missing_ok=True)


def _sync(*paths_to_sync: Path) -> None:
    """Flush files and folders to disk, so that after a power cut the link never names a file not yet written."""
    for path in paths_to_sync:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
