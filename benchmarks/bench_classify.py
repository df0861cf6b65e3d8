"""How fast does a photo collection get classified: the console CLI, the local pool, Ray?

Generates ``--images`` photo-like JPEGs (500x375, as ``bench_predict``), then
runs, back to back, each as its own command, as a user would:

* ``catdog predict FILE...`` (the console CLI: one file at a time);
* ``catdog classify DIR --workers 1`` and ``--workers 2`` (the local pool);
* ``catdog classify DIR --engine ray --workers 2`` (Ray Data, a local Ray started for the job).

Each runs twice: on a few files (``--small``), which is almost all start-up,
and on all of them; the difference gives the steady rate without start-up.
The methods take turns for ``--rounds`` rounds and the medians are reported,
so that a change in the machine's load does not favour one of them.
Meanwhile the resident memory and CPU time of the command's whole process tree
are sampled (Ray's own processes included; shared pages count once per
process). CPU time per image hardly depends on what else runs on the machine,
images/s does. Prints a markdown table with both and their ratios to the
console CLI, and the load average.

Usage::

    python -m benchmarks.bench_classify [--model model/model.h5] [--images 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.bench_predict import typical_jpeg
from catdog.cli import STEPS

METHODS = {
    "console CLI (`catdog predict`)": ["predict"],
    "classify, local pool, 1 worker": ["classify", "--workers", "1"],
    "classify, local pool, 2 workers": ["classify", "--workers", "2"],
    "classify, Ray Data (local Ray), 2 replicas": ["classify", "--engine", "ray", "--workers", "2"],
}


def make_photos(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        path = folder / f"photo_{seed:05d}.jpg"
        path.write_bytes(typical_jpeg(500, 375, seed=seed))
        paths.append(path)
    return paths


class TreeSampler:
    """Peak resident memory and CPU time of a process and all its descendants, sampled."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peak_mib = 0.0
        self.cpu: dict[int, float] = {}  # last seen user + system seconds of each process

    def sample(self) -> None:
        rss = 0
        for member in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # it exited meanwhile
                rss += member.memory_info().rss
                times = member.cpu_times()
                self.cpu[member.pid] = times.user + times.system
        self.peak_mib = max(self.peak_mib, rss / 2**20)


def run(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, peak process-tree RSS (MiB) and process-tree CPU seconds of ``command``."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    tree, done = TreeSampler(process.pid), threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            tree.sample()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    # The console CLI exits 1 when a file failed; none of these fail.
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({process.returncode}):\n{stderr[-3000:]}")
    return seconds, tree.peak_mib, sum(tree.cpu.values())


def command_for(method: list[str], folder: Path, files: list[Path], model: str, output: Path) -> list[str]:
    step, *options = method
    base = [sys.executable, "-m", STEPS[step][0], "--model", model]
    if step == "predict":
        return [*base, *map(str, files)]
    return [*base, str(folder), "--output", str(output), "--overwrite", *options]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="model/model.h5")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--small", type=int, default=16, help="files of the start-up run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each method, taken in turn")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        root = Path(tmp)
        files = make_photos(root / "all", args.images)
        small = root / "small"
        small.mkdir()
        for path in files[: args.small]:
            os.link(path, small / path.name)
        load_before = os.getloadavg()
        # Rounds through every method in turn, so that a change of the machine's load hits them all alike.
        runs: dict[str, list[tuple[float, ...]]] = {name: [] for name in METHODS}
        for round_number in range(1, args.rounds + 1):
            for name, method in METHODS.items():
                output = root / "out.parquet"
                startup, _, startup_cpu = run(command_for(method, small, sorted(small.iterdir()), args.model, output))
                seconds, peak, cpu = run(command_for(method, root / "all", files, args.model, output))
                rate = args.images / seconds
                # Too few images for the start-up to be told apart: no steady rate.
                steady = (args.images - args.small) / (seconds - startup) if seconds > startup else float("nan")
                cpu_ms = 1000 * (cpu - startup_cpu) / (args.images - args.small)
                runs[name].append((seconds, rate, steady, startup, cpu_ms, startup_cpu, peak))
                print(f"round {round_number}, {name}: {seconds:.1f} s, {rate:.1f} images/s", file=sys.stderr)
        load_after = os.getloadavg()

    medians = {name: [statistics.median(column) for column in zip(*rows, strict=True)] for name, rows in runs.items()}
    cli = medians[next(iter(METHODS))]
    print(f"{args.images} generated 500x375 JPEGs, model {args.model}, {os.cpu_count()} CPUs, {args.rounds} round(s):")
    print("medians; images/s of each round in brackets;")
    print(f"load average (1, 5, 15 min) {load_before} before, {load_after} after\n")
    print(
        "| method | wall s | images/s | vs CLI | steady images/s | start-up s | CPU ms/image | vs CLI "
        "| start-up CPU s | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (seconds, rate, steady, startup, cpu_ms, startup_cpu, peak) in medians.items():
        each = ", ".join(f"{result[1]:.0f}" for result in runs[name])
        print(
            f"| {name} | {seconds:.1f} | {rate:.1f} ({each}) | {rate / cli[1]:.2f}x | {steady:.1f} | {startup:.1f} "
            f"| {cpu_ms:.1f} | {cpu_ms / cli[4]:.2f}x | {startup_cpu:.1f} | {peak:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
