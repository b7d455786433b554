"""studies.revisions.read_revision: the file as committed at a git revision."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aerestore.studies.revisions import read_revision


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})


def test_head_is_the_checked_out_commit_even_with_a_stale_experiment_ref(tmp_path):
    """An interrupted workspace `dvc exp run` leaves refs/exps/exec/EXEC_BASELINE behind; DVC's
    resolve_rev then answers "HEAD" with that old commit. read_revision reads HEAD itself."""
    _git(tmp_path, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True, capture_output=True)
    (tmp_path / "a.txt").write_text("old\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "old")
    old = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "a.txt").write_text("new\n")
    _git(tmp_path, "commit", "-qam", "new")
    _git(tmp_path, "update-ref", "refs/exps/exec/EXEC_BASELINE", old)
    sha, files = read_revision("HEAD", ["a.txt"], tmp_path)
    assert files["a.txt"] == "new\n" and sha != old
    assert read_revision(old, ["a.txt"], tmp_path)[1]["a.txt"] == "old\n"
    with pytest.raises(ValueError, match="no-such-rev"):
        read_revision("no-such-rev", ["a.txt"], tmp_path)
