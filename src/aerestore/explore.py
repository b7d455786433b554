"""The generative side: latent interpolation, latent arithmetic and samples from the prior.

Every operation works on the latent codes of an image's blocks, so it applies to every
block model the pipeline trains:

* a **whole-image model** (``blocks.size`` = ``data.image_size``, ``blocks.overlap: 0``,
  e.g. the LFW study's ``vae_lfw`` at 64 px) has one block per image: an image *is* one
  latent vector, and interpolations, analogies and prior samples are whole images, as in
  the LFW and blur studies;
* a block model (18 px blocks) interpolates each block's code with the matching block of
  the other image and merges the decoded blocks as the restorer does; prior samples are
  single blocks.

:class:`LatentCodec` is the encoder / decoder pair on whole images (split, encode,
decode, merge); decoding goes through the shared decoder (``decode``: what the restorer's
``base`` mode does), one image at a time, so a frame's pixels never depend on which other
images were decoded with it: the endpoints of an interpolation are exactly the
reconstructions of its endpoint images (tested).

Interpolation is linear (``(1 - t) a + t b``) or spherical (:func:`slerp`, Shoemake 1985;
White 2016 "Sampling generative networks" for VAEs: under a N(0, I) prior, points on the
straight line between two codes have a smaller norm than typical samples, points on the
great circle do not). ``auto`` is spherical for variational models, linear otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .blocks import merge_blocks, split_blocks

INTERPOLATIONS = ("auto", "linear", "spherical")


# ------------------------------------------------------------------------- images
def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, C)`` -> float ``(N, C, H, W)`` in [0, 1]."""
    a = np.asarray(images)
    if a.dtype != np.uint8 or a.ndim != 4:
        raise ValueError(f"expected uint8 images (N, H, W, C), got {a.dtype} {a.shape}")
    return torch.from_numpy(np.array(a, copy=True)).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float ``(..., C, H, W)`` in [0, 1] -> uint8 ``(..., H, W, C)``."""
    x = images.detach().cpu().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def grid(rows: list[np.ndarray], min_tile: int = 64, gap: int = 2) -> np.ndarray:
    """Tile rows of uint8 images ``(n, H, W, C)`` (rows may differ in length; all images
    the same size) into one RGB picture, each image upscaled by an integer factor (nearest
    neighbour) to at least ``min_tile`` px, white gaps between tiles."""
    if not rows:
        raise ValueError("grid: no rows")
    h, w = rows[0].shape[1:3]
    scale = max(1, math.ceil(min_tile / max(1, min(h, w))))
    th, tw = h * scale, w * scale
    cols = max(len(r) for r in rows)
    out = np.full((len(rows) * (th + gap) + gap, cols * (tw + gap) + gap, 3), 255, np.uint8)
    for r, images in enumerate(rows):
        for i, img in enumerate(np.asarray(images)):
            if img.shape[:2] != (h, w):
                raise ValueError(f"grid: image of {img.shape[:2]} among images of {(h, w)}")
            if img.ndim == 2 or img.shape[2] == 1:
                img = np.repeat(img.reshape(h, w, 1), 3, axis=2)
            tile = img.repeat(scale, 0).repeat(scale, 1)
            y, x = gap + r * (th + gap), gap + i * (tw + gap)
            out[y : y + th, x : x + tw] = tile[:, :, :3]
    return out


def fit_image(image: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop uint8 ``(H, W, C)`` to a square and resize it to ``size`` (area-like:
    Pillow's box filter when shrinking, bicubic when enlarging)."""
    from PIL import Image

    a = np.asarray(image)
    h, w = a.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    a = a[y : y + s, x : x + s]
    if s == size:
        return np.ascontiguousarray(a)
    squeeze = a.ndim == 3 and a.shape[2] == 1
    im = Image.fromarray(a[:, :, 0] if squeeze else a)
    im = im.resize((size, size), Image.Resampling.BOX if s > size else Image.Resampling.BICUBIC)
    out = np.asarray(im, dtype=np.uint8)
    return out[:, :, None] if squeeze else out


