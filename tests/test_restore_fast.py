"""The per-cluster restorer of unet_ae runs channels-last copies of its networks on the CPU
(faster): the same function as the plain NCHW loop over the decoders, copies that follow the
weights, and tiles that join like the whole image."""

from __future__ import annotations

import copy

import numpy as np
import torch

from aerestore.models import create_model
import pytest

from aerestore import restore as R
from aerestore.tracks.images.restore import ConvRestorer, upsample_maps


def restorer(routing: str = "soft") -> ConvRestorer:
    """A small unet_ae routed by its damage head (3 classes), three decoders made unlike each
    other and the shared one (seeded perturbations), as the decoders stage leaves them."""
    torch.manual_seed(0)
    model = create_model("unet_ae", latent=8, block=16, channels=3, width=4, levels=2).eval()
    decoders = []
    for k in range(3):
        d = copy.deepcopy(model.decoder)
        gen = torch.Generator().manual_seed(k + 1)
        with torch.no_grad():
            for p in d.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        decoders.append(d)
    with torch.no_grad():  # a damage head whose classes vary across the image
        model.damage_head.weight.mul_(1000.0)
    return ConvRestorer(model, arch="unet_ae", method="damage_head", control=copy.deepcopy(decoders[0]),
                        cluster_decoders=decoders, routing=routing)


def reference(r: ConvRestorer, x: torch.Tensor, mode: str = "multi") -> torch.Tensor:
    """The restorer as it was: the original (NCHW) networks, one decoder after another,
    their outputs blended by the pixel maps."""
    with torch.no_grad():
        f = r.model.features(x)
        if mode == "base":
            return r.model.decoder(f).clamp(0, 1)
        if mode == "single":
            return r.control(f).clamp(0, 1)
        maps = r.pixel_maps(f.code, f.size)
        return sum(maps[:, k : k + 1] * d(f) for k, d in enumerate(r.cluster_decoders)).clamp(0, 1)


def test_channels_last_restorer_equals_the_plain_loop():
    r = restorer("soft")
    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))  # odd size: the padded path
    with torch.no_grad():
        maps = r.pixel_maps(r.model.features(x).code, (37, 53))
    assert (maps.amax((0, 2, 3)) > 0.7).all()  # every decoder carries real weight somewhere
    fast = {mode: r.restore_float(x, mode) for mode in ("multi", "single", "base")}
    for mode, y in fast.items():
        assert torch.allclose(y, reference(r, x, mode), atol=1e-5), mode
    model, control, decoders, ensemble = r._networks()
    assert ensemble is None  # no ensemble control here
    assert model.encoder.head[0].weight.is_contiguous(memory_format=torch.channels_last)
    # the originals keep their layout (training copies them in NCHW, as before)
    assert r.model.encoder.head[0].weight.is_contiguous() and all(
        d.tail.weight.is_contiguous() for d in r.cluster_decoders)
    r.channels_last = False  # the plain path, on the same networks
    assert torch.allclose(r.restore_float(x), fast["multi"], atol=1e-5)


def test_hard_routing_equals_the_plain_loop_off_ties():
    r = restorer("hard")
    x = torch.rand(1, 3, 40, 44, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f = r.model.features(x)
        maps = upsample_maps(r.route_maps(f.code), r.model.multiple, f.size)
        top2 = maps.topk(2, dim=1).values
        hard = torch.nn.functional.one_hot(maps.argmax(1), 3).permute(0, 3, 1, 2).float()
        expected = sum(hard[:, k : k + 1] * d(f) for k, d in enumerate(r.cluster_decoders)).clamp(0, 1)
    assert len(hard.sum((0, 2, 3)).nonzero()) >= 2  # at least two decoders win pixels
    # a pixel whose two best clusters tie within float noise may take either decoder
    off_tie = (top2[:, 0] - top2[:, 1] > 1e-5)[:, None].expand_as(expected)
    out = r.restore_float(x)
    assert torch.allclose(out[off_tie], expected[off_tie], atol=1e-5)


def test_copies_follow_weights_changed_in_place():
    r = restorer("soft")
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    before = r.restore_float(x)
    with torch.no_grad():  # an optimiser step, or load_state_dict, changes the weights in place
        r.cluster_decoders[1].tail.bias.add_(0.2)
    after = r.restore_float(x)
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, reference(r, x), atol=1e-5)


