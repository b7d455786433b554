"""Soft k-means, cluster labelling and the latent scatter."""

from __future__ import annotations

import numpy as np
import pytest

from aerestore import cluster as C


def two_blobs(n=200, d=8, gap=6.0, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, (n, d))
    b = rng.normal(0, 1, (n, d))
    b[:, 0] += gap
    return np.concatenate([a, b]).astype(np.float32), np.repeat([0, 1], n)


def test_soft_kmeans_recovers_two_blobs():
    z, truth = two_blobs()
    res = C.soft_kmeans(z, 2, beta=5.0, tol=1e-6, max_iter=200, seed=1)
    assert res.converged
    labels = C.responsibilities(z, res.centroids, 5.0, res.scale).argmax(1)
    agree = max((labels == truth).mean(), (labels != truth).mean())
    assert agree > 0.98
    centres = sorted(res.centroids[:, 0])
    assert centres[0] == pytest.approx(0, abs=0.5) and centres[1] == pytest.approx(6, abs=0.5)


def test_responsibilities_formula():
    z = np.array([[0.0, 0.0], [1.0, 0.0]], np.float32)
    c = np.array([[0.0, 0.0], [2.0, 0.0]], np.float32)
    r = C.responsibilities(z, c, beta=2.0, scale=4.0)
    # point 1: d^2 = (1, 1) -> equal; point 0: d^2 = (0, 4) -> exp(0) vs exp(-2)
    assert r[1] == pytest.approx([0.5, 0.5])
    assert r[0][0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert np.allclose(r.sum(1), 1)


def test_small_beta_merges_centroids_large_beta_splits():
    z, _ = two_blobs(gap=3.0)
    merged = C.soft_kmeans(z, 2, beta=0.05, tol=1e-7, max_iter=500, seed=0)
    split = C.soft_kmeans(z, 2, beta=20.0, tol=1e-7, max_iter=500, seed=0)
    d_merged = np.linalg.norm(merged.centroids[0] - merged.centroids[1])
    d_split = np.linalg.norm(split.centroids[0] - split.centroids[1])
    assert d_merged < 0.2 < 2.0 < d_split


def test_soft_kmeans_is_seeded_and_checks_k():
    z, _ = two_blobs()
    a = C.soft_kmeans(z, 3, 5.0, seed=7)
    b = C.soft_kmeans(z, 3, 5.0, seed=7)
    assert np.array_equal(a.centroids, b.centroids)
    with pytest.raises(ValueError, match="cluster.k"):
        C.soft_kmeans(z[:2], 3, 5.0)


def blocks_pair(n=40, s=12, seed=0):
    """Sharp random-texture blocks; the first half of the degraded copies blurred + masked."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 256, (n, 3, s, s)).astype(np.uint8)
    degraded = clean.copy()
    mask = np.zeros((n, 2, s, s), np.uint8)  # channels: blur, noise
    half = n // 2
    degraded[:half] = ndimage.gaussian_filter(clean[:half].astype(float), (0, 0, 2, 2)).astype(np.uint8)
    mask[:half, 0] = 255
    return clean, degraded, mask, half


def test_laplacian_variance_orders_blur():
    clean, degraded, _, half = blocks_pair()
    lv_c = C.laplacian_variance(clean)
    lv_d = C.laplacian_variance(degraded)
    assert (lv_d[:half] < lv_c[:half] / 4).all()
    assert np.allclose(lv_d[half:], lv_c[half:])


def test_describe_clusters_labels_blurred_cluster():
    clean, degraded, mask, half = blocks_pair()
    labels = np.r_[np.zeros(half, int), np.ones(len(clean) - half, int)]
    info = C.describe_clusters(labels, 3, clean, degraded, mask)
    assert info[0]["label"] == "blur" and info[0]["blur_share"] == pytest.approx(1.0)
    assert info[1]["label"] == "clean" and info[1]["blur_share"] == 0 and info[1]["clean_share"] == 1
    assert info[2]["label"] == "empty" and info[2]["size"] == 0
    # without masks the Laplacian ratio decides
    info = C.describe_clusters(labels, 2, clean, degraded, None)
    assert [i["label"] for i in info] == ["blurred", "clear"]
    assert info[0]["sharpness_ratio"] < info[1]["sharpness_ratio"]
    # a cluster that holds blurred and sharp blocks alike is 'mixed', whatever its size
    mixed = np.arange(len(clean)) % 2
    info = C.describe_clusters(mixed, 2, clean, degraded, mask)
    assert [i["label"] for i in info] == ["mixed", "mixed"]


def test_damage_shares_and_report_measure_whether_clusters_follow_damage():
    s = 4
    mask = np.zeros((90, 2, s, s), np.uint8)
    mask[:30, 0] = 255  # 30 blurred blocks
    mask[30:60, 1] = 200  # 30 noisy blocks
    mask[60:, 0, :1] = 255  # 30 clean blocks with a blurred row: a quarter of their pixels
    shares = C.damage_shares(mask)
    np.testing.assert_allclose(shares[0], [0, 1, 0])
    np.testing.assert_allclose(shares[45], [0, 0, 1])
    np.testing.assert_allclose(shares[75], [0.75, 0.25, 0])
    truth = np.repeat([1, 2, 0], 30)
    r = C.damage_report(truth, shares)
    assert r["ami_majority_damage"] == pytest.approx(1.0)
    assert r["by_damage"]["blur"]["cluster"] == 1 and r["by_damage"]["blur"]["purity"] == 1.0
    # 30*16 + 30*4 blurred pixels; cluster 1 holds 30*16 of them; cluster 0 is a quarter blur
    assert r["by_damage"]["blur"]["recall"] == pytest.approx(480 / 600)
    assert r["by_damage"]["blur"]["max_share_elsewhere"] == pytest.approx(0.25)
    assert r["clusters"][0]["majority"] == "clean" and r["clusters"][2]["noise_share"] == 1.0
    # clusters that cut across the damage (content) carry no information about it
    rng = np.random.default_rng(0)
    noise_labels = rng.integers(0, 3, len(truth))
    assert abs(C.damage_report(noise_labels, shares)["ami_majority_damage"]) < 0.1
    with pytest.raises(ValueError, match="damage must be"):
        C.damage_report(truth, shares[:10])


def test_silhouette_and_scatter(tmp_path):
    z, truth = two_blobs()
    s = C.silhouette(z, truth)
    assert s is not None and s > 0.3
    assert C.silhouette(z, np.zeros(len(z), int)) is None
    info = [{"label": "a", "size": 200}, {"label": "b", "size": 200, "blur_share": 0.5}]
    C.scatter_plot(z, truth, info, tmp_path / "s.png", "title")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    damage = np.eye(3)[np.arange(len(z)) % 3]  # the panel coloured by damage
    C.scatter_plot(z, truth, info, tmp_path / "d.png", "title", damage=damage)
    assert (tmp_path / "d.png").stat().st_size > (tmp_path / "s.png").stat().st_size
    p = C.pca_2d(z)
    assert p.shape == (len(z), 2) and np.var(p[:, 0]) >= np.var(p[:, 1])


def test_ncut_head_assigns_blocks_to_its_clusters():
    import torch

    from aerestore.losses import LossConfig
    from aerestore.models import create_model

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (50, 3, 16, 16)).astype(np.uint8)
    with_head = create_model("conv_ae", latent=8, block=16, channels=3, loss=LossConfig(ncut_weight=0.1, ncut_k=3))
    labels = C.head_assign(with_head, blocks, batch_size=16)
    assert labels.shape == (50,) and labels.min() >= 0 and labels.max() < 3
    assert np.array_equal(labels, C.head_assign(with_head, blocks, batch_size=50))
    plain = create_model("conv_ae", latent=8, block=16, channels=3, loss=LossConfig())
    with pytest.raises(ValueError, match="ncut_weight"):
        C.head_assign(plain, blocks)
