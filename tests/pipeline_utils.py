"""Run the real DVC pipeline on a temporary copy of the repository, with tiny params."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
    "evaluate": {"classical": [], "grid_images": 2, "max_images": 4},
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


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode})\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}"
        )
    return proc


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
