"""Kinds of photo ("groups"): what leave-one-group-out holds out and what per-group figures count.

A source is a collection (``PetImages``, ``Extra/flowers``, ``Broad/tin``); a
group is a kind of picture a user might upload, across collections: object,
animal, scene, food, plant, person, wildcat, cat, dog. A collection whose
``SOURCES.csv`` has a ``group`` column (Broad) names each file's group there;
for the others, ``data.source_groups`` in the config maps a source to its group
(``Extra/flowers: plant``), and a file of no mapped source belongs to its class
folder's group (``cat``, ``dog``, ``other``).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from catdog.data.dataset import source_of

SOURCES_FILE = "SOURCES.csv"


def file_groups(files: Sequence[str], dataset_dir: str | Path, source_groups: Mapping[str, str]) -> list[str]:
    """The group of each file.

    Args:
        files: Paths relative to the dataset folder, ``<archive>/<folder>/<class>/<file>``.
        dataset_dir: The dataset folder, where each collection may keep a ``SOURCES.csv``.
        source_groups: Group of each source (:func:`catdog.data.dataset.source_of`) without a group column.

    Returns:
        One group name per file, in order.
    """
    tables: dict[PurePosixPath, dict[str, str]] = {}
    groups = []
    for name in files:
        path = PurePosixPath(name)
        collection, inside = path.parents[1], PurePosixPath(*path.parts[-2:])
        if collection not in tables:
            tables[collection] = read_group_column(Path(dataset_dir) / collection / SOURCES_FILE)
        group = tables[collection].get(str(inside)) or source_groups.get(source_of(name))
        groups.append(group or path.parts[-2].lower())
    return groups


def read_group_column(path: Path) -> dict[str, str]:
    """``<class>/<file>`` -> group from a collection's ``SOURCES.csv``; empty when it has no group column.

    The ``file`` column may or may not start with the collection's own folder
    (``Extra/Cat/x.jpg`` or ``Cat/x.jpg``): only the class folder and file name are kept.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        return {}
    if not rows or "group" not in rows[0] or "file" not in rows[0]:
        return {}
    return {str(PurePosixPath(*PurePosixPath(row["file"]).parts[-2:])): row["group"] for row in rows if row["group"]}
