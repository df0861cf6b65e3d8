"""``--engine ray``: the same job on Ray Data, on a Ray started for it or on a cluster.

The files to do become a dataset of paths; ``map_batches`` runs them through
an actor pool of model replicas (:class:`RayReplica`, one loaded model each,
``batch_size`` files a call), and the rows stream back to the job as Arrow
batches, which commits them as Parquet parts like the local engine does.
Ray connects to ``RAY_ADDRESS`` or ``--ray-address`` when one is given, else
starts a local Ray with one CPU per replica, and stops it at the end.
On a cluster every node needs catdog installed (with the ``bulk`` extra) and
must see the model and the photos at the same paths (a shared file system).

Ray is an optional dependency (requirements-bulk.txt): it is imported only here.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from catdog.bulk.replica import ReplicaSpec, start_worker_process
from catdog.bulk.table import to_table
from catdog.errors import JobError

log = logging.getLogger(__name__)


class RayReplica:
    """One actor of the pool: one loaded model (the local engine's code path)."""

    def __init__(self, spec: ReplicaSpec):
        self._replica = start_worker_process(spec)
        self._classes = spec.classes

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        rows = self._replica.classify([str(path) for path in batch["path"]])
        return to_table(rows, self._classes)


class RayEngine:
    """Classify files on Ray Data with ``replicas`` model actors.

    Args:
        spec: The model every actor loads.
        replicas: Actors in the pool; ``None``: one per CPU of the cluster.
        batch_size: Files per ``map_batches`` call (one forward pass).
        address: A Ray cluster's address; ``None``: ``RAY_ADDRESS`` if set, else a local Ray.
    """

    name = "ray"

    def __init__(self, spec: ReplicaSpec, replicas: int | None, batch_size: int, address: str | None = None):
        self.spec = spec
        self.replicas = replicas
        self.batch_size = batch_size
        self.address = address or os.environ.get("RAY_ADDRESS") or None

    def classify(self, paths: Sequence[str]) -> Iterator[list[dict[str, Any]]]:
        """Yield rows in batches as the actors answer (not in order).

        Raises:
            JobError: Ray is not installed, or the job failed on Ray.
        """
        if not paths:
            return
        try:
            import ray
            import ray.data
        except ImportError as exc:
            raise JobError(
                f"--engine ray needs Ray: pip install -r requirements-bulk.txt (or catdog[bulk]) ({exc})"
            ) from exc
        started = not ray.is_initialized()
        if started:
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING)
            else:
                cpus = self.replicas or os.cpu_count()
                ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
        try:
            replicas = self.replicas or max(1, int(ray.cluster_resources().get("CPU", 1)))
            log.info("Ray: %d replica(s) of %s, %d file(s) a batch", replicas, self.spec.model_path, self.batch_size)
            ray.data.DataContext.get_current().enable_progress_bars = False  # the job shows its own
            dataset = ray.data.from_items([{"path": path} for path in paths]).map_batches(
                RayReplica,
                fn_constructor_args=(self.spec,),
                batch_size=self.batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=replicas),
                num_cpus=1,
            )
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                yield batch.to_pylist()
        except ray.exceptions.RayError as exc:
            raise JobError(f"the job failed on Ray: {_reason(exc)} (committed answers are kept)") from exc
        finally:
            if started:
                ray.shutdown()


def _reason(exc: Exception) -> str:
    """The catdog error a replica raised, which Ray passes on as text only, else Ray's first line."""
    raised = re.findall(r"catdog\.errors\.\w+: (.+)", str(exc))
    return raised[-1] if raised else str(exc).strip().splitlines()[0]
