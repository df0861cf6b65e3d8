"""A bulk job: skip the files already answered, classify the rest in committed parts, then write the table.

The job's state lives on disk only, in the output and its parts (see
:mod:`catdog.bulk.table`), so the same command run again after any stop
(Ctrl-C, a killed process, a full disk) goes on where the last committed
part ended. A finished output is never rewritten unless there is something
new: files added to the sources since are classified and merged in.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from catdog.bulk.table import PartStore, check_format, merge, read_table, write_table
from catdog.errors import DatasetError, JobError

log = logging.getLogger(__name__)


class Engine(Protocol):
    """Runs the model over files: :class:`catdog.bulk.local.LocalPool` or :class:`catdog.bulk.ray_engine.RayEngine`."""

    name: str

    def classify(self, paths: Sequence[str]) -> Iterator[list[dict[str, Any]]]: ...


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a job did and what its table holds.

    Attributes:
        output: The table written.
        rows: Rows in the table.
        classified: Files classified by this run.
        seconds: Wall time of this run's classification.
        labels: Rows per label.
        errors: Rows per error code.
    """

    output: Path
    rows: int
    classified: int
    seconds: float
    labels: dict[str, int]
    errors: dict[str, int]

    @property
    def images_per_second(self) -> float:
        return self.classified / self.seconds if self.seconds > 0 else 0.0


def run_job(
    files: Sequence[str],
    output: str | Path,
    engine: Engine,
    *,
    classes: Sequence[str],
    model_version: str,
    part_files: int,
    overwrite: bool = False,
    progress: bool = False,
) -> Summary:
    """Classify the ``files`` not yet in ``output`` and write the whole table there.

    Args:
        files: Absolute paths, as :func:`catdog.bulk.sources.list_files` lists them.
        output: The table (``.parquet``, ``.csv`` or ``.jsonl``).
        engine: What runs the model.
        classes: The model's classes.
        model_version: The model's short sha256; rows of another model refuse the resume.
        part_files: Rows committed at a time.
        overwrite: Discard the output and its parts and start over.
        progress: Show a progress bar on a terminal.

    Returns:
        The summary.

    Raises:
        DatasetError: The output's format is unknown, or it or a part cannot be read or written.
        JobError: The output holds another model's answers, or the engine failed.
    """
    output = Path(output)
    check_format(output)
    if not output.parent.is_dir():
        raise DatasetError(f"the output's folder {str(output.parent)!r} does not exist")
    store = PartStore(output, classes)
    if overwrite:
        store.clear()
        output.unlink(missing_ok=True)
    finished = read_table(output, classes) if output.exists() else None
    answered = merge([table for table in (finished, store.read()) if table is not None], classes)
    _check_model(answered, model_version, output)
    done = set(answered.column("path").to_pylist())
    todo = [path for path in files if path not in done]
    log.info(
        "%d file(s) listed, %d already in %s, %d to classify with the %s engine",
        len(files),
        len(files) - len(todo),
        output.name,
        len(todo),
        engine.name,
    )
    start = time.perf_counter()
    buffer: list[dict[str, Any]] = []
    bar = tqdm(total=len(todo), unit="file", desc="classify", disable=None if progress else True)
    try:
        for rows in engine.classify(todo):
            buffer.extend(rows)
            bar.update(len(rows))
            if len(buffer) >= part_files:
                store.commit(buffer)
                buffer = []
    except BaseException:
        _save(store, buffer)
        raise
    finally:
        bar.close()
    if buffer:
        store.commit(buffer)
    seconds = time.perf_counter() - start
    parts = store.read()
    table = merge([table for table in (finished, parts) if table is not None], classes)
    if finished is None or parts.num_rows:
        write_table(table, output)
    store.clear()
    return Summary(
        output=output,
        rows=table.num_rows,
        classified=len(todo),
        seconds=seconds,
        labels=_counts(table, "label"),
        errors=_counts(table, "error_code"),
    )


def _check_model(answered, model_version: str, output: Path) -> None:
    others = set(answered.column("model_version").to_pylist()) - {model_version}
    if others:
        raise JobError(
            f"{output} holds answers of another model ({', '.join(sorted(others))}, this one is {model_version}): "
            "choose another output, or --overwrite to start over"
        )


def _save(store: PartStore, rows: list[dict[str, Any]]) -> None:
    """Commit the answers in hand when the job stops; if even that fails, the last part is the limit."""
    try:
        if rows:
            store.commit(rows)
    except DatasetError as exc:
        log.warning("stopped; the last %d answer(s) could not be committed: %s", len(rows), exc)
    committed = len(store.parts())
    if committed:  # else it stopped before its first answer: nothing to go on from
        log.info("stopped with %d part(s) committed; run the same command again to go on", committed)


def _counts(table, column: str) -> dict[str, int]:
    counts = collections.Counter(value for value in table.column(column).to_pylist() if value is not None)
    return dict(sorted(counts.items()))
