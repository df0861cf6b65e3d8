"""The data pack and the Keras-layer augmentation that catdog.training.train_pack trains with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from catdog.data import pack
from catdog.errors import DatasetError


def _images(n: int, size: int = 24, seed: int = 0) -> np.ndarray:
    """Smooth random pictures (WebP, like JPEG, is kind to smooth images and harsh on noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(0, 255, 3)
        out[i] = np.stack([a * x, b * y, c * (1 - x) * y + 40], axis=-1).clip(0, 255).astype(np.uint8)
    return out


def test_webp_round_trip_is_close():
    image = _images(1, size=48)[0]
    data = pack.encode_webp(image, quality=90)
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    back = pack.decode_webp(data)
    assert back.shape == image.shape and back.dtype == np.uint8
    assert np.abs(back.astype(float) - image).mean() < 4


def test_write_and_read_pack_keep_order_labels_sides_and_spec(tmp_path: Path):
    train_images, val_images = _images(37, seed=1), _images(5, seed=2)
    parts = {
        "train": (train_images, [i % 3 for i in range(37)], [40 + 7 * i for i in range(37)]),
        "validation": (val_images, [2, 1, 0, 1, 2], [500, 64, 96, 30, 1200]),
    }
    pack.write_pack(tmp_path, parts, {"classes": ["Cat", "Dog", "Other"]}, quality=95)
    spec, read = pack.read_pack(tmp_path)
    assert spec["classes"] == ["Cat", "Dog", "Other"] and spec["quality"] == 95
    assert spec["parts"] == ["train", "validation"]
    for part, (images, labels, sides) in parts.items():
        decoded, decoded_labels, decoded_sides = read[part]
        assert decoded.shape == images.shape
        assert decoded_labels.tolist() == list(labels)
        assert decoded_sides.tolist() == list(sides)
        # Each image comes back in its own place, not just some image.
        errors = np.abs(decoded.astype(float) - images).mean(axis=(1, 2, 3))
        assert errors.max() < 4
        assert np.abs(decoded[0].astype(float) - images[1]).mean() > 10


def test_a_pack_from_before_sides_were_packed_reads_with_none(tmp_path: Path):
    pack.write_pack(tmp_path, {"train": (_images(3), [0, 1, 2], [50, 60, 70])}, {}, quality=90)
    with np.load(tmp_path / "pack.npz") as columns:
        older = {key: columns[key] for key in columns.files if key != "train_sides"}
    np.savez(tmp_path / "pack.npz", **older)
    _, read = pack.read_pack(tmp_path)
    assert read["train"][1].tolist() == [0, 1, 2] and read["train"][2] is None


def test_read_pack_reports_a_missing_pack(tmp_path: Path):
    with pytest.raises(DatasetError, match="cannot read the pack"):
        pack.read_pack(tmp_path)


def _augment(settings, images, **changes):
    import keras

    from catdog.data.augment import augmentation_layer

    aug = settings.training.augmentation.model_copy(update=changes)
    keras.utils.set_random_seed(7)
    layer = augmentation_layer(aug, seed=3)
    return np.asarray(layer(images, training=True)), np.asarray(layer(images, training=False))


NONE = {
    "flip": False,
    "crop_scale": (1.0, 1.0),
    "crop_aspect": (1.0, 1.0),
    "low_res_share": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
}


def test_augmentation_layer_with_everything_off_returns_the_pixels(settings):
    images = _images(4)
    trained, served = _augment(settings, images, **NONE)
    assert served.dtype == np.float32 and np.array_equal(served, images.astype(np.float32))
    np.testing.assert_allclose(trained, images.astype(np.float32), atol=1e-3)


def test_augmentation_layer_flips_about_half_the_images(settings):
    images = _images(32)
    trained, _ = _augment(settings, images, **{**NONE, "flip": True})
    flipped = [np.allclose(t, i[:, ::-1], atol=1e-3) for t, i in zip(trained, images, strict=True)]
    kept = [np.allclose(t, i, atol=1e-3) for t, i in zip(trained, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 4 <= sum(flipped) <= 28


def test_augmentation_layer_crops_zoom_in(settings):
    # A quarter of the area, square: every output is a 2x zoom of one quadrant-sized box.
    images = _images(8, size=32)
    trained, _ = _augment(settings, images, **{**NONE, "crop_scale": (0.25, 0.25)})
    assert trained.shape == images.shape
    assert not np.allclose(trained, images, atol=1)
    # Zooming a linear ramp halves its slope.
    slope_in = np.diff(images[..., 0].astype(float), axis=2).mean()
    slope_out = np.diff(trained[..., 0], axis=2).mean()
    assert slope_out == pytest.approx(slope_in / 2, rel=0.15)


def test_augmentation_layer_low_resolution_blurs(settings):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (6, 48, 48, 3)).astype(np.uint8)
    trained, _ = _augment(settings, noise, **{**NONE, "low_res_share": 1.0, "low_res_sides": (16, 24)})
    detail_in = np.abs(np.diff(noise.astype(float), axis=1)).mean()
    detail_out = np.abs(np.diff(trained, axis=1)).mean()
    assert detail_out < detail_in / 2
    assert trained.mean() == pytest.approx(noise.mean(), rel=0.05)


def test_train_pack_offers_the_registered_architectures(monkeypatch: pytest.MonkeyPatch, capsys):
    from catdog.models.build import BUILDERS
    from catdog.training import train_pack

    monkeypatch.setattr(train_pack, "BUILDERS", {**BUILDERS, "mobilenet": None})
    with pytest.raises(SystemExit):
        train_pack.main(["--help"])
    assert "{inception,mobilenet,resnet}" in capsys.readouterr().out
