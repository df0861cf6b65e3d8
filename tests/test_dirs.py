"""The pipeline's folders are created idempotently and bad paths fail clearly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catdog import dirs
from catdog.dirs import ensure_dir, ensure_dirs, write_text_atomic
from catdog.errors import DatasetError


def test_ensure_dirs_creates_every_folder(settings) -> None:
    folders = ensure_dirs(settings)
    assert set(folders) == {"data.download_dir", "data.extract_dir", "data.artifacts_dir", "model.dir"}
    for path in folders.values():
        assert path.is_dir()
    assert folders["model.dir"] == Path(settings.model.dir)


def test_ensure_dirs_is_idempotent(settings) -> None:
    first = ensure_dirs(settings)
    (first["data.artifacts_dir"] / "keep.txt").write_text("still here")
    assert ensure_dirs(settings) == first
    assert (first["data.artifacts_dir"] / "keep.txt").read_text() == "still here"
    assert not [p for p in first["data.artifacts_dir"].iterdir() if p.name != "keep.txt"]


def test_nested_parents_are_created(tmp_path: Path) -> None:
    assert ensure_dir(tmp_path / "a" / "b" / "c").is_dir()


def test_path_that_is_a_file_fails(settings) -> None:
    blocker = Path(settings.data.artifacts_dir)
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    with pytest.raises(DatasetError) as caught:
        ensure_dirs(settings)
    assert "data.artifacts_dir" in str(caught.value)
    assert str(blocker) in str(caught.value)
    assert blocker.read_text() == "not a folder"


def test_parent_that_is_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="a parent path is a file"):
        ensure_dir(tmp_path / "file" / "sub")


def test_unwritable_folder_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dirs.tempfile, "TemporaryFile", refuse)
    with pytest.raises(DatasetError, match="is not writable: Permission denied"):
        ensure_dir(tmp_path / "locked")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_read_only_folder_fails_for_real(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(DatasetError, match="not writable"):
            ensure_dir(locked)
    finally:
        locked.chmod(0o700)


def test_write_text_atomic_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_text_atomic(target, "old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_write_text_atomic_into_missing_folder_fails(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot write"):
        write_text_atomic(tmp_path / "missing" / "report.json", "x")
