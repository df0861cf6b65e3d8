"""Decode every dataset file and list the usable ones: ``python -m catdog.data.validate``.

Each file under ``<dataset_dir>/<class>/`` is read and fully decoded with
:func:`catdog.serving.preprocess.open_image` and the serving limits, so a file is
valid for training exactly when the web service would accept it. Every file
lands in one category:

- ``valid``: decodes, and its format matches its name;
- ``valid_mislabelled``: decodes, but is e.g. a PNG under a ``.jpg`` name
  (kept, and noted in the report);
- ``empty``: 0 bytes;
- ``not_image``: nothing Pillow can identify (Thumbs.db, a tar, text...);
- ``corrupt``: identified but failing to decode, or a JPEG cut off before
  its end-of-image marker;
- ``unsupported``: a readable image the service refuses (format, size).

The raw files are never changed; ``--quarantine DIR`` moves the bad ones out.
``<artifacts_dir>/manifest.json`` lists the usable files per class (the input
of training, read back with :func:`read_manifest`) and
``<artifacts_dir>/validation_report.json`` holds the counts and every bad file.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from PIL import Image

from catdog import paths
from catdog.cli import make_parser, run, settings_from_args
from catdog.data.parallel import ordered_map
from catdog.dirs import ensure_dir, write_text_atomic
from catdog.errors import DatasetError, InvalidImage
from catdog.serving.preprocess import ImageLimits, open_image

log = logging.getLogger("catdog.data.validate")  # not __name__: that is "__main__" under -m

CATEGORIES = ("valid", "valid_mislabelled", "empty", "not_image", "corrupt", "unsupported")
USABLE = ("valid", "valid_mislabelled")

# open_image's refusal reasons -> our categories.
_REASON_CATEGORY = {
    "empty": "empty",
    "not_image": "not_image",
    "corrupt": "corrupt",
    "unsupported_format": "unsupported",
    "too_large": "unsupported",
    "too_small": "unsupported",
    "too_complex": "unsupported",
}
_JPEG_FORMATS = {"JPEG", "MPO"}  # MPO: camera JPEGs carrying extra frames
_PARALLEL_MIN_FILES = 200  # below this, starting worker processes costs more than it saves
_LISTED_FILES = 30  # files the command prints below the table; the report lists all


@dataclasses.dataclass(frozen=True)
class FileCheck:
    """The verdict on one file.

    Attributes:
        path: Path relative to the dataset folder, with ``/`` separators.
        label: The class folder it was found in.
        category: One of :data:`CATEGORIES`.
        reason: Why it is not plain ``valid`` (empty for valid files).
    """

    path: str
    label: str
    category: str
    reason: str

    @property
    def usable(self) -> bool:
        return self.category in USABLE


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    """Every file's verdict, in natural order within each class.

    Attributes:
        dataset_dir: Absolute dataset folder.
        classes: Class folder names, in label order.
        checks: One verdict per file.
    """

    dataset_dir: Path
    classes: tuple[str, ...]
    checks: tuple[FileCheck, ...]

    def usable_files(self) -> dict[str, list[str]]:
        """Relative paths of the usable files, per class."""
        return {c: [f.path for f in self.checks if f.label == c and f.usable] for c in self.classes}

    def counts(self) -> dict[str, dict[str, int]]:
        """Files per class (and ``total``) and category."""
        table = {c: dict.fromkeys(CATEGORIES, 0) for c in (*self.classes, "total")}
        for check in self.checks:
            table[check.label][check.category] += 1
            table["total"][check.category] += 1
        return table


def natural_key(path: str) -> tuple:
    """Sort key that orders ``Cat/2.jpg`` before ``Cat/10.jpg``."""
    # re.split with a group alternates text and digit runs, so positions keep one type.
    return tuple(int(tok) if i % 2 else tok for i, tok in enumerate(re.split(r"(\d+)", path)))


def check_file(
    path: str | os.PathLike,
    limits: ImageLimits = ImageLimits(),
) -> tuple[str, str]:
    """Decode one file and say which category it belongs to.

    Args:
        path: The file.
        limits: The sizes and formats accepted (see :func:`open_image`).

    Returns:
        ``(category, reason)``; the reason is empty for a valid file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return "corrupt", f"cannot read the file ({exc.strerror or exc})"
    try:
        open_image(data, limits=limits)
    except InvalidImage as exc:
        return _REASON_CATEGORY.get(exc.reason, "corrupt"), exc.message
    with Image.open(io.BytesIO(data)) as image:
        found = image.format
    # Pillow fills in a JPEG cut off after its last complete scan without a
    # word; a JPEG must end with the end-of-image marker (padding aside).
    if found in _JPEG_FORMATS and not data.rstrip(b"\0\r\n\t ").endswith(b"\xff\xd9"):
        return "corrupt", "the JPEG data stops before its end-of-image marker (truncated file)"
    named = _format_for_suffix(path.suffix.lower())
    if named and named != found and not {named, found} <= _JPEG_FORMATS:
        return "valid_mislabelled", f"a {found} image under a {path.suffix} name"
    return "valid", ""


