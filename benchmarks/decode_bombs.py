"""Small files that cost a decoder seconds of CPU or hundreds of MB: the decode-bomb corpus.

Each is a valid (or nearly valid) file of at most 10 MiB, made in memory, and
each hits a path where a decoder's work grows with something other than the
pixels it returns: Pillow's BMP RLE decoder, TIFF strip loop, JPEG marker
loop, PNG chunk loop and GIF block loop run in Python, a byte or a chunk at
a time; a lossless or animated WebP is decoded whole at full size, however
small the file. ``tests/test_decode_bombs.py`` requires every one to be
refused or decoded within the serving limits; ``benchmarks/hostile.py``
measures them.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

MAX_FILE = 10 * 1024 * 1024  # serving.max_upload_bytes in config.yaml
_BMP_FILE_HEADER = struct.Struct("<2sIHHI")
_BMP_INFO_HEADER = struct.Struct("<IiiHHIIiiII")


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    """``image`` saved as ``fmt`` in memory."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def rle_bmp(bits: int, width: int = 6324, height: int = 6324) -> bytes:
    """An RLE8 (``bits=8``) or RLE4 (``bits=4``) BMP: each row one short run and an end-of-line, ~4 bytes a row."""
    colours = 1 << bits
    palette = b"".join(bytes((i, 255 - i, i // 2, 0)) for i in range(colours))
    rows = (b"\x02\x01" + b"\x00\x00") * (height - 1) + b"\x02\x01\x00\x01"  # the last: end of bitmap
    offset = _BMP_FILE_HEADER.size + _BMP_INFO_HEADER.size + len(palette)
    compression = 1 if bits == 8 else 2
    info = _BMP_INFO_HEADER.pack(40, width, height, 1, bits, compression, len(rows), 2835, 2835, colours, 0)
    return _BMP_FILE_HEADER.pack(b"BM", offset + len(rows), 0, 0, offset) + info + palette + rows


def strip_tiff(width: int = 32, size: int = MAX_FILE - 4096, shared: bool = True) -> bytes:
    """An uncompressed greyscale TIFF of about ``size`` bytes with one row per strip.

    With ``shared``, every strip points at the same row of data, so a strip
    costs the file 8 bytes (its offset and length): 1.3 million strips in 10 MiB.
    """
    height = (size - width) // 8 if shared else size // (width + 8)
    data = bytes(range(256)) * (width * (1 if shared else height) // 256 + 1)
    data = data[: width * (1 if shared else height)]
    offsets_at = 8 + len(data)
    counts_at = offsets_at + 4 * height
    ifd_at = counts_at + 4 * height
    entries = [  # (tag, type: 3 short or 4 long, count, value or offset)
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, height, offsets_at),
        (277, 3, 1, 1),
        (278, 4, 1, 1),
        (279, 4, height, counts_at),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        # A value that fits sits in the entry itself, left-aligned.
        inline = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + inline
    ifd += struct.pack("<I", 0)
    offsets = [8] * height if shared else range(8, 8 + width * height, width)
    strips = struct.pack(f"<{height}I", *offsets) + struct.pack(f"<{height}I", *([width] * height))
    return b"II*\x00" + struct.pack("<I", ifd_at) + data + strips + ifd


def small_jpeg() -> bytes:
    """A 64x48 baseline JPEG."""
    return encoded(Image.new("RGB", (64, 48), (120, 160, 90)), "JPEG")


def fill_byte_jpeg(count: int = MAX_FILE - 4096) -> bytes:
    """A small JPEG whose first marker is preceded by ``count`` fill bytes (0xFF), which the standard allows."""
    jpeg = small_jpeg()
    return jpeg[:2] + b"\xff" * count + jpeg[2:]


def comment_jpeg(count: int = (MAX_FILE - 4096) // 4) -> bytes:
    """A small JPEG whose header holds ``count`` comment (COM) markers with no text, 4 bytes each."""
    jpeg = small_jpeg()
    return jpeg[:2] + b"\xff\xfe\x00\x02" * count + jpeg[2:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def empty_chunk_png(count: int = (MAX_FILE - 4096) // 12) -> bytes:
    """A 64x48 PNG holding ``count`` empty chunks, 12 bytes each: half private ones before its data, half data."""
    png = encoded(Image.new("RGB", (64, 48), (120, 160, 90)), "PNG")
    idat = png.index(b"IDAT") - 4
    private, data = count // 2, count - count // 2
    return png[:idat] + _png_chunk(b"prVt", b"") * private + _png_chunk(b"IDAT", b"") * data + png[idat:]


def comment_gif(count: int = (MAX_FILE - 4096) // 5) -> bytes:
    """A 64x48 GIF whose first image is preceded by ``count`` one-byte comment extensions, 5 bytes each."""
    gif = encoded(Image.new("P", (64, 48), 3), "GIF")
    screen_end = 13 + 3 * (2 << (gif[10] & 7)) if gif[10] & 0x80 else 13
    return gif[:screen_end] + b"\x21\xfe\x01x\x00" * count + gif[screen_end:]


def _riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) % 2)


def _one_colour_vp8l(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    """A lossless (VP8L) bitstream of one colour at any size.

    One colour needs no bits per pixel, so the bitstream of a small picture
    with its size field rewritten is the one libwebp writes for the large
    picture (byte for byte; no large image is ever made here).
    """
    small = encoded(Image.new("RGB", (16, 16), colour), "WEBP", lossless=True, method=0)
    assert small[12:16] == b"VP8L"
    bitstream = small[20 : 20 + int.from_bytes(small[16:20], "little")]
    header = int.from_bytes(bitstream[1:5], "little") & ~((1 << 28) - 1)
    size = header | (width - 1) | ((height - 1) << 14)
    return bitstream[:1] + size.to_bytes(4, "little") + bitstream[5:]


def lossless_webp(width: int = 16383, height: int = 2441) -> bytes:
    """A one-colour lossless WebP of ``width`` x ``height`` (about 40 megapixels in 38 bytes)."""
    body = b"WEBP" + _riff_chunk(b"VP8L", _one_colour_vp8l(width, height, (120, 160, 90)))
    return b"RIFF" + struct.pack("<I", len(body)) + body


def animated_webp(width: int = 8000, height: int = 5000, frames: int = 3) -> bytes:
    """An animated WebP of ``frames`` one-colour lossless frames of ``width`` x ``height``."""
    size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunks = _riff_chunk(b"VP8X", b"\x02\x00\x00\x00" + size) + _riff_chunk(b"ANIM", b"\x00" * 4 + b"\x00\x00")
    for number in range(frames):
        frame = _one_colour_vp8l(width, height, (40 * number, 160, 90))
        placement = b"\x00" * 6 + size + (50).to_bytes(3, "little") + b"\x00"
        chunks += _riff_chunk(b"ANMF", placement + _riff_chunk(b"VP8L", frame))
    body = b"WEBP" + chunks
    return b"RIFF" + struct.pack("<I", len(body)) + body


def corpus() -> dict[str, bytes]:
    """Every decode bomb, by name."""
    return {
        "RLE8 BMP 6324x6324": rle_bmp(8),
        "RLE4 BMP 6324x6324": rle_bmp(4),
        "TIFF of one-row strips": strip_tiff(),
        "JPEG with fill bytes": fill_byte_jpeg(),
        "JPEG with comment markers": comment_jpeg(),
        "PNG with empty chunks": empty_chunk_png(),
        "GIF with comment blocks": comment_gif(),
        "lossless WebP 16383x2441": lossless_webp(),
        "animated WebP 8000x5000": animated_webp(),
    }


def worst_accepted() -> dict[str, bytes]:
    """The same kinds of file at the limits of :mod:`catdog.serving.image_checks`: each must decode within bounds."""
    from catdog.serving.image_checks import (
        MAX_GIF_BLOCKS,
        MAX_JPEG_SEGMENTS,
        MAX_JPEG_STRAY_BYTES,
        MAX_PNG_CHUNKS,
        MAX_TIFF_STRIPS,
        MAX_WEBP_PIXELS,
    )

    side = int(MAX_WEBP_PIXELS**0.5)
    # The small pictures hold a few segments and chunks of their own: 16 leaves room for them.
    return {
        "TIFF of one-row strips, at the limit": strip_tiff(MAX_FILE // MAX_TIFF_STRIPS - 8, shared=False),
        "JPEG with fill bytes, at the limit": fill_byte_jpeg(MAX_JPEG_STRAY_BYTES),
        "JPEG with comment markers, at the limit": comment_jpeg(MAX_JPEG_SEGMENTS - 16),
        "PNG with empty chunks, at the limit": empty_chunk_png(MAX_PNG_CHUNKS - 16),
        "GIF with comment blocks, at the limit": comment_gif(MAX_GIF_BLOCKS // 2 - 16),
        "lossless WebP, at the limit": lossless_webp(side, side),
        "animated WebP, at the limit": animated_webp(side, side),
    }
