"""Shared fixtures: a private config, generated images and the course's sample dataset.

Nothing here touches the real data: every image, archive and folder is made
in ``tmp_path``.
"""

from __future__ import annotations

import io
import os
import random
import tarfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from PIL import Image

from catdog.config import DEFAULT_CONFIG, Settings, load_config

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # how every Thumbs.db starts


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``slow`` unless the run selects them (``pytest -m slow``)."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with pytest -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_catdog_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's CATDOG_* variables out of every test."""
    for name in list(os.environ):
        if name.startswith("CATDOG"):
            monkeypatch.delenv(name)


@pytest.fixture
def shipped_config() -> dict:
    """The project's config.yaml as a plain, mutable mapping."""
    return yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))


@pytest.fixture
def config_file(tmp_path: Path, shipped_config: dict) -> Path:
    """A copy of config.yaml whose folders all lie inside ``tmp_path``."""
    data = shipped_config["data"]
    # One archive, the generated sample: PetImages/{Cat,Dog,Other}/.
    data["archives"] = {
        "petimages": {"source_url": str(tmp_path / "source" / "sample_data.zip"), "sha256": None, "folder": "PetImages"}
    }
    data["download_dir"] = str(tmp_path / "downloads")
    data["extract_dir"] = str(tmp_path / "raw")
    data["artifacts_dir"] = str(tmp_path / "artifacts")
    data["max_extract_bytes"] = 50_000_000
    # The generated sample photos are tiny (24x20); validation applies the serving limits.
    shipped_config["serving"]["min_side"] = 8
    shipped_config["model"]["dir"] = str(tmp_path / "model")
    shipped_config["model"]["path"] = str(tmp_path / "model" / "model.h5")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(shipped_config), encoding="utf-8")
    return path


@pytest.fixture
def settings(config_file: Path) -> Settings:
    """The settings of :func:`config_file`."""
    return load_config(config_file, environ={})