@functools.cache
def _format_for_suffix(suffix: str) -> str | None:
    return Image.registered_extensions().get(suffix)


def list_class_files(
    dataset_dir: str | os.PathLike, classes: Sequence[str], collections: Sequence[str] = ("",)
) -> dict[str, list[Path]]:
    """List every file under each class folder, in natural order.

    Args:
        dataset_dir: Folder holding the collections.
        classes: The class folder names.
        collections: Folders (relative to ``dataset_dir``) that each hold
            class folders; a collection may lack some classes. The default,
            ``("",)``, is one collection: ``dataset_dir`` itself.

    Returns:
        The files per class, collection by collection.

    Raises:
        DatasetError: The dataset folder or a collection is missing or is a
            file, or a class has no folder or no file in any collection.
    """
    root = Path(dataset_dir)
    _require_folder(root, "dataset folder", "run python -m catdog.data.ingest first, or check data.extract_dir")
    for collection in collections:
        _require_folder(root / collection, "collection folder", "run python -m catdog.data.ingest first")
    files = {}
    for label in classes:
        folders = [root / collection / label for collection in collections]
        present = [folder for folder in folders if folder.exists()]
        if not present:
            raise DatasetError(
                f"no class folder for {label!r} in {', '.join(str(f) for f in folders)}; check data.classes"
            )
        found = []
        for folder in present:
            _require_folder(folder, f"class folder for {label!r}", "check data.classes")
            found.extend(Path(top, name) for top, _, names in os.walk(folder) for name in names)
        if not found:
            raise DatasetError(f"class folder(s) {', '.join(str(f) for f in present)} hold no files")
        files[label] = sorted(found, key=lambda p: natural_key(p.relative_to(root).as_posix()))
    return files


def _require_folder(path: Path, what: str, hint: str) -> None:
    if not path.exists():
        raise DatasetError(f"{what} {str(path)!r} does not exist; {hint}")
    if not path.is_dir():
        raise DatasetError(f"{what} {str(path)!r} is a file, not a folder")


def validate_dataset(
    dataset_dir: str | os.PathLike,
    classes: Sequence[str],
    *,
    collections: Sequence[str] = ("",),
    limits: ImageLimits = ImageLimits(),
    workers: int = 1,
    progress: bool = False,
) -> ValidationResult:
    """Check every file of every class with :func:`check_file`.

    ``dataset_dir``, ``classes`` and ``collections`` find the files as in
    :func:`list_class_files` (which raises :class:`DatasetError`); ``workers``
    processes decode in parallel (1: none); ``progress`` shows a bar on stderr.

    Returns:
        Every file's verdict.
    """
    root = Path(dataset_dir).resolve()
    per_class = list_class_files(root, classes, collections)
    paths = [p for label in classes for p in per_class[label]]
    labels = [label for label in classes for _ in per_class[label]]
    check = functools.partial(check_file, limits=limits)
    verdicts = ordered_map(
        check, paths, workers=workers, min_parallel=_PARALLEL_MIN_FILES, desc="validate", unit="file", progress=progress
    )
    checks = tuple(
        FileCheck(path.relative_to(root).as_posix(), label, category, reason)
        for path, label, (category, reason) in zip(paths, labels, verdicts, strict=True)
    )
    for item in checks:
        if not item.usable:
            log.debug("%s: %s (%s)", item.path, item.category, item.reason)
    return ValidationResult(root, tuple(classes), checks)


