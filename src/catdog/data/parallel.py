"""One process pool for the data steps' per-file work: checking, decoding and encoding images.

Decoding is CPU-bound Python and Pillow work, so threads would wait on one
another; processes each take a chunk of items at a time (one pickling per
chunk, not per item) and hand the results back in the order of the items.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

Item = TypeVar("Item")
Result = TypeVar("Result")


def ordered_map(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    *,
    workers: int | None = None,
    chunksize: int = 64,
    min_parallel: int = 1,
    desc: str | None = None,
    unit: str = "it",
    progress: bool | None = False,
) -> Iterator[Result]:
    """``function(item)`` for each item, in order, computed by ``workers`` processes.

    An exception raised by ``function`` comes out of the iterator in place of
    its item's chunk (the chunk's other results are lost), and the chunks not
    yet started are dropped. Callers that want to go on past a bad item return
    its error as a value instead.

    Args:
        function: A picklable function (module-level, or a ``functools.partial`` of one).
        items: The inputs.
        workers: Processes; None: one per CPU; 1: none, everything runs here.
        chunksize: Items a process takes at a time.
        min_parallel: With fewer items, everything runs here: starting the
            processes would cost more than they save.
        desc: The progress bar's label.
        unit: What the bar counts.
        progress: True: a bar on stderr; None: one only when stderr is a terminal
            (none in a log file); False: no bar.

    Yields:
        The results, in the order of ``items``.
    """
    workers = workers or os.cpu_count() or 1
    pool = None
    try:
        results: Iterator[Result] = map(function, items)
        if workers > 1 and len(items) >= max(2, min_parallel):
            pool = ProcessPoolExecutor(workers)
            results = pool.map(function, items, chunksize=chunksize)
        disable = None if progress is None else not progress
        yield from tqdm(results, total=len(items), desc=desc, unit=unit, leave=False, disable=disable)
    finally:
        if pool is not None:
            # A caller that stopped early (an error, a closed generator) leaves chunks no one will read.
            pool.shutdown(cancel_futures=True)
