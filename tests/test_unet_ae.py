"""unet_ae: the residual U-Net autoencoder, crop training, map-weighted decoders and the
fully convolutional restorer (small widths: seconds on one thread)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from pathlib import Path

from aerestore.artifacts import Clusters, ModelKey, write_clusters, write_decoders
from aerestore.tracks.images.dataset import ImageData, location_features, sample_crops
from aerestore.damage import DAMAGE_CLASSES, DAMAGE_KINDS
from aerestore.losses import LossConfig
from aerestore.tracks.images.decoders import train_map_decoders, weighted_mse
from aerestore.models import create_model, load_model, save_model
from aerestore.restore import Restorer
from aerestore.tracks.images.restore import ConvRestorer, upsample_maps


def small(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return create_model("unet_ae", latent=8, block=16, channels=3, **{"width": 4, "levels": 2, **kw})


REPO = Path(__file__).resolve().parents[1]


def images(n: int = 6, size: int = 24, seed: int = 0) -> ImageData:
    """Smooth clean images, noisy copies and K-channel masks (left half blurred, a noisy corner)."""
    rng = np.random.default_rng(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
    clean = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    clean = (clean.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    degraded = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((n, size, size, len(DAMAGE_KINDS)), np.uint8)
    mask[:, :, : size // 2, 0] = 255
    mask[:, size - 6 :, size - 6 :, 1] = 200
    return ImageData.from_arrays(degraded, clean, mask)


def test_shapes_parameter_count_and_any_size():
    m = create_model("unet_ae", latent=64, block=32, channels=3)  # defaults: width 32, levels 2
    assert m.track == "images" and m.multiple == 4
    # 646,150 for the U-Net itself; the damage tower (3->16 3x3: 448, two 16->16 3x3 stride 2:
    # 4,640, 16->16 3x3: 2,320, 16->8 1x1: 136 = 7,544), the decoder's entry reading 8 more
    # code channels (8 * 128 * 9 = 9,216) and the head on 8 channels, not 64 (-168)
    assert sum(p.numel() for p in m.parameters()) == 646_150 + 7_544 + 9_216 - 168
    assert sum(p.numel() for p in create_model("unet_ae", latent=64, block=32, channels=3,
                                               damage_channels=0).parameters()) == 646_150
    m2 = create_model("unet_ae", latent=64, block=32, channels=3, unshuffle=2)
    assert m2.multiple == 8
    x = torch.rand(2, 3, 37, 53)
    for model in (m, m2, small()):
        model.eval()
        with torch.no_grad():
            f = model.features(x)
            assert f.code.shape[2:] == (-(-37 // model.multiple), -(-53 // model.multiple))
            assert model.encode(x).shape == f.code.shape
            assert model.latent_vector(x).shape == (2, model.latent + model.damage_channels)
            assert torch.equal(model.latent_vector(x), f.code.mean((2, 3)))
            assert model(x).shape == x.shape
            assert model.damage_logits(f.code).shape[1] == len(DAMAGE_CLASSES)
    assert small().latent_shape == (8 + 8, 4, 4)  # the content code and the damage embedding


def test_zero_correction_is_identity():
    m = small().eval()
    torch.nn.init.zeros_(m.decoder.tail.weight)
    torch.nn.init.zeros_(m.decoder.tail.bias)
    x = torch.rand(2, 3, 21, 30)
    with torch.no_grad():
        assert torch.equal(m(x), x)


def test_decoder_copy_and_weighted_loss_start_equal():
    m = small().eval()
    x = torch.rand(3, 3, 16, 16)
    y = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        f = m.features(x)
        dec = copy.deepcopy(m.decoder)
        assert torch.equal(dec(f), m.decoder(f))
        w = upsample_maps(torch.softmax(m.damage_logits(f.code), 1), m.multiple, f.size)[:, 1:2]
        assert torch.equal(weighted_mse(dec(f), y, w), weighted_mse(m.decoder(f), y, w))
        assert torch.allclose(weighted_mse(dec(f), y, torch.ones_like(w)), weighted_mse(dec(f), y, None))


def test_damage_term_and_training_lowers_the_loss():
    torch.manual_seed(0)
    m = create_model("unet_ae", latent=8, block=16, channels=3, loss=LossConfig(damage_weight=0.5), width=4)
    data = images()
    rng = np.random.default_rng(0)
    batch = sample_crops(data, 4, 16, rng)
    assert batch[2].shape == (4, len(DAMAGE_CLASSES), 16, 16)
    terms = m.loss(batch)
    assert {"loss", "recon", "mse", "damage"} <= set(terms)
    assert torch.allclose(terms["loss"], terms["recon"] + 0.5 * terms["damage"])
    opt = m.configure_optimizers(3e-3)
    before = float(m.loss(batch)["loss"].detach())
    for _ in range(5):
        m.train_step(batch, opt)
    assert float(m.loss(batch)["loss"].detach()) < before


def test_crop_training_is_deterministic_and_keeps_the_best():
    from aerestore.tracks.images.train import fit_crops, lr_at
    from aerestore.params import RuntimeParams, TrainParams

    assert lr_at(0, 100, 1.0, 0.1) == pytest.approx(0.1) and lr_at(10, 100, 1.0, 0.1) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 0.1) < 0.01
    cfg = TrainParams(batch_size=4, lr=2e-3, crops={"size": 16, "steps": 6, "eval_every": 3})
    runs = []
    for _ in range(2):
        m = small()
        res = fit_crops(m, images(), images(2, seed=1), cfg, seed=3, progress=False,
                        runtime=RuntimeParams(threads=1, device="cpu"))
        runs.append((res, m.state_dict()))
    assert [r["step"] for r in runs[0][0].history] == [3, 6]
    assert runs[0][0].best_val_loss == min(r["val_mse"] for r in runs[0][0].history)
    for k, v in runs[0][1].items():
        assert torch.equal(v, runs[1][1][k]), k


def _save(tmp_path, m, data, method="damage_head"):
    save_model(m, tmp_path / "model.pt")
    z, shares = location_features(m, data)
    assert shares.shape == (len(z), len(DAMAGE_CLASSES))
    assert np.allclose(shares.sum(1), 1)
    if method == "soft_kmeans":
        centroids, k = z[:2], 2
    else:
        centroids, k = np.zeros((3, z.shape[1]), np.float32), 3
    write_clusters(tmp_path / "clusters.npz", Clusters(ModelKey.of(m), centroids, float(z.var(0).sum()) + 1e-6,
                                                       5.0, method))
    return k


@pytest.mark.parametrize("method", ["damage_head", "soft_kmeans"])
def test_map_decoders_and_the_restorer(tmp_path, method):
    m = small().eval()
    data = images()
    k = _save(tmp_path, m, data, method)
    r = Restorer.load(tmp_path, decoders=False)
    assert isinstance(r, ConvRestorer)
    result = train_map_decoders(r.model, r.route_maps, k, data, images(2, seed=1), steps=2, lr=1e-3,
                                batch_size=2, crop=16, eval_every=1, min_locations=1, seed=0,
                                sizes=[10] * k, progress=False)
    assert result.summary["updates"] == {"clusters": 2 * k, "control": 2 * k, "ensemble": 2 * k}
    assert len(result.ensemble) == k and np.isfinite(result.summary["val_loss"]["ensemble_soft"])
    hist = result.histories["cluster_0"]
    assert [h["step"] for h in hist] == [0, 1, 2] and set(hist[0]) == {"step", "train_loss", "val_loss"}
    assert hist[0]["val_loss"] == pytest.approx(result.summary["val_loss_by_cluster"][0]["shared"])
    write_decoders(tmp_path / "decoders.pt", r.model, result)
    for routing in ("soft", "hard"):
        r = Restorer.load(tmp_path, routing=routing)
        x = torch.rand(2, 3, 37, 53)
        assert r.ensemble_decoders is not None and r.own_decoders == k
        for mode in ("multi", "single", "base", "ensemble"):
            y = r.restore_float(x, mode)
            assert y.shape == x.shape
        with torch.no_grad():
            # the restorer runs channels-last copies of the networks: the same function to ~1e-7
            assert torch.allclose(r.restore_float(x, "base"), m(x).clamp(0, 1), atol=1e-5)
        img = (np.random.default_rng(0).random((37, 53, 3)) * 255).astype(np.uint8)
        assert r.restore(img).shape == (37, 53, 3)
        assert np.array_equal(r.restore(img), r.restore(img))  # deterministic


def test_restorer_tiles_large_images_like_whole_ones(tmp_path):
    m = small().eval()
    save_model(m, tmp_path / "model.pt")
    r = Restorer.load(tmp_path)
    x = torch.rand(1, 3, 70, 90)
    whole = r.restore_float(x, "base")
    r.tile, r.margin = 32, 16  # receptive field of the small model < 16 px
    tiled = r.restore_float(x, "base")
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_save_load_round_trip(tmp_path):
    m = small(unshuffle=2)
    save_model(m, tmp_path / "model.pt")
    loaded, _ = load_model(tmp_path / "model.pt")
    x = torch.rand(1, 3, 19, 27)
    m.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    assert loaded.config() == m.config()


def test_single_channel_masks_are_blur():
    data = images()
    old = ImageData.from_arrays(data.degraded.permute(0, 2, 3, 1).numpy(), data.clean.permute(0, 2, 3, 1).numpy(),
                                np.full((6, 24, 24, 1), 255, np.uint8))
    assert (old.classes == 1).all()


@pytest.mark.parametrize("fresh", [False, True])
def test_a_share_of_the_crops_is_cut_exactly_as_in_the_whole_batch(fresh):
    """A data-parallel rank cuts only its share (``keep``) of the global batch: the same
    crops, and the random draws stay in step for the next batch (with fresh damage too)."""
    data = images().fresh(_default_degrader()) if fresh else images()
    whole_rng, part_rng = np.random.default_rng(3), np.random.default_rng(3)
    whole = sample_crops(data, 6, 16, whole_rng)
    part = sample_crops(data, 6, 16, part_rng, keep=np.arange(3, 6))
    for a, b in zip(whole, part):
        assert torch.equal(a[3:6], b)
    assert torch.equal(sample_crops(data, 2, 16, whole_rng)[0], sample_crops(data, 2, 16, part_rng)[0])


def _default_degrader():
    from aerestore.data.degrade import degrader
    from aerestore.params import load_params
    from pathlib import Path

    return degrader(load_params(Path(__file__).resolve().parents[1] / "params.yaml").prepare.degrade)


def test_fresh_damage_degrades_each_crop_anew_from_its_clean_image():
    """``train.crops.fresh_damage``: a crop's input is its clean image degraded by
    ``prepare.degrade`` with a seed drawn from the crop stream (the same stream gives the
    same crops), its damage classes come from that draw's masks, and two draws of one image
    get different damage where the prepared copy would repeat."""
    from aerestore.data.degrade import degrade_image  # noqa: F401  (what the degrader runs)
    from aerestore.data.layout import damage_labels

    degrade = _default_degrader()
    data = images(n=1, size=32).fresh(degrade)
    a = sample_crops(data, 4, 32, np.random.default_rng(5))  # crop = the image: no position draw matters
    b = sample_crops(data, 4, 32, np.random.default_rng(5))
    for x, y in zip(a, b):
        assert torch.equal(x, y)  # seeded by the crop stream
    deg, clean, dmg = a
    clean0 = data.clean[0].float() / 255
    # flips aside, every crop's clean side is the prepared clean image
    for i in range(4):
        assert any(torch.equal(clean[i], clean0.flip(d) if d else clean0) for d in ([], [-1], [-2], [-2, -1]))
    assert not torch.equal(deg[0], deg[1]) and not torch.equal(deg[0], data.degraded[0].float() / 255)
    # the input and the classes are one draw of the degrader: replay crop 0's seed
    rng = np.random.default_rng(5)
    rng.integers(0, 1, 4), rng.integers(0, 1, 4), rng.integers(0, 1, 4)
    flips = rng.random((4, 2)) < 0.5
    seed = int(rng.integers(0, 2**63, 4)[0])
    want, mask = degrade(np.ascontiguousarray(data.clean[0].permute(1, 2, 0).numpy()), np.random.default_rng(seed))
    want_t = torch.from_numpy(want).permute(2, 0, 1).float() / 255
    classes = torch.from_numpy(damage_labels(mask, axis=-1))
    dims = [d for d, f in ((-1, flips[0, 0]), (-2, flips[0, 1])) if f]
    if dims:
        want_t, classes = want_t.flip(dims), classes.flip([d + 1 for d in dims])
    assert torch.equal(deg[0], want_t)
    assert torch.equal(dmg[0].argmax(0), classes)
    assert (classes > 0).any()  # the default task damages some pixels of every image


def test_float_damage_gives_float_crops_beyond_the_8_bit_range():
    """``train.crops.float_damage``: the crops' inputs are the degrader's float output over
    255, unclipped, and the clean side is unchanged."""
    from aerestore.data.degrade import degrader
    from aerestore.params import GaussianNoiseOp

    data = images(n=2, size=32)
    data.clean[0, :, :, 16:] = 255
    data.clean[0, :, :, :16] = 0
    ops = [GaussianNoiseOp(op="gaussian_noise", std=0.2, prob=1.0)]
    deg, clean, _ = sample_crops(data.fresh(degrader(ops, quantise=False)), 8, 32, np.random.default_rng(1))
    assert deg.dtype == torch.float32 and deg.min() < 0 and deg.max() > 1
    deg8, clean8, _ = sample_crops(data.fresh(degrader(ops)), 8, 32, np.random.default_rng(1))
    assert torch.equal(clean, clean8) and deg8.min() >= 0 and deg8.max() <= 1
    assert torch.equal(deg8, (deg * 255).round().clamp(0, 255) / 255)  # the same draws, quantised


@pytest.mark.parametrize("float_damage", [False, True])
def test_train_stage_validates_on_the_damage_it_trains_on(tmp_path, float_damage):
    """``train@unet_ae`` (CropTraining) with ``train.crops.float_damage``: its crops and its
    validation images are degraded in float, unclipped (the validation images once, with the
    run's seed); without it, 8-bit crops and the prepared validation copies."""
    from types import SimpleNamespace

    from aerestore.data.degrade import degrader
    from aerestore.params import load_params
    from aerestore.tracks.images.training import CropTraining
    from test_blocks import write_prepared  # data/prepared in little (random 8-bit images)

    params = load_params(REPO / "params.yaml")
    raw = params.model_dump()
    raw["prepare"]["degrade"] = [{"op": "gaussian_noise", "std": 0.2, "prob": 1.0}]
    raw["train"]["crops"]["float_damage"] = float_damage
    params = type(params).model_validate(raw)
    write_prepared(tmp_path / "prepared", np.random.default_rng(0), {"train": 4, "val": 4}, hw=32)
    paths = SimpleNamespace(prepared=tmp_path / "prepared")
    job = CropTraining(params, "unet_ae", params.train_for("unet_ae"), paths)
    deg, _, _ = sample_crops(job.train, 8, 16, np.random.default_rng(0))
    prepared_val = np.load(tmp_path / "prepared" / "val" / "degraded.npy")
    if float_damage:
        assert deg.min() < 0 and deg.max() > 1
        assert job.val.degraded.dtype == torch.float32
        assert job.val.degraded.min() < 0 and job.val.degraded.max() > 255
        want = ImageData.load(paths.prepared, "val").degraded_once(
            degrader(params.prepare.degrade, quantise=False), params.seed)
        assert torch.equal(job.val.degraded, want.degraded)
    else:
        assert deg.min() >= 0 and deg.max() <= 1
        assert torch.equal(job.val.degraded, torch.from_numpy(prepared_val).permute(0, 3, 1, 2))


def test_degraded_once_is_seeded_per_image_and_whole_image_batches_leave_it_intact():
    from aerestore.data.degrade import degrader
    from aerestore.params import GaussianNoiseOp
    from aerestore.tracks.images.dataset import image_batches

    data = images(n=3, size=16)
    degrade = degrader([GaussianNoiseOp(op="gaussian_noise", std=0.1, prob=1.0)], quantise=False)
    a, b = data.degraded_once(degrade, 7), data.degraded_once(degrade, 7)
    assert torch.equal(a.degraded, b.degraded) and a.degraded.dtype == torch.float32
    assert not torch.equal(a.degraded, data.degraded_once(degrade, 8).degraded)
    first = data.degraded_once(degrade, 7).degraded[:1]  # image 0's draw does not depend on the others
    assert torch.equal(first, images(n=1, size=16).degraded_once(degrade, 7).degraded)
    kept = a.degraded.clone()
    for _ in range(2):  # evaluated twice, as every eval_every steps
        (deg, _, _), = list(image_batches(a, 16))
        assert torch.equal(deg, kept / 255.0)
    assert torch.equal(a.degraded, kept)


def test_crop_damage_follows_train_crops_for_the_trainer_and_the_decoders():
    """The one place that turns ``train.crops`` into the training stream and the validation
    set (train@<arch> and decoders@<arch> both call it): unchanged without fresh damage;
    fresh 8-bit crops with the prepared validation copies; float crops with float
    validation images degraded once with the seed."""
    from aerestore.data.degrade import crop_damage
    from aerestore.params import GaussianNoiseOp

    train, val = images(n=3, size=16), images(n=2, size=16)
    ops = [GaussianNoiseOp(op="gaussian_noise", std=0.3, prob=1.0)]
    t, v = crop_damage(train, val, ops, 3, fresh=False, float_damage=False)
    assert t is train and v is val
    t, v = crop_damage(train, val, ops, 3, fresh=True, float_damage=False)
    assert v is val and t.degrade is not None and t.degraded is train.degraded
    deg, _, _ = sample_crops(t, 8, 16, np.random.default_rng(0))
    assert 0 <= deg.min() and deg.max() <= 1 and torch.allclose(deg * 255, torch.round(deg * 255), atol=1e-3)
    t, v = crop_damage(train, val, ops, 3, fresh=True, float_damage=True)
    deg, _, _ = sample_crops(t, 8, 16, np.random.default_rng(0))
    assert deg.min() < 0 or deg.max() > 1
    _, again = crop_damage(train, val, ops, 3, fresh=True, float_damage=True)
    _, other = crop_damage(train, val, ops, 4, fresh=True, float_damage=True)
    assert torch.equal(v.degraded, again.degraded) and not torch.equal(v.degraded, other.degraded)
    assert torch.equal(v.clean, val.clean)


def test_fresh_damage_needs_ops():
    from aerestore.data.degrade import degrader

    with pytest.raises(ValueError, match="prepare.degrade is empty"):
        degrader([])


def test_map_ensemble_gets_the_per_cluster_budget_on_damage_blind_maps(tmp_path, monkeypatch):
    """The ensemble control of unet_ae: a decoder wherever a cluster has one (the same
    fallback), each fine-tuned by the same fine_tune with the same steps, lr, batch, crop,
    seed (so the same crops) and loss, weighted by the blind maps: the crop's own routing
    maps moved along the fixed cycle, whatever the damage."""
    import aerestore.tracks.images.decoders as MD
    from aerestore.restore import blind_maps

    m = small().eval()
    data = images()
    k = _save(tmp_path, m, data, "damage_head")
    r = Restorer.load(tmp_path, decoders=False)
    calls = []
    real = MD.fine_tune_many

    def spy(jobs, model, train, lr, batch_size, crop, eval_every, seed, progress=True, recon="mse"):
        for job in jobs:
            calls.append(dict(maps_fn=job.maps_fn, cluster=job.cluster, train=train, steps=job.steps, lr=lr,
                              batch_size=batch_size, crop=crop, seed=seed, recon=recon, desc=job.desc))
        return real(jobs, model, train, lr, batch_size, crop, eval_every, seed, progress, recon)

    monkeypatch.setattr(MD, "fine_tune_many", spy)
    with pytest.warns(UserWarning, match="cluster 1"):
        result = train_map_decoders(r.model, r.route_maps, k, data, images(2, seed=1), steps=2, lr=1e-3,
                                    batch_size=2, crop=16, eval_every=1, min_locations=5, seed=0,
                                    sizes=[10, 3, 10], progress=False, recon="psnr")
    cluster = [c for c in calls if c["desc"].startswith("decoder")]
    ensemble = [c for c in calls if c["desc"].startswith("ensemble")]
    same = ("cluster", "train", "steps", "lr", "batch_size", "crop", "seed", "recon")
    assert [c["cluster"] for c in cluster] == [0, 2]
    assert [{key: c[key] for key in same} for c in ensemble] == [{key: c[key] for key in same} for c in cluster]
    assert result.fallback == [False, True, False] and result.ensemble[1] is None
    assert result.summary["updates"]["ensemble"] == result.summary["updates"]["clusters"] == 4
    assert result.summary["crop_updates"]["ensemble"] == result.summary["crop_updates"]["clusters"] == 8
    # the ensemble's loss weights: the blind maps of the same crops, the same whatever the
    # damage (any code is moved alike; the cycle ignores it)
    code = torch.randn(2, 8, 4, 4)
    assert torch.equal(ensemble[0]["maps_fn"](code), blind_maps(r.route_maps(code)))
    assert torch.equal(cluster[0]["maps_fn"](code), r.route_maps(code))
    off = train_map_decoders(r.model, r.route_maps, k, data, images(2, seed=1), steps=1, lr=1e-3, batch_size=2,
                             crop=16, eval_every=1, min_locations=1, seed=0, sizes=[10] * k, progress=False,
                             ensemble=False)
    assert off.ensemble is None and "ensemble" not in off.summary["updates"]


def test_lockstep_fine_tuning_equals_each_decoder_alone_bit_for_bit(tmp_path):
    """fine_tune_many shares one crop stream, one encoder pass and one map per routing
    function among the decoders of a step; each decoder must come out exactly as if it were
    fine-tuned alone by fine_tune (weights and history), whatever its steps and route."""
    import copy

    import aerestore.tracks.images.decoders as MD
    from aerestore.restore import blind_maps

    m = small().eval()
    data = images()
    k = _save(tmp_path, m, data, "soft_kmeans")
    r = Restorer.load(tmp_path, decoders=False)
    for p in r.model.parameters():
        p.requires_grad_(False)

    def blind(code):
        return blind_maps(r.route_maps(code))

    vset, bset = MD._Val(r.model, r.route_maps, images(2, seed=1)), MD._Val(r.model, blind, images(2, seed=1))
    specs = [(r.route_maps, 0, vset, 3), (r.route_maps, k - 1, vset, 3), (blind, 0, bset, 3), (r.route_maps, None, vset, 7)]
    settings = dict(lr=2e-3, batch_size=2, crop=16, eval_every=2, seed=4, progress=False, recon="psnr")
    jobs = [MD.FineTune(copy.deepcopy(r.model.decoder), fn, c, v, n, f"job {i}") for i, (fn, c, v, n) in enumerate(specs)]
    together = MD.fine_tune_many(jobs, r.model, data, **settings)
    for job, history in zip(jobs, together):
        alone = copy.deepcopy(r.model.decoder)
        s = settings
        solo = MD.fine_tune(alone, r.model, job.maps_fn, job.cluster, data, job.val, job.steps, s["lr"],
                            s["batch_size"], s["crop"], s["eval_every"], s["seed"], job.desc, False, s["recon"])
        assert repr(solo) == repr(history)  # every float to the last digit (repr: nan equals nan)
        assert [h["step"] for h in history] == [0, *range(2, job.steps, 2), job.steps]
        for a, b in zip(alone.state_dict().values(), job.decoder.state_dict().values()):
            assert torch.equal(a, b)
    # and the decoders did move (a test of equality between two no-ops proves nothing)
    assert not torch.equal(next(iter(jobs[0].decoder.parameters())), next(iter(r.model.decoder.parameters())))


def test_channels_last_holds_nhwc_within_and_gives_back_nchw():
    from aerestore.models.device import channels_last

    m = small()
    params = list(m.parameters())
    convs = [p for p in params if p.dim() == 4]
    assert convs and all(p.is_contiguous() for p in convs)
    with channels_last([m, None], "cpu"):
        assert all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs
                   if p.shape[2:] != (1, 1) and p.shape[1] > 1)
        assert list(m.parameters()) == params and all(a is b for a, b in zip(m.parameters(), params))
    assert all(p.is_contiguous() for p in convs)
    with pytest.raises(RuntimeError, match="boom"):
        with channels_last([m], "cpu"):
            raise RuntimeError("boom")
    assert all(p.is_contiguous() for p in convs)  # given back on an error too
    with channels_last([m], torch.device("cuda")):  # not the CPU: left as it is (no CUDA needed)
        assert all(p.is_contiguous() for p in convs)


