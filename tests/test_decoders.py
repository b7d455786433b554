"""Fine-tuning of the per-cluster decoders and the control (``aerestore.tracks.blocks.decoders``).

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

from aerestore.tracks.blocks import decoders as D
from aerestore.tracks.blocks.dataset import BlockData
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
    from aerestore.params import RuntimeParams, TrainParams
    from aerestore.tracks.blocks.train import fit

    torch.set_num_threads(1)
    train, lab_train = two_kinds(N_TRAIN, 1)
    val, lab_val = two_kinds(N_VAL, 2)
    torch.manual_seed(0)
    # a decoder with batch norm (ccp_ae's has four: after its dense layer and each transposed
    # conv): the study's conv_ae decoder has none
    model = create_model("ccp_ae", latent=8, block=16, channels=3, loss=LossConfig(), filters=(8, 16, 16))
    fit(model, train, val, TrainParams(batch_size=32, lr=3e-3, blocks={"epochs": 3, "patience": 0, "per_epoch": 0}),
        seed=0, progress=False, runtime=RuntimeParams(threads=1))
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
        calls.append({"updates": updates, "batch_size": batch_size, "lr": lr, "eval_every": eval_every,
                      "blocks": sorted(map(bytes, clean)), "desc": desc})
        return real(decoder, z, clean, updates, batch_size, lr, rng, val, eval_every, desc, progress)

    monkeypatch.setattr(D, "train_decoder", spy)
    res = run_decoders(setup, model)

    # same optimiser settings, batch size and curve spacing; equal block updates, for the
    # cluster decoders, the ensemble control's decoders and the control
    settings = {"batch_size": BATCH, "lr": LR, "eval_every": EVAL_EVERY}
    assert len(calls) == 5 and all({k: call[k] for k in settings} == settings for call in calls)
    cluster, ensemble, control = calls[:2], calls[2:4], calls[4]
    assert [c["desc"].split()[0] for c in calls] == ["cluster", "cluster", "ensemble", "ensemble", "control"]
    total = EPOCHS * 2 * N_TRAIN
    assert sum(c["updates"] for c in cluster) == sum(c["updates"] for c in ensemble) == control["updates"] == total
    # the ensemble's groups have the clusters' sizes (so per decoder the same updates) and
    # together the same training blocks
    assert [c["updates"] for c in ensemble] == [c["updates"] for c in cluster]
    assert sorted(b for c in ensemble for b in c["blocks"]) == sorted(b for c in cluster for b in c["blocks"]) \
        == control["blocks"]
    assert res.summary["block_updates"] == {"clusters": total, "control": total, "ensemble": total}
    last = {name: hist[-1]["step"] for name, hist in res.histories.items()}
    assert last["cluster_0"] + last["cluster_1"] == last["ensemble_0"] + last["ensemble_1"] == last["control"] == total

    # batch norm in eval mode during every training forward pass, its statistics untouched ...
    assert seen and not any(seen)
    for dec in (res.control, *res.clusters, *res.ensemble):
        assert all(torch.equal(a, b) for a, b in zip(bn_buffers(dec), shared_stats))
        # ... while its affine weights learned
        bn = [m for m in dec.modules() if isinstance(m, _BatchNorm)]
        ref = [m for m in model.decoder.modules() if isinstance(m, _BatchNorm)]
        assert any(not torch.equal(a.weight, b.weight) for a, b in zip(bn, ref))
    assert all(not p.requires_grad for p in model.encoder.parameters())


def test_curves_have_a_point_every_eval_every_block_updates(result, tmp_path):
    for name, hist in result.histories.items():
        steps = [h["step"] for h in hist]
        total = EPOCHS * (2 * N_TRAIN if name == "control" else N_TRAIN)
        assert steps == list(range(0, total + 1, EVAL_EVERY)), name
        assert all(set(h) == {"step", "train_loss", "val_loss"} for h in hist)
        assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in hist)

    rows = D.curve_rows(result.histories)
    path = tmp_path / "conv_ae_curve.csv"
    write_csv(path, rows)
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["decoder", "step", "train_loss", "val_loss"]
    assert [r["decoder"] for r in table if r["step"] == "0"] == ["cluster_0", "cluster_1", "ensemble_0", "ensemble_1",
                                                                 "control"]
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


# ------------------------------------------------------------------ the ensemble control
def test_ensemble_routes_ignore_the_damage(setup):
    """The ensemble control's groups: the clusters' sizes, drawn at random, the same
    whatever the blocks hold (here: masks, pixels and routing all changed)."""
    sizes = [300, 0, 212]
    a = D.blind_labels(sizes, 512, seed=3)
    assert [int((a == c).sum()) for c in range(3)] == sizes
    assert np.array_equal(a, D.blind_labels(sizes, 512, seed=3))  # seeded: no content goes in
    assert not np.array_equal(a, D.blind_labels(sizes, 512, seed=4))
    with pytest.raises(ValueError, match="add up"):
        D.blind_labels([300, 300], 512, seed=0)

    # train_decoders: the ensemble decoders come out identical when the routes differ (the
    # clusters swapped: every block routed to the other decoder, the same sizes); each random
    # group mixes both kinds of block (blocks 0..255 are kind 0) about evenly
    s = dict(setup)
    lab = D.blind_labels([N_TRAIN, N_TRAIN], 2 * N_TRAIN, seed=0)
    assert 0.35 < (lab[:N_TRAIN] == 0).mean() < 0.65

    def shifted(z):  # a different routing of the same sizes: the clusters swapped
        return setup["route"](z).flip(1)

    one = D.train_decoders(copy.deepcopy(setup["model"]), setup["route"], 2, s["train"], s["val"], epochs=1, lr=LR,
                           batch_size=BATCH, min_blocks=1, seed=0, progress=False, eval_every=EVAL_EVERY)
    two = D.train_decoders(copy.deepcopy(setup["model"]), shifted, 2, s["train"], s["val"], epochs=1, lr=LR,
                           batch_size=BATCH, min_blocks=1, seed=0, progress=False, eval_every=EVAL_EVERY)
    for a_dec, b_dec in zip(one.ensemble, two.ensemble):
        assert all(torch.equal(p, q) for p, q in zip(a_dec.state_dict().values(), b_dec.state_dict().values()))
    # ... while the cluster decoders did follow the routes
    assert not all(torch.equal(p, q) for p, q in zip(one.clusters[0].state_dict().values(),
                                                     two.clusters[0].state_dict().values()))


def test_ensemble_follows_the_clusters_fallback(setup, recwarn):
    """A cluster too small for a decoder: its random group gets none either (the control
    stands in), so both arms mix as many decoders; ``ensemble=False`` trains none."""
    def lopsided(z):  # all but 5 blocks in cluster 0
        r = torch.zeros(len(z), 2)
        r[:, 0] = 1
        r[:5] = torch.tensor([0.0, 1.0])
        return r

    res = D.train_decoders(copy.deepcopy(setup["model"]), lopsided, 2, setup["train"], setup["val"], epochs=1,
                           lr=LR, batch_size=BATCH, min_blocks=6, seed=0, progress=False, eval_every=EVAL_EVERY)
    assert res.fallback == [False, True]
    assert res.clusters[1] is None and res.ensemble[1] is None and res.ensemble[0] is not None
    assert res.summary["block_updates"]["ensemble"] == res.summary["block_updates"]["clusters"] == 2 * N_TRAIN - 5
    off = D.train_decoders(copy.deepcopy(setup["model"]), lopsided, 2, setup["train"], setup["val"], epochs=1,
                           lr=LR, batch_size=BATCH, min_blocks=6, seed=0, progress=False, eval_every=EVAL_EVERY,
                           ensemble=False)
    assert off.ensemble is None and "ensemble" not in off.summary["block_updates"]
    assert not any(name.startswith("ensemble") for name in off.histories)
