"""The one code path from files to rows that every engine runs: a loaded model judging a batch of files.

A pool worker and a Ray actor each hold one :class:`ModelReplica`, made from
a picklable :class:`ReplicaSpec`. The replica reads each file, decodes it with
the same :class:`catdog.serving.inference.Predictor` (runtime, limits, calibration) as
the API, classifies the decodable ones in one forward pass and returns one row
per file. A file that cannot be judged gets the API's error code
(``empty``, ``not_image``, ``unsupported_format``, ``corrupt``, ``too_large``,
``too_small``, ``too_complex``) or ``unreadable`` when it cannot be read at all;
it never stops the batch.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from catdog.errors import InvalidImage
from catdog.serving.preprocess import ImageLimits

UNREADABLE = "unreadable"


@dataclasses.dataclass(frozen=True)
class ReplicaSpec:
    """What a worker needs to load the model as the app would.

    Attributes:
        model_path: The ``.h5`` model (its LiteRT twin beside it is used when it matches).
        classes: Class names, index ``i`` of the output is ``classes[i]``.
        limits: The images accepted, as by the API.
        max_file_bytes: Largest file read, as the API's upload limit.
        threads: Threads of one replica's runtime.
    """

    model_path: str
    classes: tuple[str, ...]
    limits: ImageLimits
    max_file_bytes: int
    threads: int = 1

    @classmethod
    def from_settings(cls, settings, model_path: str | os.PathLike | None = None, threads: int = 1) -> ReplicaSpec:
        """The spec of the configured model, classes and serving limits."""
        return cls(
            os.path.abspath(model_path or settings.model.path),
            tuple(settings.data.classes),
            ImageLimits.from_serving(settings.serving),
            settings.serving.max_upload_bytes,
            threads,
        )

    def load(self) -> ModelReplica:
        """Load the model in this process.

        Raises:
            ModelError: The model cannot be loaded.
        """
        from catdog.serving.inference import Predictor

        predictor = Predictor(self.model_path, self.classes, limits=self.limits, num_threads=self.threads)
        return ModelReplica(predictor, self.max_file_bytes)


def start_worker_process(spec: ReplicaSpec) -> ModelReplica:
    """Load a replica in a process of its own (a pool worker, a Ray actor), TensorFlow limited to its threads.

    TensorFlow reads its thread counts from the environment when it is first
    imported, so they are set before the model is loaded; the LiteRT runtime
    takes them as an argument. Only for a process that runs nothing else: the
    environment is changed for good.

    Raises:
        ModelError: The model cannot be loaded.
    """
    for variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(variable, str(spec.threads))
    return spec.load()


class ModelReplica:
    """One loaded model turning files into rows.

    Args:
        predictor: The loaded model.
        max_file_bytes: Files larger than this are refused (``too_large``) unread.
    """

    def __init__(self, predictor, max_file_bytes: int):
        self.predictor = predictor
        self.max_file_bytes = max_file_bytes

    @property
    def model_version(self) -> str:
        """The model's short sha256, written in every row."""
        return self.predictor.short_hash

    def classify(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """Judge each file, the decodable ones in one forward pass.

        Returns:
            One row per path, in order (see :func:`catdog.bulk.table.schema`).
        """
        rows = [empty_row(path, self.predictor.classes, self.model_version) for path in paths]
        judged, arrays = [], []
        for row in rows:
            try:
                _, array = self.predictor.decode(read_file(row["path"], self.max_file_bytes))
            except InvalidImage as exc:
                row.update(error_code=exc.reason, error_message=exc.message)
            except OSError as exc:
                row.update(error_code=UNREADABLE, error_message=f"cannot read the file ({exc.strerror or exc})")
            else:
                judged.append(row)
                arrays.append(array)
        if arrays:
            probabilities = self.predictor.predict_arrays(np.stack(arrays))
            labels, confidences = self.predictor.answer(probabilities)
            for row, probs, best, confidence in zip(judged, probabilities, labels, confidences, strict=True):
                row.update(label=self.predictor.classes[best], confidence=float(confidence))
                columns = map(probability_column, self.predictor.classes)
                row.update({column: float(p) for column, p in zip(columns, probs, strict=True)})
        return rows


def probability_column(name: str) -> str:
    """The column holding class ``name``'s probability: ``p_Cat``."""
    return f"p_{name}"


def empty_row(path: str, classes: Sequence[str], model_version: str) -> dict[str, Any]:
    """A row with no answer yet: every column present, the answers ``None``."""
    return {
        "path": path,
        "label": None,
        "confidence": None,
        **{probability_column(name): None for name in classes},
        "model_version": model_version,
        "error_code": None,
        "error_message": None,
    }


def read_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of a regular file no larger than ``max_bytes``.

    Raises:
        InvalidImage: ``too_large``: the file is larger than ``max_bytes``.
        OSError: It cannot be read, or it is not a regular file (a FIFO would block).
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(f"{Path(path).name} is not a regular file")
    if info.st_size > max_bytes:
        raise InvalidImage(
            "too_large", f"the file is {info.st_size:,} bytes, more than the limit of {max_bytes:,} bytes for one image"
        )
    with open(path, "rb") as stream:
        data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew since stat
        raise InvalidImage("too_large", f"the file is more than the limit of {max_bytes:,} bytes for one image")
    return data
