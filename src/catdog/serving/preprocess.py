"""The one preprocessing function shared by training, evaluation and serving.

An image becomes a ``(size, size, 3)`` uint8 array: EXIF orientation
applied, any mode converted to RGB, the whole picture resized (stretched) to
a square. The training archive's photos were squashed to squares the same
way, so stretching at serving time shows the model what it learned from;
rescaling to [0, 1] happens inside the model.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from catdog.errors import InvalidImage
from catdog.serving.image_checks import MAX_JPEG_SCANS, check_structure

log = logging.getLogger(__name__)

# Pillow's own bomb check is a warning at MAX_IMAGE_PIXELS; we check the
# declared size ourselves before decoding, so silence the duplicate.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

DEFAULT_MAX_PIXELS = 40_000_000
ORIENTATION_TAG = 0x0112
_JPEG_FORMATS = {"JPEG", "MPO"}
_HIGH_DEPTH_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
STRIP_PIXELS = 1 << 20  # pixels of the decoded image converted and reduced at a time
# Modes whose pixels Image.reduce can average (palette indices cannot be).
_REDUCIBLE_MODES = {"L", "LA", "La", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr"}
_TRANSPOSE_BY_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    """What an image must be to be decoded at all (the ``serving`` section of config.yaml).

    Attributes:
        max_pixels: Largest declared width x height; checked from the header,
            before any pixel is decoded.
        min_side: Smallest accepted width or height.
        accepted_formats: Pillow format names (``JPEG``, ``PNG``...), upper
            case; ``None`` accepts every format Pillow reads.
        max_request_pixels: Most declared pixels of all images of one request
            together; ``None``: no limit beyond ``max_pixels`` each.
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = 1
    accepted_formats: tuple[str, ...] | None = None
    max_request_pixels: int | None = None

    def check(self, fmt: str | None, width: int, height: int) -> None:
        """Refuse an image of format ``fmt`` declaring ``width`` x ``height`` outside the limits.

        Raises:
            InvalidImage: ``unsupported_format``, ``too_large`` or ``too_small``.
        """
        if self.accepted_formats is not None and fmt not in self.accepted_formats:
            raise InvalidImage("unsupported_format", f"image format {fmt} is not accepted")
        if width * height > self.max_pixels:
            raise InvalidImage(
                "too_large", f"the image is {width}x{height} pixels, more than the limit of {self.max_pixels:,}"
            )
        if min(width, height) < self.min_side:
            raise InvalidImage(
                "too_small",
                f"the image is {width}x{height} pixels; each side must be at least {self.min_side} pixels, "
                "as smaller photos are too small to tell a cat from a dog reliably",
            )

    @classmethod
    def from_serving(cls, serving) -> ImageLimits:
        """The limits of a :class:`catdog.config.ServingSettings`."""
        return cls(
            serving.max_pixels,
            serving.min_side,
            tuple(f.upper() for f in serving.accepted_formats),
            serving.max_request_pixels,
        )


def open_image(
    source: bytes | str | Path,
    *,
    limits: ImageLimits = ImageLimits(),
    draft_size: int | None = None,
    max_scans: int = MAX_JPEG_SCANS,
) -> Image.Image:
    """Open, check and fully decode an image as RGB with EXIF orientation applied.

    Args:
        source: Encoded bytes or a file path.
        limits: The sizes and formats accepted.
        draft_size: If given, a large image is reduced while it is decoded
            (a JPEG) or right after (any format), by a whole factor, as long
            as both sides stay at least this large; the full-size pixels are
            never copied or converted.
        max_scans: Most scans a JPEG may hold. Each scan of a progressive
            JPEG is a pass over all of its pixels, so their number, not the
            file's size, sets the work of decoding it.

    Returns:
        A loaded RGB image.

    Raises:
        InvalidImage: Empty input, not an image, an unaccepted format, a size
            outside the limits, a structure that would make decoding cost far
            more than the pixels (``too_complex``, see
            :mod:`catdog.serving.image_checks`), or data that fails to decode.
    """
    data = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).read_bytes()
    if len(data) == 0:
        raise InvalidImage("empty", "the file is empty")
    check_structure(data, max_scans=max_scans)
    with io.BytesIO(data) as stream:
        try:
            # Only the accepted formats' parsers read the file: any other is named from its first bytes.
            image = Image.open(stream, formats=limits.accepted_formats)
        except Image.DecompressionBombError as exc:
            # Pillow refuses sizes far past its own limit inside open(), before
            # the declared-size check below can answer.
            raise InvalidImage(
                "too_large", f"the image declares more pixels than the limit of {limits.max_pixels:,}"
            ) from exc
        except Image.UnidentifiedImageError as exc:
            other = _format_of(data)
            if other is not None:
                raise InvalidImage("unsupported_format", f"image format {other} is not accepted") from exc
            raise InvalidImage("not_image", "the file is not an image we can read") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            log.debug("image header refused by Pillow: %s", exc)
            message = f"the {_named(_format_of(data))} header is damaged or uses a feature we cannot read"
            raise InvalidImage("corrupt", message) from exc
        limits.check(image.format, *image.size)
        try:
            if draft_size and image.format in _JPEG_FORMATS:
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            # Read after loading: Pillow applies a TIFF's orientation itself while it loads.
            orientation = image.getexif().get(ORIENTATION_TAG, 1)
            image = _to_rgb(image, keep_side=draft_size)
            return _orient(image, orientation)
        except Image.DecompressionBombError as exc:
            raise InvalidImage(
                "too_large", f"the image declares more pixels than the limit of {limits.max_pixels:,}"
            ) from exc
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as exc:
            # Pillow signals truncated and corrupt data with several types, in words of its own (which name
            # its internals): those go to the log, the client gets ours.
            log.debug("image data refused by Pillow: %s", exc)
            raise InvalidImage("corrupt", f"the {_named(image.format)} data is damaged or cut off") from exc


