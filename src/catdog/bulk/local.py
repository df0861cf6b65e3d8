"""The default engine: a pool of local processes, one loaded model in each.

Processes rather than threads: decoding holds the GIL for part of its time,
and one runtime per process keeps the interpreters apart. Workers are
spawned, not forked, so that none inherits a half-initialised runtime, and
they ignore Ctrl-C: the job stops the pool and commits what it has.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from catdog.bulk.replica import ModelReplica, ReplicaSpec, start_worker_process
from catdog.errors import CatdogError, JobError

log = logging.getLogger(__name__)

_replica: ModelReplica | None = None
_load_error: CatdogError | None = None


def _start_worker(spec: ReplicaSpec) -> None:
    global _replica, _load_error
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _replica = start_worker_process(spec)
    except CatdogError as exc:  # raised again by the first task, where the job sees it
        _load_error = exc


def _classify(paths: Sequence[str]) -> list[dict[str, Any]]:
    if _load_error is not None:
        raise _load_error
    return _replica.classify(paths)


class LocalPool:
    """Classify files with ``workers`` processes, ``batch_size`` files per task.

    Args:
        spec: The model every worker loads.
        workers: Processes, each with one model.
        batch_size: Files per task (one forward pass).
    """

    name = "local"

    def __init__(self, spec: ReplicaSpec, workers: int, batch_size: int):
        self.spec = spec
        self.workers = workers
        self.batch_size = batch_size

    def classify(self, paths: Sequence[str]) -> Iterator[list[dict[str, Any]]]:
        """Yield the rows of each batch as it is done (not in order).

        Raises:
            ModelError: A worker cannot load the model.
            JobError: A worker process died.
        """
        if not paths:
            return
        batches = (paths[start : start + self.batch_size] for start in range(0, len(paths), self.batch_size))
        pool = ProcessPoolExecutor(
            self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.spec,),
        )
        running: set[Future] = set()
        try:
            while True:
                # Two batches a worker in flight: none idles, and a stop discards little.
                for batch in itertools.islice(batches, 2 * self.workers - len(running)):
                    running.add(pool.submit(_classify, batch))
                if not running:
                    return
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BrokenProcessPool as exc:
            raise JobError(f"a worker process died ({exc}); run the same command again to go on") from exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