def test_crop_training_and_decoder_fine_tuning_run_nhwc_and_learn_what_nchw_learns():
    """fit_crops and fine_tune_many run the networks in channels-last on the CPU (the speed of
    train@unet_ae and decoders@unet_ae) and hand back NCHW weights; the same training in NCHW
    (fit_crops' memory_format="contiguous") learns the same to the last bits' differences
    (another order of the sums)."""
    import aerestore.tracks.images.decoders as MD
    import aerestore.tracks.images.train as T
    from aerestore.params import RuntimeParams, TrainParams

    cfg = TrainParams(batch_size=4, lr=2e-3, crops={"size": 16, "steps": 6, "eval_every": 3})
    layouts = []

    def record(module, args):
        if module.training and args[0].shape[1] > 3:  # training steps; not an image straight from the data
            layouts.append(args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous())

    def hooked(net):
        return [mod.register_forward_pre_hook(record) for mod in net.modules() if isinstance(mod, torch.nn.Conv2d)]

    def train(m, memory_format="channels_last"):
        hooks = hooked(m)
        res = T.fit_crops(m, images(), images(2, seed=1), cfg, seed=3, progress=False,
                          runtime=RuntimeParams(threads=1, device="cpu"), memory_format=memory_format)
        for h in hooks:
            h.remove()
        return res

    nhwc = small()
    res = train(nhwc)
    assert layouts and all(layouts)  # the training steps ran NHWC
    assert all(p.is_contiguous() for p in nhwc.parameters())  # what is saved is laid out as before
    layouts.clear()
    nchw = small()
    ref = train(nchw, memory_format="contiguous")  # the option the train-step benchmark's NCHW variants use
    assert layouts and not any(layouts)
    with pytest.raises(ValueError, match="memory_format must be"):
        T.fit_crops(small(), images(), images(2, seed=1), cfg, seed=3, progress=False,
                    runtime=RuntimeParams(threads=1, device="cpu"), memory_format="nhwc")
    assert res.best_val_loss == pytest.approx(ref.best_val_loss, rel=1e-2)
    for (k, a), b in zip(nhwc.state_dict().items(), nchw.state_dict().values()):
        assert torch.allclose(a, b, atol=2e-2), k
    # the decoders' fine-tuning alike
    nhwc.eval()
    dec = copy.deepcopy(nhwc.decoder)
    hooks = hooked(dec)
    layouts.clear()
    MD.fine_tune(dec, nhwc, None, None, images(), MD._Val(nhwc, lambda c: torch.ones(len(c), 1, *c.shape[2:]), images(2, seed=1)), 2, 1e-3, 2, 16, 1, 0,
                 "d", progress=False)
    for h in hooks:
        h.remove()
    assert layouts and all(layouts)
    assert all(p.is_contiguous() for p in dec.parameters()) and all(p.is_contiguous() for p in nhwc.parameters())
