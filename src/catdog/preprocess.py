"""The one preprocessing function shared by training, evaluation and serving.

An image becomes a ``(size, size, 3)`` uint8 array: EXIF orientation
applied, any mode converted to RGB, the whole picture resized (stretched) to
a square. The training archive's photos were squashed to squares the same
way, so stretching at serving time shows the model what it learned from;
rescaling to [0, 1] happens inside the model.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps

from catdog.errors import InvalidImage

# Pillow's own bomb check is a warning at MAX_IMAGE_PIXELS; we check the
# declared size ourselves before decoding, so silence the duplicate.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

DEFAULT_MAX_PIXELS = 40_000_000
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def open_image(
    source: bytes | str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    accepted_formats: Iterable[str] | None = None,
    draft_size: int | None = None,
) -> Image.Image:
    """Open, check and fully decode an image as RGB with EXIF orientation applied.

    Args:
        source: Encoded bytes or a file path.
        max_pixels: Largest declared width x height accepted; checked from the
            header, before any pixel is decoded.
        min_side: Smallest accepted width or height.
        accepted_formats: Pillow format names (``JPEG``, ``PNG``...) accepted;
            ``None`` accepts every format Pillow reads.
        draft_size: If given, a JPEG may be decoded at a reduced scale as
            long as both sides stay at least this large.

    Returns:
        A loaded RGB image.

    Raises:
        InvalidImage: Empty input, not an image, an unaccepted format, a size
            outside the limits, or data that fails to decode.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise InvalidImage("empty", "the file is empty")
        stream = io.BytesIO(source)
    else:
        path = Path(source)
        if path.stat().st_size == 0:
            raise InvalidImage("empty", "the file is empty")
        stream = path.open("rb")
    with stream:
        try:
            image = Image.open(stream)
        except Image.DecompressionBombError as exc:
            # Pillow refuses sizes far past its own limit inside open(), before
            # the declared-size check below can answer.
            raise InvalidImage("too_large", f"the image declares more pixels than the limit of {max_pixels:,}") from exc
        except Image.UnidentifiedImageError as exc:
            raise InvalidImage("not_image", "the file is not an image we can read") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise InvalidImage("corrupt", f"the image header is damaged ({exc})") from exc
        if accepted_formats is not None and image.format not in {f.upper() for f in accepted_formats}:
            raise InvalidImage("unsupported_format", f"image format {image.format} is not accepted")
        width, height = image.size
        if width * height > max_pixels:
            raise InvalidImage(
                "too_large", f"the image is {width}x{height} pixels, more than the limit of {max_pixels:,}"
            )
        if min(width, height) < min_side:
            raise InvalidImage("too_small", f"the image is {width}x{height} pixels; each side must be at least {min_side}")
        try:
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
        except Image.DecompressionBombError as exc:
            raise InvalidImage("too_large", str(exc)) from exc
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
            # Pillow signals truncated and corrupt data with several types.
            raise InvalidImage("corrupt", f"the image data is damaged ({exc})") from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency becomes white."""
    if image.mode in _HIGH_DEPTH_MODES:
        pixels = np.asarray(image)
        if not np.isfinite(pixels).all():  # before any cast: damaged float data holds NaNs
            raise InvalidImage("corrupt", "the image has pixel values that are not numbers (NaN or infinity)")
        pixels = pixels.astype(np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def resize_image(image: Image.Image, size: int) -> np.ndarray:
    """Resize a whole RGB image to ``size`` x ``size`` and return uint8 pixels."""
    resized = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def load_image(
    source: bytes | str | Path,
    size: int,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    accepted_formats: Iterable[str] | None = None,
) -> np.ndarray:
    """Decode an image into the model's input: a ``(size, size, 3)`` uint8 array.

    This is the single preprocessing path for training, evaluation and
    serving. Large JPEGs are decoded at a reduced scale (never below twice
    the target side) to save time without changing what the model sees.

    Args:
        source: Encoded bytes or a file path.
        size: Side of the square output.
        max_pixels: See :func:`open_image`.
        min_side: See :func:`open_image`.
        accepted_formats: See :func:`open_image`.

    Returns:
        The image as uint8 RGB pixels.

    Raises:
        InvalidImage: See :func:`open_image`.
    """
    image = open_image(
        source,
        max_pixels=max_pixels,
        min_side=min_side,
        accepted_formats=accepted_formats,
        draft_size=2 * size,
    )
    return resize_image(image, size)
