"""Run the real DVC pipeline on a temporary copy of the repository, with tiny params."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "latent": 8,
    "architectures": ["conv_ae", "vae"],
    "data": {"image_size": 32, "limit": 30},
    "prepare": {"augment_copies": 0},
    "blocks": {"size": 16, "overlap": 4},
    "runtime": {"threads": 1},
    "train": {"blocks": {"epochs": 1}, "batch_size": 64},
    "cluster": {"k": 3, "max_blocks": 2000},  # the default damage_head: one cluster per damage class
    "decoders": {"epochs": 1, "min_blocks": 8, "batch_size": 64},
    # speed_size 32: every row is still timed (the oracle's BM3D too), on a 32 px image;
    # anchor_images 2: the oracle's BM3D (~0.2 s a call, whatever the size) on 2 of the 4
    # test images, ~3.5 s less per evaluate (the oracle's figures: tests/test_evaluate.py)
    "evaluate": {"classical": [], "grid_images": 2, "max_images": 4, "anchor_images": 2, "speed_size": 32},
    "mlflow": {"enabled": False},
    "arch": {"conv_ae": {"model": {}}, "vae": {"model": {}}},
}


def deep_update(base: dict, new: dict) -> dict:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and v:
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


def repo_files() -> list[str]:
    """Files a clone would have, plus uncommitted ones that git does not ignore."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    files = [f for f in out.split("\0") if f]
    skip = ("data/", "models/", "metrics/", "dvc.lock", "mlruns/", "mlflow.db")
    return [f for f in files if not f.startswith(skip) and (REPO / f).is_file()]


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    # stages write __pycache__/ into the copy's src/ as on a user's machine (DVC must
    # ignore it: .dvcignore), whatever this shell says; it also saves recompiling per stage
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    e["NO_ALBUMENTATIONS_UPDATE"] = "1"
    e["DVC_NO_ANALYTICS"] = "1"
    e["OMP_NUM_THREADS"] = "1"  # two test workers share two cores: one thread each
    e["GIT_AUTHOR_NAME"] = e["GIT_COMMITTER_NAME"] = "test"
    e["GIT_AUTHOR_EMAIL"] = e["GIT_COMMITTER_EMAIL"] = "test@example.com"
    return e


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 600,
        extra_env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env={**env(), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode})\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
        )
    return proc


def queue_workers(repo: Path) -> list:
    """This repository's live `dvc exp queue-worker` processes (named after DVC's celery
    directory, as dvc/repo/experiments/queue/celery.py names its nodes)."""
    import hashlib

    import psutil

    node = "dvc-exp-" + hashlib.sha256(str(repo / ".dvc/tmp/exps/celery").encode()).hexdigest()[:6] + "-"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or ())
        if "queue-worker" in cmd and node in cmd:
            found.append(proc)
    return found


def start_queue(repo: Path, jobs: int = 2, extra_env: dict | None = None) -> None:
    """`dvc queue start -j jobs`, returning as soon as the workers are spawned.

    DVC forks its workers with the caller's stdout and stderr still open, so a captured
    `dvc queue start` only returns once every worker has exited: the whole queue, with no
    word of what it was doing (CI, stop 40: 600 s, then a bare TimeoutExpired). Its output
    goes to a file instead."""
    with open(repo.parent / "queue-start.log", "a") as log:
        proc = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env={**env(), **(extra_env or {})},
                              stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=120)
    assert proc.returncode == 0, (repo.parent / "queue-start.log").read_text()[-4000:]


def wait_for_queue(repo: Path, timeout: float = 1200, jobs: int = 2, restarts: int = 2,
                   extra_env: dict | None = None) -> str:
    """Wait until the queue has nothing queued or running; return `dvc queue status`.

    While an experiment of this repository runs (a `dvc exp exec-run` process naming
    it), only the process table is read: each `dvc queue status` costs a second of CPU
    that the experiments need. A queue left with tasks but no worker is started again,
    at most `restarts` times: DVC's workers sometimes stop with tasks still queued
    (treeverse/dvc#10562, whose workaround is another `dvc queue start`). On timeout
    the workers are killed and the failure shows the status and the running tasks' logs."""
    import psutil

    def running() -> bool:
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or ())
            if "exec-run" in cmd and str(repo) in cmd:
                return True
        return False

    deadline = time.time() + timeout
    status, stalled_since = "", None
    while time.time() < deadline:
        if running():
            time.sleep(1)
            continue
        status = run(["dvc", "queue", "status"], repo, extra_env=extra_env).stdout
        if "Queued" not in status and "Running" not in status:
            return status
        if "Queued" in status and "Running" not in status and not queue_workers(repo):
            # stalled only when it stays so for a while: a worker just spawned is not yet
            # `dvc exp queue-worker` in the process table, and a second start would spawn a
            # twin under the same celery node name
            stalled_since = stalled_since or time.time()
            if time.time() - stalled_since > 15 and restarts > 0:
                restarts, stalled_since = restarts - 1, None
                start_queue(repo, jobs, extra_env)
        else:
            stalled_since = None
        time.sleep(2)
    logs = "".join(f"--- {line.split()[0]}\n" + run(["dvc", "queue", "logs", line.split()[0]], repo,
                                                     check=False, extra_env=extra_env).stdout[-3000:]
                   for line in status.splitlines() if "Running" in line)
    for proc in queue_workers(repo):
        for p in [*proc.children(recursive=True), proc]:
            try:
                p.kill()
            except psutil.Error:
                pass
    pytest.fail(f"the queue did not finish in {timeout:.0f} s:\n{status}\n{logs}")


def make_repo(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the project to ``dest``, apply TINY (+ overrides) to params.yaml, git-commit it."""
    for f in repo_files():
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, target)
    set_params(dest, deep_update(deep_update({}, TINY), overrides or {}))
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "tiny pipeline"], dest)
    return dest


def stand_in_repo(repo: Path, files: dict[str, str]) -> Path:
    """A git + DVC repository at ``repo`` holding ``files`` (name -> text), committed: a
    stand-in pipeline for the tests that read DVC experiments."""
    repo.mkdir(parents=True)
    for name, text in files.items():
        (repo / name).write_text(text)
    run(["git", "init", "-q", "-b", "main"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "stand-in"], repo)
    return repo


def set_params(repo: Path, changes: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    deep_update(params, changes)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


STAGE_RE = re.compile(r"Running stage '([^']+)'")


def stages_run(output: str) -> set[str]:
    return set(STAGE_RE.findall(output))


def repro(repo: Path, *args: str) -> set[str]:
    proc = run(["dvc", "repro", *args], repo)
    return stages_run(proc.stdout + proc.stderr)


def out_of_date(repo: Path) -> set[str]:
    """The stages `dvc status` reports as changed (what `dvc repro` would run first)."""
    return set(json.loads(run(["dvc", "status", "--json"], repo).stdout or "{}"))