def test_tiled_per_cluster_restoring_equals_the_whole_image():
    r = restorer("soft")
    x = torch.rand(1, 3, 70, 90, generator=torch.Generator().manual_seed(3))
    whole = r.restore_float(x)
    r.tile = 32  # 6 tiles; the default margin (32 px) covers the receptive field (2 levels: 32 px)
    assert torch.allclose(r.restore_float(x), whole, atol=1e-5)


def test_uint8_restore_matches_the_plain_path():
    r = restorer("soft")
    img = (np.random.default_rng(4).random((33, 47, 3)) * 255).astype(np.uint8)
    fast = r.restore(img).astype(int)
    r.channels_last = False
    assert np.abs(fast - r.restore(img).astype(int)).max() <= 1  # a float 1e-7 apart may round apart


# ------------------------------------------------------------------ the ensemble control
def with_ensemble(routing: str) -> ConvRestorer:
    """:func:`restorer` with an ensemble control: three more perturbed decoders."""
    r = restorer(routing)
    ens = []
    for k in range(3):
        d = copy.deepcopy(r.model.decoder)
        gen = torch.Generator().manual_seed(10 + k)
        with torch.no_grad():
            for p in d.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        ens.append(d.eval())
    r.ensemble_decoders = ens
    return r


@pytest.mark.parametrize("routing", ["soft", "hard"])
def test_ensemble_is_mixed_as_the_per_cluster_decoders(routing, monkeypatch):
    """The same mixing: with the cluster decoders as its decoders and the blind cycle
    undone, the ensemble mode is exactly the per-cluster mode; as it is, the blend of its
    own decoders by the blind maps (soft, or their one-hot argmax)."""
    r = with_ensemble(routing)
    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        f = r.model.features(x)
        maps = upsample_maps(R.blind_maps(r.route_maps(f.code)), r.model.multiple, f.size)
        if routing == "hard":
            maps = torch.nn.functional.one_hot(maps.argmax(1), 3).permute(0, 3, 1, 2).float()
        expected = sum(maps[:, k : k + 1] * d(f) for k, d in enumerate(r.ensemble_decoders)).clamp(0, 1)
    assert torch.allclose(r.restore_float(x, "ensemble"), expected, atol=1e-5)
    assert not torch.allclose(r.restore_float(x, "ensemble"), r.restore_float(x, "multi"), atol=1e-3)
    r.ensemble_decoders = list(r.cluster_decoders)
    monkeypatch.setattr("aerestore.tracks.images.restore.blind_maps", lambda maps: maps)
    assert torch.equal(r.restore_float(x, "ensemble"), r.restore_float(x, "multi"))


def test_blind_maps_keep_each_images_weights_but_not_where_they_were():
    order = R.blind_order(5, 7)
    assert sorted(order.tolist()) == list(range(35))
    assert not (order == torch.arange(35)).any()  # every location takes another's weights
    assert torch.equal(order, R.blind_order(5, 7))  # fixed: the grid's size alone decides it
    # one cycle through all the locations
    seen, i = set(), 0
    while i not in seen:
        seen.add(i)
        i = int(order[i])
    assert len(seen) == 35
    maps = torch.softmax(torch.randn(3, 4, 5, 7, generator=torch.Generator().manual_seed(0)), 1)
    blind = R.blind_maps(maps)
    # per image the same weight vectors (the same mix of decoders), moved elsewhere
    for a, b in zip(maps, blind):
        rows = lambda m: sorted(map(tuple, m.flatten(1).T.tolist()))  # noqa: E731
        assert rows(a) == rows(b)
    assert torch.equal(blind.flatten(2), maps.flatten(2)[:, :, order])
    # the move does not depend on the maps: any two maps are moved alike
    other = torch.rand(3, 4, 5, 7)
    assert torch.equal(R.blind_maps(other).flatten(2), other.flatten(2)[:, :, order])


def test_ensemble_mode_without_an_ensemble_is_a_clear_error():
    r = restorer("soft")
    with pytest.raises(ValueError, match="decoders.ensemble"):
        r.restore_float(torch.rand(1, 3, 24, 24), "ensemble")


def test_ensemble_is_never_compiled_as_the_per_cluster_graph():
    """OpenVINO compiles multi, single and base; the ensemble control's blind weights are not
    in that graph, so under runtime 'auto' it runs in PyTorch (else it came out as multi)."""
    from aerestore import ovruntime

    r = with_ensemble("soft")
    assert not ovruntime.supports(r, "ensemble")
    r.runtime = "auto"
    assert r.runtime_for("ensemble") == "torch"
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    auto = r.restore_float(x, "ensemble")
    r.runtime = "torch"
    assert torch.equal(auto, r.restore_float(x, "ensemble"))
