"""Fine-tuning of the per-cluster decoders and the control (``aerestore.decoders``).

A small seeded ccp_ae (its decoder has batch norm), trained briefly on a mixture of two kinds of blocks with very
different statistics (dark smooth gradients, bright high-contrast stripes), routed by
their kind: each cluster's batches are skewed, the shared decoder's batch-norm
statistics are the mixture's. That is the situation in which fine-tuning with batch
norm in train mode made the cluster decoders worse than the decoder they were copied
from.
"""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.nn.modules.batchnorm import _BatchNorm

from aerestore import decoders as D
from aerestore.blockdata import BlockData
from aerestore.io import write_csv
from aerestore.params import DecodersParams

N_TRAIN, N_VAL = 256, 128  # blocks per cluster
EPOCHS, LR, BATCH, EVAL_EVERY = 2, 1e-3, 32, 256


def kind_blocks(n: int, kind: int, rng: np.random.Generator, side: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = []
    for _ in range(n):
        if kind == 0:  # dark, smooth gradients
            a, b = rng.uniform(-1, 1, 2)
            img = 50 + 30 * (a * xx + b * yy)
            img = np.stack([img * f for f in rng.uniform(0.7, 1.3, 3)])
        else:  # bright, high-contrast stripes
            f, ph, th = rng.uniform(2, 5), rng.uniform(0, 6.3), rng.uniform(0, 3.14)
            img = 180 + 60 * np.sin(2 * np.pi * f * (np.cos(th) * xx + np.sin(th) * yy) + ph)
            img = np.stack([img] * 3) * rng.uniform(0.8, 1.1, (3, 1, 1))
        out.append(img)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def two_kinds(n: int, seed: int) -> tuple[BlockData, np.ndarray]:
    """n blocks of each kind, uint8 (2n, 3, 16, 16), degraded by noise; labels 0/1."""
    rng = np.random.default_rng(seed)
    clean = np.concatenate([kind_blocks(n, 0, rng), kind_blocks(n, 1, rng)])
    degraded = np.clip(np.rint(clean + rng.normal(0, 20, clean.shape)), 0, 255).astype(np.uint8)
    return BlockData(degraded, clean), np.r_[np.zeros(n, int), np.ones(n, int)]


@pytest.fixture(scope="module")
def setup():
    from aerestore.losses import LossConfig
    from aerestore.models import create_model
    from aerestore.params import TrainParams
    from aerestore.train import fit

    torch.set_num_threads(1)
    train, lab_train = two_kinds(N_TRAIN, 1)
    val, lab_val = two_kinds(N_VAL, 2)
    torch.manual_seed(0)
    # a decoder with batch norm (ccp_ae's has four: after its dense layer and each transposed
    # conv): the study's conv_ae decoder has none
    model = create_model("ccp_ae", latent=8, block=16, channels=3, loss=LossConfig(), filters=(8, 16, 16))
    fit(model, train, val, TrainParams(epochs=3, batch_size=32, lr=3e-3, threads=1, patience=0,
                                       blocks_per_epoch=0), seed=0, progress=False)
    z_train, z_val = D.encode_all(model, train.degraded), D.encode_all(model, val.degraded)

    def route(z):
        """Route by kind: the labels of whichever block set ``z`` encodes."""
        for zz, lab in ((z_train, lab_train), (z_val, lab_val)):
            if z.shape == zz.shape and torch.equal(z, zz):
                return torch.nn.functional.one_hot(torch.as_tensor(lab), 2).float()
        raise AssertionError("route called on unexpected latents")

    return dict(model=model, route=route, train=train, val=val, lab_train=lab_train, lab_val=lab_val,
                z_train=z_train, z_val=z_val)


def run_decoders(s, model=None):
    return D.train_decoders(model or copy.deepcopy(s["model"]), s["route"], 2, s["train"], s["val"],
                            epochs=EPOCHS, lr=LR, batch_size=BATCH, min_blocks=1, seed=0,
                            progress=False, eval_every=EVAL_EVERY)


@pytest.fixture(scope="module")
def result(setup):
    return run_decoders(setup)


def bn_buffers(module) -> list[torch.Tensor]:
    return [b.clone() for m in module.modules() if isinstance(m, _BatchNorm) for b in m.buffers()]


def own(s, split: str, c: int):
    sel = np.flatnonzero(s[f"lab_{split}"] == c)
    return s[f"z_{split}"][sel], s[split].clean[sel]


def test_cluster_decoder_starts_exactly_as_the_shared_decoder(setup, result):
    shared = setup["model"].decoder
    for c in range(2):
        start = result.histories[f"cluster_{c}"][0]
        assert start["step"] == 0
        # EVAL_EVERY = the cluster's size: the step-0 train loss covers all its blocks
        assert start["train_loss"] == pytest.approx(D.decoder_loss(shared, *own(setup, "train", c)), rel=1e-6)
        assert start["val_loss"] == pytest.approx(D.decoder_loss(shared, *own(setup, "val", c)), rel=1e-6)

    # the loss of the forward pass of the first update (one batch: all of cluster 1)
    z, y = own(setup, "train", 1)
    dec = copy.deepcopy(shared)
    dec.requires_grad_(True)
    hist = D.train_decoder(dec, z, y, len(z), len(z), LR, np.random.default_rng(0), None, len(z), "", False)
    assert [h["step"] for h in hist] == [0, len(z)]
    expected = D.decoder_loss(shared, z, y)
    assert hist[0]["train_loss"] == pytest.approx(expected, rel=1e-6)
    assert hist[1]["train_loss"] == pytest.approx(expected, rel=1e-6)


def test_fine_tuned_cluster_decoder_is_not_worse_on_its_own_cluster(setup, result):
    shared = setup["model"].decoder
    for c in range(2):
        z, y = own(setup, "val", c)
        before = D.decoder_loss(shared, z, y)
        after = D.decoder_loss(result.clusters[c], z, y)
        assert after <= before, f"cluster {c}: {after:.6f} after fine-tuning, {before:.6f} before"
        assert result.histories[f"cluster_{c}"][-1]["val_loss"] == pytest.approx(after, rel=1e-6)
        by = result.summary["val_loss_by_cluster"][c]
        assert by["val_blocks"] == len(z)
        assert by["shared"] == pytest.approx(before, rel=1e-6) and by["cluster"] == pytest.approx(after, rel=1e-6)
    assert result.summary["val_loss"]["multi"] <= result.summary["val_loss"]["shared"]


def test_control_and_cluster_decoders_get_identical_conditions(setup, monkeypatch):
    model = copy.deepcopy(setup["model"])
    shared_stats = bn_buffers(model.decoder)
    seen = []

    def record(module, args):  # copied along with the decoder into every fine-tuned copy
        if torch.is_grad_enabled():
            seen.append(module.training)

    for m in model.decoder.modules():
        if isinstance(m, _BatchNorm):
            m.register_forward_pre_hook(record)
    calls = []
    real = D.train_decoder

    def spy(decoder, z, clean, updates, batch_size, lr, rng, val, eval_every, desc, progress=True):
        calls.append({"updates": updates, "batch_size": batch_size, "lr": lr, "eval_every": eval_every})
        return real(decoder, z, clean, updates, batch_size, lr, rng, val, eval_every, desc, progress)

    monkeypatch.setattr(D, "train_decoder", spy)
    res = run_decoders(setup, model)

    # same optimiser settings, batch size and curve spacing; equal block updates
    assert len(calls) == 3 and all({k: v for k, v in call.items() if k != "updates"}
                                   == {"batch_size": BATCH, "lr": LR, "eval_every": EVAL_EVERY} for call in calls)
    assert calls[0]["updates"] + calls[1]["updates"] == calls[2]["updates"] == EPOCHS * 2 * N_TRAIN
    assert res.summary["block_updates"] == {"clusters": EPOCHS * 2 * N_TRAIN, "control": EPOCHS * 2 * N_TRAIN}
    last = {name: hist[-1]["step"] for name, hist in res.histories.items()}
    assert last["cluster_0"] + last["cluster_1"] == last["control"] == EPOCHS * 2 * N_TRAIN

    # batch norm in eval mode during every training forward pass, its statistics untouched ...
    assert seen and not any(seen)
    for dec in (res.control, *res.clusters):
        assert all(torch.equal(a, b) for a, b in zip(bn_buffers(dec), shared_stats))
        # ... while its affine weights learned
        bn = [m for m in dec.modules() if isinstance(m, _BatchNorm)]
        ref = [m for m in model.decoder.modules() if isinstance(m, _BatchNorm)]
        assert any(not torch.equal(a.weight, b.weight) for a, b in zip(bn, ref))
    assert all(not p.requires_grad for p in model.encoder.parameters())


def test_curves_have_a_point_every_eval_every_block_updates(result, tmp_path):
    for name, hist in result.histories.items():
        steps = [h["step"] for h in hist]
        total = EPOCHS * (N_TRAIN if name.startswith("cluster") else 2 * N_TRAIN)
        assert steps == list(range(0, total + 1, EVAL_EVERY)), name
        assert all(set(h) == {"step", "train_loss", "val_loss"} for h in hist)
        assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in hist)

    rows = D.curve_rows(result.histories)
    path = tmp_path / "conv_ae_curve.csv"
    write_csv(path, rows)
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["decoder", "step", "train_loss", "val_loss"]
    assert [r["decoder"] for r in table if r["step"] == "0"] == ["cluster_0", "cluster_1", "control"]
    assert len(table) == sum(len(h) for h in result.histories.values())

    png = tmp_path / "curve.png"
    D.curves_plot(result.histories, png, "test")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_points_follow_batch_ends_when_eval_every_is_not_a_multiple(setup):
    z, y = own(setup, "train", 0)
    dec = copy.deepcopy(setup["model"].decoder).requires_grad_(True)
    hist = D.train_decoder(dec, z, y, 300, 64, LR, np.random.default_rng(0), (z, y), 100, "", False)
    assert [h["step"] for h in hist] == [0, 128, 256, 300]
    with pytest.raises(ValueError, match="eval_every"):
        D.train_decoder(dec, z, y, 10, 64, LR, np.random.default_rng(0), None, 0, "", False)


def test_eval_every_param_is_validated():
    assert DecodersParams().eval_every > 0
    with pytest.raises(ValidationError):
        DecodersParams(eval_every=0)
