"""VAE -> AE chaining (aerestore.chain): a second AE trained on a VAE's reconstructions (or, as
the blur study's, on the clean images) and run on the VAE's outputs, once or several times."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aerestore import chain as C
from aerestore import explore as X
from aerestore.losses import LossConfig
from aerestore.models import create_model
from aerestore.params import ExploreParams, RuntimeParams, TrainParams

from helpers import fit_to, photo_images


@pytest.fixture(scope="module")
def setup():
    """16 training and 8 held-out 32 px photo crops, and a small VAE fitted to the training
    ones for 60 steps (beta 0.01: with the default 1.0 so few images collapse to their mean
    and every reconstruction is the same picture): its reconstructions are blurry."""
    torch.set_num_threads(1)
    images = photo_images(24, 32, seed=3)
    train, held_out = images[:16], images[16:]
    torch.manual_seed(0)
    vae = create_model("vae", latent=16, block=32, channels=3, loss=LossConfig(beta=0.01))
    codec = X.LatentCodec(fit_to(vae, X.to_tensor(train), steps=60))
    cfg = TrainParams(batch_size=8, lr=3e-3, blocks={"epochs": 60, "patience": 0})
    ae, result = C.train_chain(codec, "unet_ae", train, train[:0], cfg, seed=0, progress=False, runtime=RuntimeParams(threads=1))
    return codec, ae, result, train, held_out


def test_training_pairs_are_the_vae_reconstructions_and_the_clean_images(setup):
    codec, _, _, train, _ = setup
    data = C.chain_data(codec, train[:4])
    recon = X.to_uint8(codec.reconstruct(X.to_tensor(train[:4])))
    assert data.degraded.shape == data.clean.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(data.degraded, recon.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(data.clean, train[:4].transpose(0, 3, 1, 2))


def test_the_blur_studys_chain_trains_on_the_clean_images(setup):
    """trained_on="clean": the AE learns to reconstruct the clean images (input = target), as
    the blur study's "to only reconstruct images from the dataset"; anything else is refused."""
    codec, _, _, train, _ = setup
    data = C.chain_data(codec, train[:4], trained_on="clean")
    np.testing.assert_array_equal(data.degraded, train[:4].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(data.clean, data.degraded)
    with pytest.raises(ValueError, match="trained_on must be one of \\('vae', 'clean'\\), got 'noisy'"):
        C.chain_data(codec, train[:4], trained_on="noisy")


def test_repeated_passes_feed_the_ae_its_own_output(setup):
    codec, ae, _, _, held_out = setup
    vae = C.vae_outputs(codec, held_out[:3])
    passes = C.chain_passes(ae, vae, 3)
    assert len(passes) == 3 and C.pass_names(3) == ["chained", "chained_pass2", "chained_pass3"]
    np.testing.assert_array_equal(passes[0], C.sharpen(ae, vae))
    np.testing.assert_array_equal(passes[2], C.sharpen(ae, C.sharpen(ae, C.sharpen(ae, vae))))
    assert not np.array_equal(passes[1], passes[0])
    with pytest.raises(ValueError, match="passes must be >= 1"):
        C.chain_passes(ae, vae, 0)
    s = C.compare({"model": vae, **dict(zip(C.pass_names(3), passes))}, held_out[:3])
    assert set(s) == {"model", "chained", "chained_pass2", "chained_pass3", "clean"}


def test_the_chain_is_closer_to_the_clean_images_and_sharper_than_the_vae(setup):
    """On these tiny models the no-reference blur measure of the study (variance of the
    Laplacian) is the honest one: the VAE's ripples make ``blur_percent`` negative (more local
    contrast than the photo), so it is reported, not asserted."""
    codec, ae, result, train, held_out = setup
    assert result.epochs_run == 60
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    vae = C.vae_outputs(codec, train)
    [chained] = C.chain_passes(ae, vae)
    s = C.compare({"vae": vae, "chained": chained}, train)
    assert set(s) == {"vae", "chained", "clean"} and set(s["vae"]) == set(C.CHAIN_METRICS)
    assert s["chained"]["psnr"] > s["vae"]["psnr"] + 0.15  # measured: 20.48 -> 20.83 dB
    assert s["vae"]["laplacian_var"] < s["chained"]["laplacian_var"] < s["clean"]["laplacian_var"]
    vae_h = C.vae_outputs(codec, held_out)
    [chained_h] = C.chain_passes(ae, vae_h)
    h = C.compare({"vae": vae_h, "chained": chained_h}, held_out)
    assert h["chained"]["psnr"] > h["vae"]["psnr"]  # measured: 18.75 -> 18.88 dB on unseen crops
    assert h["chained"]["laplacian_var"] > h["vae"]["laplacian_var"]


def test_chain_grid_rows_are_vae_chained_clean(setup):
    codec, ae, _, _, held_out = setup
    vae = C.vae_outputs(codec, held_out[:3])
    [chained] = C.chain_passes(ae, vae)
    g = C.chain_grid(vae, [chained], held_out[:3])
    tile, gap = 64, 2  # 32 px images upscaled x2, white gaps
    assert g.shape == (3 * (tile + gap) + gap, 3 * (tile + gap) + gap, 3)
    for col, images in enumerate((vae, chained, held_out[:3])):
        y, x = gap + (tile + gap), gap + col * (tile + gap)
        np.testing.assert_array_equal(g[y : y + tile : 2, x : x + tile : 2], images[1])


def test_chain_grid_has_one_column_per_pass(setup):
    codec, ae, _, _, held_out = setup
    vae = C.vae_outputs(codec, held_out[:2])
    passes = C.chain_passes(ae, vae, 2)
    g = C.chain_grid(vae, passes, held_out[:2])
    tile, gap = 64, 2
    assert g.shape == (2 * (tile + gap) + gap, 4 * (tile + gap) + gap, 3)
    for col, images in enumerate((vae, *passes, held_out[:2])):
        x = gap + col * (tile + gap)
        np.testing.assert_array_equal(g[gap : gap + tile : 2, x : x + tile : 2], images[0])


def test_chain_param_names_a_registered_architecture():
    assert ExploreParams(chain="unet_ae").chain == "unet_ae"
    with pytest.raises(ValueError, match="explore.chain 'nope' is not a registered architecture"):
        ExploreParams(chain="nope")
    with pytest.raises(ValueError, match="chain_epochs"):
        ExploreParams(chain_epochs=0)
    assert ExploreParams().chain_trained_on == "vae" and ExploreParams().chain_passes == 1
    with pytest.raises(ValueError, match="chain_trained_on"):
        ExploreParams(chain_trained_on="noisy")
    with pytest.raises(ValueError, match="chain_passes"):
        ExploreParams(chain_passes=0)
