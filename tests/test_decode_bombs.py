"""Every upload of at most 10 MiB decodes within a few honest decodes' CPU and 300 MB, whatever its format.

The corpus (benchmarks/decode_bombs.py) holds the files whose decoding costs
far more than their pixels: RLE BMPs, a TIFF of one-row strips, JPEGs full of
fill bytes or comment markers, a PNG of empty chunks, a GIF of comment blocks,
lossless and animated WebPs declaring 40 megapixels. Each is refused before
any decoder reads it; the same kinds of file just inside the limits decode
within the bounds (measured in a fresh process: CPU time and peak memory).
CPU time is compared with an honest upload's in the same run, never with a
fixed number of seconds: the same decode takes 0.26 s on one machine and
0.1 s on another.
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

CPU_LIMIT_S = 1.0  # only for refusals, which take milliseconds
# The worst file within the limits may cost this many times the decode of an honest upload of the largest
# accepted size (a progressive JPEG as libjpeg writes it, 10 scans, 40 megapixels).
COST_RATIO = 5.0
MEMORY_LIMIT_MIB = 300.0
# libjpeg's progressive JPEG (Pillow's progressive=True): its number of scans.
HONEST_SCANS = 10
REFUSALS = {"too_complex", "too_large", "unsupported_format"}


@pytest.fixture(scope="module")
def limits() -> ImageLimits:
    return ImageLimits.from_serving(load_config().serving)


BOMBS = corpus()


@pytest.mark.parametrize("name", list(BOMBS))
def test_each_decode_bomb_is_refused_before_decoding(name, limits):
    data = BOMBS[name]
    assert len(data) <= MAX_FILE
    # This thread's CPU only: threads that earlier tests left in the process (TensorFlow's pools) must not count.
    started = time.thread_time()
    with pytest.raises(InvalidImage) as caught:
        open_image(data, limits=limits, draft_size=256)
    assert caught.value.reason in REFUSALS, caught.value
    # Pricing the request (its declared pixels) reads no more of it than refusing it does.
    assert declared_pixels(data, limits.accepted_formats) == 0 or caught.value.reason == "too_large"
    assert time.thread_time() - started < CPU_LIMIT_S / 4


ROUNDS = 3
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
results = {path: {"cpu_s": float("inf"), "rise_mib": 0.0} for path in sys.argv[1:]}
# Rounds taking turns, the least CPU of each file: a busy machine slows single decodes, not the least of three.
for _ in range(ROUNDS):
    for path in sys.argv[1:]:
        data = Path(path).read_bytes()
        Path("/proc/self/clear_refs").write_text("5")  # the peak restarts from the current size
        before = rss_mib()
        started = time.process_time()
        load_image(data, 224, limits=limits)
        result = results[path]
        result["cpu_s"] = min(result["cpu_s"], time.process_time() - started)
        result["rise_mib"] = max(result["rise_mib"], peak_mib() - before)
print(json.dumps(results))
"""


def test_the_worst_files_accepted_decode_within_a_few_honest_decodes_and_300_mb(tmp_path):
    honest = "an honest progressive JPEG of the largest size"
    files = {
        honest: progressive_bomb(HONEST_SCANS),
        **worst_accepted(),
        "progressive JPEG of the most scans": progressive_bomb(MAX_JPEG_SCANS),
    }
    paths = {}
    for number, (name, data) in enumerate(files.items()):
        assert len(data) <= MAX_FILE
        paths[name] = tmp_path / f"{number}.bin"
        paths[name].write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", f"ROUNDS = {ROUNDS}\n{MEASURE}", *map(str, paths.values())],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(done.stdout)
    reference = measured[str(paths[honest])]["cpu_s"]
    for name, path in paths.items():
        result = measured[str(path)]
        print(name, result, f"{result['cpu_s'] / reference:.2f}x the honest decode")
        assert result["cpu_s"] < COST_RATIO * reference and result["rise_mib"] < MEMORY_LIMIT_MIB, (name, result)
