"""The deep peers (DnCNN, DRUNet, NAFNet): the papers' parameter counts, the small
configurations the benchmark trains, and one crop-trainer step each (seconds; one thread:
conftest)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from aerestore.tracks.images.dataset import ImageData
from aerestore.tracks.images.train import fit_crops
from aerestore.damage import DAMAGE_KINDS
from aerestore.losses import LossConfig
from aerestore.models import create_model, model_class
from aerestore.models.peers import FULL, PEERS
from aerestore.params import RuntimeParams, TrainParams


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, channels: int = 3, **kw):
    return create_model(name, latent=8, block=16, channels=channels, **kw)


# The papers' figures, and our exact count of each full configuration:
# - DnCNN-S (17 layers, grey, width 64): "~0.56M" (DPIR, Zhang et al. TPAMI 2021, the
#   comparison of denoisers' parameters: DnCNN 0.56M); ours 556,096 = 640 (first conv + bias)
#   + 15 x (36,864 conv + 128 BN) + 576 (last conv, no bias, KAIR's layout).
# - DnCNN-B (20 layers, grey): ~668k (0.67M) in the literature; ours 667,072 (18 middle layers).
#   CDnCNN-B (colour): 669,376 (the first and last convs see 3 channels).
# - DRUNet (colour, + the noise-level map: 4 input channels, widths 64-512, 4 blocks): 32.64M
#   (DPIR, Zhang et al. TPAMI 2021, the parameters of the compared denoisers); ours
#   32,640,960, the same to the figure's precision (no bias anywhere, as KAIR's UNetRes).
# - NAFNet-SIDD-width32 (enc [2, 2, 4, 8], middle 12, dec [2, 2, 2, 2]; the authors'
#   options file NAFNet-SIDD-width32.yml): 29.1M as usually cited; ours 29,159,715. The
#   [1, 1, 1, 28] / 1 / [1, 1, 1, 1] layout is the GoPro (deblurring) model, 17,111,907 at
#   width 32 (the paper's tables give MACs, not parameters).
@pytest.mark.parametrize("name, channels, kw, count, paper", [
    ("dncnn", 1, {"depth": 17}, 556_096, 0.56e6),
    ("dncnn", 1, {}, 667_072, 0.668e6),
    ("dncnn", 3, {}, 669_376, 0.668e6),
    ("drunet", 3, {}, 32_640_960, 32.64e6),
    ("nafnet", 3, {}, 29_159_715, 29.1e6),
    ("nafnet", 3, {"enc": (1, 1, 1, 28), "middle": 1, "dec": (1, 1, 1, 1)}, 17_111_907, None),
])
def test_full_configurations_match_the_papers_counts(name, channels, kw, count, paper):
    model = build(name, channels, **{**FULL[name], **kw})
    assert n_params(model) == count
    if paper is not None:
        assert abs(count - paper) / paper < 0.01


def test_drunet_noise_map_channel_is_optional():
    blind = build("drunet", noise_level=None)
    mapped = build("drunet", noise_level=0.05)
    # the map adds one input channel to the head conv (16 filters of 3x3, no bias)
    assert n_params(mapped) - n_params(blind) == 16 * 9
    x = torch.rand(1, 3, 21, 19)
    blind.eval(), mapped.eval()
    assert blind(x).shape == mapped(x).shape == x.shape


# The small configurations: their parameters and FLOPs per pixel (FlopCounterMode, one
# forward on a 64 px image; unet_ae at the default run's width 16, levels 2: 194,902 and
# 60,208), the figures quoted in docs/peers.md.
@pytest.mark.parametrize("name, count, flops_px", [
    ("dncnn", 35_920, 70_848.0),
    ("drunet", 575_328, 72_384.0),
    ("nafnet", 1_137_203, 39_817.25),
    ("unet_ae", 194_902, 60_208.0),
])
def test_small_configurations(name, count, flops_px):
    kw = {"width": 16, "levels": 2, "unshuffle": 1} if name == "unet_ae" else {}
    model = create_model(name, latent=64, block=48, channels=3, **kw).eval()
    assert n_params(model) == count
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    assert counter.get_total_flops() / 64**2 == flops_px


@pytest.mark.parametrize("name", PEERS)
def test_whole_images_of_any_size(name):
    model = build(name)
    assert model_class(name).track == "images"
    model.eval()
    x = torch.rand(2, 3, 23, 37)
    with torch.no_grad():
        y = model(x)
        assert torch.equal(model.encode(x), y)  # no bottleneck: the "code" is the output
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1


def images(n: int = 4, size: int = 24, seed: int = 0) -> ImageData:
    rng = np.random.default_rng(seed)
    clean = (rng.random((n, size, size, 3)) * 255).astype(np.uint8)
    degraded = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((n, size, size, len(DAMAGE_KINDS)), np.uint8)
    mask[:, :, : size // 2, 0] = 255
    return ImageData.from_arrays(degraded, clean, mask)


@pytest.mark.parametrize("name", PEERS)
def test_one_crop_training_step_is_deterministic_and_moves_the_weights(name):
    """One fit_crops step on a damage-class batch (ignored: no damage head), twice with the
    same seed: the same weights, which differ from the initial ones."""
    cfg = TrainParams.model_validate({"batch_size": 2, "lr": 1e-3, "crops": {"size": 16, "steps": 1, "eval_every": 1},
                                      "loss": {"beta": 1.0, "damage_weight": 0.1}})
    data = images()
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build(name, loss=LossConfig.from_train(cfg))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        result = fit_crops(model, data, data, cfg, seed=0, progress=False, runtime=RuntimeParams(threads=1))
        assert result.epochs_run == 1 and np.isfinite(result.best_val_loss)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not torch.equal(before[k], states[0][k]) for k in before if before[k].is_floating_point())