def quarantine(result: ValidationResult, folder: str | os.PathLike) -> dict[str, Path]:
    """Move the files that are not usable to ``folder``, keeping their relative paths.

    Args:
        result: A validation result.
        folder: Where to move them; must be outside the dataset folder.

    Returns:
        The new location of each moved file, by relative path.

    Raises:
        DatasetError: ``folder`` is inside the dataset folder, a destination
            already exists, or a file cannot be moved. Destinations are
            checked before anything moves.
    """
    target = _quarantine_folder(result.dataset_dir, folder)
    moves = {c.path: target / PurePosixPath(c.path) for c in result.checks if not c.usable}
    taken = [str(dest) for dest in moves.values() if dest.exists()]
    if taken:
        raise DatasetError(
            f"{len(taken)} quarantine destination(s) already exist, e.g. {taken[0]!r}; nothing was moved"
        )
    for relative, dest in moves.items():
        try:
            ensure_dir(dest.parent)
            shutil.move(result.dataset_dir / PurePosixPath(relative), dest)
        except OSError as exc:
            raise DatasetError(f"cannot move {relative!r} to quarantine: {exc.strerror or exc}") from exc
        log.info("quarantined %s -> %s", relative, dest)
    return moves


def _quarantine_folder(dataset_dir: Path, folder: str | os.PathLike) -> Path:
    """Resolve the quarantine folder, refusing one inside the dataset folder."""
    target = Path(folder).resolve()
    root = Path(dataset_dir).resolve()
    if target == root or root in target.parents:
        raise DatasetError(f"quarantine folder {str(target)!r} must be outside the dataset folder {str(root)!r}")
    return target


def write_manifest(result: ValidationResult, path: str | os.PathLike) -> Path:
    """Write the usable files per class as JSON (the format :func:`read_manifest` reads)."""
    manifest = {
        "dataset_dir": str(result.dataset_dir),
        "classes": list(result.classes),
        "files": result.usable_files(),
    }
    return write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")


def write_report(result: ValidationResult, path: str | os.PathLike, moved: dict[str, Path] | None = None) -> Path:
    """Write the counts per class and category and every file that is not plain valid."""
    moved = moved or {}
    counts = result.counts()
    report = {
        "dataset_dir": str(result.dataset_dir),
        "classes": list(result.classes),
        "categories": list(CATEGORIES),
        "counts": counts,
        "in_manifest": {label: sum(row[c] for c in USABLE) for label, row in counts.items()},
        "bad_files": [
            {"path": c.path, "class": c.label, "category": c.category, "reason": c.reason}
            | ({"quarantined_to": str(moved[c.path])} if c.path in moved else {})
            for c in result.checks
            if not c.usable
        ],
        "mislabelled": [
            {"path": c.path, "class": c.label, "reason": c.reason}
            for c in result.checks
            if c.category == "valid_mislabelled"
        ],
    }
    return write_text_atomic(path, json.dumps(report, indent=2) + "\n")


