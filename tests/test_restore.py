"""The restorer (split -> encode -> route -> decode -> merge) and the per-cluster decoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aerestore.decoders import train_decoders
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
