"""Whole prepared images (``data/prepared/<split>/``) and random crops of them.

What the fully convolutional models (``unet_ae``) train, cluster and fine-tune on, in a
module of its own (as :mod:`aerestore.tracks.blocks.dataset` for blocks) so that editing the training
loop does not rerun the clustering. Masks are uint8 ``(N, H, W, K)`` with one channel per
damage kind (:data:`aerestore.damage.DAMAGE_KINDS`; an older single-channel mask is
the blur channel); they become per-pixel damage classes with
:func:`aerestore.data.layout.damage_labels`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ...damage import DAMAGE_CLASSES
from ...data.layout import damage_labels
from ...io import open_split
from ...models.device import to_device


@dataclass
class ImageData:
    """Degraded and clean images of one split as uint8 tensors (N, C, H, W) (degraded in
    float32, 0..255, after :meth:`degraded_once` with float damage); ``classes`` int64
    (N, H, W) per-pixel damage class, or None without masks.

    ``degrade``: ``(clean uint8 HWC, rng) -> (degraded HWC, mask uint8 HWK)``, as
    :func:`aerestore.data.degrade.degrader` makes it; degraded is uint8, or float32 in the
    0..255 scale, unclipped (``train.crops.float_damage``). When set (:meth:`fresh`),
    :func:`sample_crops` degrades each crop's clean image anew instead of cutting the
    prepared degraded copy; ``degraded`` and ``classes`` still serve whole-image passes."""

    degraded: torch.Tensor
    clean: torch.Tensor
    classes: torch.Tensor | None = None
    degrade: Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None

    @classmethod
    def load(cls, prepared_dir: str | Path, split: str, limit: int = 0) -> "ImageData":
        arrays = {k: None if v is None else np.ascontiguousarray(v[:limit] if limit else v)
                  for k, v in open_split(Path(prepared_dir) / split, "prepare").items()}
        return cls.from_arrays(arrays["degraded"], arrays["clean"], arrays["mask"])

    @classmethod
    def from_arrays(cls, degraded: np.ndarray, clean: np.ndarray, mask: np.ndarray | None = None) -> "ImageData":
        """uint8 (N, H, W, C) images and (N, H, W, K) or (N, H, W) masks."""
        def chw(a: np.ndarray) -> torch.Tensor:
            a = a[..., None] if a.ndim == 3 else a
            return torch.from_numpy(np.array(a, copy=True)).permute(0, 3, 1, 2).contiguous()

        classes = None
        if mask is not None and mask.size:
            m = mask[..., None] if mask.ndim == 3 else mask
            classes = torch.from_numpy(damage_labels(m, axis=-1))
        return cls(chw(degraded), chw(clean), classes)

    def __len__(self) -> int:
        return len(self.degraded)

    def fresh(self, degrade) -> "ImageData":
        """The same images, whose crops are degraded anew at every draw by ``degrade``
        (:func:`aerestore.data.degrade.degrader` of ``prepare.degrade``): new blur and noise regions, new strengths, new noise, as
        ``prepare`` draws them (DnCNN's training draws fresh noise for every batch, Zhang et
        al. 2017). The prepared set holds one degraded copy per image, which a network
        trained for thousands of steps learns by heart: on the default task fresh damage
        gave +0.5 dB over all pixels and +0.8 dB inside the blur at 2000 steps, and kept
        gaining with the steps where the fixed copy had flattened (README: unet_ae)."""
        return ImageData(self.degraded, self.clean, self.classes, degrade)

    def degraded_once(self, degrade, seed: int) -> "ImageData":
        """The same clean images, each degraded once by ``degrade`` with the generator
        ``default_rng([seed, i])`` (image ``i``): a fixed set that follows the training crops'
        damage where the prepared copies cannot, e.g. float, unclipped noise
        (``train.crops.float_damage``) while the prepared copies are 8-bit. The classes come
        from the same draw's masks."""
        if not len(self):
            return self
        source = self.fresh(degrade)
        degraded, classes = zip(*(_degrade_anew(source, i, [seed, i]) for i in range(len(self))))
        return ImageData(torch.stack(degraded), self.clean,
                         torch.stack(classes) if self.classes is not None else None)

    @property
    def channels(self) -> int:
        return int(self.degraded.shape[1])


def one_hot_classes(classes: torch.Tensor) -> torch.Tensor:
    """int (N, H, W) damage classes -> float (N, len(DAMAGE_CLASSES), H, W)."""
    return F.one_hot(classes.long(), len(DAMAGE_CLASSES)).permute(0, 3, 1, 2).float()


