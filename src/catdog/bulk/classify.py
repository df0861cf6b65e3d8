"""Classify a whole photo collection into one table: ``catdog classify SOURCE... --output predictions.parquet``.

SOURCE is a folder (walked), a glob or a ``.txt`` file listing paths (see
:func:`catdog.bulk.sources.list_files`). The table has one row per file (see
:mod:`catdog.bulk.table`); a file that cannot be judged gets the API's error
code and never stops the job. The same command run again after a stop goes
on where it stopped; ``--overwrite`` starts over. ``--engine ray`` runs the
job on Ray Data (requirements-bulk.txt), locally or on ``RAY_ADDRESS``.
The exit status is 0 when the table was written, whatever the files held.
See docs/bulk.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from catdog import cli
from catdog.bulk.job import Summary, run_job
from catdog.bulk.local import LocalPool
from catdog.bulk.replica import ReplicaSpec
from catdog.bulk.sources import list_files
from catdog.bulk.table import PartStore, check_format
from catdog.dirs import file_sha256
from catdog.errors import ModelError
from catdog.serving.inference import SHORT_HASH_LENGTH

ENGINES = ("local", "ray")


def cpu_count() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def format_summary(summary: Summary) -> str:
    """The summary for people: this run's speed, then the table's labels and errors."""
    counts = dict(summary.labels)
    counts.update({f"error {code}": count for code, count in summary.errors.items()})
    width = max(map(len, counts), default=0)
    lines = [
        f"classified {summary.classified:,} file(s) in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.1f} images/s)",
        f"table     {summary.output}: {summary.rows:,} row(s)",
        *(f"  {name:<{width}}  {count:>9,}" for name, count in counts.items()),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.make_parser("catdog classify", "Classify every photo of a collection into one resumable table.")
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="a folder, a glob, or a .txt file of paths")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="the table: .parquet, .csv or .jsonl (chosen by suffix)"
    )
    parser.add_argument("--overwrite", action="store_true", help="discard the output and start over")
    parser.add_argument("--engine", choices=ENGINES, default="local", help="local processes (default) or Ray Data")
    parser.add_argument(
        "--workers",
        type=int,
        help="model replicas: local processes (default: one per CPU) or Ray actors (default: one per cluster CPU)",
    )
    parser.add_argument("--ray-address", help="the Ray cluster to run on (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--model", type=Path, help="the .h5 model (default: model.path from the config)")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.ray_address and args.engine != "ray":
        parser.error("--ray-address needs --engine ray")
    settings = cli.settings_from_args(args)
    check_format(args.output)  # before listing a large collection

    output = args.output.resolve()
    files = list_files(args.sources, exclude=[output, PartStore(output, ()).folder])
    # Local workers share this machine's CPUs: each runtime gets its share of threads. A Ray actor holds one CPU.
    workers = args.workers or (None if args.engine == "ray" else cpu_count())
    threads = 1 if args.engine == "ray" else max(1, cpu_count() // workers)
    spec = ReplicaSpec.from_settings(settings, args.model, threads=threads)
    model_version = _model_version(spec.model_path)
    if args.engine == "ray":
        from catdog.bulk.ray_engine import RayEngine

        engine = RayEngine(spec, workers, settings.bulk.batch_size, args.ray_address)
    else:
        engine = LocalPool(spec, workers, settings.bulk.batch_size)
    summary = run_job(
        files,
        output,
        engine,
        classes=spec.classes,
        model_version=model_version,
        part_files=settings.bulk.part_files,
        overwrite=args.overwrite,
        progress=True,
    )
    print(format_summary(summary))
    return 0


def _model_version(model_path: str) -> str:
    """The short sha256 a replica of ``model_path`` writes in its rows (:attr:`Predictor.short_hash`)."""
    try:
        return file_sha256(model_path)[:SHORT_HASH_LENGTH]
    except OSError as exc:
        raise ModelError(f"cannot read model file {model_path!r}: {exc.strerror or exc}") from exc


if __name__ == "__main__":
    sys.exit(cli.run(main))
