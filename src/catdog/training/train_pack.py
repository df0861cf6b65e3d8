"""Train from a data pack for a fixed time, on any Keras backend.

``python -m catdog.training.train_pack PACK_DIR --architecture resnet --minutes 6 --out DIR``

This is how a model is trained on a GPU machine (one that has JAX, not
TensorFlow, and takes only a small upload): the
pack (:mod:`catdog.data.pack`) carries the training and validation images, each
photo's shorter side as stored, and the settings. The network comes from the
same builders as ``catdog.training.train`` and trains in the same loop
(:mod:`catdog.training.loop`); only the feeding differs: numpy arrays, with the
augmentation inside the compiled step (:func:`catdog.data.augment.augmentation_layer`),
each image shrunk with the same per-image chance as ``catdog.training.train`` gives it.

The run is given minutes (``--minutes`` sets ``training.time_budget_minutes``),
at most ``--max-epochs`` (``training.epochs``): the loop's plan re-counts after
each epoch how many fit in the time left and lays its cosine learning-rate
decay over them, so it ends on a low rate whatever the machine's speed. After
each epoch it saves the network's weights and a run record, so a run cut off
still leaves its last epoch. ``python -m catdog.training.train --adopt DIR`` then
scores the result here, on the original files, and writes the model and its metrics.

It runs on whichever Keras backend ``KERAS_BACKEND`` names: JAX on the GPU
machine (see the model card for the command), TensorFlow in the tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from catdog import cli
from catdog.dirs import write_json_atomic
from catdog.errors import DatasetError
from catdog.models.build import BUILDERS

log = logging.getLogger("catdog.training.train_pack")


def hardware() -> str:
    """The device the backend trains on, in words."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.device_kind} ({device.platform}), {os.cpu_count()} CPU cores, JAX {jax.__version__}"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Keras backend {backend}"


