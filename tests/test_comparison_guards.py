"""Guards of the comparison "per-cluster decoders (multi) vs the equal-budget control (single)"
(issue 23): each test checks one promise directly, on a case whose right answer is known, so
that rigging the comparison turns it red. The README's "Tests" section lists the mutations
each test was seen to catch.

1. multi and single are not swapped: :func:`aerestore.evaluate.compare`, the summary rows,
   the claims report's claim 1;
2. the control gets the cluster decoders' summed budget, with their learning rate and batch,
   on the same data (block networks: :func:`aerestore.tracks.blocks.decoders.train_decoders`; unet_ae:
   :func:`aerestore.tracks.images.decoders.train_map_decoders`);
3. the per-cluster restorer routes by the encoder's cluster responsibilities
   (:mod:`aerestore.restore`);
4. each restored image is scored against its own clean image
   (:func:`aerestore.evaluate.score_rows`, :func:`aerestore.evaluate.on_subset`);
5. "inside the blur" reads the blur channel of the masks (channels blur, noise;
   :mod:`aerestore.metrics`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aerestore.tracks.blocks import decoders as D
from aerestore import evaluate as E
from aerestore import evaluate_summary as ES
from aerestore.tracks.images import decoders as MD
from aerestore import metrics as M
from aerestore.damage import DAMAGE_KINDS
from aerestore.studies import analysis as A
from aerestore.studies import claims as C
from aerestore.restore import Restorer
from aerestore.tracks.images.restore import ConvRestorer

from test_decoders import run_decoders, setup  # noqa: F401  (the module fixture: a small ccp_ae, two block kinds)
from test_unet_ae import _save, images, small


# ------------------------------------------------------------ 1. multi vs single
def _rows(psnr: np.ndarray, blur: np.ndarray) -> dict[str, np.ndarray]:
    n = len(psnr)
    return {"psnr": psnr, "ssim": np.full(n, 0.5), "uqi": np.full(n, 0.5), "blur_percent": blur}


MULTI = _rows(np.array([30.0] * 9 + [10.0]), np.array([-5.0] * 9 + [40.0]))
SINGLE = _rows(np.array([20.0] * 10), np.array([20.0] * 10))


def test_compare_counts_the_images_where_multi_beats_single():
    """multi has the higher PSNR on 9 images of 10, and the |blur %| closer to the clean
    image's sharpness on the same 9 (-5 % beats +20 %: blur % is scored by its distance)."""
    out = E.compare(MULTI, SINGLE)
    assert out["psnr"]["share"] == pytest.approx(0.9)
    assert out["blur_percent"]["share"] == pytest.approx(0.9)
    assert out["ssim"]["share"] == pytest.approx(0.5)  # ties count half


def test_the_summary_reads_multi_and_single_from_their_own_rows():
    metrics = {"degraded": SINGLE, "a.base": SINGLE, "a.single": SINGLE, "a.multi": MULTI}
    seconds = {"a.multi": 1.0, "a.single": 1.0, "a.base": 1.0}
    result = E.summarise(metrics, seconds, ["a"], [], 10, 1.0)
    assert result["a"]["multi"]["psnr"] == pytest.approx(np.mean(MULTI["psnr"]))
    assert result["a"]["single"]["psnr"] == pytest.approx(20.0)
    assert result["a"]["multi_vs_single"]["psnr"]["share"] == pytest.approx(0.9)
    md = ES.summary_markdown(result, ["a"], [], {})
    assert "| **a per-cluster decoders** | 28.00 |" in md and "| a single decoder (control) | 20.00 |" in md