def sample_crops(
    data: ImageData, n: int, crop: int, rng: np.random.Generator, device: torch.device | str = "cpu",
    keep: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``n`` random ``crop``-px crops with random horizontal / vertical flips: float
    (degraded, clean) in [0, 1] and the one-hot damage classes (None without masks).
    Images smaller than ``crop`` give whole-image crops (``crop = min(crop, H, W)``).

    ``keep``: the crops (indices into the ``n``) to cut; the draws are those of all ``n``,
    so that the processes of a data-parallel run, each cutting its share of one global
    batch, stay in step without cutting the others' crops.

    With ``data.degrade`` (:meth:`ImageData.fresh`) each crop's whole clean image is degraded
    anew (a seed per crop drawn from ``rng``, so the same ``rng`` gives the same crops)
    and then cut, so the damage has the prepared set's statistics (region sizes are
    relative to the image side); its masks give the damage classes."""
    _, _, h, w = data.degraded.shape
    ch, cw = min(crop, h), min(crop, w)
    idx = rng.integers(0, len(data), n)
    ys = rng.integers(0, h - ch + 1, n)
    xs = rng.integers(0, w - cw + 1, n)
    flips = rng.random((n, 2)) < 0.5
    seeds = rng.integers(0, 2**63, n) if data.degrade is not None else None
    if keep is not None:
        idx, ys, xs, flips = idx[keep], ys[keep], xs[keep], flips[keep]
        seeds = seeds[keep] if seeds is not None else None
    deg, cln, cls = [], [], []
    for j, (i, y, x, (fh, fv)) in enumerate(zip(idx, ys, xs, flips)):
        if seeds is not None:
            degraded, classes = _degrade_anew(data, int(i), int(seeds[j]))
        else:
            degraded, classes = data.degraded[i], None if data.classes is None else data.classes[i]
        parts = [degraded[:, y : y + ch, x : x + cw], data.clean[i, :, y : y + ch, x : x + cw]]
        if classes is not None:
            parts.append(classes[y : y + ch, x : x + cw][None])
        dims = [d for d, f in ((-1, fh), (-2, fv)) if f]
        if dims:
            parts = [p.flip(dims) for p in parts]
        deg.append(parts[0])
        cln.append(parts[1])
        if len(parts) > 2:
            cls.append(parts[2][0])
    degraded = to_device(torch.stack(deg), device).to(torch.float32).div_(255.0)
    clean = to_device(torch.stack(cln), device).to(torch.float32).div_(255.0)
    damage = to_device(one_hot_classes(torch.stack(cls)), device) if cls else None
    return degraded, clean, damage


def _degrade_anew(data: ImageData, i: int, seed: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``i`` degraded by ``data.degrade`` with ``seed``: uint8 or float32 (C, H, W) and its
    int64 (H, W) damage classes."""
    clean = np.ascontiguousarray(data.clean[i].permute(1, 2, 0).numpy())
    degraded, mask = data.degrade(clean, np.random.default_rng(seed))
    mask = mask[..., None] if mask.ndim == 2 else mask
    return (torch.from_numpy(degraded).permute(2, 0, 1),
            torch.from_numpy(damage_labels(mask, axis=-1)))


def image_batches(data: ImageData, batch_size: int, device: torch.device | str = "cpu"):
    """Whole images in order: float (degraded, clean) batches and the one-hot damage."""
    for s in range(0, len(data), batch_size):
        # not in place: a float ImageData (degraded_once) would be divided where it is kept
        deg = to_device(data.degraded[s : s + batch_size], device).to(torch.float32) / 255.0
        cln = to_device(data.clean[s : s + batch_size], device).to(torch.float32).div_(255.0)
        dmg = None if data.classes is None else to_device(one_hot_classes(data.classes[s : s + batch_size]), device)
        yield deg, cln, dmg


@torch.no_grad()
def location_features(model, data: ImageData, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray | None]:
    """Code vectors of every bottleneck location of ``data``'s degraded images, float32
    ``(N * h * w, latent)``, and each location's damage-class shares ``(N * h * w,
    len(DAMAGE_CLASSES))`` (None without masks)."""
    from ...models.unet_ae import pool_damage

    model.eval()
    zs, shares = [], []
    for deg, _, dmg in image_batches(data, batch_size):
        code = model.encode(deg)
        zs.append(code.permute(0, 2, 3, 1).reshape(-1, code.shape[1]).numpy())
        if dmg is not None:
            p = pool_damage(dmg, code.shape[-2:], model.multiple)
            shares.append(p.permute(0, 2, 3, 1).reshape(-1, p.shape[1]).numpy())
    z = np.concatenate(zs).astype(np.float32) if zs else np.zeros((0, model.latent_dim), np.float32)
    return z, (np.concatenate(shares) if shares else None)
