"""Split by class and source, class weights, and the batch augmentation."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from catdog.data.dataset import class_weights, example_weights, make_split, source_of
from catdog.errors import DatasetError

SPLITS = ("train", "validation", "test")


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("petimages/PetImages/Cat/12.jpg", "PetImages"),
        ("extra/Extra/Other/flowers_0012.jpg", "Extra/flowers"),
        ("extra/Extra/Cat/oxford_data_pet_Bengal_1_f65.jpg", "Extra/oxford"),
        ("Cat/1.jpg", "dataset"),
        ("x/Pets/Dog/12_3.jpg", "Pets"),  # a number before "_" is no source name
        ("broad/Broad/Other/cal101_chair_0a1b.webp", "Broad/cal101"),  # letters then digits: a source name
        ("x/Pets/Dog/2cats_3.jpg", "Pets"),
    ],
)
def test_source_of(path: str, source: str) -> None:
    assert source_of(path) == source


def _two_collections() -> dict[str, list[str]]:
    return {
        "Cat": [f"p/PetImages/Cat/{i}.jpg" for i in range(200)] + [f"e/Extra/Cat/oxford_{i}.jpg" for i in range(40)],
        "Dog": [f"p/PetImages/Dog/{i}.jpg" for i in range(200)] + [f"e/Extra/Dog/oxford_{i}.jpg" for i in range(60)],
        "Other": [f"e/Extra/Other/{kind}_{i}.jpg" for kind in ("flowers", "lfw", "trashnet") for i in range(30)],
    }


def test_split_is_stratified_by_class_and_source() -> None:
    files = _two_collections()
    split = make_split(files, ["Cat", "Dog", "Other"], 0.1, 0.1, seed=7)
    parts = [set(split.files[p]) for p in SPLITS]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]), "a file in two parts"
    assert set().union(*parts) == {f for group in files.values() for f in group}, "a file lost"
    everything = Counter(source_of(f) for group in files.values() for f in group)
    for part in ("validation", "test"):
        counts = Counter(source_of(f) for f in split.files[part])
        assert set(counts) == set(everything), f"a source is missing from the {part} part"
        for source, total in everything.items():
            assert counts[source] == round(total * 0.1), (part, source)
    for part in SPLITS:
        for path, label in zip(split.files[part], split.labels[part], strict=True):
            assert f"/{split.classes[label]}/" in path


def test_whole_folder_sources_keep_the_class_only_split_of_v1() -> None:
    """PetImages falls into the same parts as a split of PetImages alone, by class."""
    files = _two_collections()
    both = make_split(files, ["Cat", "Dog", "Other"], 0.1, 0.1, seed=1337)
    pets_only = {c: [f for f in files[c] if "PetImages" in f] for c in ("Cat", "Dog")}
    alone = make_split(pets_only, ["Cat", "Dog"], 0.1, 0.1, seed=1337)
    for part in SPLITS:
        assert {f for f in both.files[part] if "PetImages" in f} == set(alone.files[part])


def test_split_changes_with_the_seed() -> None:
    files = _two_collections()
    a = make_split(files, ["Cat", "Dog", "Other"], 0.1, 0.1, seed=1)
    b = make_split(files, ["Cat", "Dog", "Other"], 0.1, 0.1, seed=2)
    assert a.files["test"] != b.files["test"]
    assert a == make_split(files, ["Cat", "Dog", "Other"], 0.1, 0.1, seed=1)


def test_class_weights() -> None:
    labels = [0] * 60 + [1] * 30 + [2] * 10
    assert class_weights(labels, 3, 0.0) == pytest.approx([1.0, 1.0, 1.0])
    balanced = class_weights(labels, 3, 1.0)
    # Each class then adds the same total weight, and the mean example weighs 1.
    assert 60 * balanced[0] == pytest.approx(30 * balanced[1]) == pytest.approx(10 * balanced[2])
    assert (60 * balanced[0] + 30 * balanced[1] + 10 * balanced[2]) / 100 == pytest.approx(1.0)
    half = class_weights(labels, 3, 0.5)
    assert balanced[0] < half[0] < 1.0 < half[2] < balanced[2]


def test_example_weights_move_weight_inside_the_other_class_only() -> None:
    labels = np.array([0, 0, 1, 2, 2, 2, 2])
    weights = [1.5, 1.0, 0.5]
    multipliers = np.array([9.0, 9.0, 9.0, 1.0, 1.0, 1.0, 5.0])
    out = example_weights(labels, weights, 2, multipliers)
    # Cats and dogs keep their class's weight whatever their multiplier says.
    np.testing.assert_allclose(out[:3], [1.5, 1.5, 1.0])
    # The Other class keeps its total (4 x 0.5) and its weighted photo weighs five times the others.
    assert out[3:].sum() == pytest.approx(2.0)
    assert out[6] == pytest.approx(5 * out[3]) and out[3] == pytest.approx(out[5])
    np.testing.assert_allclose(example_weights(labels, weights, 2), np.array(weights)[labels])
    # Without an Other class the multipliers mean nothing.
    np.testing.assert_allclose(example_weights(labels[:3], weights[:2], None, multipliers[:3]), [1.5, 1.5, 1.0])


# --- augmentation ------------------------------------------------------------


def _settings(**changes):
    from catdog.config import AugmentationSettings

    values = dict(
        flip=False,
        crop_scale=(1.0, 1.0),
        crop_aspect=(1.0, 1.0),
        low_res_share=0.0,
        low_res_sides=(8, 8),
        contrast=0.0,
        brightness=0.0,
    )
    values.update(changes)
    return AugmentationSettings(**values)


def _stripes(n: int = 8, side: int = 64) -> np.ndarray:
    x = np.zeros((n, side, side, 3), np.uint8)
    x[:, :, ::2] = 255  # one-pixel vertical stripes: all high frequency
    return x


def _augmented(images, aug, shares=None, labels=None, seed: int = 3):
    """One augmented training batch through :func:`catdog.data.dataset.tf_dataset`, with its labels."""
    from catdog.data.dataset import tf_dataset

    labels = np.zeros(len(images), dtype=np.int64) if labels is None else labels
    out, one_hot = next(iter(tf_dataset(images, labels, 3, len(images), True, aug, seed, low_res_shares=shares)))
    return out.numpy(), one_hot.numpy().argmax(axis=1)


def test_augmentation_off_is_the_identity() -> None:
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    out, _ = _augmented(images, _settings())
    assert out.dtype == np.float32 and np.allclose(np.sort(out, axis=0), np.sort(images, axis=0), atol=1e-3)


def test_random_crops_change_framing_and_keep_the_size_and_range() -> None:
    ramp = np.tile(np.linspace(0, 255, 48, dtype=np.float32)[None, :, None], (48, 1, 3))
    images = np.stack([ramp] * 16).astype(np.uint8)
    aug = _settings(crop_scale=(0.3, 0.6), crop_aspect=(0.75, 1.333), brightness=0.2, contrast=0.2, flip=True)
    out, _ = _augmented(images, aug)
    assert out.shape == (16, 48, 48, 3)
    assert out.min() >= 0.0 and out.max() <= 255.0
    # A crop of at most 60% of the area never spans the whole ramp.
    spans = out[:, 24, -1, 0] - out[:, 24, 0, 0]
    assert (np.abs(spans) < 0.95 * 255).all()
    assert len({round(float(s), 1) for s in spans}) > 4, "every image got the same crop"


def _blurred(out: np.ndarray, images: np.ndarray) -> np.ndarray:
    return out.std(axis=(1, 2, 3)) < 0.5 * images[0].std()


def test_low_resolution_share_blurs_about_that_share() -> None:
    images = _stripes(n=400)
    out, _ = _augmented(images, _settings(low_res_share=0.25, low_res_sides=(12, 24)))
    blurred = _blurred(out, images)
    assert 0.15 < blurred.mean() < 0.35
    assert np.allclose(out[~blurred], images[~blurred])


def test_per_image_shares_choose_which_images_are_shrunk() -> None:
    images = _stripes(n=300)
    labels = np.repeat([0, 1, 2], 100)
    shares = np.array([1.0, 0.0, 0.5], dtype=np.float32)[labels]
    out, seen = _augmented(images, _settings(low_res_share=0.1, low_res_sides=(12, 24)), shares, labels)
    blurred = _blurred(out, images)
    assert blurred[seen == 0].all() and not blurred[seen == 1].any()
    assert 0.35 < blurred[seen == 2].mean() < 0.65


def test_low_res_shares_give_every_class_the_same_share_of_small_pictures() -> None:
    from catdog.data.augment import low_res_shares

    # Pets: 10% natively small; Other: 60%.
    labels = np.repeat([0, 1, 2], 100)
    small = np.zeros(300, dtype=bool)
    small[:10] = small[100:110] = small[200:260] = True
    shares = low_res_shares(labels, small, 0.2, balance=True)
    expected = 0.6 + 0.4 * 0.2  # the Other class's small share with its large photos shrunk at 0.2
    for c in range(3):
        mine = labels == c
        assert small[mine].mean() + (shares[mine & ~small]).sum() / mine.sum() == pytest.approx(expected)
    # Natively small photos, and the large photos of the class with most small ones, keep the configured share.
    assert shares[small] == pytest.approx(0.2) and shares[260:] == pytest.approx(0.2)
    assert shares[10:100] == pytest.approx((expected - 0.1) / 0.9)
    assert (low_res_shares(labels, small, 0.2, balance=False) == np.float32(0.2)).all()


def test_shorter_sides_reads_each_stored_size(tmp_path) -> None:
    from PIL import Image

    from catdog.data.dataset import shorter_sides

    for name, size in (("wide.png", (90, 40)), ("tall.jpg", (50, 120))):
        Image.new("RGB", size, "red").save(tmp_path / name)
    assert shorter_sides([str(tmp_path / "wide.png"), str(tmp_path / "tall.jpg")]).tolist() == [40, 50]
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="broken.jpg"):
        shorter_sides([str(tmp_path / "broken.jpg")])
