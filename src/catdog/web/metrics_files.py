"""Keep the multiprocess metrics folder from growing as workers are replaced.

prometheus-client's multiprocess mode gives every worker process its own
files (``counter_<pid>.db``, ``histogram_<pid>.db``...), and ``/metrics``
adds up every file in the folder, dead workers' included, so counts survive
a restart. gunicorn replaces a worker every ``max_requests`` requests: left
alone, the folder gains files with every replacement, and every scrape reads
them all. When a worker exits, :func:`archive_dead_worker` (run by the
gunicorn master) adds its counters and histograms into one archive file per
kind and removes its files, so the folder holds the live workers' files and
two archives, whatever the uptime.

This module imports only prometheus-client: the gunicorn master runs it.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import multiprocess
from prometheus_client.mmap_dict import MmapedDict

# Counters and histograms add up across processes: their values can be summed into one file.
SUMMED_KINDS = ("counter", "histogram")


def archive_dead_worker(pid: int, folder: str | os.PathLike) -> None:
    """Fold worker ``pid``'s counters and histograms into the folder's archives and remove its files.

    Its live gauges are dropped (they described a process that is gone).

    Args:
        pid: The exited worker's process id.
        folder: The ``PROMETHEUS_MULTIPROC_DIR`` folder.
    """
    folder = Path(folder)
    for kind in SUMMED_KINDS:
        source = folder / f"{kind}_{pid}.db"
        if not source.exists():
            continue
        archive = MmapedDict(str(folder / f"{kind}_archive.db"))
        try:
            for key, value, _, _ in MmapedDict.read_all_values_from_file(str(source)):
                total, _ = archive.read_value(key)
                archive.write_value(key, total + value, 0.0)
        finally:
            archive.close()
        source.unlink()
    multiprocess.mark_process_dead(pid, str(folder))
