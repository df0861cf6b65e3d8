"""Generated pictures that are plainly neither a cat nor a dog.

The Other photos of the dataset are real scenes; nothing in them is a blank
wall, a colour test card or a screenful of stripes, and models trained on
them alone answered such pictures "Cat" with 96% confidence (a plain white
square, say). These are what a curious user uploads first. A few hundred
drawn pictures per kind, added to the training part's Other class
(``training.synthetic_other``), teach the model that a picture with no
animal in it is Other; a separately seeded set of the same kinds is scored
after training, so the figure is for pictures never trained on.

Every kind is drawn with numpy alone, from one seed, at the training size.
"""

from __future__ import annotations

import numpy as np

KINDS = ("plain", "linear gradient", "radial gradient", "noise", "blobs", "stripes", "checkerboard", "shapes")


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    return x, y


def _blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    return a * (1 - t[..., None]) + b * t[..., None]


def _plain(rng, size):
    # Half are greys, most of them near black or white (a U-shaped draw): a blank
    # page, a dark frame or an overexposed shot is the commonest "nothing".
    colour = np.full(3, rng.beta(0.4, 0.4) * 255) if rng.random() < 0.5 else _colour(rng)
    return np.broadcast_to(colour, (size, size, 3)) + rng.normal(0, rng.uniform(0, 6), (size, size, 3))


def _linear_gradient(rng, size):
    x, y = _grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    t = x * np.cos(angle) + y * np.sin(angle)
    return _blend(_colour(rng), _colour(rng), (t - t.min()) / (np.ptp(t) + 1e-9))


def _radial_gradient(rng, size):
    x, y = _grid(size)
    cx, cy = rng.uniform(0, 1, 2)
    t = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    return _blend(_colour(rng), _colour(rng), t / (t.max() + 1e-9))


def _noise(rng, size):
    if rng.random() < 0.5:
        return rng.uniform(0, 255, (size, size, 1)).repeat(3, axis=2)
    return rng.uniform(0, 255, (size, size, 3))


def _blobs(rng, size):
    # Coarse noise blown up: a mosaic of random colours.
    cells = int(rng.integers(2, 16))
    coarse = rng.uniform(0, 255, (cells, cells, 3))
    index = np.minimum((np.arange(size) * cells) // size, cells - 1)
    return coarse[index][:, index]


def _stripes(rng, size):
    x, y = _grid(size)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(0.03, 0.3)
    t = ((x * np.cos(angle) + y * np.sin(angle)) / period) % 1.0 < 0.5
    return _blend(_colour(rng), _colour(rng), t.astype(np.float64))


def _checkerboard(rng, size):
    x, y = _grid(size)
    cells = rng.uniform(2, 16)
    t = (np.floor(x * cells) + np.floor(y * cells)) % 2
    return _blend(_colour(rng), _colour(rng), t)


def _shapes(rng, size):
    x, y = _grid(size)
    image = np.broadcast_to(_colour(rng), (size, size, 3)).copy()
    for _ in range(int(rng.integers(1, 7))):
        cx, cy = rng.uniform(0, 1, 2)
        r = rng.uniform(0.05, 0.35)
        if rng.random() < 0.5:
            mask = (x - cx) ** 2 + (y - cy) ** 2 < r**2
        else:
            mask = (np.abs(x - cx) < r) & (np.abs(y - cy) < rng.uniform(0.05, 0.35))
        image[mask] = _colour(rng)
    return image


_DRAW = dict(
    zip(
        KINDS,
        (_plain, _linear_gradient, _radial_gradient, _noise, _blobs, _stripes, _checkerboard, _shapes),
        strict=True,
    )
)


def synthetic_images(count: int, size: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``count`` generated pictures, the kinds taking turns.

    Args:
        count: How many.
        size: Square side in pixels.
        seed: The same seed always draws the same pictures.

    Returns:
        ``(count, size, size, 3)`` uint8 pixels, and each picture's kind.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    kinds = [KINDS[i % len(KINDS)] for i in range(count)]
    for i, kind in enumerate(kinds):
        images[i] = np.clip(_DRAW[kind](rng, size), 0, 255).round().astype(np.uint8)
    return images, kinds


def plain_pictures(count: int, size: int, seed: int) -> np.ndarray:
    """``count`` pictures of one exact colour each, without noise: half greys from black to white, half colours.

    The "plain" kind of :func:`synthetic_images` carries a little sensor-like
    noise; an exported blank canvas has none, and its features sit apart
    from every noisy one. Used where a head is fitted on features
    (:mod:`catdog.training.head`).

    Returns:
        ``(count, size, size, 3)`` uint8 pixels.
    """
    rng = np.random.default_rng([seed, 0x9A1E])
    greys = count // 2
    colours = np.concatenate(
        [np.repeat(rng.uniform(0, 255, (greys, 1)), 3, axis=1), rng.uniform(0, 255, (count - greys, 3))]
    )
    return np.broadcast_to(colours.round().astype(np.uint8)[:, None, None, :], (count, size, size, 3)).copy()
