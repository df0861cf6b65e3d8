"""The table a bulk job writes: its columns, its three formats, and the committed parts that make it resumable.

Columns, in order: ``path`` (absolute), ``label``, ``confidence``, one
``p_<class>`` per class (calibrated probabilities), ``model_version`` (the
model file's short sha256), ``error_code`` and ``error_message``. A file that
was judged has a label and no error; one that could not be has an error and
no label or probabilities.

The output's suffix chooses its format: ``.parquet``, ``.csv`` or ``.jsonl``
(one JSON object a line). While a job runs, answers are committed in parts:
Parquet files in a hidden folder beside the output (``.NAME.parts/``), each
written to a temporary name and renamed, so that a stop at any moment leaves
only whole parts. The output itself is written the same way, once, at the end.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from catdog.bulk.replica import probability_column
from catdog.dirs import atomic_write
from catdog.errors import DatasetError

log = logging.getLogger(__name__)

FORMATS = (".parquet", ".csv", ".jsonl")
PART_GLOB = "part-*.parquet"


def schema(classes: Sequence[str]) -> pa.Schema:
    """The table's columns for a model with ``classes``."""
    return pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.string()),
            ("confidence", pa.float64()),
            *[(probability_column(name), pa.float64()) for name in classes],
            ("model_version", pa.string()),
            ("error_code", pa.string()),
            ("error_message", pa.string()),
        ]
    )


def to_table(rows: Sequence[dict[str, Any]], classes: Sequence[str]) -> pa.Table:
    """Rows as made by :class:`catdog.bulk.replica.ModelReplica` as a table."""
    return pa.Table.from_pylist(list(rows), schema=schema(classes))


def check_format(path: str | Path) -> str:
    """The output format's suffix.

    Raises:
        DatasetError: The suffix is not one of :data:`FORMATS`.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise DatasetError(f"the output must end in {', '.join(FORMATS)} (its format), got {str(path)!r}")
    return suffix


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` in the format ``path``'s suffix names, atomically.

    Raises:
        DatasetError: The file cannot be written.
    """
    target = Path(path)
    suffix = check_format(target)
    try:
        with atomic_write(target) as tmp:
            if suffix == ".parquet":
                pq.write_table(table, tmp)
            elif suffix == ".csv":
                pa_csv.write_csv(table, tmp)
            else:
                with tmp.open("w", encoding="utf-8") as stream:
                    for row in table.to_pylist():
                        stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise DatasetError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from exc
    return target


def read_table(path: str | Path, classes: Sequence[str]) -> pa.Table:
    """Read a table that :func:`write_table` wrote, with its columns checked.

    Raises:
        DatasetError: The file cannot be read or does not hold this table's columns.
    """
    source = Path(path)
    suffix = check_format(source)
    expected = schema(classes)
    try:
        if suffix == ".parquet":
            table = pq.read_table(source)
        elif suffix == ".csv":
            # Nulls are written as empty unquoted fields, strings always quoted: "" stays a string.
            options = pa_csv.ConvertOptions(
                column_types=expected, strings_can_be_null=True, quoted_strings_can_be_null=False
            )
            table = pa_csv.read_csv(source, convert_options=options)
        else:
            options = pa_json.ParseOptions(explicit_schema=expected, unexpected_field_behavior="error")
            table = pa_json.read_json(source, parse_options=options)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"cannot read {str(source)!r} as a catdog classify table: {exc}") from exc
    if table.column_names != expected.names:
        raise DatasetError(
            f"{str(source)!r} is not a table of this model's answers: its columns are {table.column_names}, "
            f"expected {expected.names}"
        )
    return table.select(expected.names).cast(expected)


def merge(tables: Sequence[pa.Table], classes: Sequence[str]) -> pa.Table:
    """Concatenate tables, keep the first row of each path, and sort by path."""
    if not tables:
        return schema(classes).empty_table()
    table = pa.concat_tables(tables)
    first: dict[str, int] = {}
    for index, path in enumerate(table.column("path").to_pylist()):
        first.setdefault(path, index)
    return table.take(pa.array(sorted(first.values()), pa.int64())).sort_by("path")


class PartStore:
    """The committed parts of an unfinished job, in ``.NAME.parts/`` beside the output.

    Args:
        output: The job's output table.
        classes: The model's classes (its columns).
    """

    def __init__(self, output: str | Path, classes: Sequence[str]):
        output = Path(output)
        self.folder = output.with_name(f".{output.name}.parts")
        self.classes = tuple(classes)

    def parts(self) -> list[Path]:
        """The committed parts, in commit order (a temporary file left by a kill is not one)."""
        return sorted(self.folder.glob(PART_GLOB))

    def read(self) -> pa.Table:
        """Every committed row."""
        return merge([read_table(part, self.classes) for part in self.parts()], self.classes)

    def commit(self, rows: Sequence[dict[str, Any]]) -> Path:
        """Write ``rows`` as the next part, atomically.

        Raises:
            DatasetError: The part cannot be written.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        parts = self.parts()
        number = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0
        path = write_table(to_table(rows, self.classes), self.folder / f"part-{number:06d}.parquet")
        log.debug("committed %d row(s) as %s", len(rows), path.name)
        return path

    def clear(self) -> None:
        """Remove the parts folder and whatever a killed job left in it."""
        shutil.rmtree(self.folder, ignore_errors=True)
