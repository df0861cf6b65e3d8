"""A compact copy of the training data, to train on another machine.

``python -m catdog.data.pack OUT_DIR [--quality Q] [--set training.image_size=112]``

The decoded training and validation arrays take over a gigabyte; a machine
that only takes a small upload (the GPU machine used for training took
64 MiB with the whole working tree) gets them as lossy WebP instead, at the
training size, about 1.35 KB each at quality 55. The test part is never packed: it is only
ever scored here, on the original files.

A pack is two files:

* ``pack.npz``: per part, ``<part>_bytes`` (every image's WebP bytes, one
  after the other), ``<part>_offsets`` (N + 1 offsets into them),
  ``<part>_labels`` and ``<part>_sides`` (each photo's shorter side as stored,
  before decoding at the training size: training balances the natively small
  photos with it, see :func:`catdog.data.augment.low_res_shares`).
* ``spec.json``: the training settings, classes and class weights the run
  must use, the image size and the split's hash, so that the model trained
  from the pack can be checked against this checkout's split when it comes back.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from catdog import cli, paths
from catdog.data.parallel import ordered_map
from catdog.dirs import atomic_write, file_sha256, write_json_atomic
from catdog.errors import DatasetError

log = logging.getLogger("catdog.data.pack")
PACKED_PARTS = ("train", "validation")


def encode_webp(image: np.ndarray, quality: int) -> bytes:
    """One ``(S, S, 3)`` uint8 image as lossy WebP bytes."""
    from PIL import Image

    out = io.BytesIO()
    # method 6: the slowest encoder setting, about 6% smaller than the default.
    Image.fromarray(image).save(out, "WEBP", quality=quality, method=6)
    return out.getvalue()


def decode_webp(data: bytes) -> np.ndarray:
    """WebP bytes back to an ``(S, S, 3)`` uint8 array."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _encode_chunk(args: tuple[np.ndarray, int]) -> list[bytes]:
    images, quality = args
    return [encode_webp(image, quality) for image in images]


def _decode_chunk(blobs: list[bytes]) -> np.ndarray:
    return np.stack([decode_webp(blob) for blob in blobs])


def _chunks(n: int, size: int = 512) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def pack_part(images: np.ndarray, quality: int, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Encode a part's images; return the joined bytes and the N + 1 offsets."""
    chunks = ordered_map(
        _encode_chunk, [(images[s], quality) for s in _chunks(len(images))], workers=workers, chunksize=1
    )
    blobs = [blob for chunk in chunks for blob in chunk]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


def unpack_part(data: np.ndarray, offsets: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Decode a packed part back into one ``(N, S, S, 3)`` uint8 array."""
    raw = data.tobytes()
    blobs = [raw[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
    if not blobs:
        raise DatasetError("the pack holds no images for this part")
    chunks = ordered_map(_decode_chunk, [blobs[s] for s in _chunks(len(blobs))], workers=workers, chunksize=1)
    return np.concatenate(list(chunks))


def write_pack(
    out_dir: Path, parts: dict[str, tuple[np.ndarray, Sequence[int], Sequence[int]]], spec: dict, quality: int
) -> Path:
    """Encode the parts (images, labels, shorter sides) into ``out_dir/pack.npz``; write ``spec.json`` beside it.

    Returns:
        The pack file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = {}
    for part, (images, labels, sides) in parts.items():
        data, offsets = pack_part(images, quality)
        columns[f"{part}_bytes"] = data
        columns[f"{part}_offsets"] = offsets
        columns[f"{part}_labels"] = np.asarray(labels, dtype=np.int64)
        columns[f"{part}_sides"] = np.asarray(sides, dtype=np.int32)
        size = data.size
        log.info("%s: %d images, %.1f MB (%.0f bytes each)", part, len(images), size / 1e6, size / len(images))
    pack = out_dir / "pack.npz"
    with atomic_write(pack) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **columns)
    write_json_atomic(out_dir / "spec.json", {**spec, "format": "webp", "quality": quality, "parts": list(parts)})
    return pack


def read_pack(pack_dir: Path) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]]:
    """The spec and each part's decoded ``(images, labels, shorter sides)`` of a pack written by :func:`write_pack`.

    The sides are None in a pack written before packs carried them.

    Raises:
        DatasetError: The pack is missing or unreadable.
    """
    import json

    try:
        spec = json.loads((pack_dir / "spec.json").read_text(encoding="utf-8"))
        with np.load(pack_dir / "pack.npz") as columns:
            parts = {
                part: (
                    unpack_part(columns[f"{part}_bytes"], columns[f"{part}_offsets"]),
                    columns[f"{part}_labels"],
                    columns[f"{part}_sides"] if f"{part}_sides" in columns.files else None,
                )
                for part in spec["parts"]
            }
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"cannot read the pack in {str(pack_dir)!r}: {exc}") from exc
    return spec, parts


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.make_parser("catdog pack", "Write the training and validation parts as a compact WebP pack.")
    parser.add_argument("out_dir", type=Path, help="folder for pack.npz and spec.json")
    parser.add_argument("--quality", type=int, default=55, help="WebP quality, 1-100 (default 55)")
    parser.add_argument(
        "--validation-images",
        type=int,
        help="pack only this many validation images, evenly spaced over the part (default: all)",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.quality <= 100:
        parser.error("--quality must be between 1 and 100")
    settings = cli.settings_from_args(args)
    if not settings.training.other_weights.uniform:
        # A pack carries labels and sizes, not each photo's group: train such a run here (catdog train).
        parser.error("training.other_weights weighs photos by group, which a pack does not carry")

    from catdog.data.dataset import class_weights, load_arrays, prepare_split, shorter_sides

    split, root, manifest_hash = prepare_split(settings)
    arrays = load_arrays(settings, split, root)
    t = settings.training
    num_classes = len(settings.data.classes)
    spec = {
        "training": t.model_dump(mode="json"),
        "classes": list(settings.data.classes),
        "image_size": t.image_size,
        "class_weights": class_weights(split.labels["train"], num_classes, t.class_weight_power),
        "counts": split.counts(),
        "split_sha256": file_sha256(paths.split(settings.data.artifacts_dir)),
        "manifest_sha256": manifest_hash,
    }
    parts = {
        part: (arrays[part], np.asarray(split.labels[part]), shorter_sides([str(root / f) for f in split.files[part]]))
        for part in PACKED_PARTS
    }
    if args.validation_images:
        # The part is ordered by class and source, so even spacing keeps its mix.
        images = parts["validation"][0]
        keep = np.linspace(0, len(images) - 1, min(args.validation_images, len(images))).round().astype(int)
        parts["validation"] = tuple(column[keep] for column in parts["validation"])
    pack = write_pack(args.out_dir, parts, spec, args.quality)
    print(f"wrote {pack} ({pack.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
