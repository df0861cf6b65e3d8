"""Groups (kinds of photo) from SOURCES.csv or the config, through ingest, validation and the split."""

from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter
from pathlib import Path

from catdog.config import load_config
from catdog.data import ingest, validate
from catdog.data.dataset import prepare_split, source_of
from catdog.data.groups import file_groups, read_group_column
from helpers import encode_image

# A third archive in the layout of Broad-128px.zip: WebP photos, SOURCES.csv naming each file's group.
BROAD = {
    "Cat/tin_n01_a.webp": "cat",
    "Cat/tin_n01_b.webp": "cat",
    "Cat/tin_n01_c.webp": "cat",
    "Dog/tin_n02_a.webp": "dog",
    "Dog/tin_n02_b.webp": "dog",
    "Dog/tin_n02_c.webp": "dog",
    **{f"Other/cal101_chair_{i}.webp": "object" for i in range(4)},
    **{f"Other/tin_n03_{i}.webp": "wildcat" for i in range(4)},
    **{f"Other/sun8_coast_{i}.webp": "scene" for i in range(4)},
}


def _broad_zip(path: Path) -> Path:
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["file", "class", "source", "group"])
    for name, group in BROAD.items():
        writer.writerow([name, name.split("/")[0], name.split("/")[1].split("_")[0], group])
    with zipfile.ZipFile(path, "w") as archive:
        for i, name in enumerate(BROAD):
            archive.writestr(f"Broad/{name}", encode_image("WEBP", size=(40, 36), seed=100 + i))
        archive.writestr("Broad/SOURCES.csv", table.getvalue())
    return path


def test_a_third_archive_of_webp_photos_is_ingested_validated_split_and_grouped(
    config_file: Path, sample_zip: Path, tmp_path: Path
) -> None:
    broad = _broad_zip(tmp_path / "source" / "broad.zip")
    archives = (
        f"data.archives={{petimages: {{source_url: '{sample_zip}', sha256: null, folder: PetImages}}, "
        f"broad: {{source_url: '{broad}', sha256: null, folder: Broad}}}}"
    )
    sets = ["--config", str(config_file), "--set", archives, "--set", "data.source_groups={PetImages/flowers: plant}"]
    assert ingest.main(sets) == 0
    assert validate.main(sets) == 0
    settings = load_config(config_file, [archives, "data.source_groups={PetImages/flowers: plant}"], environ={})

    split, root, _ = prepare_split(settings)
    files = [f for part in split.files.values() for f in part]
    # Every WebP photo of the third archive made it through validation into the split.
    assert sorted(f.removeprefix("broad/Broad/") for f in files if f.startswith("broad/")) == sorted(BROAD)
    # Digits after a source name's first letter still make a source (cal101, sun8).
    assert {source_of(f) for f in files if f.startswith("broad/")} == {"Broad/tin", "Broad/cal101", "Broad/sun8"}

    groups = dict(zip(files, file_groups(files, root, settings.data.source_groups), strict=True))
    for name, group in BROAD.items():
        assert groups[f"broad/Broad/{name}"] == group  # from SOURCES.csv
    assert groups["petimages/PetImages/Other/flowers_1.jpg"] == "plant"  # from data.source_groups
    assert groups["petimages/PetImages/Other/lfw_1.jpg"] == "other"  # neither: its class folder
    assert groups["petimages/PetImages/Cat/1.jpg"] == "cat"
    # The split is stratified by source: each Broad Other source has a photo in every part.
    for part in ("train", "validation", "test"):
        counts = Counter(source_of(f) for f in split.files[part] if "/Other/" in f and f.startswith("broad/"))
        assert set(counts) == {"Broad/tin", "Broad/cal101", "Broad/sun8"}


def test_sources_csv_with_the_collection_folder_in_its_file_column(tmp_path: Path) -> None:
    (tmp_path / "SOURCES.csv").write_text("file,group\nExtra/Other/a_1.jpg,object\nOther/b_1.jpg,\n", encoding="utf-8")
    assert read_group_column(tmp_path / "SOURCES.csv") == {"Other/a_1.jpg": "object"}


def test_sources_csv_without_a_group_column_or_missing_gives_nothing(tmp_path: Path) -> None:
    (tmp_path / "SOURCES.csv").write_text("file,class\nOther/a_1.jpg,Other\n", encoding="utf-8")
    assert read_group_column(tmp_path / "SOURCES.csv") == {}
    assert read_group_column(tmp_path / "absent.csv") == {}