# ------------------------------------------------------------------ interpolation
def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """``(1 - t) a + t b``: exactly ``a`` at t = 0 and exactly ``b`` at t = 1."""
    return (1.0 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation of the vectors along the last axis.

    ``sin((1 - t) W) / sin W * a + sin(t W) / sin W * b`` with ``W`` the angle between
    ``a`` and ``b``: for two vectors of the same norm it follows the great circle through
    them at constant speed and keeps the norm; exactly ``a`` at t = 0 and ``b`` at t = 1.
    Where the vectors are (anti)parallel or zero (``sin W < eps``) it is linear.
    """
    a64, b64 = a.double(), b.double()
    na, nb = a64.norm(dim=-1, keepdim=True), b64.norm(dim=-1, keepdim=True)
    cos = ((a64 * b64).sum(-1, keepdim=True) / (na * nb).clamp_min(1e-300)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    linear = so < eps
    safe = torch.where(linear, torch.ones_like(so), so)
    ca = torch.where(linear, torch.full_like(so, 1.0 - t), torch.sin((1.0 - t) * omega) / safe)
    cb = torch.where(linear, torch.full_like(so, t), torch.sin(t * omega) / safe)
    if t == 0.0:
        ca, cb = torch.ones_like(so), torch.zeros_like(so)
    elif t == 1.0:
        ca, cb = torch.zeros_like(so), torch.ones_like(so)
    return (ca * a64 + cb * b64).to(a.dtype)


def resolve_method(model: torch.nn.Module, method: str = "auto") -> str:
    """``auto`` -> ``spherical`` for variational models, ``linear`` otherwise."""
    if method not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {method!r}")
    if method == "auto":
        return "spherical" if getattr(model, "variational", False) else "linear"
    return method


# -------------------------------------------------------------------------- codec
class LatentCodec:
    """Images <-> the latent codes of their blocks, through a trained block model.

    ``encode(images (N, C, H, W))`` -> ``(N, P, D)``: P blocks per image (1 for a
    whole-image model), D = ``model.latent_dim`` (the VAE's mean). ``decode(z, (H, W))``
    -> images, through the shared decoder, merged as the restorer merges blocks.
    """

    def __init__(self, model: torch.nn.Module, overlap: int = 0, batch_size: int = 512) -> None:
        from .tracks.registry import VECTOR_CODES, track_of

        if not VECTOR_CODES[track_of(model)]:
            raise ValueError(
                f"{getattr(model, 'name', type(model).__name__)} is fully convolutional: its code is a "
                "feature map of the whole image, not a latent vector; explore a block model (e.g. vae_lfw)"
            )
        self.model = model.eval()
        self.block = int(model.block)
        self.channels = int(model.channels)
        self.overlap = int(overlap)
        self.batch_size = batch_size
        self.latent_shape = tuple(model.latent_shape)
        self.latent_dim = int(model.latent_dim)

    @property
    def variational(self) -> bool:
        return bool(getattr(self.model, "variational", False))

    def _check(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(f"expected images (N, {self.channels}, H, W), got {tuple(images.shape)}")
        if min(images.shape[-2:]) < self.block:
            raise ValueError(f"images of {tuple(images.shape[-2:])} px are smaller than the model's "
                             f"{self.block} px block")

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self._check(images)
        n = images.shape[0]
        blocks = split_blocks(images.float(), self.block, self.overlap)
        codes = [self.model.encode(blocks[s : s + self.batch_size]).flatten(1)
                 for s in range(0, len(blocks), self.batch_size)]
        return torch.cat(codes).view(n, -1, self.latent_dim)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(N, P, D)`` (or ``(N, D)`` for whole-image models) -> ``(N, C, H, W)``; one
        image per decoder call, so an image's pixels do not depend on the batch."""
        if z.ndim == 2:
            z = z[:, None]
        h, w = size
        out = []
        for codes in z:
            blocks = self.model.decode(codes.reshape(-1, *self.latent_shape).float())
            out.append(merge_blocks(blocks, h, w, self.block, self.overlap))
        return torch.cat(out).clamp_(0.0, 1.0)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images), images.shape[-2:])