def _named(fmt: str | None) -> str:
    """``JPEG image``, or ``image`` when the format is not known."""
    return f"{fmt} image" if fmt else "image"


def declared_pixels(data: bytes, formats: tuple[str, ...] | None = None) -> int:
    """Width x height that encoded image ``data`` declares in its header, or 0 if it has none we can read.

    Nothing is decoded: this prices a request before any of its images is.
    A file of another format than ``formats`` (if given), or one whose
    structure :func:`catdog.serving.image_checks.check_structure` refuses, counts 0:
    decoding it will say what is wrong.
    """
    try:
        check_structure(data)
        with Image.open(io.BytesIO(data), formats=formats) as image:
            width, height = image.size
    except (InvalidImage, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return 0
    return width * height


def _format_of(data: bytes) -> str | None:
    """The name of the format Pillow would read ``data`` as, from its first bytes alone, or ``None``."""
    Image.init()
    prefix = data[:16]
    for name, (_, accept) in Image.OPEN.items():
        try:
            if accept is not None and accept(prefix):
                return name
        except (IndexError, TypeError, ValueError, struct.error):  # a prefix too short for its check
            continue
    return None


def _to_rgb(image: Image.Image, keep_side: int | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency becomes white.

    With ``keep_side``, the image is first reduced by the largest whole
    factor that keeps both sides at least that large, so every conversion
    works on the small copy.
    """
    factor = max(1, min(image.size) // keep_side) if keep_side else 1
    if factor > 1:
        image = _reduce_in_strips(image, factor)
    if image.mode in _HIGH_DEPTH_MODES:
        image = _high_depth_to_l(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB") if image.mode != "RGB" else image


def _reduce_in_strips(image: Image.Image, factor: int) -> Image.Image:
    """Average ``factor`` x ``factor`` blocks, a strip of rows at a time.

    ``Image.reduce`` alone would copy the whole image first for some modes
    (premultiplied alpha), and palette or 16-bit images must be converted
    before their pixels can be averaged; strip by strip, no full-size copy is
    ever made beside the decoded image. Partial blocks at the edges are dropped.
    """
    mode = _reducible_mode(image)
    width, height = (side // factor * factor for side in image.size)
    reduced = Image.new(mode, (width // factor, height // factor))
    rows = factor * max(1, STRIP_PIXELS // (width * factor))
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(top + rows, height)))
        if strip.mode != mode:
            strip = strip.convert(mode)
        reduced.paste(strip.reduce(factor), (0, top // factor))
    if "transparency" in image.info and mode == image.mode:
        reduced.info["transparency"] = image.info["transparency"]
    return reduced


def _reducible_mode(image: Image.Image) -> str:
    """The mode ``image`` is converted to before its pixels are averaged."""
    if image.mode in ("I", "F") or image.mode in _REDUCIBLE_MODES:
        return image.mode
    if image.mode in _HIGH_DEPTH_MODES:  # 16-bit: "I" holds every value
        return "I"
    if image.mode == "PA" or (image.mode == "P" and "transparency" in image.info):
        return "RGBA"
    return "RGB"


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Stretch a 16-bit, 32-bit or float image's range to 8-bit grey.

    Float32 is exact for every 16-bit value and precise enough for the rest;
    a float64 copy would cost 8 bytes a pixel.
    """
    pixels = np.asarray(image)
    if not np.isfinite(pixels).all():  # before any cast: damaged float data holds NaNs
        raise InvalidImage("corrupt", "the image has pixel values that are not numbers (NaN or infinity)")
    low, high = float(pixels.min()), float(pixels.max())
    scaled = pixels.astype(np.float32)
    if high > low:
        scaled -= np.float32(low)
        scaled *= np.float32(255.0 / (high - low))
        np.rint(scaled, out=scaled)
    else:
        scaled[...] = 0
    return Image.fromarray(scaled.astype(np.uint8))


def _orient(image: Image.Image, orientation: object) -> Image.Image:
    """Apply an EXIF orientation, as ``ImageOps.exif_transpose`` would, to the (small) converted image."""
    method = _TRANSPOSE_BY_ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return image.transpose(method) if method is not None else image


def resize_image(image: Image.Image, size: int) -> np.ndarray:
    """Resize a whole RGB image to ``size`` x ``size`` and return uint8 pixels."""
    resized = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def load_image(
    source: bytes | str | Path,
    size: int,
    *,
    limits: ImageLimits = ImageLimits(),
) -> np.ndarray:
    """Decode an image (:func:`open_image`) into the model's input: ``(size, size, 3)`` uint8 RGB pixels.

    This is the single preprocessing path for training, evaluation and
    serving. Large JPEGs are decoded at a reduced scale (never below twice
    the target side) to save time without changing what the model sees.
    """
    return resize_image(open_image(source, limits=limits, draft_size=2 * size), size)