def test_claim_1_is_multi_minus_single():
    """The claims report's claim 1: per-cluster decoders 1 dB ahead of the control and 0.5 dB
    ahead of the ensemble control on every image of every seed -> effects +1 and +0.5 dB,
    holds; behind the ensemble control -> does not hold, whatever the single decoder does."""
    (claim,) = C.select_claims([1])

    def results_with(ensemble_offset: float) -> dict:
        rng = np.random.default_rng(0)
        results = {}
        for s in (1, 2, 3):
            single = rng.uniform(20, 30, 20)
            results[("conv_ae", s)] = {"items": {
                "single": {"psnr": list(single)},
                "multi": {"psnr": list(single + 1.0 + rng.normal(0, 0.01, 20))},
                "ensemble": {"psnr": list(single + ensemble_offset + rng.normal(0, 0.01, 20))},
                "base": {"psnr": list(single)}}}
        return results

    (row,) = A.analyse([claim], results_with(0.5), [1, 2, 3])
    vs_single, vs_ensemble = row["measures"]
    assert vs_single["effect"] == pytest.approx(1.0, abs=0.02) and vs_single["label"] == "PSNR multi - single"
    assert vs_ensemble["effect"] == pytest.approx(0.5, abs=0.02) and row["verdict"] == "holds"
    (row,) = A.analyse([claim], results_with(1.5), [1, 2, 3])
    assert row["measures"][0]["verdict"] == "holds" and row["verdict"] == "does not hold"


# ------------------------------------------------------------ 2. the control's budget
def _rows_set(a: np.ndarray) -> list[bytes]:
    return sorted(r.tobytes() for r in np.asarray(a).reshape(len(a), -1))


def test_block_control_gets_the_summed_budget_on_the_clusters_blocks(setup, monkeypatch):  # noqa: F811
    """decoders: the control trains on exactly the blocks the cluster decoders train on
    (together), for the sum of their block updates, with their batch and learning rate."""
    calls = []

    def spy(decoder, z, clean, updates, batch_size, lr, rng, val, eval_every, desc, progress=True):
        calls.append(dict(decoder=decoder, z=z.clone(), clean=np.array(clean), updates=updates,
                          batch_size=batch_size, lr=lr))
        return [{"step": 0, "train_loss": 0.0}]  # no training: the promise is in the call

    monkeypatch.setattr(D, "train_decoder", spy)
    res = run_decoders(setup)
    by = {id(c["decoder"]): c for c in calls}
    control = by[id(res.control)]
    clusters = [by[id(d)] for d in res.clusters if d is not None]
    assert len(clusters) == 2
    assert control["updates"] == sum(c["updates"] for c in clusters) > 0
    assert all(c["lr"] == control["lr"] == 1e-3 and c["batch_size"] == control["batch_size"] == 32
               for c in clusters)
    # the same blocks: the control's (code, clean) pairs are the clusters' pairs together
    pairs = lambda c: _rows_set(np.concatenate([c["z"].numpy().reshape(len(c["z"]), -1).view(np.uint8),  # noqa: E731
                                                c["clean"].reshape(len(c["clean"]), -1)], axis=1))
    assert pairs(control) == sorted(sum((pairs(c) for c in clusters), []))
    assert len(control["clean"]) == len(setup["train"].clean)


def test_map_control_gets_the_summed_steps_with_the_clusters_lr_batch_and_crops(tmp_path, monkeypatch):
    """unet_ae: the control (all pixels) gets as many updates as the cluster decoders
    together, with their learning rate, batch, crop size, loss, training images and crop
    stream (seed): the budget is the sum, on the same data."""
    m = small().eval()
    data = images()
    k = _save(tmp_path, m, data, "soft_kmeans")
    r = Restorer.load(tmp_path, decoders=False)
    calls = []

    def spy(jobs, model, train, lr, batch_size, crop, eval_every, seed, progress=True, recon="mse"):
        for job in jobs:  # the decoders fine-tuned in lockstep: one call, the shared settings
            calls.append(dict(decoder=job.decoder, cluster=job.cluster, train=train, steps=job.steps, lr=lr,
                              batch_size=batch_size, crop=crop, seed=seed, recon=recon))
        return [[{"step": 0, "train_loss": float("nan"), "val_loss": 0.0}] for _ in jobs]

    monkeypatch.setattr(MD, "fine_tune_many", spy)
    res = MD.train_map_decoders(r.model, r.route_maps, k, data, images(2, seed=1), steps=3, lr=2e-3, batch_size=2,
                                crop=16, eval_every=1, min_locations=1, seed=5, sizes=[10] * k, progress=False)
    (control,) = [c for c in calls if c["decoder"] is res.control]
    clusters = [c for d in res.clusters for c in calls if c["decoder"] is d]  # other arms' calls aside
    assert [c["cluster"] for c in clusters] == list(range(k)) and control["cluster"] is None
    assert control["steps"] == sum(c["steps"] for c in clusters) == 3 * k
    for c in clusters:
        assert {key: c[key] for key in ("lr", "batch_size", "crop", "seed", "recon")} == \
               {key: control[key] for key in ("lr", "batch_size", "crop", "seed", "recon")}
        assert c["train"] is control["train"] is data
    assert control["lr"] == 2e-3 and control["batch_size"] == 2 and control["crop"] == 16