def interpolate(codec: LatentCodec, a: torch.Tensor, b: torch.Tensor, steps: int = 8,
                method: str = "auto") -> torch.Tensor:
    """Frames between images ``a`` and ``b`` (both ``(N, C, H, W)``): ``(N, steps, C, H, W)``,
    decoded from codes at ``t = 0, 1/(steps-1), ..., 1``. Frame 0 is ``a``'s reconstruction
    and frame ``steps - 1`` is ``b``'s, exactly."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if a.shape != b.shape:
        raise ValueError(f"the two images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    how = slerp if resolve_method(codec.model, method) == "spherical" else lerp
    za, zb = codec.encode(a), codec.encode(b)
    ts = [i / (steps - 1) for i in range(steps)]
    frames = [codec.decode(how(za, zb, t), a.shape[-2:]) for t in ts]
    return torch.stack(frames, dim=1)


def arithmetic(codec: LatentCodec, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The analogy ``a + (b - c)`` decoded from the codes: ``(N, C, H, W)``."""
    za, zb, zc = codec.encode(a), codec.encode(b), codec.encode(c)
    return codec.decode(za + (zb - zc), a.shape[-2:])


@torch.no_grad()
def sample(model: torch.nn.Module, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` decodes of codes drawn from the prior N(0, I) (VAEs only): ``(n, C, s, s)``.

    Code ``i`` is the ``i``-th draw of a generator seeded with ``seed``, one code at a
    time: the same seed gives the same images, and the first ``k`` of ``n`` samples are
    the ``k`` samples of a run with ``n = k``."""
    if not getattr(model, "variational", False):
        raise ValueError(
            f"{getattr(model, 'name', type(model).__name__)} is not variational: its latent space "
            "has no prior to sample from (sample a VAE: vae, vae_lfw, resnet_vae, vgg_vae, vae_gan)"
        )
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    model.eval()
    gen = torch.Generator().manual_seed(int(seed))
    shape = tuple(model.latent_shape)
    z = torch.stack([torch.randn(shape, generator=gen) for _ in range(n)])
    return torch.cat([model.decode(z[i : i + 1]) for i in range(n)]).clamp_(0.0, 1.0)


# ---------------------------------------------------------------- plausibility
def nearest_mse(frames: torch.Tensor, references: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Per frame ``(M, C, H, W)``: the pixel MSE to its nearest reference ``(R, C, H, W)``
    (the reconstruction-error measure the models are trained on)."""
    f = frames.flatten(1).double()
    best = torch.full((len(f),), math.inf, dtype=torch.float64)
    for s in range(0, len(references), chunk):
        r = references[s : s + chunk].flatten(1).double()
        d2 = torch.cdist(f, r).pow(2) / f.shape[1]
        best = torch.minimum(best, d2.min(1).values)
    return best.float()


@dataclass
class Plausibility:
    """How far interpolated frames are from the training images (pixel MSE, mean over pairs)."""

    endpoints: float  # frames 0 and steps - 1 (reconstructions of real test images)
    midpoints: float  # the middle frame(s)
    all_frames: list[float]  # per t

    def to_dict(self) -> dict:
        return {"endpoints_mse": self.endpoints, "midpoints_mse": self.midpoints,
                "per_step_mse": self.all_frames,
                "midpoint_to_endpoint_ratio": self.midpoints / self.endpoints if self.endpoints > 0 else None}


def plausibility(frames: torch.Tensor, references: torch.Tensor) -> Plausibility:
    """Nearest-reference MSE of every frame of ``frames (N, steps, C, H, W)``."""
    n, steps = frames.shape[:2]
    d = nearest_mse(frames.flatten(0, 1), references).view(n, steps).mean(0)
    mids = [steps // 2] if steps % 2 else [steps // 2 - 1, steps // 2]
    return Plausibility(
        endpoints=float((d[0] + d[-1]) / 2),
        midpoints=float(d[mids].mean()),
        all_frames=[round(float(v), 6) for v in d],
    )


# --------------------------------------------------------------------- the stage
def pick(n_available: int, count: int, seed: int) -> np.ndarray:
    """``count`` distinct indices of ``range(n_available)`` (seeded), or all of them."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_available, size=min(count, n_available), replace=False))


def explore_images(
    model: torch.nn.Module,
    overlap: int,
    clean: np.ndarray,
    degraded: np.ndarray,
    train_clean: np.ndarray,
    *,
    pairs: int = 4,
    steps: int = 8,
    interpolation: str = "auto",
    samples: int = 16,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict]:
    """The grids and metrics of ``explore@<arch>`` from uint8 ``(N, H, W, C)`` test images
    (``clean`` and their ``degraded`` inputs) and training images.

    Grids (uint8 RGB pictures), by name:

    * ``interpolation``: per pair of clean test images, the image A, the ``steps`` frames
      decoded between their codes (the first is A's reconstruction, the last B's), image B;
    * ``interpolation_degraded``: the same from the degraded versions (what the restorer
      sees), so the frames are restorations;
    * ``arithmetic``: per triple (a, b, c) of test images: a, b, c, a's reconstruction, and
      the decoded ``a + (b - c)``;
    * ``samples`` (VAEs, ``samples > 0``): decodes of codes drawn from N(0, I), seeded.

    Metrics: the interpolation method; the mean pixel MSE of the frames to their nearest
    training image (``plausibility``: endpoints, midpoints, per step; clean and degraded
    rows) and the colourfulness (Hasler & Süsstrunk) of test, degraded, reconstructed and
    sampled images.
    """
    from .colour import colourfulness

    codec = LatentCodec(model, overlap=overlap)
    method = resolve_method(model, interpolation)
    n = len(clean)
    if n < 2:
        raise ValueError(f"explore needs at least 2 test images, got {n}")
    idx = pick(n, 2 * pairs, seed)
    half = len(idx) // 2
    ia, ib = idx[:half], idx[half : 2 * half]
    c, d = to_tensor(clean), to_tensor(degraded)
    refs = to_tensor(train_clean)
    grids: dict[str, np.ndarray] = {}
    metrics: dict = {"interpolation": method, "pairs": int(half), "steps": steps,
                     "variational": codec.variational, "latent_dim": codec.latent_dim,
                     "blocks_per_image": int(codec.encode(c[:1]).shape[1])}
    for key, images in (("interpolation", c), ("interpolation_degraded", d)):
        frames = interpolate(codec, images[ia], images[ib], steps, method)
        rows = [np.concatenate([to_uint8(images[a : a + 1]), to_uint8(frames[i]), to_uint8(images[b : b + 1])])
                for i, (a, b) in enumerate(zip(ia, ib))]
        grids[key] = grid(rows)
        name = "plausibility_clean" if key == "interpolation" else "plausibility_degraded"
        metrics[name] = plausibility(frames, refs).to_dict()
    # analogies: a + (b - c) on triples of test images
    it = pick(n, 3 * pairs, seed + 1)
    third = len(it) // 3
    if third:
        a_, b_, c_ = (c[it[k * third : (k + 1) * third]] for k in range(3))
        result = arithmetic(codec, a_, b_, c_)
        recon = codec.reconstruct(a_)
        grids["arithmetic"] = grid([np.stack([to_uint8(a_[i]), to_uint8(b_[i]), to_uint8(c_[i]),
                                              to_uint8(recon[i]), to_uint8(result[i])]) for i in range(third)])
    recon_all = codec.reconstruct(c)
    metrics["colourfulness"] = {
        "clean": float(colourfulness(clean).mean()),
        "degraded": float(colourfulness(degraded).mean()),
        "reconstructed": float(colourfulness(to_uint8(recon_all)).mean()),
    }
    if codec.variational and samples > 0:
        drawn = to_uint8(sample(model, samples, seed))
        per_row = 8 if samples >= 8 else samples
        grids["samples"] = grid([drawn[s : s + per_row] for s in range(0, samples, per_row)])
        metrics["samples"] = samples
        metrics["colourfulness"]["samples"] = float(colourfulness(drawn).mean())
        if drawn.shape[1:3] == clean.shape[1:3]:  # whole-image samples: how far from the training set
            metrics["samples_nearest_train_mse"] = float(nearest_mse(to_tensor(drawn), refs).mean())
    return grids, metrics
