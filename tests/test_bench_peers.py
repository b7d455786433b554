"""benchmarks/bench_peers.py's learning-rate grid: every network's lr is chosen on the
validation MSE, and only the chosen run restores the scored (test) images. The training,
restoring and scoring are stand-ins here (the selection is what is tested); the real runs
are in docs/peers.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from aerestore.tracks.images.dataset import ImageData
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]

# validation MSE of each (network, lr): unet_ae is best at 0.001, NAFNet at 0.0005
VAL_MSE = {("unet_ae", 0.0005): 2e-3, ("unet_ae", 0.001): 1e-3, ("unet_ae", 0.002): 1.5e-3,
           ("nafnet", 0.0005): 1.1e-3, ("nafnet", 0.001): 1.2e-3, ("nafnet", 0.002): 3e-3}
# what the test split would say: 0.002 best for both (a choice made on it would differ)
TEST_PSNR = {0.0005: 20.0, 0.001: 21.0, 0.002: 25.0}


@pytest.fixture
def bench(monkeypatch, tmp_path):
    module = load_script(ROOT / "benchmarks" / "bench_peers.py")  # it puts benchmarks/ on sys.path itself
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # main() sets it when unset: not for the next tests
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    masks = np.zeros((2, 16, 16, 2), np.uint8)  # channels: blur, noise; the rest is clean
    masks[:, :6, :6, 0] = masks[:, 10:, 10:, 1] = 255
    data = ImageData.from_arrays(images, images, masks)
    fits, scored = [], []

    def fit_crops(model, train, val, cfg, seed, **kw):
        fits.append((model.name, cfg.lr, cfg.crops.steps))
        return SimpleNamespace(history=[{"step": cfg.crops.steps}], best_epoch=1,
                               best_val_loss=VAL_MSE[(model.name, cfg.lr)])

    def evaluate(model, *a):
        scored.append((model.name, model.lr))
        return {"test": {c: TEST_PSNR[model.lr] for c in module.COLUMNS}}

    monkeypatch.setattr(module, "load_sets", lambda *a: (data, data, data, masks, np.arange(2)))
    monkeypatch.setattr(module, "build", lambda params, name, cfg, channels: SimpleNamespace(name=name, lr=cfg.lr))
    monkeypatch.setattr(module, "size_of", lambda model: {"params": 1, "flops_per_px": 1.0})
    monkeypatch.setattr(module, "fit_crops", fit_crops)
    monkeypatch.setattr(module, "evaluate", evaluate)
    monkeypatch.setattr(module, "speed", lambda *a: 1.0)
    monkeypatch.setattr(module, "probe_step", lambda params, name, cfg, train: 0.1)

    def main(*args: str) -> dict:
        out = tmp_path / "bench"
        monkeypatch.setattr(sys, "argv", ["bench_peers.py", "--params", str(ROOT / "params.yaml"), "--steps", "40",
                                          "--peers", "nafnet", "--out", str(out), *args])
        fits.clear()
        scored.clear()
        module.main()
        return json.loads(out.with_suffix(".json").read_text()) | {"md": out.with_suffix(".md").read_text()}

    return SimpleNamespace(main=main, fits=fits, scored=scored)


def test_the_lr_is_chosen_on_validation_and_only_the_chosen_run_is_scored(bench):
    report = bench.main("--mode", "steps", "--lr-grid", "0.0005", "0.001", "0.002")
    grid = [0.0005, 0.001, 0.002]
    assert bench.fits == [("unet_ae", lr, 40) for lr in grid] + [("nafnet", lr, 40) for lr in grid]
    assert bench.scored == [("unet_ae", 0.001), ("nafnet", 0.0005)]  # not 0.002, the test split's best
    unet, naf = report["rows"][1:]
    assert (unet["lr"], naf["lr"]) == (0.001, 0.0005)
    assert unet["test"]["psnr"] == TEST_PSNR[0.001] and naf["test"]["psnr"] == TEST_PSNR[0.0005]
    assert [t["lr"] for t in naf["lr_grid"]] == grid
    assert [t["val_psnr"] for t in naf["lr_grid"]] == [round(10 * np.log10(1 / VAL_MSE[("nafnet", lr)]), 3)
                                                       for lr in grid]
    assert report["conditions"]["lr_grid"] == grid
    assert "| nafnet | steps | 40 | 0.0005 (29.59 / 29.21 / 25.23) |" in report["md"]


def test_at_equal_cpu_seconds_the_budget_is_unet_aes_chosen_run(bench):
    report = bench.main("--mode", "cpu", "--lr-grid", "0.002", "0.001")
    unet = report["rows"][1]
    assert unet["lr"] == 0.001 and report["conditions"]["cpu_budget_seconds"] == unet["train_cpu_seconds"]
    assert bench.scored == [("unet_ae", 0.001), ("nafnet", 0.001)]


def test_without_a_grid_every_network_trains_at_its_own_lr(bench):
    # params.yaml: unet_ae's train.lr 0.001, NAFNet's arch.nafnet.train.lr 0.002 (each chosen
    # on validation), as peer@nafnet trains it; a bench that gave NAFNet unet_ae's rate fails
    report = bench.main("--mode", "steps")
    assert bench.fits == [("unet_ae", 0.001, 40), ("nafnet", 0.002, 40)]
    assert all("lr_grid" not in r for r in report["rows"]) and report["conditions"]["lr_grid"] is None


@pytest.mark.parametrize("grid", [["0.001", "0.001"], ["0", "0.001"]])
def test_a_bad_grid_is_refused_naming_the_option(bench, grid):
    with pytest.raises(SystemExit, match="--lr-grid"):
        bench.main("--lr-grid", *grid)


def test_with_no_peers_unet_ae_alone_chooses_its_rate(bench):
    report = bench.main("--mode", "cpu", "--lr-grid", "0.001", "0.002", "--peers")
    assert bench.fits == [("unet_ae", 0.001, 40), ("unet_ae", 0.002, 40)]
    assert [r["arch"] for r in report["rows"]] == ["degraded input", "unet_ae"] and report["rows"][1]["lr"] == 0.001
