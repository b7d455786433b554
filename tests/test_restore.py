"""The restorer (split -> encode -> route -> decode -> merge) and the per-cluster decoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aerestore.tracks.blocks.decoders import train_decoders
from aerestore.restore import Restorer

from helpers import block_data, photo_images, save_tiny_restorer, tiny_model


@pytest.fixture(scope="module")
def restorer(tmp_path_factory):
    return save_tiny_restorer(tmp_path_factory.mktemp("restorer") / "conv_ae")


def test_load_reads_all_three_files(restorer):
    assert [p.name for p in restorer.files()] == ["model.pt", "clusters.npz", "decoders.pt"]
    assert restorer.block == 16 and restorer.overlap == 4 and restorer.channels == 3
    assert len(restorer.cluster_decoders) == 2 and restorer.centroids.shape[0] == 2


@pytest.mark.parametrize("shape", [(32, 32, 3), (37, 50, 3), (9, 70, 3), (40, 40), (20, 24, 4), (16, 16, 1)])
def test_restore_any_size_and_mode(restorer, shape):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape).astype(np.uint8)
    out = restorer.restore(img)
    assert out.shape == shape[:2] + (3,) and out.dtype == np.uint8


def test_modes_differ_and_are_deterministic(restorer):
    img = photo_images(1, 48)[0]
    multi = restorer.restore(img, "multi")
    assert np.array_equal(multi, restorer.restore(img, "multi"))
    single = restorer.restore(img, "single")
    base = restorer.restore(img, "base")
    assert not np.array_equal(multi, single) and not np.array_equal(single, base)
    with pytest.raises(ValueError, match="mode"):
        restorer.restore(img, "both")


def test_hard_routing_sends_each_block_to_its_nearest_centroid(restorer):
    x = torch.rand(20, 3, 16, 16)
    z = restorer.model.encode(x)
    out = restorer.decode(z, "multi")
    d2 = torch.cdist(z.flatten(1), restorer.centroids) ** 2
    labels = d2.argmin(1)
    for k, dec in enumerate(restorer.cluster_decoders):
        sel = labels == k
        if sel.any():
            assert torch.allclose(out[sel], dec(z[sel]), atol=1e-6)


def test_soft_routing_mixes_by_responsibility(restorer):
    soft = Restorer.load(restorer.files()[0].parent, routing="soft")
    z = soft.model.encode(torch.rand(6, 3, 16, 16))
    r = soft.route(z)
    assert torch.allclose(r.sum(1), torch.ones(6), atol=1e-5)
    expected = sum(r[:, k].view(-1, 1, 1, 1) * d(z) for k, d in enumerate(soft.cluster_decoders))
    assert torch.allclose(soft.decode(z, "multi"), expected, atol=1e-6)


def test_load_without_decoders_ignores_a_stale_decoders_file(restorer):
    bare = Restorer.load(restorer.files()[0].parent, decoders=False)
    assert [p.name for p in bare.files()] == ["model.pt", "clusters.npz"]
    assert bare.cluster_decoders == [] and bare.centroids is not None


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt"):
        Restorer.load(tmp_path)


def test_control_gets_the_same_budget_and_small_clusters_fall_back(recwarn):
    data = block_data()
    model = tiny_model()
    n = len(data)

    # 3 clusters by block index: the first 5 blocks, then the rest alternately 1 and 2.
    # train_decoders routes the training blocks, then the validation blocks (the same here).
    labels = np.r_[np.zeros(5, int), 1 + (np.arange(n - 5) % 2)]
    calls = []

    def route(z):
        r = torch.zeros(len(z), 3)
        r[torch.arange(len(z)), torch.as_tensor(labels[: len(z)])] = 1
        calls.append(len(z))
        return r

    res = train_decoders(model, route, 3, data, data, epochs=2, lr=1e-3, batch_size=16,
                         min_blocks=6, seed=0, progress=False)
    sizes = [5, int((labels == 1).sum()), int((labels == 2).sum())]
    assert res.sizes == sizes
    assert res.fallback == [True, False, False] and res.clusters[0] is None
    assert any("cluster 0" in str(w.message) for w in recwarn)
    assert res.summary["block_updates"]["clusters"] == 2 * (sizes[1] + sizes[2])
    assert res.summary["block_updates"]["control"] == res.summary["block_updates"]["clusters"]
    # the encoder stayed frozen
    assert all(not p.requires_grad for p in model.encoder.parameters())


# ------------------------------------------------------------------ the ensemble control
def test_ensemble_is_saved_loaded_and_mixed_as_the_per_cluster_decoders(restorer, monkeypatch):
    from aerestore import restore as R

    assert restorer.ensemble_decoders is not None and len(restorer.ensemble_decoders) == 2
    assert restorer.own_decoders == 2
    x = torch.rand(2, 3, 37, 50, generator=torch.Generator().manual_seed(0))
    ens = restorer.restore_float(x, "ensemble")
    assert ens.shape == x.shape and torch.equal(ens, restorer.restore_float(x, "ensemble"))
    assert not torch.allclose(ens, restorer.restore_float(x, "multi"), atol=1e-4)
    # the same mixing: with the cluster decoders and the blind cycle undone, it is multi
    saved = restorer.ensemble_decoders
    monkeypatch.setattr(restorer, "ensemble_decoders", list(restorer.cluster_decoders))
    monkeypatch.setattr(R, "blind_maps", lambda maps: maps)
    for routing in ("soft", "hard"):
        monkeypatch.setattr(restorer, "routing", routing)
        assert torch.equal(restorer.restore_float(x, "ensemble"), restorer.restore_float(x, "multi"))
    assert saved is not restorer.ensemble_decoders


def test_ensemble_weights_are_each_images_own_moved_to_other_blocks(restorer):
    """Per image the blocks' responsibilities, moved along the fixed cycle: the same
    weights, whichever blocks are damaged, and the same for an image alone or in a batch."""
    from aerestore.blocks import block_grid, split_blocks
    from aerestore.restore import blind_order

    x = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    blocks = split_blocks(x, restorer.block, restorer.overlap)
    grid = block_grid(40, 40, restorer.block, restorer.overlap)
    r = restorer.route(restorer.model.encode(blocks)).view(3, grid.per_image, -1)
    blind = restorer._blind_weights(blocks, 3, 40, 40).view(3, grid.per_image, -1)
    order = blind_order(grid.ny, grid.nx)
    assert torch.allclose(blind, r[:, order], atol=1e-6)
    alone = restorer._blind_weights(blocks[: grid.per_image], 1, 40, 40)
    assert torch.allclose(alone, blind[0], atol=1e-6)


def test_a_decoders_file_without_an_ensemble_still_loads(tmp_path, restorer):
    import shutil

    from aerestore.artifacts import read_decoders

    src = restorer.files()[0].parent
    for name in ("model.pt", "clusters.npz", "decoders.pt"):
        shutil.copy(src / name, tmp_path / name)
    state = torch.load(tmp_path / "decoders.pt", weights_only=True)
    assert state["version"] == 3 and state["ensemble"] is not None
    state.update(version=2)
    del state["ensemble"]
    torch.save(state, tmp_path / "decoders.pt")
    assert read_decoders(tmp_path / "decoders.pt").ensemble is None
    old = Restorer.load(tmp_path)
    assert old.ensemble_decoders is None
    assert old.restore_float(torch.rand(1, 3, 20, 20), "multi").shape == (1, 3, 20, 20)
    with pytest.raises(ValueError, match="decoders.ensemble"):
        old.restore_float(torch.rand(1, 3, 20, 20), "ensemble")
