"""Checks on an encoded image's structure, made before any decoder reads it.

Some of a decoder's work grows with the file's structure, not with the
pixels it returns. Pillow walks a JPEG's markers (and any fill or stray
bytes before its first scan), a PNG's chunks, a GIF's extension blocks, a
TIFF's strips and a BMP's RLE codes in Python, a byte or a chunk at a time:
a 10 MiB file of empty PNG chunks or JPEG fill bytes costs seconds of CPU
though it holds a 64x48 picture. libwebp decodes a WebP whole, at full size,
so a 38-byte lossless WebP declaring 40 megapixels costs 600 MB.

:func:`check_structure` walks these structures itself, with C-speed searches
and a bound on how far it walks, and refuses a file over a limit
(``too_complex``, or ``too_large`` for a WebP's declared size) before Pillow
sees it. The limits lie far above what cameras, browsers and image editors
write, and each keeps the decoder's extra work in tens of milliseconds.
"""

from __future__ import annotations

import re
import struct

from catdog.errors import InvalidImage

# libjpeg's progressive JPEGs hold about 10 scans, and every scan is one more pass over all the blocks: at 40
# megapixels 32 scans cost 4.2 to 4.8 times an honest 10-scan photo's decode on a 2-core AVX2 EPYC (1.09 s of CPU
# against 0.23 at best), too close to the 5x the tests allow; 24 keep the worst accepted JPEG near 3.5 times.
# Real encoders write far fewer: libjpeg's and Pillow's progression is 10 scans, Photoshop's 3 to 5.
MAX_JPEG_SCANS = 24
# Segments (markers with a length) of a whole JPEG: EXIF, up to 255 ICC chunks, tables and scans.
MAX_JPEG_SEGMENTS = 1024
# Bytes before the first scan that belong to no segment (fill bytes, junk): Pillow reads them one by one.
MAX_JPEG_STRAY_BYTES = 4096
# Chunks of a PNG: encoders split the data into chunks of 8 KiB or more, 1,280 for 10 MiB.
MAX_PNG_CHUNKS = 16384
# Extension sub-blocks before a GIF's first image: comments, loop and frame settings.
MAX_GIF_BLOCKS = 4096
# Strips or tiles of a TIFF, and entries of its first directory.
MAX_TIFF_STRIPS = 16384
MAX_TIFF_ENTRIES = 1024
# libwebp decodes at full size, about 16 bytes a pixel at the peak through Pillow: 12 Mpx (a 4000x3000
# photo) is 185 MiB.
MAX_WEBP_PIXELS = 12_000_000

# A marker: 0xFF then a code that is not stuffing (0x00), a restart marker (RST0-7) or a fill byte.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_NO_LENGTH = {0x01, 0xD8}  # TEM and SOI stand alone
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_STRIP_TAGS = {273, 324}  # StripOffsets, TileOffsets