def read_manifest(path: str | os.PathLike) -> tuple[Path, dict[str, list[Path]]]:
    """Read a manifest written by :func:`write_manifest`.

    Args:
        path: The manifest file.

    Returns:
        The dataset folder and the absolute paths of the usable files per
        class, classes in label order.

    Raises:
        DatasetError: The file is missing, not JSON, or not shaped like a manifest.
    """
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(f"manifest {str(path)!r} does not exist; run python -m catdog.data.validate first") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"manifest {str(path)!r} cannot be read as JSON: {exc}") from exc

    def bad(what: str) -> DatasetError:
        return DatasetError(f"manifest {str(path)!r} is malformed: {what}")

    if not isinstance(manifest, dict) or set(manifest) != {"dataset_dir", "classes", "files"}:
        raise bad("expected exactly the keys dataset_dir, classes and files")
    root, classes, files = manifest["dataset_dir"], manifest["classes"], manifest["files"]
    if not isinstance(root, str) or not Path(root).is_absolute():
        raise bad(f"dataset_dir must be an absolute path, got {root!r}")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise bad(f"classes must be a list of names, got {classes!r}")
    if not isinstance(files, dict) or list(files) != classes:
        raise bad(
            f"files must map each class in order {classes!r}, got {list(files) if isinstance(files, dict) else files!r}"
        )
    dataset_dir = Path(root)
    result = {}
    for label, names in files.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise bad(f"files.{label} must be a list of paths")
        for name in names:
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                raise bad(f"files.{label} holds {name!r}, which is not inside dataset_dir")
        result[label] = [dataset_dir / PurePosixPath(n) for n in names]
    return dataset_dir, result


def format_table(result: ValidationResult) -> str:
    """Render the counts as a plain-text table, one row per category."""
    counts = result.counts()
    columns = (*result.classes, "total")
    rows = [(category, *(counts[c][category] for c in columns)) for category in CATEGORIES]
    rows.append(("all files", *(sum(counts[c].values()) for c in columns)))
    rows.append(("in manifest", *(sum(counts[c][u] for u in USABLE) for c in columns)))
    first = max(len(r[0]) for r in rows)
    widths = [max(len(c), *(len(f"{r[i + 1]:,}") for r in rows)) for i, c in enumerate(columns)]
    lines = ["category".ljust(first) + "".join(f"  {c:>{w}}" for c, w in zip(columns, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    for name, *values in rows:
        lines.append(name.ljust(first) + "".join(f"  {v:>{w},}" for v, w in zip(values, widths, strict=True)))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m catdog.data.validate``: check the dataset and write the manifest."""
    parser = make_parser("python -m catdog.data.validate", "Decode every dataset file and list the usable ones.")
    parser.add_argument("--quarantine", metavar="DIR", help="move the files that are not usable into DIR")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes decoding in parallel (default: one per CPU)"
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    settings = settings_from_args(args)
    if args.quarantine:
        _quarantine_folder(settings.data.dataset_dir, args.quarantine)  # fail before the long part

    result = validate_dataset(
        settings.data.dataset_dir,
        settings.data.classes,
        collections=settings.data.collections,
        limits=ImageLimits.from_serving(settings.serving),
        workers=args.workers,
        progress=True,
    )
    moved = quarantine(result, args.quarantine) if args.quarantine else {}
    artifacts = ensure_dir(settings.data.artifacts_dir)
    manifest = write_manifest(result, paths.manifest(artifacts))
    report = write_report(result, paths.validation_report(artifacts), moved)

    print(f"dataset   {result.dataset_dir}")
    print(format_table(result))
    noted = [check for check in result.checks if check.category != "valid"]
    for check in noted[:_LISTED_FILES]:
        print(f"  {check.category:<17} {check.path}: {check.reason}")
    if len(noted) > _LISTED_FILES:
        print(f"  ... and {len(noted) - _LISTED_FILES:,} more in the report")
    if moved:
        print(f"moved {len(moved)} file(s) into {Path(args.quarantine).resolve()}")
    print(f"manifest  {manifest}")
    print(f"report    {report}")
    empty = [label for label, files in result.usable_files().items() if not files]
    if empty:
        raise DatasetError(f"no usable image in class folder(s) {', '.join(empty)}; see {report}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
