"""Every upload of at most 10 MiB decodes within 1 s of CPU and 300 MB, whatever its format.

The corpus (benchmarks/decode_bombs.py) holds the files whose decoding costs
far more than their pixels: RLE BMPs, a TIFF of one-row strips, JPEGs full of
fill bytes or comment markers, a PNG of empty chunks, a GIF of comment blocks,
lossless and animated WebPs declaring 40 megapixels. Each is refused before
any decoder reads it; the same kinds of file just inside the limits decode
within the bounds (measured in a fresh process: CPU time and peak memory).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from benchmarks.decode_bombs import MAX_FILE, corpus, worst_accepted
from benchmarks.hostile import progressive_bomb
from catdog.config import load_config
from catdog.errors import InvalidImage
from catdog.serving.image_checks import MAX_JPEG_SCANS
from catdog.serving.preprocess import ImageLimits, declared_pixels, open_image

CPU_LIMIT_S = 1.0
MEMORY_LIMIT_MIB = 300.0
REFUSALS = {"too_complex", "too_large", "unsupported_format"}


@pytest.fixture(scope="module")
def limits() -> ImageLimits:
    return ImageLimits.from_serving(load_config().serving)


BOMBS = corpus()


@pytest.mark.parametrize("name", list(BOMBS))
def test_each_decode_bomb_is_refused_before_decoding(name, limits):
    data = BOMBS[name]
    assert len(data) <= MAX_FILE
    started = time.process_time()
    with pytest.raises(InvalidImage) as caught:
        open_image(data, limits=limits, draft_size=256)
    assert caught.value.reason in REFUSALS, caught.value
    # Pricing the request (its declared pixels) reads no more of it than refusing it does.
    assert declared_pixels(data, limits.accepted_formats) == 0 or caught.value.reason == "too_large"
    assert time.process_time() - started < CPU_LIMIT_S / 4


MEASURE = r"""
import json, sys, time
from pathlib import Path
from catdog.config import load_config
from catdog.serving.preprocess import ImageLimits, load_image

def peak_mib():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

def rss_mib():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

limits = ImageLimits.from_serving(load_config().serving)
results = {}
for path in sys.argv[1:]:
    data = Path(path).read_bytes()
    Path("/proc/self/clear_refs").write_text("5")  # the peak restarts from the current size
    before = rss_mib()
    started = time.process_time()
    load_image(data, 224, limits=limits)
    results[path] = {"cpu_s": time.process_time() - started, "rise_mib": peak_mib() - before}
print(json.dumps(results))
"""


def test_the_worst_files_accepted_decode_within_a_second_and_300_mb(tmp_path):
    files = {**worst_accepted(), "progressive JPEG of the most scans": progressive_bomb(MAX_JPEG_SCANS)}
    paths = {}
    for number, (name, data) in enumerate(files.items()):
        assert len(data) <= MAX_FILE
        paths[name] = tmp_path / f"{number}.bin"
        paths[name].write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *map(str, paths.values())], capture_output=True, text=True, check=True
    )
    measured = json.loads(done.stdout)
    for name, path in paths.items():
        result = measured[str(path)]
        print(name, result)
        assert result["cpu_s"] < CPU_LIMIT_S and result["rise_mib"] < MEMORY_LIMIT_MIB, (name, result)
