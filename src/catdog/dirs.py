"""Create the folders the pipeline writes to, once and idempotently.

Downloads, extracted data, artifacts and the model each get a folder named in
the config. A path that already exists as a file, or a folder we cannot
write to, fails with :class:`DatasetError` naming the path, before any step
starts work it could not finish. :func:`atomic_write` is the one way files
are replaced, so that a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from catdog.config import Settings
from catdog.errors import DatasetError

log = logging.getLogger(__name__)


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and its parents) if needed and check it is writable.

    Args:
        path: The folder to create.

    Returns:
        The folder as a :class:`Path`.

    Raises:
        DatasetError: ``path`` or one of its parents exists as a file, or the
            folder cannot be created or written to.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise DatasetError(f"{str(folder)!r} exists but is not a folder; move it away or choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise DatasetError(f"cannot create folder {str(folder)!r}: a parent path is a file") from exc
    except OSError as exc:
        raise DatasetError(f"cannot create folder {str(folder)!r}: {exc.strerror or exc}") from exc
    try:
        # A real write is the only reliable test (os.access lies for root and
        # knows nothing of read-only mounts).
        with tempfile.TemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise DatasetError(f"folder {str(folder)!r} is not writable: {exc.strerror or exc}") from exc
    return folder


def ensure_dirs(settings: Settings) -> dict[str, Path]:
    """Create every folder the pipeline writes to (:func:`ensure_dir` each, which raises :class:`DatasetError`).

    Returns:
        The folders by config key (``data.download_dir``, ``data.extract_dir``,
        ``data.artifacts_dir``, ``model.dir``), e.g. ``{"data.download_dir": Path(...)}``.
    """
    wanted = {
        "data.download_dir": settings.data.download_dir,
        "data.extract_dir": settings.data.extract_dir,
        "data.artifacts_dir": settings.data.artifacts_dir,
        "model.dir": settings.model.dir,
    }
    folders = {}
    for key, path in wanted.items():
        try:
            folders[key] = ensure_dir(path)
        except DatasetError as exc:
            raise DatasetError(f"{key}: {exc}") from exc
        log.debug("folder ready: %s = %s", key, folders[key])
    return folders


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success rename it onto ``path``.

    Readers see the old file or the new one, never half of one. The temporary
    name keeps the suffix (Keras and NumPy choose the format by it); it is
    removed if the block raises.

    Args:
        path: The file to write; its folder must exist.

    Yields:
        The temporary file (created empty, mode 0644 once renamed).
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path`` with :func:`atomic_write`.

    Raises:
        DatasetError: The file cannot be written.
    """
    target = Path(path)
    try:
        with atomic_write(target) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from exc
    return target


def write_json_atomic(path: str | os.PathLike, payload) -> Path:
    """Write ``payload`` as indented JSON with :func:`write_text_atomic`, creating the folder."""
    target = Path(path)
    ensure_dir(target.parent)
    return write_text_atomic(target, json.dumps(payload, indent=2) + "\n")


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
