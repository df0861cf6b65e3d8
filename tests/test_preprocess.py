"""Property tests of the shared preprocessing (catdog.serving.preprocess) with hypothesis.

Any image, in any mode Pillow writes to a format we accept, of any size from
1x1 up to the pixel limit, with any EXIF orientation, becomes a
``(size, size, 3)`` uint8 array, or an ``InvalidImage`` whose reason says
why; damaged bytes of such images end the same way. Nothing else escapes.

Each property runs a short budget by default and a long one under
``pytest -m slow``.
"""

from __future__ import annotations

import dataclasses
import io
import random
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from benchmarks.hostile import big_png, progressive_bomb, scan_segments
from catdog.errors import InvalidImage
from catdog.serving.image_checks import MAX_JPEG_SCANS, jpeg_scan_count
from catdog.serving.preprocess import ImageLimits, load_image, open_image
from helpers import damage

REASONS = {"empty", "not_image", "unsupported_format", "corrupt", "too_large", "too_small", "too_complex"}
ORIENTATION_TAG = 0x0112
MAX_SIDE = 96
# Modes each format writes (checked against Pillow: others are refused or silently converted).
MODES_BY_FORMAT = {
    "JPEG": ["1", "L", "RGB", "CMYK"],
    "PNG": ["1", "L", "LA", "P", "P+transparency", "RGB", "RGBA", "I;16"],
    "GIF": ["1", "L", "P", "P+transparency", "RGB"],
    "WEBP": ["L", "LA", "RGB", "RGBA"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"],
}
EXIF_FORMATS = {"JPEG", "PNG", "WEBP", "TIFF"}
LOSSLESS = {"PNG": {}, "WEBP": {"lossless": True}, "TIFF": {}}
# What each EXIF orientation asks the viewer to do, on (height, width, 3) pixels.
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, -1)[::-1],
    8: lambda a: np.rot90(a, 1),
}


def budget(short: int, long: int) -> list:
    """Parameters giving a property ``short`` examples, or ``long`` under ``-m slow``."""
    return [pytest.param(short, id="short"), pytest.param(long, id="long", marks=pytest.mark.slow)]


def run_property(examples: int, strategy: st.SearchStrategy, check) -> None:
    """Check ``check(case)`` on ``examples`` cases drawn from ``strategy``."""
    configured = settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    configured(given(strategy)(check))()


def picture(mode: str, width: int, height: int, seed: int) -> Image.Image:
    """Random pixels in ``mode`` (``P+transparency``: a palette image with a transparent index)."""
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 1 << 16, (height, width), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-(1 << 24), 1 << 24, (height, width), dtype=np.int32))
    if mode == "F":
        return Image.fromarray(rng.normal(0.0, 1000.0, (height, width)).astype(np.float32))
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8))
    if mode in ("RGBA", "LA"):
        return rgba.convert(mode)
    rgb = rgba.convert("RGB")
    if mode == "P+transparency":
        image = rgb.quantize(8)
        image.info["transparency"] = int(rng.integers(0, 8))
        return image
    return rgb.convert(mode)


@dataclasses.dataclass(frozen=True)
class Encoded:
    fmt: str
    mode: str
    width: int
    height: int
    orientation: int | None
    data: bytes


def encode(image: Image.Image, fmt: str, orientation: int | None = None, **options) -> bytes:
    if orientation is not None:
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        options["exif"] = exif
    if "transparency" in image.info:
        options["transparency"] = image.info["transparency"]
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@st.composite
def encoded_images(draw, max_side: int = MAX_SIDE) -> Encoded:
    fmt = draw(st.sampled_from(sorted(MODES_BY_FORMAT)))
    mode = draw(st.sampled_from(MODES_BY_FORMAT[fmt]))
    width = draw(st.integers(1, max_side))
    height = draw(st.integers(1, max_side))
    orientation = draw(st.none() | st.integers(1, 8)) if fmt in EXIF_FORMATS else None
    image = picture(mode, width, height, draw(st.integers(0, 2**32 - 1)))
    return Encoded(fmt, mode, width, height, orientation, encode(image, fmt, orientation))


@pytest.mark.parametrize("examples", budget(150, 3000))
def test_any_image_becomes_a_tensor_or_a_specific_refusal(examples):
    @st.composite
    def cases(draw):
        image = draw(encoded_images())
        pixels = image.width * image.height
        max_pixels = draw(st.sampled_from([pixels - 1, pixels, 40_000_000]))
        return image, max(max_pixels, 1), draw(st.integers(1, 4)), draw(st.sampled_from([1, 8, 32]))

    def check(case):
        image, max_pixels, min_side, size = case
        try:
            array = load_image(image.data, size, limits=ImageLimits(max_pixels, min_side))
        except InvalidImage as exc:
            expected = "too_large" if image.width * image.height > max_pixels else "too_small"
            assert exc.reason == expected, (image.fmt, image.mode, exc.reason, exc.message)
            assert min(image.width, image.height) < min_side or expected == "too_large"
            return
        assert image.width * image.height <= max_pixels and min(image.width, image.height) >= min_side
        assert array.shape == (size, size, 3) and array.dtype == np.uint8

    run_property(examples, cases(), check)


@pytest.mark.parametrize("examples", budget(60, 1000))
def test_exif_orientation_is_applied_exactly(examples):
    @st.composite
    def cases(draw):
        width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
        pixels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(
            0, 256, (height, width, 3), dtype=np.uint8
        )
        return pixels, draw(st.integers(1, 8)), draw(st.sampled_from(sorted(LOSSLESS)))

    def check(case):
        pixels, orientation, fmt = case
        data = encode(Image.fromarray(pixels), fmt, orientation, **LOSSLESS[fmt])
        np.testing.assert_array_equal(np.asarray(open_image(data)), ORIENT[orientation](pixels))

    run_property(examples, cases(), check)


