"""runtime.device / runtime.amp end to end (aerestore.models.device): the CPU path is unchanged,
and the bf16 autocast code path (which exists on CPUs too) trains, encodes, fine-tunes the
decoders and restores to the fp32 results within bf16's precision."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aerestore.models.device import autocast, resolve_device, to_device
from aerestore.params import RuntimeParams, TrainParams


def test_cpu_path_copies_nothing_and_amp_fp32_is_a_no_op():
    t = torch.arange(6, dtype=torch.uint8)
    assert to_device(t, "cpu") is t
    assert resolve_device("cpu") == torch.device("cpu")
    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="amp"):
        autocast("cpu", "fp8")
    with pytest.raises(Exception, match="amp"):
        RuntimeParams(amp="fp16")
    # `dvc exp run -S` rewrites params.yaml with a bare `off`, which YAML 1.1 reads as false
    import yaml

    assert RuntimeParams(**yaml.safe_load("amp: off")).amp == "fp32"
    assert RuntimeParams(**yaml.safe_load("amp: fp32")).amp == "fp32"  # no YAML reading of its own


def _fit(amp: str):
    from helpers import block_data, tiny_model

    from aerestore.tracks.blocks.train import fit

    data = block_data()
    model = tiny_model("conv_ae")
    result = fit(model, data, data, TrainParams(batch_size=32, blocks={"epochs": 2}),
                 seed=0, progress=False, runtime=RuntimeParams(threads=1, device="cpu", amp=amp))
    return model, result


def test_bf16_training_follows_fp32():
    m32, r32 = _fit("fp32")
    m16, r16 = _fit("bf16")
    assert all(p.dtype == torch.float32 for p in m16.parameters())  # autocast: fp32 weights
    assert np.isfinite(r16.best_val_loss)
    # bf16 keeps 8 bits of mantissa: the same training within a few percent
    assert r16.best_val_loss == pytest.approx(r32.best_val_loss, rel=0.05)
    assert [row["epoch"] for row in r16.history] == [1, 2]


def test_bf16_restorer_cluster_and_decoders_match_fp32(tmp_path):
    from helpers import block_data, save_tiny_restorer

    from aerestore import cluster as C
    from aerestore.tracks.blocks.decoders import train_decoders
    from aerestore.restore import Restorer

    restorer = save_tiny_restorer(tmp_path / "conv_ae")
    data = block_data()
    z32 = C.encode_blocks(restorer.model, data.degraded)
    with autocast("cpu", "bf16"):
        z16 = C.encode_blocks(restorer.model, data.degraded)
    assert z16.dtype == np.float32
    np.testing.assert_allclose(z16, z32, atol=0.05 * np.abs(z32).max())

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((2, 3, 40, 44), dtype=np.float32))
    fp32 = restorer.restore_float(images)
    bf16 = Restorer.load(tmp_path / "conv_ae").to("cpu", "bf16").restore_float(images)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert float((bf16 - fp32).abs().mean()) < 0.01

    with autocast("cpu", "bf16"):
        res = train_decoders(restorer.model, restorer.route, 2, data, data, 1, 1e-3, 32, 1, 0, progress=False)
    assert all(np.isfinite(v) for v in (res.summary["val_loss"]["control"], res.summary["val_loss"]["multi"]))
    assert res.summary["val_loss"]["control"] == pytest.approx(res.summary["val_loss"]["shared"], rel=0.2)


def test_restore_cli_takes_device_and_amp(tmp_path):
    from PIL import Image

    from helpers import save_tiny_restorer

    from aerestore.cli import main

    save_tiny_restorer(tmp_path / "conv_ae")
    photo = (np.random.default_rng(1).random((30, 34, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.png")
    for amp in ("fp32", "bf16"):
        code = main(["restore", str(tmp_path / "p.png"), "--model", str(tmp_path / "conv_ae"), "-o",
                     str(tmp_path / amp), "--device", "cpu", "--amp", amp, "--no-progress"])
        assert code in (0, None)
    a = np.asarray(Image.open(tmp_path / "fp32/p.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "bf16/p.png")).astype(int)
    assert a.shape == b.shape == photo.shape and np.abs(a - b).mean() < 3