def check_structure(data: bytes, *, max_scans: int = MAX_JPEG_SCANS) -> None:
    """Refuse an encoded image whose structure would make decoding it cost far more than its pixels.

    The format is told by the file's first bytes; formats without such a
    structure pass unchecked.

    Args:
        data: The encoded image.
        max_scans: Most scans a JPEG may hold (each is a pass over all its pixels).

    Raises:
        InvalidImage: ``too_complex`` (too many scans, segments, stray bytes,
            chunks, blocks or strips), ``unsupported_format`` (an RLE BMP) or
            ``too_large`` (a WebP declaring more than ``MAX_WEBP_PIXELS``).
    """
    if data.startswith(b"\xff\xd8\xff"):
        _check_jpeg(data, max_scans)
    elif data.startswith(_PNG_SIGNATURE):
        _check_png(data)
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        _check_gif(data)
    elif data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        _check_tiff(data)
    elif data.startswith(b"BM"):
        _check_bmp(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        _check_webp(data)


def _too_complex(message: str) -> InvalidImage:
    return InvalidImage("too_complex", f"{message}; decoding it would take too long")


def jpeg_structure(
    data: bytes, stop_after_segments: int | None = None, stop_after_stray: int | None = None
) -> tuple[int, int, int]:
    """Walk a JPEG's markers without decoding: (scans, segments, stray bytes before the first scan).

    Like libjpeg, whatever precedes a marker's 0xFF is skipped, so stray
    bytes between segments cannot hide a scan; inside a scan's coded data,
    stuffed bytes and restart markers are not markers.

    Args:
        data: The JPEG file.
        stop_after_segments: Stop once this many segments are found.
        stop_after_stray: Stop once more stray bytes than this are found (the count returned is then
            over it): a run of megabytes of fill bytes is not searched to its end.
    """
    scans = segments = stray = 0
    at, end = 2, len(data)
    while stop_after_segments is None or segments < stop_after_segments:
        if scans == 0 and stop_after_stray is not None:
            found = _JPEG_MARKER.search(data, at, min(end, at + stop_after_stray - stray + 2))
            if found is None and at + stop_after_stray - stray + 2 < end:
                return scans, segments, stop_after_stray + 1
        else:
            found = _JPEG_MARKER.search(data, at)
        if found is None:
            break
        if scans == 0:
            stray += found.start() - at
        marker, at = data[found.start() + 1], found.end()
        if marker == 0xD9:  # end of image
            break
        if marker in _JPEG_NO_LENGTH:
            continue
        segments += 1
        scans += marker == 0xDA
        if at + 2 > end:
            break
        at += int.from_bytes(data[at : at + 2], "big")
    return scans, segments, stray


def jpeg_scan_count(data: bytes) -> int:
    """The number of scans (SOS segments) of a JPEG, counted without decoding."""
    return jpeg_structure(data)[0]


def _check_jpeg(data: bytes, max_scans: int) -> None:
    scans, segments, stray = jpeg_structure(
        data, stop_after_segments=MAX_JPEG_SEGMENTS + 1, stop_after_stray=MAX_JPEG_STRAY_BYTES
    )
    if scans > max_scans:
        raise _too_complex(f"the JPEG holds more than {max_scans} scans")
    if segments > MAX_JPEG_SEGMENTS:
        raise _too_complex(f"the JPEG holds more than {MAX_JPEG_SEGMENTS:,} markers")
    if stray > MAX_JPEG_STRAY_BYTES:
        raise _too_complex(
            f"the JPEG holds more than {MAX_JPEG_STRAY_BYTES:,} stray or fill bytes before its image data"
        )


def _check_png(data: bytes) -> None:
    at, chunks, end = len(_PNG_SIGNATURE), 0, len(data)
    while at + 8 <= end:
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise _too_complex(f"the PNG holds more than {MAX_PNG_CHUNKS:,} chunks")
        if data[at + 4 : at + 8] == b"IEND":
            return
        at += 12 + int.from_bytes(data[at : at + 4], "big")


def _check_gif(data: bytes) -> None:
    flags = data[10] if len(data) > 10 else 0
    at = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    blocks, end = 0, len(data)
    while at < end and data[at] == 0x21:  # extensions before the first image (0x2C) or the end (0x3B)
        at += 2  # introducer and label
        while True:  # the extension's sub-blocks, up to an empty one (counted too: Pillow reads it)
            blocks += 1
            if blocks > MAX_GIF_BLOCKS:
                raise _too_complex(f"the GIF holds more than {MAX_GIF_BLOCKS:,} extension blocks before its image")
            if at >= end or not data[at]:
                break
            at += 1 + data[at]
        at += 1


def _check_tiff(data: bytes) -> None:
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    # Classic TIFF: 2-byte entry count, 12-byte entries, 4-byte counts; BigTIFF: 8, 20 and 8.
    offset_format, count_format, entry_size = ("Q", "Q", 20) if big else ("I", "H", 12)
    try:
        (first,) = struct.unpack_from(order + offset_format, data, 8 if big else 4)
        (entries,) = struct.unpack_from(order + count_format, data, first)
    except struct.error:
        return  # a damaged header: Pillow refuses it without walking anything
    if entries > MAX_TIFF_ENTRIES:
        raise _too_complex(f"the TIFF's directory holds more than {MAX_TIFF_ENTRIES:,} entries")
    at = first + struct.calcsize(order + count_format)
    value_format = order + ("HHQ" if big else "HHI")
    for number in range(entries):
        try:
            tag, _, count = struct.unpack_from(value_format, data, at + number * entry_size)
        except struct.error:
            return
        if tag in _TIFF_STRIP_TAGS and count > MAX_TIFF_STRIPS:
            raise _too_complex(f"the TIFF is cut into more than {MAX_TIFF_STRIPS:,} strips or tiles")


def _check_bmp(data: bytes) -> None:
    header_size = int.from_bytes(data[14:18], "little")
    if header_size >= 40 and int.from_bytes(data[30:34], "little") in (1, 2):
        # Pillow decodes RLE8 and RLE4 code by code in Python: a 26 KB file took 4 s.
        raise InvalidImage("unsupported_format", "RLE-compressed BMP files are not accepted; send a PNG or JPEG")


def _check_webp(data: bytes) -> None:
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
    elif kind == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    elif kind == b"VP8 " and len(data) >= 30:
        width = int.from_bytes(data[26:28], "little") & 0x3FFF
        height = int.from_bytes(data[28:30], "little") & 0x3FFF
    else:
        return
    if width * height > MAX_WEBP_PIXELS:
        raise InvalidImage(
            "too_large",
            f"the WebP image is {width}x{height} pixels, more than the limit of {MAX_WEBP_PIXELS:,} for WebP",
        )
