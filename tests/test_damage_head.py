"""The semi-supervised damage head of the block models (train.loss.damage_weight,
cluster.method: damage_head): the latent learns to say which damage a block carries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from aerestore import cluster as C
from aerestore.damage import DAMAGE_CLASSES
from aerestore.data.layout import damage_shares
from aerestore.losses import LossConfig
from aerestore.models import create_model, load_model, save_model
from aerestore.params import Params, ParamsError, RuntimeParams, TrainParams, parse_params
from aerestore.tracks.blocks.train import fit, iterate_batches

from helpers import block_data


def model_with_head(weight: float = 1.0, name: str = "conv_ae", seed: int = 0):
    torch.manual_seed(seed)
    return create_model(name, latent=8, block=16, channels=3, loss=LossConfig(damage_weight=weight))


def test_head_exists_only_with_a_weight_and_survives_save_load(tmp_path):
    assert model_with_head(0.0).damage_head is None
    model = model_with_head(0.5)
    assert model.damage_head is not None
    x = torch.rand(4, 3, 16, 16)
    assert model.damage_head(model.latent_vector(x)).shape == (4, len(DAMAGE_CLASSES))
    save_model(model, tmp_path / "m.pt")
    loaded, _ = load_model(tmp_path / "m.pt")
    model.eval()
    torch.testing.assert_close(loaded.damage_head(loaded.latent_vector(x)), model.damage_head(model.latent_vector(x)))


def test_batches_carry_the_damage_target_and_the_loss_adds_its_term():
    data = block_data()
    batch = next(iterate_batches(data, 16, damage=True))
    assert len(batch) == 3
    np.testing.assert_allclose(batch[2].numpy(), damage_shares(data.mask[:16]), rtol=1e-6)
    assert len(next(iterate_batches(data, 16))) == 2  # off unless asked
    model = model_with_head(0.5).eval()
    with torch.no_grad():
        terms = model.loss(batch)
        plain = model.loss(batch[:2])
    assert "damage" in terms and "damage" not in plain
    torch.testing.assert_close(terms["loss"], plain["loss"] + 0.5 * terms["damage"])


def test_vae_damage_term_is_scaled_like_its_reconstruction():
    """A VAE's reconstruction and KL are per-sample sums (x C*s*s): the damage term gets the
    same factor, or at a weight like 0.1 it would vanish beside them (the head collapsed)."""
    data = block_data()
    batch = next(iterate_batches(data, 16, damage=True))
    model = model_with_head(0.1, name="vae").eval()
    with torch.no_grad():
        terms = model.loss(batch)
        plain = model.loss(batch[:2])
    n = 3 * 16 * 16
    torch.testing.assert_close(terms["loss"], plain["loss"] + 0.1 * n * terms["damage"])


def test_training_makes_the_latent_predict_the_damage():
    """Blocks from the left half are blurred (helpers.degrade): after a short training the
    head's argmax finds each block's majority damage far above chance, and the cluster
    stage's head_assign gives exactly those labels."""
    data = block_data(n_images=12)
    majority = damage_shares(data.mask).argmax(1)
    assert set(np.unique(majority)) == {0, 1}  # clean and blurred blocks both present
    chance = max(np.mean(majority == c) for c in (0, 1))  # always answering the larger class
    model = model_with_head(3.0)
    fit(model, data, data, TrainParams(batch_size=32, lr=1e-3, blocks={"epochs": 40, "lr_decay": 1.0, "patience": 0}),
        seed=0, progress=False, runtime=RuntimeParams(threads=1))
    labels = C.head_assign(model, data.degraded, head="damage_head")
    accuracy = float((labels == majority).mean())
    # the middle column of blocks is a quarter to three quarters blurred: hard to call
    assert accuracy > max(0.78, chance + 0.1), (accuracy, chance)
    report = C.damage_report(labels, damage_shares(data.mask))
    assert report["ami_majority_damage"] > 0.2


def test_head_assign_needs_the_head():
    with pytest.raises(ValueError, match="train.loss.damage_weight"):
        C.head_assign(model_with_head(0.0), np.zeros((2, 3, 16, 16), np.uint8), head="damage_head")


def test_params_damage_head_needs_k_and_weight():
    base = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    base["architectures"] = ["conv_ae"]
    base["train"]["loss"]["damage_weight"] = 0.1
    base["cluster"].update(method="damage_head", k=len(DAMAGE_CLASSES))
    parse_params(base)
    with pytest.raises(ParamsError, match="cluster.k"):
        parse_params({**base, "cluster": {**base["cluster"], "k": 2}})
    with pytest.raises(ParamsError, match="damage_weight"):
        parse_params({**base, "train": {**base["train"], "loss": {**base["train"]["loss"], "damage_weight": 0.0}}})


def test_vae_gan_refuses_a_damage_weight():
    with pytest.raises(ValueError, match="damage_weight"):
        model_with_head(0.5, name="vae_gan")