@pytest.mark.parametrize("examples", budget(40, 500))
def test_transparent_pixels_become_white(examples):
    @st.composite
    def cases(draw):
        fmt = draw(st.sampled_from(["PNG", "WEBP", "TIFF"]))
        mode = draw(st.sampled_from(["RGBA", "LA"]))
        return fmt, mode, draw(st.integers(1, 30)), draw(st.integers(1, 30)), draw(st.integers(0, 255))

    def check(case):
        fmt, mode, width, height, value = case
        image = Image.new(mode, (width, height), (value,) * (len(mode) - 1) + (0,))
        result = np.asarray(open_image(encode(image, fmt, **LOSSLESS[fmt])))
        assert result.shape == (height, width, 3) and (result == 255).all()

    run_property(examples, cases(), check)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's notes on the damage we made
@pytest.mark.filterwarnings("error:invalid value encountered:RuntimeWarning")  # NaN pixels cast to garbage
@pytest.mark.parametrize("examples", budget(200, 5000))
def test_damaged_bytes_become_a_tensor_or_a_refusal(examples):
    @st.composite
    def cases(draw):
        image = draw(encoded_images(max_side=48))
        return image, damage(image.data, random.Random(draw(st.integers(0, 2**32 - 1))))

    def check(case):
        image, data = case
        try:
            array = load_image(data, 16)
        except InvalidImage as exc:
            assert exc.reason in REASONS and exc.message, (image.fmt, image.mode, exc.reason)
            return
        assert array.shape == (16, 16, 3) and array.dtype == np.uint8

    run_property(examples, cases(), check)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_become_a_tensor_or_a_refusal(data):
    try:
        array = load_image(data, 16)
    except InvalidImage as exc:
        assert exc.reason in REASONS
        return
    assert array.shape == (16, 16, 3) and array.dtype == np.uint8


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_float_image_with_pixels_that_are_not_numbers_is_corrupt(value):
    pixels = np.arange(24, dtype=np.float32).reshape(4, 6)
    pixels[2, 3] = value
    with pytest.raises(InvalidImage) as caught:
        load_image(encode(Image.fromarray(pixels), "TIFF"), 8)
    assert caught.value.reason == "corrupt"


# --- decode bombs and large images ---------------------------------------------


@pytest.mark.parametrize("scans", [MAX_JPEG_SCANS + 1, 500, 3000])
def test_a_progressive_jpeg_with_too_many_scans_is_refused_before_decoding(scans):
    bomb = progressive_bomb(scans, 2000, 1250)
    started = time.process_time()
    with pytest.raises(InvalidImage) as caught:
        load_image(bomb, 128)
    assert caught.value.reason == "too_complex" and str(MAX_JPEG_SCANS) in caught.value.message
    # Refused by counting markers, not by decoding: a decode of 500 scans takes seconds.
    assert time.process_time() - started < 0.5


def test_stray_bytes_between_scans_do_not_hide_them():
    # libjpeg skips bytes before a marker (with a warning) and decodes the scan after them.
    bomb = progressive_bomb(MAX_JPEG_SCANS + 20, 400, 300)
    segments = scan_segments(bomb)
    start = segments[20][0]
    hidden = bomb[:start] + b"\x00junk" + bomb[start:]
    assert jpeg_scan_count(hidden) == MAX_JPEG_SCANS + 20
    with pytest.raises(InvalidImage, match="scans"):
        open_image(hidden)


def test_ordinary_jpegs_have_few_scans(photo_bytes):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo_bytes())).save(buffer, "JPEG", progressive=True)
    assert jpeg_scan_count(photo_bytes()) == 1
    assert 1 < jpeg_scan_count(buffer.getvalue()) <= 12
    assert open_image(buffer.getvalue()).size == (160, 120)


def test_the_worst_accepted_scan_bomb_decodes_in_under_two_seconds_of_cpu():
    # The target is at most 2 s of CPU for any upload; a 40-megapixel
    # JPEG with the most scans accepted is the worst case (about 0.8 s here).
    bomb = progressive_bomb(MAX_JPEG_SCANS)
    started = time.process_time()
    load_image(bomb, 128, limits=ImageLimits(max_pixels=40_000_000))
    assert time.process_time() - started < 2.0


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "P"])
def test_large_images_are_reduced_while_decoding_and_look_the_same(mode):
    data = big_png(mode, 2400, 1500)
    photo = open_image(data, draft_size=256)
    assert photo.mode == "RGB" and 256 <= min(photo.size) < 512  # reduced by a whole factor (5)
    assert photo.size == (480, 300)
    full = open_image(data)
    assert full.size == (2400, 1500)
    expected = np.asarray(full.resize((64, 40), Image.Resampling.BOX), dtype=np.float32)
    got = np.asarray(photo.resize((64, 40), Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(expected - got).mean() < 2.0


def test_reduction_keeps_exif_orientation():
    pixels = np.zeros((600, 900, 3), dtype=np.uint8)
    pixels[:300, :450] = 255  # white top-left quarter
    photo = open_image(encode(Image.fromarray(pixels), "PNG", 6), draft_size=100)
    assert photo.size == (100, 150)  # rotated: 900x600 -> 600x900, then reduced by 6
    result = np.asarray(photo)
    assert result[:75, 50:].mean() > 250 and result[75:, :].mean() < 5  # top-left went to top-right