def encode_image(fmt: str = "JPEG", size: tuple[int, int] = (24, 20), seed: int = 0) -> bytes:
    """Encode a small random RGB picture in ``fmt`` (any format Pillow writes)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def image_bytes() -> Callable[..., bytes]:
    """``image_bytes(fmt="JPEG", size=(24, 20), seed=0)`` -> encoded picture."""
    return encode_image


def _tar_bytes(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.fixture
def sample_files() -> dict[str, tuple[bytes, str]]:
    """The course's sample: relative path -> (content, expected category)."""
    jpeg = encode_image("JPEG", seed=7)
    return {
        "Cat/1.jpg": (encode_image("JPEG", seed=1), "valid"),
        "Cat/2.jpg": (encode_image("JPEG", seed=2), "valid"),
        "Cat/10.jpg": (encode_image("JPEG", seed=3), "valid"),
        "Cat/666.jpg": (b"", "empty"),
        "Cat/Thumbs.db": (OLE_MAGIC + bytes(1016), "not_image"),
        "Cat/4.jpg": (jpeg[: len(jpeg) * 2 // 3], "corrupt"),
        "Dog/1.jpg": (encode_image("JPEG", seed=4), "valid"),
        "Dog/2.jpg": (encode_image("JPEG", seed=5), "valid"),
        "Dog/3.jpg": (encode_image("JPEG", seed=6), "valid"),
        "Dog/11.jpg": (encode_image("PNG", seed=8), "valid_mislabelled"),
        "Dog/12.jpg": (b"this is a text file, not a photo\n", "not_image"),
        "Dog/extra.tar": (_tar_bytes("inner.txt", b"hello"), "not_image"),
        "Other/flowers_1.jpg": (encode_image("JPEG", seed=9), "valid"),
        "Other/flowers_2.jpg": (encode_image("JPEG", seed=10), "valid"),
        "Other/lfw_1.jpg": (encode_image("JPEG", seed=11), "valid"),
    }


@pytest.fixture
def sample_zip(tmp_path: Path, sample_files: dict) -> Path:
    """``sample_data.zip``: ``PetImages/{Cat,Dog,Other}/`` with 3 photos each plus the junk."""
    path = tmp_path / "source" / "sample_data.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for relative, (content, _) in sample_files.items():
            archive.writestr(f"PetImages/{relative}", content)
    return path


@pytest.fixture
def sample_dataset(tmp_path: Path, sample_files: dict) -> Path:
    """The sample unpacked where the config's ``petimages`` archive goes: ``tmp_path/raw/petimages/PetImages``."""
    root = tmp_path / "raw" / "petimages" / "PetImages"
    for relative, (content, _) in sample_files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


# --- Inference and web app: a tiny model obeying the serving contract --------


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


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model (32x32 input) with a metrics.json beside it."""
    path = save_model(build_tiny_model(), tmp_path_factory.mktemp("tiny_model") / "model.h5")
    (path.parent / "metrics.json").write_text('{"test_accuracy": 0.5, "architecture": "tinynet"}', encoding="utf-8")
    return path


# The classes the app serves: the model's outcomes are a cat, a dog, or neither.
CLASSES = ("Cat", "Dog", "Other")
CLASSES_OVERRIDE = {"data.classes": list(CLASSES)}
CLASSES_ENV = {"CATDOG__DATA__CLASSES": "[" + ", ".join(CLASSES) + "]"}


@pytest.fixture(scope="session")
def three_class_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model (32x32 input) with three outputs (Cat, Dog, Other) and a metrics.json beside it."""
    path = save_model(build_tiny_model(classes=3), tmp_path_factory.mktemp("three_class_model") / "model.h5")
    (path.parent / "metrics.json").write_text('{"test_accuracy": 0.5, "architecture": "tinynet"}', encoding="utf-8")
    return path


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


@pytest.fixture(scope="session")
def colour_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The saved :func:`build_colour_model`."""
    return save_model(build_colour_model(), tmp_path_factory.mktemp("colour_model") / "model.h5")


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


@pytest.fixture
def photo_bytes() -> Callable[..., bytes]:
    """``photo_bytes(size=(160, 120), fmt="JPEG", seed=0)`` -> a photo-like picture."""
    return make_photo


@pytest.fixture(scope="session")
def app(three_class_model_path: Path):
    """The web app serving the three-class tiny model (built once: loading warms up TensorFlow)."""
    from app import create_app

    overrides = {"model.path": str(three_class_model_path), **CLASSES_OVERRIDE}
    return create_app({"TESTING": True, "CATDOG_OVERRIDES": overrides})


@pytest.fixture
def client(app):
    """A Flask test client of :func:`app`."""
    return app.test_client()


@pytest.fixture(scope="session")
def live_server(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """``start(model_path=None, ready_path="/ready", classes=("Cat", "Dog"), **options)`` -> a gunicorn server.

    It serves the tiny two-class model unless ``model_path`` names another file
    (then ``classes`` names its outputs), on 127.0.0.1, and is
    started once ``ready_path`` answers 200; all are stopped at the end.
    """
    from catdog.web.server import GunicornServer

    servers = []

    def start(
        model_path: Path | None = None, ready_path: str = "/ready", classes: tuple[str, ...] = ("Cat", "Dog"), **options
    ) -> GunicornServer:
        log = (tmp_path_factory.mktemp("gunicorn") / "gunicorn.log").open("w")
        # The classes are given explicitly, so the server matches its model whatever config.yaml names.
        env = {"CATDOG__DATA__CLASSES": "[" + ", ".join(classes) + "]", **options.pop("env", {})}
        server = GunicornServer(model_path or tiny_model_path, log, env=env, **options)
        servers.append(server)
        try:
            return server.start(ready_path=ready_path)
        except Exception:
            log.flush()
            print(Path(log.name).read_text())
            raise

    yield start
    for server in servers:
        server.stop()
        server.log.close()


@pytest.fixture(scope="session")
def pair_server(live_server):
    """One gunicorn shared by the load, concurrency and fuzz tests: 2 workers x 4 threads, as shipped.

    Workers are not recycled after ``max_requests`` here: the fault tests follow them by process id.
    """
    return live_server(workers=2, threads=4, env={"GUNICORN_MAX_REQUESTS": "0"})


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


@pytest.fixture
def huge_png() -> bytes:
    """A 100000 x 100000 PNG header (a decompression bomb), a few hundred bytes long."""
    return png_declaring(100_000, 100_000)