def saver_callback(model, out_dir: Path, record: dict, plan):
    """A callback that saves the network's weights and the run record after every epoch.

    Args:
        model: The network (without the augmentation layer around it).
        out_dir: Where the weights and ``<arch>.run.json`` go.
        record: The run record so far; each epoch adds its history and facts.
        plan: The fit's :func:`catdog.training.loop.epoch_plan`.
    """
    import keras

    arch = record["settings"]["architecture"]
    weights = out_dir / f"{arch}.weights.h5"
    partial = out_dir / f"{arch}.partial.weights.h5"

    class Saver(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model.save_weights(partial)
            os.replace(partial, weights)
            for key, value in (logs or {}).items():
                record["history"].setdefault(key, []).append(float(value))
            record.update(
                epochs_run=epoch + 1,
                epochs_planned=plan.planned,
                **plan.facts(record["train_images"]),
                weights_file=weights.name,
            )
            write_json_atomic(out_dir / f"{arch}.run.json", record)

    return Saver()


def train_from_pack(training, spec: dict, parts: dict, out_dir: Path, min_epochs: int = 3) -> dict:
    """Train ``training.architecture`` on a decoded pack in the loop of :mod:`catdog.training.loop`.

    Args:
        training: The :class:`catdog.config.TrainingSettings` to train with; the
            run has at most ``epochs``, within ``time_budget_minutes`` when set.
        spec: The pack's spec (classes, class weights, provenance).
        parts: ``{"train": (images, labels, shorter sides), "validation": (images, labels, shorter sides)}``
            as :func:`catdog.data.pack.read_pack` gives them.
        out_dir: Where the weights and ``<arch>.run.json`` go.
        min_epochs: With a time budget, the fewest epochs planned.

    Returns:
        The run record (also in ``<arch>.run.json``).

    Raises:
        DatasetError: The pack's images are not at ``training.image_size``.
    """
    import keras

    from catdog.data.augment import augmentation_layer
    from catdog.data.dataset import with_synthetic_other
    from catdog.models import build_model
    from catdog.training import loop

    (x_train, y_train, sides), (x_val, y_val, _) = parts["train"], parts["validation"]
    if x_train.shape[1:] != (training.image_size, training.image_size, 3):
        raise DatasetError(f"the pack's images are {x_train.shape[1:]}, the settings want {training.image_size} px")
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(training.seed)
    classes = spec["classes"]
    eye = np.eye(len(classes), dtype=np.float32)
    weights = np.asarray(spec["class_weights"], dtype=np.float32)

    shares = loop.training_low_res_shares(training.augmentation, classes, y_train, sides, training.synthetic_other)
    x_train, y_train = with_synthetic_other(x_train, y_train, classes, training.synthetic_other, training.seed)
    model = build_model(training, len(classes))
    # The augmentation runs inside the compiled step; each image's chance of being shrunk comes in beside it.
    pixels = keras.Input(x_train.shape[1:], dtype="uint8", name="pixels")
    share = keras.Input((), name="low_res_share")
    augmented = augmentation_layer(training.augmentation, training.seed)(pixels, low_res_share=share)
    trainer = keras.Model({"pixels": pixels, "low_res_share": share}, model(augmented))
    plan = loop.epoch_plan(training, min_epochs)
    device = hardware()
    log.info(
        "%s: %s parameters, %d px, %d training images, batch %d, %s min on %s",
        training.architecture,
        f"{model.count_params():,}",
        training.image_size,
        len(x_train),
        training.batch_size,
        training.time_budget_minutes,
        device,
    )
    record = {
        "settings": training.model_dump(mode="json"),
        "classes": classes,
        "class_weights": dict(zip(classes, spec["class_weights"], strict=True)),
        "pack": {key: spec.get(key) for key in ("format", "quality", "split_sha256", "manifest_sha256", "counts")},
        "train_images": len(x_train),
        "budget_seconds": plan.budget_seconds,
        "hardware": device,
        "versions": {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__},
        "history": {},
    }
    loop.fit(
        trainer,
        training,
        plan,
        len(x_train),
        [saver_callback(model, out_dir, record, plan)],
        x={"pixels": x_train, "low_res_share": shares},
        y=eye[y_train],
        sample_weight=weights[y_train],
        batch_size=training.batch_size,
        validation_data=({"pixels": x_val, "low_res_share": np.zeros(len(x_val), np.float32)}, eye[y_val]),
        shuffle=True,
    )
    return record


def main(argv: Sequence[str] | None = None) -> int:
    # No --config: the settings travel in the pack (catdog.data.pack reads config.yaml).
    parser = argparse.ArgumentParser(prog="catdog train_pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("pack_dir", type=Path, help="folder with pack.npz and spec.json (catdog.data.pack)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the weights and run record")
    parser.add_argument("--architecture", choices=sorted(BUILDERS), help="default: the pack's")
    parser.add_argument(
        "--minutes", type=float, required=True, help="time for the run, compilation included (time_budget_minutes)"
    )
    parser.add_argument("--min-epochs", type=int, default=3, help="the fewest epochs, however slow (default 3)")
    parser.add_argument("--max-epochs", type=int, default=200, help="the most epochs (training.epochs; default 200)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    cli.configure_logging(args.verbose)

    from catdog.config import TrainingSettings
    from catdog.data.pack import read_pack

    started = time.perf_counter()
    spec, parts = read_pack(args.pack_dir)
    log.info("decoded the pack in %.1f s: %s", time.perf_counter() - started, json.dumps(spec["counts"]))
    training = TrainingSettings.model_validate(
        {
            **spec["training"],
            "architecture": args.architecture or spec["training"]["architecture"],
            "epochs": args.max_epochs,
            "time_budget_minutes": args.minutes,
            # float32: with mixed_bfloat16 on JAX, BatchNorm's moving statistics
            # did not follow training (72% in training, 52% predicting, in a test here).
            "mixed_precision": False,
        }
    )
    record = train_from_pack(training, spec, parts, args.out, min_epochs=args.min_epochs)
    history = record["history"]
    print(
        f"{training.architecture}: {record['epochs_run']} epochs in {record['wall_time_seconds'] / 60:.1f} min, "
        f"validation accuracy {history['val_accuracy'][-1]:.4f} (best {max(history['val_accuracy']):.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
