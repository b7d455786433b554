"""The unet_ae restorer compiled by OpenVINO (aerestore.ovruntime) is the PyTorch restorer's
function: every mode and routing, odd image sizes, tiles; it is cached, recompiled when a
weight changes, and refused or skipped where it does not apply."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from aerestore import ovruntime
from aerestore.tracks.images.restore import ConvRestorer

pytestmark = pytest.mark.skipif(ovruntime.missing() is not None, reason="openvino is not installed")


def restorer(routing: str = "soft", method: str = "damage_head", seed: int = 0) -> ConvRestorer:
    from aerestore.models import create_model

    torch.manual_seed(seed)
    model = create_model("unet_ae", latent=8, block=16, channels=3, width=4, levels=2).eval()
    decs = []
    for k in range(3):  # decoders that differ, as fine-tuned ones do
        d = copy.deepcopy(model.decoder)
        with torch.no_grad():
            for p in d.parameters():
                p.add_(0.05 * (k + 1) * torch.randn_like(p))
        decs.append(d)
    centroids = np.random.default_rng(0).normal(size=(3, model.latent_dim)) if method == "soft_kmeans" else None
    r = ConvRestorer(model, arch="unet_ae", method=method, centroids=centroids, scale=1.0,
                     control=copy.deepcopy(decs[0]), cluster_decoders=decs, routing=routing)
    r.runtime = "auto"  # the tests' default is torch (conftest)
    return r


@pytest.mark.parametrize("routing", ["soft", "hard"])
def test_openvino_restores_as_pytorch_does(routing):
    r = restorer(routing)
    x = torch.rand(2, 3, 37, 53)  # not a multiple of the model's 4: padded, then cropped
    x[0, :, :10] = 1.0  # saturated pixels: each decoder's clamp happens before the blend
    for mode in ("multi", "single", "base"):
        r.runtime = "torch"
        want = r.restore_float(x, mode)
        r.runtime = "auto"
        assert r.runtime_for(mode) == "openvino"
        got = r.restore_float(x, mode)
        assert got.shape == want.shape
        assert (got - want).abs().max() < 1e-5, mode
        assert torch.equal(got, r.restore_float(x, mode))  # deterministic


def test_restoring_a_uint8_image_in_numpy_gives_the_torch_glue_s_pixels(monkeypatch):
    """ConvRestorer.restore feeds OpenVINO from NumPy (no torch thread pool beside OpenVINO's):
    the same uint8 pixels as the generic path through restore_float, for sizes that reflect,
    that replicate (smaller than the padding) and that need none; grey input too."""
    from aerestore.restore import Restorer

    r = restorer()
    rng = np.random.default_rng(0)
    for shape in [(37, 53, 3), (3, 2, 3), (64, 48, 3), (21, 30)]:
        img = rng.integers(0, 256, size=shape, dtype=np.uint8)
        img[:5] = 255  # saturated rows
        for mode in ("multi", "single"):
            assert r.runtime_for(mode) == "openvino"
            got = r.restore(img, mode)
            want = np.clip(np.rint(r.restore_float(  # the torch glue around the same graph
                torch.from_numpy(r.to_model_channels(img)).permute(2, 0, 1)[None].float().div_(255.0),
                mode)[0].permute(1, 2, 0).numpy() * 255.0), 0, 255).astype(np.uint8)
            assert got.dtype == np.uint8 and got.shape == want.shape == shape[:2] + (3,)
            assert np.array_equal(got, want), (shape, mode)
    calls = []  # larger than one tile: the generic (tiled) path
    monkeypatch.setattr(Restorer, "_restore_array", lambda self, x, mode: calls.append(x.shape) or "tiled")
    r.tile = 16
    assert r._restore_array(np.zeros((1, 3, 21, 30), np.float32), "multi") == "tiled" and calls == [(1, 3, 21, 30)]


def test_one_compiled_graph_serves_every_size_and_tiles():
    r = restorer()
    r.runtime = "openvino"
    r.tile, r.margin = 32, 8  # tiles of 32 px with 8 px of context: several shapes
    for size in [(5, 7), (64, 48), (70, 33)]:
        x = torch.rand(1, 3, *size)
        got = r.restore_float(x)
        r.runtime = "torch"
        want = r.restore_float(x)
        r.runtime = "openvino"
        assert (got - want).abs().max() < 1e-5, size
    assert list(r._compiled) == ["multi"]  # compiled once, for every shape


def test_changed_weights_are_compiled_again_and_the_cache_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("AERESTORE_CACHE", str(tmp_path))
    r = restorer()
    r.runtime = "openvino"
    x = torch.rand(1, 3, 24, 24)
    before = r.restore_float(x)
    assert len(list((tmp_path / "openvino").glob("*.xml"))) == 1
    with torch.no_grad():
        for d in r.cluster_decoders:
            d.tail.bias.add_(0.1)
    after = r.restore_float(x)
    r.runtime = "torch"
    assert (after - r.restore_float(x)).abs().max() < 1e-5 and not torch.equal(after, before)
    assert len(list((tmp_path / "openvino").glob("*.xml"))) == 2
    # a second restorer with the same weights reads the cached graph: no conversion
    r.runtime = "openvino"
    r2 = copy.deepcopy(r)  # copies compile their own (compiled models cannot be copied)
    import openvino as ov

    def no_convert(*a, **k):
        raise AssertionError("converted again despite the cache")

    monkeypatch.setattr(ov, "convert_model", no_convert)
    assert (r2.restore_float(x) - after).abs().max() < 1e-5


def test_where_openvino_does_not_apply():
    r = restorer(method="soft_kmeans")
    assert r.runtime_for("multi") == "torch"  # auto: centroid routing stays in PyTorch
    assert r.runtime_for("single") == "openvino"
    r.runtime = "openvino"
    with pytest.raises(ValueError, match="OpenVINO runtime does not apply.*'multi'.*soft_kmeans"):
        r.runtime_for("multi")
    r.runtime = "fast"
    with pytest.raises(ValueError, match="runtime must be"):
        r.runtime_for("single")
    bf16 = restorer().to("cpu", "bf16")
    assert bf16.runtime_for("multi") == "torch"


def test_openvino_is_refused_for_block_restorers():
    from aerestore.models import create_model
    from aerestore.restore import Restorer

    model = create_model("conv_ae", latent=8, block=18, channels=3).eval()
    r = Restorer(model, arch="conv_ae", overlap=4)
    assert r.runtime_for("multi") == "torch"
    r.runtime = "openvino"  # what `aerestore restore --runtime openvino` sets
    with pytest.raises(ValueError, match="fully convolutional restorers.*conv_ae"):
        r.runtime_for("multi")


def test_cli_runtime_openvino_restores_as_torch_and_refuses_where_it_cannot(tmp_path, capsys):
    """`aerestore restore --runtime openvino` writes the PNG `--runtime torch` writes (a
    unet_ae model.pt alone: its shared decoder), and on a block network it is an error
    naming why, before any image is read."""
    from PIL import Image
    from helpers import tiny_model

    from aerestore import cli
    from aerestore.models import create_model, save_model

    torch.manual_seed(0)
    unet = tmp_path / "unet"
    unet.mkdir()
    save_model(create_model("unet_ae", latent=8, block=16, channels=3, width=4, levels=2), unet / "model.pt")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (21, 30, 3), dtype=np.uint8)).save(photo)
    outs = {}
    for runtime in ("torch", "openvino"):
        out = tmp_path / runtime
        assert cli.main(["restore", str(photo), "--model", str(unet), "-o", str(out), "--runtime", runtime,
                         "--no-progress"]) == 0
        outs[runtime] = np.asarray(Image.open(out / "photo.png"))
    assert np.abs(outs["torch"].astype(int) - outs["openvino"]).max() <= 1  # rounding of ~1e-6
    blocks = tmp_path / "conv"
    blocks.mkdir()
    save_model(tiny_model("conv_ae", block=16), blocks / "model.pt", overlap=4)
    assert cli.main(["restore", str(photo), "--model", str(blocks), "-o", str(tmp_path / "x"),
                     "--runtime", "openvino"]) == 2
    assert "fully convolutional restorers (unet_ae), not conv_ae" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
