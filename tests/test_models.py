"""Every architecture: sizes, a training step, save / load, the registry's errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from aerestore.losses import LossConfig
from aerestore.models import (
    RestorationModel,
    UnknownModelError,
    create_model,
    list_models,
    load_model,
    model_options,
    save_model,
)

# Narrow widths keep every architecture quick on two shared cores.
SMALL: dict[str, dict] = {
    "accordion": {"filters": (4, 4, 8), "dec_filters": (4, 4)},
    "ccp_ae": {"filters": (4, 4, 8)},
    "ccp_ae_convt2": {"filters": (4, 4, 8)},
    "ccp_ae_upsample": {"filters": (4, 4, 8)},
    "conv_ae": {"filters": (4, 4, 4, 4, 8), "dense": 8, "dec_filters": (8, 8, 4, 4, 4, 4)},
    "conv_ae_v1": {"filters": (4, 8)},
    "conv_ae_v2": {"filters": (4, 4, 8), "dec_filters": (4, 4)},
    "dncnn": {"width": 4, "depth": 4},
    "drunet": {"widths": (4, 8), "blocks": 1},
    "fcn_ae": {"filters": (4, 4, 8), "dec_filters": (4, 4, 4)},
    "nafnet": {"width": 4, "enc": (1,), "middle": 1, "dec": (1,)},
    "resnet_ncut": {"width": 4, "dense": 8, "dec_filters": (8, 8, 4, 4, 4, 4)},
    "resnet_vae": {"width": 4, "dec_filters": (8, 8, 4)},
    "unet_ae": {"width": 4},
    "vae": {"filters": (4, 8), "dense": 8, "dec_filters": (8, 8, 4)},
    "vae_gan": {"width": 0.0625},
    "vae_lfw": {"filters": (4, 4, 8, 8), "dec_filters": (8, 8, 8, 8)},
    "vgg_vae": {"width": 0.0625},
}
NAMES = list_models()
LATENT = 8


def small(name: str, block: int = 16, channels: int = 3, loss: LossConfig | None = None, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return create_model(name, latent=LATENT, block=block, channels=channels, loss=loss, **{**SMALL[name], **kw})


def batch(block: int = 16, channels: int = 3, n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth clean blocks and noisy degraded copies (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 4, 4, generator=g)
    clean = torch.nn.functional.interpolate(coarse, size=(block, block), mode="bilinear", align_corners=False)
    degraded = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return degraded, clean


def test_every_architecture_has_small_test_settings():
    assert sorted(SMALL) == NAMES
    expected = {"conv_ae", "vae", "vae_lfw", "resnet_vae", "vgg_vae", "ccp_ae", "fcn_ae",
                "conv_ae_v1", "conv_ae_v2", "accordion", "vae_gan"}
    assert expected <= set(NAMES)


# ------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("name", NAMES)
def test_shapes_for_every_block_size_and_channel_count(name):
    for block in (16, 18, 32, 64):
        for channels in (1, 3):
            model = small(name, block, channels)
            assert isinstance(model, RestorationModel)
            assert (model.name, model.latent, model.block, model.channels) == (name, LATENT, block, channels)
            x = torch.rand(2, channels, block, block)
            model.train()
            y = model(x)
            assert y.shape == x.shape, (block, channels)
            assert 0 <= y.min() and y.max() <= 1
            model.eval()
            with torch.no_grad():
                if model.track == "images":  # tests/test_unet_ae.py: features, maps
                    assert model.encode(x).shape[1:] == model.latent_shape
                    assert model.latent_vector(x).shape == (2, model.latent_dim)
                    continue
                z = model.encode(x)
                assert z.shape[1:] == model.latent_shape
                v = model.latent_vector(x)
                assert v.shape == (2, model.latent_dim)
                assert torch.equal(v, z.flatten(1))
                assert torch.allclose(model.decode(z), model(x))  # forward == decode(encode) in eval mode
                assert torch.equal(model.decoder(z), model.decode(z))
                assert torch.equal(copy.deepcopy(model.decoder)(z), model.decode(z))  # a cluster decoder


@pytest.mark.parametrize("name", NAMES)
def test_latent_length_follows_latent(name):
    for block in (16, 18, 32):
        model = small(name, block)
        if model.latent_shape == (LATENT,) or model.track == "images":
            continue
        if name in ("conv_ae_v1", "conv_ae_v2", "accordion"):  # the blur study's code: the last map
            assert model.latent_shape[0] == SMALL[name]["filters"][-1]
            model = small(name, block, code=True)  # the earlier versions: `latent` sets the code
            if model.latent_shape == (LATENT,):
                continue  # dense code: exactly `latent` numbers; fully conv: `latent` channels, any size
        # fully convolutional codes: c x h x h with c = max(1, round(latent / h^2))
        c, h, w = model.latent_shape
        assert h == w and c == max(1, round(LATENT / h**2))


def test_odd_and_tiny_blocks():
    for name in NAMES:
        for block in (8, 13):
            model = small(name, block, 1)
            x = torch.rand(2, 1, block, block)
            assert model(x).shape == x.shape, (name, block)


# ------------------------------------------------------------------------- training
@pytest.mark.parametrize("name", NAMES)
def test_training_steps_lower_the_loss(name):
    model = small(name)
    data = batch()
    model.train()

    # vae_gan's three updates minimise three objectives, none of them its 'loss' (pixel
    # recon + KL, whose KL grows at first): its pixel reconstruction must fall.
    key = "recon" if name == "vae_gan" else "loss"

    def measured() -> float:
        torch.manual_seed(123)  # same VAE samples each time
        with torch.no_grad():
            return float(model.loss(data)[key])

    before = measured()
    optimizers = model.configure_optimizers(3e-3)
    for _ in range(3):
        terms = model.train_step(data, optimizers)
        assert all(isinstance(v, float) for v in terms.values())
        assert {"loss", "recon", "mse"} <= set(terms)
    after = measured()
    assert after < before, (before, after)


def test_training_is_deterministic():
    def trained(name: str) -> dict[str, torch.Tensor]:
        model = small(name, seed=5)
        torch.manual_seed(7)
        opts = model.configure_optimizers(1e-3)
        for s in range(2):
            model.train_step(batch(seed=s), opts)
        return model.state_dict()

    for name in ("conv_ae", "vae", "vae_gan"):
        a, b = trained(name), trained(name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_vae_samples_in_training_and_encodes_the_mean():
    model = small("vae")
    x = batch()[0]
    model.train()
    assert not torch.equal(model(x), model(x))  # a new sample each call
    assert torch.equal(model.encode(x), model.encoder(x)[0])
    terms = model.loss((x, x))
    assert {"kl", "recon", "loss"} <= set(terms)
    # per-sample sums: recon is the pixel mse times C * s * s
    assert terms["recon"].item() != pytest.approx(terms["mse"].item())
    model.eval()
    assert torch.equal(model(x), model(x))


def test_loss_terms_follow_the_config():
    data = batch()
    plain = small("conv_ae").loss(data)
    assert set(plain) == {"loss", "recon", "mse"}
    assert plain["loss"].item() == pytest.approx(plain["recon"].item())

    cfg = LossConfig(l1=1e-3, l2=1e-2, sharpness_weight=0.5, sharpness_start_epoch=2, ncut_weight=0.1, ncut_k=3)
    model = small("conv_ae", loss=cfg)
    assert model.cluster_head is not None
    probs = model.cluster_head(model.latent_vector(data[0]))
    assert probs.shape == (8, 3)
    assert torch.allclose(probs.sum(1), torch.ones(8))
    model.epoch = 1
    early = model.loss(data)
    assert "sharpness" not in early
    model.epoch = 2
    torch.manual_seed(0)
    terms = model.loss(data)
    assert {"l1", "l2", "sharpness", "ncut"} <= set(terms)
    total = terms["recon"] + 1e-3 * terms["l1"] + 1e-2 * terms["l2"] + 0.5 * terms["sharpness"] + 0.1 * terms["ncut"]
    assert terms["loss"].item() == pytest.approx(total.item(), rel=1e-5)
    layers = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    with torch.no_grad():
        l1 = sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, layers))
    assert terms["l1"].item() == pytest.approx(l1.item(), rel=1e-5)
    assert small("conv_ae").cluster_head is None


def test_variational_loss_weights():
    data = batch()
    model = small("vae", loss=LossConfig(alpha=2.0, beta=0.5))
    model.eval()
    terms = model.loss(data)
    n = data[1][0].numel()
    assert terms["recon"].item() == pytest.approx(n * terms["mse"].item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(2.0 * terms["recon"].item() + 0.5 * terms["kl"].item(), rel=1e-5)


def test_vae_without_kl_stays_finite():
    model = small("vae", loss=LossConfig(beta=0.0))
    with torch.no_grad():
        model.encoder.head.z_log_var.bias.fill_(1e3)  # exp(1e3) would overflow
    terms = model.loss(batch())
    assert torch.isfinite(terms["kl"]) and torch.isfinite(terms["loss"])
    assert terms["loss"].item() == pytest.approx(terms["recon"].item())


def test_vae_gan_updates_three_parameter_groups():
    model = small("vae_gan")
    opts = model.configure_optimizers(1e-3)
    assert len(opts) == 3
    before = copy.deepcopy(model.state_dict())
    terms = model.train_step(batch(), opts)
    assert {"loss", "recon", "kl", "feature", "gan_gen", "gan_dis"} <= set(terms)
    after = model.state_dict()
    for part in ("encoder.", "decoder.", "discriminator."):
        keys = [k for k in after if k.startswith(part) and after[k].is_floating_point()]
        assert any(not torch.equal(before[k], after[k]) for k in keys), part
    with pytest.raises(ValueError, match="3 optimizers"):
        model.train_step(batch(), opts[:1])
    model.eval()
    val = model.loss(batch())
    assert val["loss"].item() == pytest.approx(val["recon"].item() + val["kl"].item(), rel=1e-5)


def test_vae_gan_penalties_skip_the_discriminator():
    model = small("vae_gan", loss=LossConfig(l1=1.0))
    model.eval()
    with torch.no_grad():
        model.discriminator.rest[-1].weight.add_(100.0)
        l1 = model.loss(batch())["l1"].item()
        model.discriminator.rest[-1].weight.add_(100.0)
        assert model.loss(batch())["l1"].item() == pytest.approx(l1)


def test_accordion_decoder_runs_the_rest_of_the_network():
    model = small("accordion")
    model.eval()
    x = batch()[0]
    with torch.no_grad():
        z = model.encode(x)
        dec = model.decoder
        manual = dec.decoder2(dec.encoder2(dec.decoder1(z)))
        assert torch.equal(model(x), manual)
        assert torch.equal(copy.deepcopy(model.decoder)(z), manual)


# ------------------------------------------------------------------------- save/load
@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tmp_path):
    loss = LossConfig(recon="rmse", beta=0.5, ncut_weight=0.2, ncut_k=3)
    model = small(name, block=18, channels=3, loss=loss)
    model.train_step(batch(18), model.configure_optimizers(1e-3))  # batch-norm statistics move
    path = tmp_path / "sub" / "model.pt"
    save_model(model, path, extra={"epoch": 3, "history": [0.5, 0.25], "arch": name})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left
    loaded, extra = load_model(path)
    assert extra == {"epoch": 3, "history": [0.5, 0.25], "arch": name}
    assert loaded.config() == model.config()
    assert json.loads(json.dumps(model.config())) == model.config()
    assert loaded.loss_config == loss
    assert not loaded.training
    model.eval()
    x = batch(18)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded.latent_vector(x), model.latent_vector(x))
        assert torch.equal(loaded.cluster_head(loaded.latent_vector(x)), model.cluster_head(model.latent_vector(x)))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_model(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="other.pt"):
        load_model(other)
    with pytest.raises(TypeError, match="extra.when"):
        save_model(small("conv_ae"), tmp_path / "m.pt", extra={"when": object()})
    assert not (tmp_path / "m.pt").exists()


# ------------------------------------------------------------------------- registry
def test_unknown_name_lists_the_known_names():
    with pytest.raises(KeyError) as info:
        create_model("resnet_ae")
    assert isinstance(info.value, ValueError) and isinstance(info.value, UnknownModelError)
    for name in NAMES:
        assert name in str(info.value)


def test_unknown_or_bad_override_names_the_key():
    with pytest.raises(TypeError, match="widht"):
        create_model("resnet_vae", widht=8)
    with pytest.raises(ValueError, match="decoder"):
        create_model("ccp_ae", decoder="pixelshuffle")
    with pytest.raises(ValueError, match="form"):
        create_model("vae", form="mnist")
    with pytest.raises(ValueError, match="strides"):
        create_model("conv_ae", filters=(4, 4), strides=(1, 2, 1))
    with pytest.raises(ValueError, match="block"):
        create_model("conv_ae", block=2)


def test_list_models_and_options():
    assert list_models("vae*") == ["vae", "vae_gan", "vae_lfw"]
    assert list_models("ccp_ae*") == ["ccp_ae", "ccp_ae_convt2", "ccp_ae_upsample"]
    assert list_models("nothing*") == []
    assert model_options("ccp_ae_upsample")["decoder"] == "upsample"
    assert model_options("vae_lfw")["form"] == "lfw"
    assert small("vae_lfw").config()["overrides"] == {"filters": [4, 4, 8, 8], "dec_filters": [8, 8, 8, 8]}


# ------------------------------------------------------------------------- vgg weights
def _vgg_state(model) -> dict[str, torch.Tensor]:
    """A torchvision-format state dict (features.N, N as in torchvision's VGG16) for ``model``."""
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    tv_index = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    g = torch.Generator().manual_seed(3)
    state = {}
    for i, conv in zip(tv_index, convs, strict=True):
        state[f"features.{i}.weight"] = torch.randn(conv.weight.shape, generator=g)
        state[f"features.{i}.bias"] = torch.randn(conv.bias.shape, generator=g)
    state["classifier.0.weight"] = torch.zeros(4, 4)
    return state


def test_vgg_loads_local_weights_by_conv_order(tmp_path):
    ref = small("vgg_vae", channels=3)
    state = _vgg_state(ref)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    model = small("vgg_vae", channels=3, weights=str(path))
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13
    assert torch.equal(convs[0].weight, state["features.0.weight"])
    assert torch.equal(convs[12].bias, state["features.28.bias"])
    # grey blocks: the first layer's RGB filters are summed
    grey = small("vgg_vae", channels=1, weights=str(path))
    first = next(m for m in grey.features if isinstance(m, torch.nn.Conv2d))
    assert torch.allclose(first.weight, state["features.0.weight"].sum(1, keepdim=True))
    # the saved model carries the weights: loading does not need the file
    save_model(model, tmp_path / "m.pt")
    path.unlink()
    loaded, _ = load_model(tmp_path / "m.pt")
    assert torch.equal([m for m in loaded.features if isinstance(m, torch.nn.Conv2d)][5].weight, convs[5].weight)


def test_vgg_weight_errors_name_the_file(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(_vgg_state(small("vgg_vae")), path)
    with pytest.raises(ValueError, match="vgg16.pth.*features.0.weight"):
        small("vgg_vae", width=0.125, weights=str(path))
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        small("vgg_vae", weights=str(tmp_path / "absent.pth"))
