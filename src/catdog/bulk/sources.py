"""Which files a bulk job classifies: folders walked, globs expanded, list files read."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from catdog.errors import DatasetError

log = logging.getLogger(__name__)

GLOB_CHARACTERS = frozenset("*?[")
LIST_SUFFIX = ".txt"


def list_files(sources: Sequence[str | os.PathLike], exclude: Iterable[str | os.PathLike] = ()) -> list[str]:
    """The absolute paths of the files that ``sources`` name, sorted, each once.

    A source is one of:

    * a folder: every file under it, hidden ones (``.name``) and hidden folders left out;
    * a glob pattern (``photos/*.jpg``, ``**`` spans folders): the files it matches,
      folders among them walked as above;
    * a ``.txt`` file: one path per line (relative ones from the current folder),
      blank lines and lines starting with ``#`` skipped; a listed path that does
      not exist is kept, so that its row says so;
    * any other file: itself.

    Args:
        sources: What the user named.
        exclude: Files and folders never listed (the job's own output).

    Returns:
        Absolute paths (symbolic links kept, not resolved).

    Raises:
        DatasetError: A source does not exist, or a pattern matches nothing.
    """
    excluded = {os.path.abspath(path) for path in exclude}
    found: set[str] = set()
    for source in sources:
        text = os.fspath(source)
        if not os.path.lexists(text) and GLOB_CHARACTERS & set(text):
            matches = glob.glob(text, recursive=True)
            if not matches:
                raise DatasetError(f"source pattern {text!r} matches no file")
            for match in matches:
                found.update(_files_under(match))
        elif os.path.isdir(text):
            found.update(_files_under(text))
        elif text.endswith(LIST_SUFFIX) and os.path.isfile(text):
            found.update(_listed(text))
        elif os.path.exists(text):
            found.add(os.path.abspath(text))
        else:
            raise DatasetError(f"source {text!r} does not exist")
    kept = sorted(path for path in found if not _inside(path, excluded) and _storable(path))
    log.debug("%d file(s) listed from %d source(s)", len(kept), len(sources))
    return kept


def _files_under(path: str) -> Iterator[str]:
    """``path`` itself if it is a file, else the files under it, hidden ones left out."""
    if not os.path.isdir(path):
        yield os.path.abspath(path)
        return
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            if not name.startswith("."):
                yield os.path.abspath(os.path.join(folder, name))


def _listed(list_file: str) -> Iterator[str]:
    try:
        lines = Path(list_file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read list file {list_file!r}: {exc}") from exc
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield os.path.abspath(entry)


def _inside(path: str, excluded: set[str]) -> bool:
    return any(path == other or path.startswith(other + os.sep) for other in excluded)


def _storable(path: str) -> bool:
    """Whether ``path`` can be written to the table (UTF-8); a name in another encoding is skipped, with a warning."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        log.warning("skipped %r: its name is not UTF-8, which the table cannot hold", path)
        return False
    return True
