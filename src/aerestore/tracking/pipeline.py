"""Which pipeline execution a stage belongs to: the ``dvc`` process that launched it
(its id, its command line) and the git commit."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # heavy imports only where they are used
    import psutil

PIPELINE_TAG = "aerestore.pipeline_id"


def _runs_dvc(cmdline: list[str]) -> bool:
    """``dvc ...``, ``python /x/bin/dvc ...`` or ``python -m dvc ...``."""
    head = cmdline[:3]
    for i, arg in enumerate(head):
        name = os.path.basename(arg).lower().removesuffix(".exe")
        if name == "dvc":
            return True
        if arg == "-m" and i + 1 < len(cmdline) and cmdline[i + 1] == "dvc":
            return True
    return False


def dvc_process() -> "psutil.Process | None":
    """The nearest ancestor process that runs dvc, or None.

    Stages are children (through a shell) of the ``dvc repro`` / ``dvc exp run``
    process; a queued experiment's stages are children of its own
    ``dvc exp exec-run`` process, which the queue worker starts once per experiment.
    """
    import psutil

    try:
        parents = psutil.Process().parents()
    except psutil.Error:
        return None
    for proc in parents:
        try:
            if _runs_dvc(proc.cmdline()):
                return proc
        except psutil.Error:  # exited meanwhile, or not ours to read
            continue
    return None


def pipeline_id() -> str:
    """An id shared by the stages of one pipeline execution.

    ``<start time of the dvc process>-<its pid>`` (e.g. ``20250301-142233-81234``):
    the same for every stage one ``dvc repro``/``dvc exp run`` launches, different for
    the next execution, and for each experiment of ``dvc queue start -j 2`` (each runs
    in its own ``dvc exp exec-run`` process). Without a dvc ancestor (a stage run by
    hand): ``exp-<DVC_EXP_NAME>`` when that is set, else a random id.
    """
    proc = dvc_process()
    if proc is not None:
        try:
            started = proc.create_time()
            return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}-{proc.pid}"
        except Exception:  # noqa: BLE001 - psutil.Error, the process is gone
            pass
    name = os.environ.get("DVC_EXP_NAME")
    if name:
        return f"exp-{name}"
    return f"run-{uuid.uuid4().hex[:12]}"


def _dvc_command() -> str | None:
    proc = dvc_process()
    if proc is None:
        return None
    try:
        args = proc.cmdline()
    except Exception:  # noqa: BLE001
        return None
    for i, arg in enumerate(args[:3]):
        if os.path.basename(arg).lower().removesuffix(".exe") == "dvc":
            return " ".join(["dvc", *args[i + 1 :]])
        if arg == "-m":
            return " ".join(args[i + 1 :])
    return None


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
