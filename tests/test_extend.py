"""Adding an architecture and a clustering method, as docs/development.md shows: one class
plus a registry line, one function plus a registry line; both run through the stages'
library functions (train -> cluster -> decoders -> restore) on a tiny prepared set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from torch import nn

from aerestore import cluster as C
from aerestore.blocks import run_blocks
from aerestore.data.download import run_download
from aerestore.data.prepare import run_prepare
from aerestore.models import registry as model_registry
from aerestore.models import register_model
from aerestore.models.base import RestorationModel
from aerestore.params import parse_params
from aerestore.pipeline.cluster import CLUSTERERS, ClusterPaths, Fitted, run_cluster
from aerestore.pipeline.decoders import DecoderPaths, run_decoders
from aerestore.pipeline.train import TrainPaths, run_train
from aerestore.restore import Restorer
from aerestore.tracks.registry import track_of

REPO = Path(__file__).resolve().parents[1]


# ---- a new architecture: the class, and one registry line (register_model below)
class TinyAE(RestorationModel):
    """A block autoencoder of two dense layers (the blocks track, RestorationModel's default)."""

    def __init__(self, latent: int = 8, block: int = 16, channels: int = 3, loss=None) -> None:
        super().__init__(latent, block, channels, loss)
        n = channels * block * block
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(n, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, n), nn.Sigmoid(), nn.Unflatten(1, (channels, block, block)))
        self._finish()


# ---- a new clustering method: the function, and one registry line (CLUSTERERS below)
def median_split(codes, z: np.ndarray, fit_idx: np.ndarray, cp, seed: int) -> Fitted:
    """Two clusters: the codes whose first number is above its median over the drawn codes."""
    labels = (z[:, 0] > np.median(z[fit_idx, 0])).astype(np.int64)
    return Fitted(C.mean_centroids(z, labels, cp.k), C.latent_scale(z), labels)


@pytest.fixture
def registered(monkeypatch):
    register_model("tiny_ae", TinyAE)
    monkeypatch.setitem(CLUSTERERS, "median_split", median_split)
    yield
    model_registry._REGISTRY.pop("tiny_ae")


def tiny_params(**cluster):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw.update(latent=8, architectures=["tiny_ae"], arch={})
    raw["data"].update(image_size=32, limit=20)
    raw["prepare"]["augment_copies"] = 0
    raw["blocks"].update(size=16, overlap=4)
    raw["train"]["batch_size"] = 32
    raw["train"]["blocks"]["epochs"] = 1
    raw["train"]["loss"]["damage_weight"] = 0.0
    raw["runtime"].update(threads=1, device="cpu")
    raw["cluster"].update(method="soft_kmeans", k=2, max_blocks=500)
    raw["decoders"].update(epochs=1, min_blocks=4, batch_size=32, ensemble=False)
    raw["mlflow"]["enabled"] = False
    params = parse_params(raw)
    # a method the params schema does not list yet (its name goes into ClusterParams.method)
    return params.model_copy(update={"cluster": params.cluster.model_copy(update=cluster)})


def test_a_new_architecture_and_clustering_method_run_through_the_pipeline(tmp_path, monkeypatch, registered):
    monkeypatch.chdir(tmp_path)
    params = tiny_params(method="median_split")
    data, metrics = Path("data"), Path("metrics")
    run_download(params.data, params.seed, data / "raw", metrics / "download.json")
    run_prepare(params, data / "raw", data / "prepared", metrics / "prepare.json", metrics / "grid.png")
    run_blocks(params, data / "prepared", data / "blocks", metrics / "blocks.json", progress=False)

    assert track_of(TinyAE) == "blocks"
    run_train(params, "tiny_ae", TrainPaths(blocks=data / "blocks", prepared=data / "prepared",
                                            model=Path("models/tiny_ae/model.pt"), metrics=metrics / "train.json",
                                            curve=metrics / "curve.csv"))
    run_cluster(params, "tiny_ae", ClusterPaths(model_dir=Path("models/tiny_ae"), blocks=data / "blocks",
                                                prepared=data / "prepared", metrics=metrics / "cluster.json",
                                                plot=metrics / "cluster.png"))
    clustered = json.loads((metrics / "cluster.json").read_text())
    assert clustered["method"] == "median_split" and clustered["k"] == 2
    sizes = [row["size"] for row in clustered["clusters"]]
    assert sum(sizes) > 0 and abs(sizes[0] - sizes[1]) <= 0.2 * sum(sizes)  # split at the median
    run_decoders(params, "tiny_ae", DecoderPaths(model_dir=Path("models/tiny_ae"), blocks=data / "blocks",
                                                 prepared=data / "prepared", metrics=metrics / "decoders.json",
                                                 plot=metrics / "decoders.png", curve=metrics / "decoders.csv"))
    assert json.loads((metrics / "decoders.json").read_text())["k"] == 2

    restorer = Restorer.load("models/tiny_ae", routing="hard")
    assert restorer.method == "median_split" and len(restorer.cluster_decoders) == 2
    image = np.load(data / "prepared/test/degraded.npy")[0]
    assert restorer.restore(image, "multi").shape == image.shape
