"""A DVC remote shared by a team: one clone runs the pipeline and `dvc push`es its data and
models to a local-folder remote (what a shared/NFS folder is; an S3 remote behaves the
same through DVC); a second clone `dvc pull`s them, after which `dvc repro` runs nothing
and `aerestore restore` works with the pulled models."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline_utils import make_repo, out_of_date, repro, run

pytestmark = [pytest.mark.pipeline, pytest.mark.team]  # the team set-up: ./run.sh test -m team


def test_push_pull_then_nothing_to_run_and_restore_works(tmp_path):
    from PIL import Image

    first = make_repo(tmp_path / "first", {"architectures": ["conv_ae"], "data": {"limit": 20}})
    remote = tmp_path / "remote"
    # what the README tells a team to do once, committed so that every clone has it
    run(["dvc", "remote", "add", "-d", "team", str(remote)], first)
    assert repro(first) >= {"download", "train@conv_ae", "evaluate"}
    run(["git", "add", "-A"], first)
    run(["git", "commit", "-qm", "results"], first)
    pushed = run(["dvc", "push"], first)
    assert remote.is_dir() and any(remote.rglob("*")), pushed.stdout + pushed.stderr

    second = tmp_path / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path)
    assert not (second / "models/conv_ae/model.pt").exists()  # models and data are not in git
    assert json.loads((second / "metrics/train/conv_ae.json").read_text())  # metrics are
    run(["dvc", "pull"], second)
    for name in ("model.pt", "clusters.npz", "decoders.pt"):
        assert (second / "models/conv_ae" / name).read_bytes() == (first / "models/conv_ae" / name).read_bytes()
    assert out_of_date(second) == set()
    assert repro(second) == set()  # "Data and pipelines are up to date."

    photo = (np.random.default_rng(0).random((40, 52, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    run(["aerestore", "restore", str(tmp_path / "photo.png"), "--model", "models/conv_ae",
         "-o", str(tmp_path / "restored")], second)
    restored = np.asarray(Image.open(tmp_path / "restored/photo.png"))
    assert restored.shape == photo.shape
    run(["aerestore", "restore", str(tmp_path / "photo.png"), "--model", "models/conv_ae",
         "-o", str(tmp_path / "restored_first")], first)
    assert np.array_equal(restored, np.asarray(Image.open(tmp_path / "restored_first/photo.png")))
