"""Runs of killed stages: each run is tagged with the process that opened it, and the
next run of the same stage marks KILLED the RUNNING runs whose process is gone."""

from __future__ import annotations

import os
import socket
from typing import Any, Mapping


HOST_TAG = "aerestore.host"
PID_TAG = "aerestore.pid"
PID_START_TAG = "aerestore.pid_start"  # the process's start time (s since the epoch)
STALE_TAG = "aerestore.stale"


def _process_tags() -> dict[str, str]:
    """Who runs this stage: host, pid and the process's start time (a pid is reused)."""
    import psutil

    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    try:
        tags[PID_START_TAG] = repr(psutil.Process().create_time())
    except psutil.Error:  # pragma: no cover - our own process
        pass
    return tags


def _gone(tags: Mapping[str, str]) -> str | None:
    """Why the process that opened a run is known to be gone, or None if it may be alive
    (alive, on another host, or a run without our tags)."""
    import psutil

    host, pid = tags.get(HOST_TAG), tags.get(PID_TAG)
    if host != socket.gethostname() or not pid or not pid.isdigit():
        return None
    try:
        started = psutil.Process(int(pid)).create_time()
    except psutil.NoSuchProcess:
        return f"its process {pid} on {host} is gone"
    except psutil.Error:  # alive, not ours to read
        return None
    recorded = tags.get(PID_START_TAG)
    try:
        if recorded is not None and abs(float(recorded) - started) > 1.0:
            return f"its process {pid} on {host} is gone (pid {pid} is now another process)"
    except ValueError:
        return None
    return None


def close_stale_runs(client: Any, experiment_id: str, stage: str, current: str | None = None) -> list[str]:
    """Mark KILLED the RUNNING runs of ``stage`` whose process is gone (killed by
    ``kill -9``, the machine rebooted): a run cannot end itself then, and would stay
    RUNNING for ever. Runs of live processes and of other hosts are left alone. Returns
    the ids marked."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`dvc.stage` = '{stage}'",
        max_results=1000,
    )
    marked = []
    for run in runs:
        if run.info.run_id == current:
            continue
        reason = _gone(run.data.tags)
        if reason is None:
            continue
        by = f" (found by run {current} of the same stage)" if current else ""
        client.set_tag(run.info.run_id, STALE_TAG, f"ended KILLED: {reason}{by}")
        client.set_terminated(run.info.run_id, "KILLED")
        marked.append(run.info.run_id)
    return marked