# ------------------------------------------------------------ 3. routing
class Constant(torch.nn.Module):
    """A decoder whose output is ``value`` everywhere (tells which decoder decoded a pixel)."""

    def __init__(self, value: float, channels: int = 3, block: int | None = None):
        super().__init__()
        self.value, self.channels, self.block = value, channels, block

    def forward(self, f):
        if self.block is not None:  # block networks: latents (N, ...) -> blocks
            return torch.full((len(f), self.channels, self.block, self.block), self.value)
        n = f.code.shape[0]
        return torch.full((n, self.channels, *f.size), self.value)


@pytest.mark.parametrize("routing", ["hard", "soft"])
def test_block_restorer_routes_by_the_encoders_responsibilities(routing):
    """Decoder k outputs the constant c_k: each block's output must be c of its nearest
    centroid (hard) or the responsibilities' mix of the c_k (soft), the responsibilities
    computed here from the encoder's codes."""
    from helpers import tiny_model

    model = tiny_model().eval()
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = model.encode(x)
    flat = z.flatten(1).double()
    centroids = flat[[0, 5, 9]].float().numpy()  # three blocks' own codes
    scale, beta = float(flat.var(0).sum()), 5.0
    values = torch.tensor([0.1, 0.5, 0.9])
    decs = [Constant(float(v), block=16) for v in values]
    r = Restorer(model, arch="conv_ae", overlap=0, centroids=centroids, scale=scale, beta=beta,
                 control=Constant(0.0, block=16), cluster_decoders=decs, routing=routing)
    out = r.decode(z, "multi")[:, 0, 0, 0]
    d2 = ((flat[:, None, :] - torch.as_tensor(centroids).double()[None]) ** 2).sum(-1)
    resp = torch.softmax(-beta * d2 / scale, dim=1).float()
    expected = values[d2.argmin(1)] if routing == "hard" else resp @ values
    assert torch.allclose(out, expected, atol=1e-5)
    assert out[0] == pytest.approx(0.1, abs=0.01) and out[5] == pytest.approx(0.5, abs=0.01)
    assert out[9] == pytest.approx(0.9, abs=0.01)  # a block at a centroid: (nearly) its decoder alone


