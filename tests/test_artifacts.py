"""The files the stages hand on (model.pt, clusters.npz, decoders.pt): written and read by one
module each, versioned, and refused with one line naming the file when damaged, of another
kind, or made for another network; from the stage that reads them and from `aerestore restore`."""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from helpers import load_script, stage_args, tiny_model

from aerestore import cli
from aerestore.artifacts import Clusters, ModelKey, read_clusters, read_decoders, write_clusters, write_decoders
from aerestore.cli.common import write_png
from aerestore.models import create_model, read_model, save_model
from aerestore.restore import Restorer
from aerestore.stage import main as stage_main

REPO = Path(__file__).resolve().parents[1]


def unet():
    torch.manual_seed(0)
    return create_model("unet_ae", latent=8, block=16, channels=3, width=4, levels=2)


def write_restorer(folder: Path, model, k: int = 2, overlap: int = 4) -> Path:
    """model.pt, clusters.npz and decoders.pt of ``model`` (untrained: only the formats matter)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, folder / "model.pt", overlap=0 if model.track == "images" else overlap)
    centroids = np.random.default_rng(0).normal(size=(k, model.latent_dim)).astype(np.float32)
    write_clusters(folder / "clusters.npz", Clusters(ModelKey.of(model), centroids, 1.0, 5.0, "soft_kmeans",
                                                     ["clean"] * k, [10] * k))
    result = SimpleNamespace(control=model.decoder, clusters=[copy.deepcopy(model.decoder) for _ in range(k)],
                             sizes=[10] * k, fallback=[False] * k, gate=None)
    write_decoders(folder / "decoders.pt", model, result)
    return folder


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder (the stages' cwd) with params.yaml (tiny, no MLflow) and
    models/conv_ae and models/unet_ae written by the writers under test."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.update(architectures=["conv_ae", "unet_ae"], blocks={"size": 16, "overlap": 4})
    raw["mlflow"]["enabled"] = False
    raw["runtime"]["threads"] = 1
    raw["evaluate"].update(classical=[], grid_images=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    write_restorer(tmp_path / "models" / "conv_ae", tiny_model("conv_ae", block=16))
    write_restorer(tmp_path / "models" / "unet_ae", unet())
    rng = np.random.default_rng(0)
    for split in ("train", "val"):  # 16 px blocks, as blocks.size says
        folder = tmp_path / "data" / "blocks" / split
        folder.mkdir(parents=True)
        for name in ("clean", "degraded"):
            np.save(folder / f"{name}.npy", rng.integers(0, 256, (8, 3, 16, 16), dtype=np.uint8))
    folder = tmp_path / "data" / "prepared" / "test"
    folder.mkdir(parents=True)
    for name, shape in (("clean", (2, 32, 32, 3)), ("degraded", (2, 32, 32, 3)), ("mask", (2, 32, 32, 2))):
        np.save(folder / f"{name}.npy", rng.integers(0, 256, shape, dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def stage_error(name: str, args: list[str], capsys) -> str:
    """Run stages/<name>.py in this process; its one-line error (it must exit 2)."""
    module = load_script(REPO / "stages" / f"{name}.py", f"stage_{name}")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        stage_main(name, module.run, args)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith(f"error in stage {name}: ")
    assert lines[1:] == ["(set AERESTORE_DEBUG=1 for the traceback)"]
    return lines[0]


def restore_error(arch: str, capsys) -> str:
    """`aerestore restore` with models/<arch>: its one-line error (exit code 2)."""
    image = Path("photo.png")
    write_png(image, np.full((20, 20, 3), 128, np.uint8))
    capsys.readouterr()
    assert cli.main(["restore", str(image), "-m", f"models/{arch}", "-o", "out", "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aerestore restore: models/"), lines
    return lines[0]


def cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ------------------------------------------------------------------ formats round trip
def test_every_file_round_trips_with_its_version_and_key(tmp_path):
    model = tiny_model("conv_ae", block=16)
    folder = write_restorer(tmp_path / "m", model, k=3)
    saved = read_model(folder / "model.pt")
    assert (saved.version, saved.geometry.block, saved.geometry.overlap, saved.model.name) == (2, 16, 4, "conv_ae")
    clusters = read_clusters(folder / "clusters.npz", saved.model)
    assert clusters.made_for == ModelKey("conv_ae", 16, 3, model.latent_dim) and len(clusters) == 3
    assert clusters.labels == ["clean"] * 3 and clusters.sizes == [10] * 3
    decoders = read_decoders(folder / "decoders.pt", saved.model)
    assert decoders.made_for == clusters.made_for and len(decoders.clusters) == 3
    with zipfile.ZipFile(folder / "clusters.npz") as z:
        assert "version.npy" in z.namelist()
    restorer = Restorer.load(folder)
    assert restorer.overlap == 4 and len(restorer.cluster_decoders) == 3


def test_files_of_the_previous_format_still_load(tmp_path):
    """Version 1 (no version field; the overlap in model.pt's extra): what the pipeline and
    the MLflow registry hold from before, still restored with the same geometry."""
    model = tiny_model("conv_ae", block=16)
    torch.save({"config": model.config(), "state_dict": model.state_dict(),
                "extra": {"arch": "conv_ae", "overlap": 4, "image_size": 64, "best_epoch": 2}}, tmp_path / "model.pt")
    np.savez(tmp_path / "clusters.npz", centroids=np.zeros((2, model.latent_dim), np.float32), scale=np.float64(1),
             beta=np.float64(5), method=np.str_("soft_kmeans"), labels=np.array(["a", "b"]), sizes=np.array([1, 1]))
    sd = model.decoder.state_dict()
    torch.save({"control": sd, "clusters": [sd, None], "fallback": [False, True], "sizes": [1, 1], "extra": {}},
               tmp_path / "decoders.pt")
    saved = read_model(tmp_path / "model.pt")
    assert saved.version == 1 and saved.geometry.overlap == 4 and saved.geometry.image_size == 64
    assert saved.extra == {"arch": "conv_ae", "best_epoch": 2}
    restorer = Restorer.load(tmp_path)
    assert restorer.overlap == 4 and restorer.image_size == 64 and len(restorer.cluster_decoders) == 2
    assert restorer.restore(np.zeros((20, 30, 3), np.uint8)).shape == (20, 30, 3)


# ------------------------------------------------------------------ damaged files
@pytest.mark.parametrize("damage, says", [
    ("truncate", "truncated"), ("empty", "empty file (0 bytes)"), ("text", "not a zip archive")])
def test_damaged_model_pt(work, capsys, damage, says):
    path = work / "models/conv_ae/model.pt"
    {"truncate": cut, "empty": lambda p: p.write_bytes(b""), "text": lambda p: p.write_text("weights")}[damage](path)
    line = stage_error("cluster", stage_args("cluster", "conv_ae"), capsys)
    assert "models/conv_ae/model.pt: not a model file saved by aerestore" in line and says in line
    line = restore_error("conv_ae", capsys)
    assert "models/conv_ae/model.pt: not a model file saved by aerestore" in line and says in line


def test_damaged_clusters_npz(work, capsys):
    path = work / "models/conv_ae/clusters.npz"
    cut(path, 0.7)
    line = stage_error("decoders", stage_args("decoders", "conv_ae"), capsys)
    assert "models/conv_ae/clusters.npz: not a clusters file saved by aerestore: truncated" in line
    assert "clusters.npz: not a clusters file saved by aerestore: truncated" in restore_error("conv_ae", capsys)
    np.savez(path, centroids=np.zeros((2, 3)))  # a zip of arrays, not ours
    assert "clusters.npz: not a clusters file saved by aerestore: no 'scale'" in restore_error("conv_ae", capsys)


def test_damaged_decoders_pt(work, capsys):
    cut(work / "models/unet_ae/decoders.pt")
    line = stage_error("evaluate", stage_args("evaluate"), capsys)
    assert "models/unet_ae/decoders.pt: not a decoders file saved by aerestore: truncated" in line
    assert "unet_ae/decoders.pt: not a decoders file saved by aerestore: truncated" in restore_error("unet_ae", capsys)


def test_a_file_of_a_newer_format_is_refused(work, capsys):
    path = work / "models/conv_ae/model.pt"
    state = torch.load(path, weights_only=True)
    state["version"] = 99
    torch.save(state, path)
    assert "model.pt: model format version 99, this aerestore reads up to 2" in restore_error("conv_ae", capsys)
    torch.save({"format": "aerestore.decoders", "version": 2}, path)  # a decoders file named model.pt
    assert "model.pt: is 'aerestore.decoders', not a model file" in restore_error("conv_ae", capsys)


# ------------------------------------------------------------------ files of another network
def test_decoders_of_another_architecture(work, capsys):
    """conv_ae's decoders.pt beside unet_ae's model.pt and clusters."""
    (work / "models/unet_ae/decoders.pt").write_bytes((work / "models/conv_ae/decoders.pt").read_bytes())
    line = stage_error("evaluate", stage_args("evaluate"), capsys)
    assert "models/unet_ae/decoders.pt: made for conv_ae, but the model.pt beside it holds unet_ae" in line
    assert "decoders.pt: made for conv_ae, but the model.pt beside it holds unet_ae" in restore_error("unet_ae", capsys)


def test_model_of_another_architecture(work, capsys):
    """unet_ae's model.pt copied into models/conv_ae."""
    (work / "models/conv_ae/model.pt").write_bytes((work / "models/unet_ae/model.pt").read_bytes())
    line = stage_error("cluster", stage_args("cluster", "conv_ae"), capsys)
    assert "models/conv_ae/model.pt: holds a unet_ae model, not conv_ae" in line
    line = restore_error("conv_ae", capsys)
    assert "models/conv_ae/clusters.npz: made for conv_ae, but the model.pt beside it holds unet_ae" in line


def test_model_of_another_block_size(work, capsys):
    """conv_ae retrained on 12 px blocks; data/blocks, clusters and decoders are of 16 px."""
    save_model(tiny_model("conv_ae", block=12), work / "models/conv_ae/model.pt", overlap=4)
    line = stage_error("cluster", stage_args("cluster", "conv_ae"), capsys)
    assert "models/conv_ae/model.pt: a model for 12 px blocks, but data/blocks has 16 px blocks" in line
    line = restore_error("conv_ae", capsys)
    assert "clusters.npz: made for conv_ae on 16 px blocks, but model.pt was trained on 12 px" in line
    (work / "models/conv_ae/clusters.npz").unlink()
    line = restore_error("conv_ae", capsys)
    assert "decoders.pt: made for conv_ae on 16 px blocks, but model.pt was trained on 12 px" in line


def test_clusters_with_another_latent_dimension(work, capsys):
    model = tiny_model("conv_ae", block=16, latent=12)  # same arch and block, a wider latent
    save_model(model, work / "models/conv_ae/model.pt", overlap=4)
    line = stage_error("decoders", stage_args("decoders", "conv_ae"), capsys)
    assert ("models/conv_ae/clusters.npz: made for conv_ae with latent vectors of 8, "
            f"but model.pt's have {model.latent_dim}") in line
    path = work / "models/conv_ae/clusters.npz"  # a version-1 file (no key): its centroids' shape
    np.savez(path, centroids=np.zeros((2, 5), np.float32), scale=np.float64(1), beta=np.float64(5),
             method=np.str_("soft_kmeans"))
    line = restore_error("conv_ae", capsys)
    assert f"clusters.npz: centroids of dimension 5, but the conv_ae model's latent vectors have {model.latent_dim}" \
        in line


def test_decoders_and_clusters_of_different_runs(work, capsys):
    model = read_model(work / "models/conv_ae/model.pt").model
    result = SimpleNamespace(control=model.decoder, clusters=[model.decoder] * 3, sizes=[1] * 3,
                             fallback=[False] * 3, gate=None)
    write_decoders(work / "models/conv_ae/decoders.pt", model, result)
    line = restore_error("conv_ae", capsys)
    assert "decoders.pt: 3 cluster decoders, but models/conv_ae/clusters.npz has 2 clusters" in line
