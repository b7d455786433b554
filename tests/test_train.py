"""The training loop: seeded, bulk batches, lr decay, early stopping with best weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aerestore.params import RuntimeParams, TrainParams
from aerestore.tracks.blocks.dataset import BlockData, to_float
from aerestore.tracks.blocks.train import fit, iterate_batches

from helpers import block_data, tiny_model


def test_to_float_and_batches_cover_every_block_once():
    data = block_data()
    assert to_float(data.clean[:2]).dtype == torch.float32
    assert float(to_float(np.array([0, 255], np.uint8)).max()) == 1.0
    seen = []
    rng = np.random.default_rng(0)
    for xb, yb in iterate_batches(data, 7, rng):
        assert xb.shape == yb.shape and xb.shape[0] <= 7
        seen.append(yb)
    allc = torch.cat(seen)
    assert len(allc) == len(data)
    # a permutation of the clean blocks: sums match
    assert torch.isclose(allc.sum(), to_float(data.clean).sum())


def test_two_runs_give_identical_weights():
    cfg = TrainParams(batch_size=32, blocks={"epochs": 1})
    data = block_data()
    states = []
    for _ in range(2):
        model = tiny_model(seed=3)
        fit(model, data, data, cfg, seed=5, progress=False, runtime=RuntimeParams(threads=1))
        states.append(model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_training_lowers_validation_loss_and_records_history():
    data = block_data()
    model = tiny_model()
    cfg = TrainParams(batch_size=16, lr=3e-3, blocks={"epochs": 3, "patience": 0})
    res = fit(model, data, data, cfg, seed=0, progress=False, runtime=RuntimeParams(threads=1))
    assert res.epochs_run == 3 and len(res.history) == 3
    assert res.history[-1]["val_loss"] < res.history[0]["val_loss"]
    assert [h["lr"] for h in res.history] == pytest.approx([3e-3, 3e-3 * 0.9, 3e-3 * 0.81])
    assert res.blocks_per_second > 0 and "train_recon" in res.history[0]


def test_early_stopping_restores_best_weights(monkeypatch):
    data = block_data()
    model = tiny_model()
    losses = iter([0.5, 0.3, 0.4, 0.6, 0.7, 0.1])
    snapshots = []

    def fake_eval(m, d, bs, dev):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"loss": next(losses)}

    monkeypatch.setattr("aerestore.tracks.blocks.train.evaluate_loss", fake_eval)
    cfg = TrainParams(batch_size=32, blocks={"epochs": 6, "patience": 2})
    res = fit(model, data, data, cfg, seed=0, progress=False, runtime=RuntimeParams(threads=1))
    assert res.stopped_early and res.epochs_run == 4 and res.best_epoch == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]), k


def test_empty_training_split_is_an_error():
    empty = BlockData(np.zeros((0, 3, 16, 16), np.uint8), np.zeros((0, 3, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="no training blocks"):
        fit(tiny_model(), empty, empty, TrainParams(blocks={"epochs": 1}), seed=0, progress=False, runtime=RuntimeParams())


def _fake_losses(monkeypatch, values):
    losses = iter(values)
    snapshots = []

    def fake_eval(m, d, bs, dev):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"loss": next(losses)}

    monkeypatch.setattr("aerestore.tracks.blocks.train.evaluate_loss", fake_eval)
    return snapshots


def test_late_sharpness_compares_only_epochs_under_the_same_objective(monkeypatch):
    from aerestore.losses import LossConfig
    from aerestore.models import create_model

    data = block_data()
    torch.manual_seed(0)
    loss = LossConfig(sharpness_weight=0.5, sharpness_start_epoch=3)
    model = create_model("conv_ae", latent=8, block=16, channels=3, loss=loss)
    # epochs 1-3 under MSE alone (their losses are lower: no sharpness term), then 4-7 with
    # the sharpness term. Epoch 1 is the lowest overall, but another objective's.
    snapshots = _fake_losses(monkeypatch, [0.1, 0.2, 0.3, 0.5, 0.4, 0.45, 0.46, 0.47])
    cfg = TrainParams(batch_size=32, blocks={"epochs": 8, "patience": 2},
                      loss={"sharpness_weight": 0.5, "sharpness_start_epoch": 3})
    res = fit(model, data, data, cfg, seed=0, progress=False, runtime=RuntimeParams(threads=1))
    # patience did not stop the run before the switch (epochs 2 and 3 were "worse")
    assert res.compared_from == 4 and res.best_epoch == 5 and res.best_val_loss == 0.4
    assert res.stopped_early and res.epochs_run == 7
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[4][k]), k


def test_no_switch_without_a_late_sharpness_loss(monkeypatch):
    data = block_data()
    _fake_losses(monkeypatch, [0.1, 0.2, 0.3, 0.5])
    # the model's loss has no sharpness term: cfg's start epoch alone changes nothing
    cfg = TrainParams(batch_size=32, blocks={"epochs": 4, "patience": 2}, loss={"sharpness_start_epoch": 1})
    res = fit(tiny_model(), data, data, cfg, seed=0, progress=False, runtime=RuntimeParams(threads=1))
    assert res.compared_from == 1 and res.best_epoch == 1 and res.stopped_early and res.epochs_run == 3


def test_split_loaders_name_the_missing_file_and_stage(tmp_path):
    """BlockData and ImageData read a split through io.open_split: a missing array is an
    error naming the file and the stage that writes it; a missing mask is None."""
    import numpy as np
    import pytest

    from aerestore.tracks.blocks.dataset import BlockData
    from aerestore.tracks.images.dataset import ImageData

    folder = tmp_path / "train"
    folder.mkdir()
    np.save(folder / "degraded.npy", np.zeros((2, 3, 4, 4), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"train/clean\.npy: missing \(run the blocks stage\)"):
        BlockData.load(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=r"run the prepare stage"):
        ImageData.load(tmp_path, "train")
    np.save(folder / "clean.npy", np.ones((2, 3, 4, 4), np.uint8))
    data = BlockData.load(tmp_path, "train")
    assert data.mask is None and len(data) == 2 and data.clean.flags.c_contiguous