@pytest.mark.parametrize("method", ["damage_head", "soft_kmeans"])
@pytest.mark.parametrize("routing", ["hard", "soft"])
def test_conv_restorer_routes_each_pixel_by_the_encoders_responsibilities(method, routing):
    """unet_ae: decoder k outputs c_k; each pixel's output must be the mix of the c_k by the
    encoder's responsibilities at its code location (damage head softmax, or soft k-means of
    the code vector), bilinearly upsampled, one-hot at their argmax for hard routing."""
    torch.manual_seed(0)
    m = small().eval()
    with torch.no_grad():
        m.damage_head.weight.mul_(1000.0)  # classes that vary across the image
    x = torch.rand(2, 3, 24, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f = m.features(x)
    code = f.code
    k = len(DAMAGE_KINDS) + 1
    flat = code.permute(0, 2, 3, 1).reshape(-1, code.shape[1]).double()
    centroids = flat[[0, 7, 20]].float().numpy()
    scale, beta = float(flat.var(0).sum()), 5.0
    values = torch.tensor([0.1, 0.5, 0.9])
    r = ConvRestorer(m, arch="unet_ae", method=method, centroids=centroids if method == "soft_kmeans" else None,
                     scale=scale, beta=beta, control=Constant(0.0),
                     cluster_decoders=[Constant(float(v)) for v in values[:k]], routing=routing)
    r.channels_last = False
    with torch.no_grad():
        out = r.decode(f, "multi")[:, 0]
        if method == "damage_head":
            maps = torch.softmax(m.damage_logits(code), dim=1)
        else:
            d2 = ((flat[:, None, :] - torch.as_tensor(centroids).double()[None]) ** 2).sum(-1)
            n, _, h, w = code.shape
            maps = torch.softmax(-beta * d2 / scale, 1).float().view(n, h, w, -1).permute(0, 3, 1, 2)
        up = torch.nn.functional.interpolate(maps, scale_factor=m.multiple, mode="bilinear", align_corners=False)
        up = up[..., : f.size[0], : f.size[1]]
        if routing == "hard":
            up = torch.nn.functional.one_hot(up.argmax(1), k).permute(0, 3, 1, 2).float()
        expected = (up * values[:k].view(1, -1, 1, 1)).sum(1)
    assert torch.allclose(out, expected, atol=1e-5)
    assert len(torch.unique(up.argmax(1))) > 1  # more than one decoder is used


# ------------------------------------------------------------ 4. per-image alignment
def test_each_image_is_scored_against_its_own_clean_image():
    """A restorer that restores image i perfectly only when i is even: PSNR inf on the even
    images, finite on the odd ones, in the images' order, across chunk borders and on the
    anchor subset."""
    rng = np.random.default_rng(0)
    n = 7
    clean = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    degraded = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    lookup = {degraded[i].tobytes(): clean[i] for i in range(0, n, 2)}

    def restorer(d: np.ndarray) -> np.ndarray:
        keys = [np.rint(img * 255).astype(np.uint8).tobytes() for img in d]
        return np.stack([lookup[k] / 255.0 if k in lookup else np.full(img.shape, 0.5)
                         for k, img in zip(keys, d)])

    per, _, _ = E.score_rows(clean, degraded, None, {"r": restorer}, chunk=3, progress=False)
    psnr = per["r"]["psnr"]
    assert np.isinf(psnr[::2]).all() and np.isfinite(psnr[1::2]).all()
    for i in range(1, n, 2):
        assert psnr[i] == pytest.approx(M.psnr(np.full((16, 16, 3), 0.5), clean[i] / 255.0))
    sub = E.on_subset(per, np.array([1, 2, 5]))
    assert np.isinf(sub["r"]["psnr"][1]) and np.isfinite(sub["r"]["psnr"][[0, 2]]).all()


# ------------------------------------------------------------ 5. the mask's channels
def test_inside_the_blur_reads_the_blur_channel():
    """Masks are channels (blur, noise): an image wrong by 0.1 on the left half, where
    channel 0 (blur) is set, and by 0.01 on the right half, where channel 1 (noise) is set:
    PSNR inside the blur is 20 dB, inside the noise 40 dB."""
    assert DAMAGE_KINDS == ("blur", "noise")
    ref = np.full((1, 16, 16, 3), 0.5)
    x = ref.copy()
    x[:, :, :8] += 0.1
    x[:, :, 8:] += 0.01
    mask = np.zeros((1, 16, 16, 2), np.uint8)
    mask[:, :, :8, 0] = 255
    mask[:, :, 8:, 1] = 255
    out = M.batch_metrics(x, ref, mask)
    assert out["psnr_blur"][0] == pytest.approx(20.0) and out["psnr_noise"][0] == pytest.approx(40.0)
    assert np.isnan(out["psnr_clean"][0])  # every pixel is damaged
    single = M.image_metrics(x[0], ref[0], mask[0])
    assert single["psnr_blur"] == pytest.approx(20.0) and single["psnr_noise"] == pytest.approx(40.0)
    # a one-channel mask is local blur
    assert M.batch_metrics(x, ref, mask[..., 0])["psnr_blur"][0] == pytest.approx(20.0)
