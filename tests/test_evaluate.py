"""The evaluate stage: whole-image scoring, the multi-vs-single comparison, the outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aerestore import evaluate as E
from aerestore import metrics as M
from aerestore.params import parse_params

from helpers import degrade, photo_images, save_tiny_restorer


@pytest.fixture(scope="module")
def test_split():
    clean = photo_images(6, 32, seed=4)
    degraded, mask = degrade(clean, seed=4)
    return clean, degraded, mask


def test_identity_restorer_reproduces_the_degraded_row(test_split):
    clean, degraded, mask = test_split
    rows = {"degraded": lambda d: d, "identity": lambda d: d.copy()}
    metrics, seconds, images = E.score_rows(clean, degraded, mask, rows, chunk=4, keep=3, progress=False)
    for k in metrics["degraded"]:
        assert np.array_equal(metrics["degraded"][k], metrics["identity"][k], equal_nan=True), k
    direct = M.batch_metrics(degraded, clean, mask)
    assert np.allclose(metrics["degraded"]["psnr"], direct["psnr"])
    assert np.array_equal(images["identity"], degraded[:3])
    assert "psnr_inside" in metrics["degraded"]


def test_compare_counts_wins_and_tests_significance():
    better = {"psnr": np.arange(10.0) + 1, "ssim": np.full(10, 0.5), "uqi": np.full(10, 0.5),
              "blur_percent": np.full(10, -5.0)}
    worse = {"psnr": np.arange(10.0), "ssim": np.full(10, 0.5), "uqi": np.full(10, 0.4),
             "blur_percent": np.full(10, 10.0)}
    cmp_ = E.compare(better, worse)
    assert cmp_["psnr"]["share"] == 1.0 and cmp_["psnr"]["p_value"] < 0.01
    assert cmp_["ssim"]["share"] == 0.5 and cmp_["ssim"]["p_value"] == 1.0
    assert cmp_["blur_percent"]["share"] == 1.0  # |-5| beats |10|


def test_run_evaluate_writes_table_json_and_grids(tmp_path, test_split):
    clean, degraded, mask = test_split
    prepared = tmp_path / "prepared" / "test"
    prepared.mkdir(parents=True)
    np.save(prepared / "clean.npy", clean)
    np.save(prepared / "degraded.npy", degraded)
    np.save(prepared / "mask.npy", mask)
    save_tiny_restorer(tmp_path / "models" / "conv_ae")
    params = parse_params({"architectures": ["conv_ae"], "data": {"image_size": 32},
                           "blocks": {"size": 16, "overlap": 4},
                           "evaluate": {"classical": ["tv", "bilateral"], "grid_images": 2}})
    result, summary = E.run_evaluate(params, tmp_path / "prepared", tmp_path / "models",
                                     tmp_path / "evaluate.json", tmp_path / "details.json",
                                     tmp_path / "summary.md", tmp_path / "plots", progress=False)
    saved = json.loads((tmp_path / "evaluate.json").read_text())
    assert saved["images"] == 6
    assert saved["degraded"]["psnr"] == pytest.approx(M.batch_metrics(degraded, clean)["psnr"].mean())
    for mode in ("base", "single", "multi"):
        assert set(saved["conv_ae"][mode]) >= {"psnr", "ssim", "uqi", "psnr_inside"}
    assert 0 <= saved["conv_ae"]["multi_vs_single"]["psnr"]["share"] <= 1
    assert set(saved["classical"]) == {"tv", "bilateral"}
    for text in ("degraded input", "conv_ae per-cluster decoders", "tv (", "Wilcoxon"):
        assert text in summary
    assert (tmp_path / "summary.md").read_text() == summary
    for name in ("grid_conv_ae.png", "bars.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"


def test_block_settings_must_match_the_model(tmp_path, test_split):
    clean, degraded, mask = test_split
    prepared = tmp_path / "prepared" / "test"
    prepared.mkdir(parents=True)
    for name, arr in (("clean", clean), ("degraded", degraded), ("mask", mask)):
        np.save(prepared / f"{name}.npy", arr)
    save_tiny_restorer(tmp_path / "models" / "conv_ae")
    params = parse_params({"architectures": ["conv_ae"], "data": {"image_size": 32},
                           "blocks": {"size": 16, "overlap": 2}, "evaluate": {"classical": []}})
    with pytest.raises(ValueError, match="overlap"):
        E.run_evaluate(params, tmp_path / "prepared", tmp_path / "models", tmp_path / "e.json",
                       tmp_path / "d.json", tmp_path / "s.md", tmp_path / "plots", progress=False)
    assert not (tmp_path / "e.json").exists()
