"""benchmarks/noise_level_input.py: the noise-level channels it gives ``unet_ae`` measure the
noise level, its reference variant is ``unet_ae`` itself, and its faces splits are disjoint.
(The experiment's runs are in docs/evaluation.md, "Told the noise level".)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aerestore.models import create_model
from aerestore.params import load_params
from helpers import load_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return load_script(ROOT / "benchmarks" / "noise_level_input.py")


def test_the_global_channel_is_the_images_noise_sigma(bench):
    g = torch.Generator().manual_seed(0)
    for sigma in (0.01, 0.03, 0.15):
        x = 0.5 + sigma * torch.randn(2, 3, 64, 64, generator=g)
        out = bench.noise_inputs(x, ("global", "map")) / bench.SCALE
        assert out.shape == (2, 2, 64, 64)
        assert torch.allclose(out[:, 0].mean((1, 2)), torch.full((2,), sigma), rtol=0.05)
        assert abs(out[:, 1].mean().item() - sigma) < 0.05 * sigma


def test_the_map_channel_finds_a_noisy_region_and_the_global_one_ignores_it(bench):
    g = torch.Generator().manual_seed(1)
    x = 0.5 + 0.02 * torch.randn(1, 3, 64, 64, generator=g)
    x[..., :24, :24] += 0.15 * torch.randn(1, 3, 24, 24, generator=g)  # 14 % of the image
    out = bench.noise_inputs(x, ("global", "map")) / bench.SCALE
    assert out[0, 0, 0, 0].item() == pytest.approx(0.02, rel=0.25)  # the median: camera noise
    assert out[0, 1, 4:20, 4:20].mean().item() == pytest.approx(0.15, rel=0.1)
    assert out[0, 1, 40:, 40:].mean().item() == pytest.approx(0.02, rel=0.1)


def test_the_reference_variant_is_unet_ae_and_the_others_read_more_channels(bench):
    torch.manual_seed(3)
    ref = bench.NoiseLevelUNetAE(latent=8, block=48, channels=3, width=8, levels=2)
    torch.manual_seed(3)
    plain = create_model("unet_ae", latent=8, block=48, channels=3, width=8, levels=2)
    x = torch.rand(1, 3, 40, 40)
    ref.eval(), plain.eval()
    with torch.no_grad():
        assert torch.equal(ref(x), plain(x))
    told = bench.NoiseLevelUNetAE(latent=8, block=48, channels=3, width=8, levels=2, kinds=("global", "map"))
    assert told.encoder.head.conv.in_channels == 5
    with torch.no_grad():
        assert told(x).shape == x.shape


def test_face_sets_split_the_photos_without_overlap(bench, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"{i:03d}.png")
    ops = load_params(ROOT / "params.yaml").prepare.degrade
    train, val, test, masks = bench.face_sets(tmp_path, 3, 2, 2, 16, ops)
    assert (len(train), len(val), len(test), len(masks)) == (3, 2, 2, 2)
    cleans = [d.clean.flatten(1) for d in (train, val, test)]
    every = torch.cat(cleans)
    assert len({tuple(r.tolist()) for r in every}) == 7  # each photo in one split only
    with pytest.raises(SystemExit, match="8 needed"):
        bench.face_sets(tmp_path, 4, 2, 2, 16, ops)
