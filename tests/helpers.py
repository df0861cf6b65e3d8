"""Helpers the tests share: generated images, tiny models, damaged files, test configs and run folders.

Plain functions, imported with ``from helpers import ...``; the fixtures built
on them live in ``conftest.py``.
"""

from __future__ import annotations

import io
import random
import shutil
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from catdog.config import CONFIG_NAME, PROJECT_ROOT

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # how every Thumbs.db starts
# The tiny training dataset of the ``tiny_run`` fixture: side, photos per class, Other sources.
TINY_SIZE = 32
TINY_PER_CLASS = 24
TINY_OTHER_SOURCES = ("flowers", "lfw", "cars")


def encode_image(fmt: str = "JPEG", size: tuple[int, int] = (24, 20), seed: int = 0) -> bytes:
    """Encode a small random RGB picture in ``fmt`` (any format Pillow writes)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def tar_bytes(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def build_tiny_model(
    size: int = 32,
    *,
    channels: int = 3,
    classes: int = 2,
    features_name: str = "features",
    name: str = "tinynet",
):
    """A small Keras model shaped like ours: rescaling inside, a ``features``
    layer after the last convolution, ``Dense(classes, softmax)`` named ``predictions``."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(1234)
    inputs = keras.Input(shape=(size, size, channels), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)  # S/2
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.Activation("linear", name=features_name)(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def save_model(model, path: Path) -> Path:
    """Save ``model`` as legacy HDF5 (``.h5``), the format the app loads."""
    import warnings

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    return path


# The classes the app serves: the model's outcomes are a cat, a dog, or neither.
CLASSES = ("Cat", "Dog", "Other")
CLASSES_OVERRIDE = {"data.classes": list(CLASSES)}
CLASSES_ENV = {"CATDOG__DATA__CLASSES": "[" + ", ".join(CLASSES) + "]"}


def build_colour_model(size: int = 32):
    """A three-class model that answers by the image's main colour: red Cat, green Dog, blue Other.

    Its weights are set by hand, so a test can choose the answer (an "Other"
    among them) by the colour of the photo it sends.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = layers.Conv2D(3, 1, activation="relu", name="conv1")(x)
    x = layers.Activation("linear", name="features")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(3, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="colournet")
    model.get_layer("conv1").set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3), np.zeros(3, np.float32)])
    model.get_layer("predictions").set_weights([10 * np.eye(3, dtype=np.float32), np.zeros(3, np.float32)])
    return model


def solid_photo(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), fmt: str = "PNG") -> bytes:
    """A photo of one colour, with a little texture so that it is not a flat square."""
    pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
    pixels[...] = colour
    pixels[::4, ::4] = np.clip(np.array(colour, dtype=np.int16) - 40, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def make_photo(size: tuple[int, int] = (160, 120), fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A smooth, photo-like picture: a colour gradient with a bright disc."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([255 * x / width, 255 * y / height, np.full_like(x, 120.0)], axis=-1)
    cx, cy, radius = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height, min(size) / 4
    pixels[(x - cx) ** 2 + (y - cy) ** 2 < radius**2] = (250, 220, 90)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def damage(data: bytes, rng: random.Random) -> bytes:
    """Damage ``data`` the ways files get damaged: cut short, bits flipped, bytes overwritten, lost or added."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["truncate", "flip", "overwrite", "delete", "insert"])
        at = rng.randrange(len(buffer)) if buffer else 0
        if kind == "truncate":
            del buffer[at:]
        elif kind == "flip" and buffer:
            buffer[at] ^= 1 << rng.randrange(8)
        elif kind == "overwrite":
            chunk = rng.randbytes(rng.randint(1, 16))
            buffer[at : at + len(chunk)] = chunk
        elif kind == "delete":
            del buffer[at : at + rng.randint(1, 64)]
        else:
            buffer[at:at] = rng.randbytes(rng.randint(1, 64))
    return bytes(buffer)


def answers_from_threads(answer: Callable[[int], Any], count: int, repeats: int) -> dict[int, list]:
    """Call ``answer(i)`` ``repeats`` times in each of ``count`` threads running at once; the answers by ``i``."""
    answers: dict[int, list] = {}

    def work(index: int) -> None:
        answers[index] = [answer(index) for _ in range(repeats)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def pattern_picture(kind: str, seed: int) -> Image.Image:
    """Cats are bright discs, dogs horizontal stripes, Others vertical stripes: easy to learn apart."""
    rng = np.random.default_rng(seed)
    side = int(rng.integers(40, 90))
    y, x = np.mgrid[0:side, 0:side]
    base = rng.integers(0, 60, (side, side, 3))
    if kind == "Cat":
        cx, cy = rng.uniform(0.3, 0.7, 2) * side
        mask = (x - cx) ** 2 + (y - cy) ** 2 < (side / 4) ** 2
    elif kind == "Dog":
        mask = (y // max(2, side // 8)) % 2 == 0
    else:
        mask = (x // max(2, side // 8)) % 2 == 0
    base[mask] = (230, 230, 230)
    return Image.fromarray(base.astype(np.uint8))


# What a gunicorn worker does: import app.py, whose app reads its model from the environment.
LITERT_WORKER = """
import io, json, sys
from app import app
client = app.test_client()
data = open(sys.argv[1], "rb").read()
answer = client.post("/predict?explain=1", data={"file": (io.BytesIO(data), "a.jpg")})
info = client.get("/model").get_json()
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "h5py"))
print(json.dumps({"status": answer.status_code, "body": answer.get_json(), "info": info, "heavy": heavy}))
"""


def run_litert_worker(model_path: Path, classes: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> dict:
    """Serve ``model_path`` in a fresh process as a worker does, post one photo with ``?explain=1``.

    Returns:
        ``status`` and ``body`` of the answer, ``runtime`` and ``info`` from
        ``/model``, and ``heavy``: the TensorFlow, Keras or h5py modules the process imported.
    """
    import json
    import os
    import subprocess
    import sys

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(make_photo(seed=4))
    root = Path(__file__).resolve().parent.parent
    environ = {
        **os.environ,
        "CATDOG__MODEL__PATH": str(model_path),
        "CATDOG__DATA__CLASSES": json.dumps(classes),
        **(env or {}),
    }
    result = subprocess.run(
        [sys.executable, "-c", LITERT_WORKER, str(photo)],
        capture_output=True,
        text=True,
        cwd=root,
        env=environ,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    return {**answer, "runtime": answer["info"]["runtime"]}


def make_collection(folder: Path, photos: int = 10) -> dict[str, str | None]:
    """A photo collection for ``catdog classify`` with one bad file of each kind; file name -> expected error code.

    The limits it expects are the test config's (``serving.min_side`` 8); photos get ``None``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[bytes, str | None]] = {
        f"photo_{i:02d}.jpg": (make_photo(size=(64 + 8 * i, 48 + 4 * i), seed=i), None) for i in range(photos)
    }
    jpeg = make_photo(seed=99)
    ppm = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 120, 200)).save(ppm, format="PPM")
    files.update(
        {
            "album/red.png": (solid_photo((220, 30, 30)), None),
            "empty.jpg": (b"", "empty"),
            "notes.jpg": (b"this is a text file, not a photo\n", "not_image"),
            "thumbs.db": (OLE_MAGIC + bytes(1016), "not_image"),
            "cut.jpg": (jpeg[: len(jpeg) // 2], "corrupt"),
            "tiny.png": (encode_image("PNG", size=(4, 4)), "too_small"),
            "bomb.png": (png_declaring(100_000, 100_000), "too_large"),
            "portable.ppm": (ppm.getvalue(), "unsupported_format"),
        }
    )
    for name, (data, _) in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return {name: code for name, (_, code) in files.items()}


# --- Test configs and the tiny training run -----------------------------------


def read_shipped_config() -> dict:
    """The project's config.yaml as a plain, mutable mapping."""
    return yaml.safe_load((PROJECT_ROOT / CONFIG_NAME).read_text(encoding="utf-8"))


def write_test_config(root: Path, shipped_config: dict) -> Path:
    """Write ``root/config.yaml``: a copy of ``shipped_config`` whose folders all lie inside ``root``."""
    data = shipped_config["data"]
    # One archive, the generated sample: PetImages/{Cat,Dog,Other}/.
    data["archives"] = {
        "petimages": {"source_url": str(root / "source" / "sample_data.zip"), "sha256": None, "folder": "PetImages"}
    }
    data["download_dir"] = str(root / "downloads")
    data["extract_dir"] = str(root / "raw")
    data["artifacts_dir"] = str(root / "artifacts")
    data["max_extract_bytes"] = 50_000_000
    # The generated sample photos are tiny (24x20); validation applies the serving limits.
    shipped_config["serving"]["min_side"] = 8
    shipped_config["serving"]["site_dir"] = str(PROJECT_ROOT)  # the app's pages: read, never written
    shipped_config["model"]["dir"] = str(root / "model")
    shipped_config["model"]["path"] = str(root / "model" / "model.h5")
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(shipped_config), encoding="utf-8")
    return path


def make_tiny_run(config_file: Path) -> Path:
    """Turn ``config_file`` into a config for a 32x32 two-module Inception over a validated generated dataset.

    The Other photos come from three sources (file name prefixes: ``TINY_OTHER_SOURCES``), as in the real archives.
    """
    from catdog.data import validate

    config = yaml.safe_load(config_file.read_text())
    dataset = Path(config["data"]["extract_dir"]) / "petimages" / "PetImages"
    for label in ("Cat", "Dog", "Other"):
        (dataset / label).mkdir(parents=True)
        for i in range(TINY_PER_CLASS):
            name = f"{TINY_OTHER_SOURCES[i % 3]}_{i}.jpg" if label == "Other" else f"{i}.jpg"
            pattern_picture(label, seed=i + 1000 * ("Cat", "Dog", "Other").index(label)).save(dataset / label / name)
    training = config["training"]
    training.update(
        image_size=TINY_SIZE, batch_size=8, epochs=2, warmup_epochs=1, early_stopping_patience=0, synthetic_other=8
    )
    training["inception"].update(stem_filters=8, stages=[[[4, 4, 8, 2, 4, 4]], [[8, 4, 8, 2, 4, 4]]])
    training["resnet"].update(stem_filters=8, stage_filters=[8, 16], blocks_per_stage=[1, 1])
    config_file.write_text(yaml.safe_dump(config))
    assert validate.main(["--config", str(config_file)]) == 0
    return config_file


# Files of a run folder that may name the folder itself: configs, records, logs.
_TEXT_SUFFIXES = {".yaml", ".json", ".csv", ".txt", ".log"}


def copy_run(source: Path, target: Path) -> Path:
    """Copy the run folder ``source`` (config, dataset, artifacts, models) to ``target`` and point it there.

    Every absolute path to ``source`` inside its text files is rewritten, so the
    copy reads and writes only under ``target``: a test may change it freely.
    """
    shutil.copytree(source, target, symlinks=True)
    for path in target.rglob("*"):
        if path.suffix in _TEXT_SUFFIXES and path.is_file() and not path.is_symlink():
            text = path.read_text(encoding="utf-8")
            if str(source) in text:
                path.write_text(text.replace(str(source), str(target)), encoding="utf-8")
    return target
