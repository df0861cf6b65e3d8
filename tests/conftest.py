"""Shared fixtures: a private config, generated images and the course's sample dataset.

Nothing here touches the real data: every image, archive and folder is made
in ``tmp_path``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from catdog.config import Settings, load_config
from helpers import (
    CLASSES_OVERRIDE,
    OLE_MAGIC,
    build_colour_model,
    build_tiny_model,
    encode_image,
    make_photo,
    make_tiny_run,
    png_declaring,
    read_shipped_config,
    save_model,
    tar_bytes,
    write_test_config,
)


@pytest.fixture(autouse=True)
def _no_catdog_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's CATDOG_* variables out of every test."""
    for name in list(os.environ):
        if name.startswith("CATDOG"):
            monkeypatch.delenv(name)


@pytest.fixture
def shipped_config() -> dict:
    """The project's config.yaml as a plain, mutable mapping."""
    return read_shipped_config()


@pytest.fixture
def config_file(tmp_path: Path, shipped_config: dict) -> Path:
    """A copy of config.yaml whose folders all lie inside ``tmp_path``."""
    return write_test_config(tmp_path, shipped_config)


@pytest.fixture
def settings(config_file: Path) -> Settings:
    """The settings of :func:`config_file`."""
    return load_config(config_file, environ={})


@pytest.fixture
def image_bytes() -> Callable[..., bytes]:
    """``image_bytes(fmt="JPEG", size=(24, 20), seed=0)`` -> encoded picture."""
    return encode_image


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
        "Dog/extra.tar": (tar_bytes("inner.txt", b"hello"), "not_image"),
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


def _with_metrics(model_path: Path) -> Path:
    """Write the metrics.json the app reads beside ``model_path``."""
    model_path.with_name("metrics.json").write_text('{"test_accuracy": 0.5, "architecture": "tinynet"}', "utf-8")
    return model_path


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model (32x32 input) with a metrics.json beside it."""
    return _with_metrics(save_model(build_tiny_model(), tmp_path_factory.mktemp("tiny_model") / "model.h5"))


@pytest.fixture(scope="session")
def three_class_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model (32x32 input) with three outputs (Cat, Dog, Other) and a metrics.json beside it."""
    return _with_metrics(save_model(build_tiny_model(classes=3), tmp_path_factory.mktemp("three_class") / "model.h5"))


@pytest.fixture(scope="session")
def colour_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The saved :func:`build_colour_model`."""
    return save_model(build_colour_model(), tmp_path_factory.mktemp("colour_model") / "model.h5")


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


@pytest.fixture
def huge_png() -> bytes:
    """A 100000 x 100000 PNG header (a decompression bomb), a few hundred bytes long."""
    return png_declaring(100_000, 100_000)


# --- Training: a tiny generated dataset and networks -------------------------


@pytest.fixture
def tiny_run(config_file: Path) -> Path:
    """A config for a 32x32 two-module Inception and a validated generated dataset (see :func:`make_tiny_run`)."""
    return make_tiny_run(config_file)
