"""Leave-one-source-out: how well "neither" carries to kinds of photo never trained on.

``python -m catdog.leave_one_out --init-from model/inception.h5``

The Other photos come from a few sources only (flowers, clothing, faces,
household objects, other animals); real uploads are far more varied. For each
Other source, a short fine-tuning run trains without it, and the share of that
source's photos answered "Other" is the forecast for a kind of photo nobody
collected. A control run with every source measures the same protocol on
photos of kinds it did see, so the two columns differ only by the held-out
kind.

Every run uses the same short protocol (start from the given Cat/Dog model,
a seeded subsample of pets, every other Other photo, a few epochs), so the
figures compare with each other, not with the shipped model's longer run.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from catdog import cli, paths
from catdog.config import Settings
from catdog.dataset import Split, source_of
from catdog.dirs import write_json_atomic

log = logging.getLogger("catdog.leave_one_out")


def held_out_sources(split: Split, other: str = "Other") -> list[str]:
    """The sources of the ``other`` class, in name order."""
    index = split.classes.index(other)
    return sorted(
        {
            source_of(f)
            for part in split.files
            for f, y in zip(split.files[part], split.labels[part], strict=True)
            if y == index
        }
    )


def subset(split: Split, arrays: dict, part: str, keep) -> tuple[np.ndarray, list[int], list[str]]:
    """The images, labels and files of ``part`` for which ``keep(file, label)`` is true."""
    chosen = [i for i, (f, y) in enumerate(zip(split.files[part], split.labels[part], strict=True)) if keep(f, y)]
    return arrays[part][chosen], [split.labels[part][i] for i in chosen], [split.files[part][i] for i in chosen]


def run_one(
    settings: Settings,
    split: Split,
    arrays: dict,
    held_out: str | None,
    pets_per_class: int,
    init_from: Path,
    runs: Path,
) -> dict:
    """Train without ``held_out`` (or with every source, for None) and score the result.

    Returns:
        The held-out source's images answered Other (every part: none was
        trained on), the seen Other sources' test photos answered Other, and
        the test cats and dogs answered Other.
    """
    from catdog.train import fit, predict_in_batches

    other = split.classes.index("Other")
    rng = random.Random(f"{settings.training.seed}:leave-one-out")
    pets = {
        label: [f for f, y in zip(split.files["train"], split.labels["train"], strict=True) if y == label]
        for label in range(len(split.classes))
        if label != other
    }
    sampled = {f for files in pets.values() for f in rng.sample(files, min(pets_per_class, len(files)))}

    def trainable(f: str, y: int) -> bool:
        return (source_of(f) != held_out) if y == other else f in sampled

    parts, sub_arrays = {}, {}
    for part, keep in (
        ("train", trainable),
        ("validation", lambda f, y: source_of(f) != held_out),
        ("test", lambda f, y: True),
    ):
        sub_arrays[part], labels, files = subset(split, arrays, part, keep)
        parts[part] = (files, labels)
    sub = Split(split.classes, {p: v[0] for p, v in parts.items()}, {p: v[1] for p, v in parts.items()})
    name = held_out.replace("/", "-") if held_out else "control"
    if (runs / name).exists():
        shutil.rmtree(runs / name)
    (runs / name).mkdir(parents=True)
    model, run = fit(settings, sub, sub_arrays, runs / name, resume=False, init_from=init_from)

    def answered_other(images: np.ndarray) -> float:
        return (
            float((predict_in_batches(model, images).argmax(axis=1) == other).mean()) if len(images) else float("nan")
        )

    test_pets, _, _ = subset(split, arrays, "test", lambda f, y: y != other)
    seen_other, _, _ = subset(split, arrays, "test", lambda f, y: y == other and source_of(f) != held_out)
    result = {
        "held_out": held_out,
        "train_images": len(sub_arrays["train"]),
        "train_seconds": run["wall_time_seconds"],
        "test_pets_answered_other": answered_other(test_pets),
        "seen_other_test_flagged": answered_other(seen_other),
    }
    if held_out:
        unseen = np.concatenate(
            [
                subset(split, arrays, part, lambda f, y: y == other and source_of(f) == held_out)[0]
                for part in split.files
            ]
        )
        result["held_out_images"] = int(len(unseen))
        result["held_out_flagged"] = answered_other(unseen)
    else:
        for source in held_out_sources(split):
            images, _, _ = subset(split, arrays, "test", lambda f, y, s=source: y == other and source_of(f) == s)
            result.setdefault("test_flagged_by_source", {})[source] = answered_other(images)
    log.info("%s: %s", name, json.dumps(result))
    return result


def leave_one_source_out(
    settings: Settings, init_from: Path, pets_per_class: int = 3000, sources: Sequence[str] | None = None
) -> dict:
    """Run the control and one run per held-out Other source; write and return the table."""
    from catdog.train import load_arrays, prepare_split

    split, root, _ = prepare_split(settings)
    t = settings.training
    arrays = load_arrays(settings, split, root)
    runs = paths.run_dir(settings.data.artifacts_dir, "leave-one-out")
    table = {
        "protocol": {
            "init_from": str(init_from),
            "pets_per_class": pets_per_class,
            "epochs": t.epochs,
            "image_size": t.image_size,
            "architecture": t.architecture,
        },
        "control": run_one(settings, split, arrays, None, pets_per_class, init_from, runs),
        "held_out": {},
    }
    for source in sources or held_out_sources(split):
        table["held_out"][source] = run_one(settings, split, arrays, source, pets_per_class, init_from, runs)
    write_json_atomic(paths.leave_one_out(settings.model.dir), table)
    print(format_table(table))
    return table


def format_table(table: dict) -> str:
    """Markdown table: flagged rate of each source when held out against when seen."""
    seen = table["control"].get("test_flagged_by_source", {})
    lines = [
        "| Other source | flagged when held out | flagged when trained on (control) | test pets called Other |",
        "|---|---:|---:|---:|",
    ]
    for source, row in table["held_out"].items():
        lines.append(
            f"| {source} | {row['held_out_flagged']:.1%} ({row['held_out_images']:,} photos) | "
            f"{seen.get(source, float('nan')):.1%} | {row['test_pets_answered_other']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.make_parser("catdog leave_one_out", "Estimate Other-flagging on kinds of photo never trained on.")
    parser.add_argument(
        "--init-from",
        type=Path,
        required=True,
        metavar="MODEL_H5",
        help="the model every run starts from (a Cat/Dog model that never saw Other photos)",
    )
    parser.add_argument("--pets-per-class", type=int, default=3000, help="cats and dogs sampled per run (default 3000)")
    parser.add_argument("--source", action="append", help="hold out only this source (repeatable; default: all)")
    args = parser.parse_args(argv)
    settings = cli.settings_from_args(args)
    leave_one_source_out(settings, args.init_from, args.pets_per_class, args.source)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
