"""Every file of the course's sample lands in the right category; raw data stays untouched."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from catdog.cli import run
from catdog.data import ingest, validate
from catdog.data.validate import check_file, natural_key, read_manifest, validate_dataset
from catdog.errors import DatasetError
from catdog.serving.preprocess import ImageLimits


@pytest.fixture
def expected(sample_files: dict) -> dict[str, str]:
    """Relative path -> the category the sample file must land in."""
    return {path: category for path, (_, category) in sample_files.items()}


@pytest.fixture
def usable(expected: dict[str, str]) -> set[str]:
    return {path for path, category in expected.items() if category in ("valid", "valid_mislabelled")}


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` and the sha256 of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_sample_zip_end_to_end(config_file: Path, sample_zip: Path, settings, expected, usable) -> None:
    assert ingest.main(["--config", str(config_file)]) == 0
    dataset = settings.data.dataset_dir
    before = tree_digest(dataset)
    assert validate.main(["--config", str(config_file), "--workers", "1"]) == 0
    assert tree_digest(dataset) == before, "validation changed the raw data"

    artifacts = Path(settings.data.artifacts_dir)
    manifest = json.loads((artifacts / "manifest.json").read_text())
    # Paths are relative to extract_dir: <archive name>/<archive folder>/<class>/<file>.
    p = "petimages/PetImages/"
    assert manifest == {
        "dataset_dir": str(dataset.resolve()),
        "classes": ["Cat", "Dog", "Other"],
        "files": {
            "Cat": [p + "Cat/1.jpg", p + "Cat/2.jpg", p + "Cat/10.jpg"],
            "Dog": [p + "Dog/1.jpg", p + "Dog/2.jpg", p + "Dog/3.jpg", p + "Dog/11.jpg"],
            "Other": [p + "Other/flowers_1.jpg", p + "Other/flowers_2.jpg", p + "Other/lfw_1.jpg"],
        },
    }
    report = json.loads((artifacts / "validation_report.json").read_text())
    assert {f["path"]: f["category"] for f in report["bad_files"]} == {
        p + path: c for path, c in expected.items() if path not in usable
    }
    assert [f["path"] for f in report["mislabelled"]] == [p + "Dog/11.jpg"]
    assert report["counts"]["Cat"] == {
        "valid": 3,
        "valid_mislabelled": 0,
        "empty": 1,
        "not_image": 1,
        "corrupt": 1,
        "unsupported": 0,
    }
    assert report["counts"]["Dog"] == {
        "valid": 3,
        "valid_mislabelled": 1,
        "empty": 0,
        "not_image": 2,
        "corrupt": 0,
        "unsupported": 0,
    }
    assert report["in_manifest"] == {"Cat": 3, "Dog": 4, "Other": 3, "total": 10}


def test_every_file_in_its_category(sample_dataset: Path, expected: dict[str, str]) -> None:
    result = validate_dataset(sample_dataset, ["Cat", "Dog", "Other"])
    assert {c.path: c.category for c in result.checks} == expected
    reasons = {c.path: c.reason for c in result.checks}
    assert "empty" in reasons["Cat/666.jpg"]
    assert "PNG" in reasons["Dog/11.jpg"]
    assert reasons["Cat/1.jpg"] == ""


def test_parallel_workers_agree(sample_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate, "_PARALLEL_MIN_FILES", 1)
    serial = validate_dataset(sample_dataset, ["Cat", "Dog"], workers=1)
    parallel = validate_dataset(sample_dataset, ["Cat", "Dog"], workers=2)
    assert parallel == serial


def test_manifest_round_trip(sample_dataset: Path, tmp_path: Path, usable: set[str]) -> None:
    result = validate_dataset(sample_dataset, ["Cat", "Dog", "Other"])
    path = validate.write_manifest(result, tmp_path / "manifest.json")
    root, files = read_manifest(path)
    assert root == sample_dataset.resolve()
    assert list(files) == ["Cat", "Dog", "Other"]
    assert {p.relative_to(root).as_posix() for paths in files.values() for p in paths} == usable
    assert all(p.is_absolute() and p.is_file() for paths in files.values() for p in paths)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("{not json", "cannot be read as JSON"),
        ('["a", "list"]', "expected exactly the keys"),
        ('{"dataset_dir": "/d", "classes": ["Cat"]}', "expected exactly the keys"),
        ('{"dataset_dir": "rel", "classes": ["Cat"], "files": {"Cat": []}}', "absolute path"),
        ('{"dataset_dir": "/d", "classes": "Cat", "files": {"Cat": []}}', "classes must be a list"),
        ('{"dataset_dir": "/d", "classes": ["Cat", "Dog"], "files": {"Cat": []}}', "files must map each class"),
        ('{"dataset_dir": "/d", "classes": ["Cat"], "files": {"Cat": "Cat/1.jpg"}}', "files.Cat must be a list"),
        ('{"dataset_dir": "/d", "classes": ["Cat"], "files": {"Cat": ["../x.jpg"]}}', "not inside dataset_dir"),
        ('{"dataset_dir": "/d", "classes": ["Cat"], "files": {"Cat": ["/etc/passwd"]}}', "not inside dataset_dir"),
    ],
    ids=[
        "missing",
        "not json",
        "not a mapping",
        "missing key",
        "relative root",
        "bad classes",
        "class mismatch",
        "files not a list",
        "escaping path",
        "absolute path",
    ],
)
def test_read_manifest_refuses_bad_files(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "manifest.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DatasetError, match=expected):
        read_manifest(path)


@pytest.mark.parametrize(
    ("fmt", "category"),
    [("BMP", "valid_mislabelled"), ("GIF", "valid_mislabelled"), ("WEBP", "valid_mislabelled"), ("JPEG", "valid")],
)
def test_format_under_jpg_name(tmp_path: Path, image_bytes, fmt: str, category: str) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(image_bytes(fmt))
    assert check_file(path)[0] == category


def test_matching_suffixes_are_not_mislabelled(tmp_path: Path, image_bytes) -> None:
    for name, fmt in [("a.png", "PNG"), ("b.jpeg", "JPEG"), ("c.JPG", "JPEG"), ("no_suffix", "PNG")]:
        (tmp_path / name).write_bytes(image_bytes(fmt))
        assert check_file(tmp_path / name) == ("valid", ""), name


@pytest.mark.parametrize("cut", [2, 1], ids=["no end marker", "half a marker"])
def test_jpeg_missing_its_end_is_corrupt(tmp_path: Path, image_bytes, cut: int) -> None:
    data = image_bytes("JPEG", size=(64, 64))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:-cut])
    assert check_file(path)[0] == "corrupt"


def test_jpeg_with_trailing_padding_is_valid(tmp_path: Path, image_bytes) -> None:
    path = tmp_path / "padded.jpg"
    path.write_bytes(image_bytes("JPEG") + b"\0\0\0")
    assert check_file(path) == ("valid", "")


def test_serving_limits_apply(tmp_path: Path, image_bytes) -> None:
    tiny = tmp_path / "tiny.png"
    tiny.write_bytes(image_bytes("PNG", size=(4, 4)))
    assert check_file(tiny, ImageLimits(min_side=8))[0] == "unsupported"
    big = tmp_path / "big.png"
    big.write_bytes(image_bytes("PNG", size=(100, 100)))
    assert check_file(big, ImageLimits(max_pixels=5_000))[0] == "unsupported"
    tiff = tmp_path / "x.tiff"
    tiff.write_bytes(image_bytes("TIFF"))
    assert check_file(tiff, ImageLimits(accepted_formats=("JPEG", "PNG")))[0] == "unsupported"


def test_natural_order() -> None:
    names = ["Cat/10.jpg", "Cat/Thumbs.db", "Cat/2.jpg", "Cat/1.jpg", "Cat/a10.jpg", "Cat/a9.jpg"]
    assert sorted(names, key=natural_key) == [
        "Cat/1.jpg",
        "Cat/2.jpg",
        "Cat/10.jpg",
        "Cat/Thumbs.db",
        "Cat/a9.jpg",
        "Cat/a10.jpg",
    ]


def test_quarantine_moves_only_bad_files(config_file: Path, sample_dataset: Path, tmp_path: Path, usable) -> None:
    before = tree_digest(sample_dataset)
    jail = tmp_path / "quarantine"
    assert validate.main(["--config", str(config_file), "--workers", "1", "--quarantine", str(jail)]) == 0
    # The jail mirrors paths relative to extract_dir, as the manifest does.
    assert tree_digest(jail) == {f"petimages/PetImages/{p}": h for p, h in before.items() if p not in usable}
    assert tree_digest(sample_dataset) == {p: before[p] for p in usable}
    report = json.loads((tmp_path / "artifacts" / "validation_report.json").read_text())
    assert all(Path(f["quarantined_to"]).is_file() for f in report["bad_files"])


def test_quarantine_inside_dataset_is_refused(config_file: Path, sample_dataset: Path) -> None:
    before = tree_digest(sample_dataset)
    inside = sample_dataset / "Cat" / "bad"
    assert run(validate.main, ["--config", str(config_file), "--workers", "1", "--quarantine", str(inside)]) == 1
    assert tree_digest(sample_dataset) == before


def _break_missing_dataset(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    root.rmdir()


def _break_dataset_is_file(root: Path) -> None:
    _break_missing_dataset(root)
    root.write_text("not a folder")


def _break_missing_class(root: Path) -> None:
    for path in (root / "Dog").iterdir():
        path.unlink()
    (root / "Dog").rmdir()


def _break_empty_class(root: Path) -> None:
    for path in (root / "Dog").iterdir():
        path.unlink()


def _break_class_is_file(root: Path) -> None:
    _break_missing_class(root)
    (root / "Dog").write_text("not a folder")


def _break_no_valid_image(root: Path) -> None:
    for path in (root / "Dog").iterdir():
        path.write_bytes(b"")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_break_missing_dataset, "collection folder .* does not exist"),
        (_break_dataset_is_file, "collection folder .* is a file"),
        (_break_missing_class, "no class folder for 'Dog' in "),
        (_break_empty_class, "hold no files"),
        (_break_class_is_file, "class folder for 'Dog' .* is a file"),
        (_break_no_valid_image, "no usable image in class folder"),
    ],
    ids=["no dataset", "dataset is a file", "no class folder", "empty class", "class is a file", "no valid image"],
)
def test_cli_fails_clearly(config_file: Path, sample_dataset: Path, capsys, damage, expected: str) -> None:
    damage(sample_dataset)
    assert run(validate.main, ["--config", str(config_file), "--workers", "1"]) == 1
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith("error: ")
    assert re.search(expected, last_line), last_line


def test_cli_prints_the_table(config_file: Path, sample_dataset: Path, capsys) -> None:
    assert validate.main(["--config", str(config_file), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "in manifest" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip() and line[0] != " "}
    assert rows["valid"] == ["3", "3", "3", "9"]
    assert rows["not_image"] == ["1", "2", "0", "3"]
    assert "  corrupt           petimages/PetImages/Cat/4.jpg: " in out


def test_cli_with_other_class_names(tmp_path: Path, config_file: Path, sample_dataset: Path) -> None:
    (sample_dataset / "Cat").rename(sample_dataset / "cats")
    assert validate.main(["--config", str(config_file), "--workers", "1", "--set", "data.classes=[cats, Dog]"]) == 0
    root, files = read_manifest(tmp_path / "artifacts" / "manifest.json")
    assert list(files) == ["cats", "Dog"]


def test_collections_may_lack_a_class_but_not_all_of_them(tmp_path: Path) -> None:
    """Two archives: PetImages has no Other, Extra has all three; both are listed."""
    from catdog.data.validate import list_class_files

    for relative in (
        "pets/PetImages/Cat/1.jpg",
        "pets/PetImages/Dog/1.jpg",
        "extra/Extra/Cat/oxford_1.jpg",
        "extra/Extra/Other/flowers_1.jpg",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    files = list_class_files(tmp_path, ["Cat", "Dog", "Other"], ["pets/PetImages", "extra/Extra"])
    assert {c: [p.relative_to(tmp_path).as_posix() for p in ps] for c, ps in files.items()} == {
        "Cat": ["extra/Extra/Cat/oxford_1.jpg", "pets/PetImages/Cat/1.jpg"],
        "Dog": ["pets/PetImages/Dog/1.jpg"],
        "Other": ["extra/Extra/Other/flowers_1.jpg"],
    }
    with pytest.raises(DatasetError, match="no class folder for 'Bird'"):
        list_class_files(tmp_path, ["Cat", "Bird"], ["pets/PetImages", "extra/Extra"])
    with pytest.raises(DatasetError, match="collection folder .* does not exist"):
        list_class_files(tmp_path, ["Cat"], ["pets/PetImages", "missing/Folder"])


def test_data_pipeline_does_not_import_tensorflow() -> None:
    code = "import sys, catdog.data.ingest, catdog.data.validate, catdog.dirs; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
