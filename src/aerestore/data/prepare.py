"""The ``prepare`` stage: raw images -> clean / degraded / mask arrays per split.

For every image listed in ``data/raw/manifest.csv`` (columns ``file, split, width,
height, sha256``):

1. **Decode and convert** (:func:`aerestore.data.raw.image_to_float`): any Pillow mode becomes RGB, or one
   luminance channel when ``prepare.channels: 1``. 16-bit data is scaled, not clipped;
   transparency is composited on BLACK (see :func:`~aerestore.data.raw.image_to_float` for every mode).
2. **Centre crop** to a square of side ``min(W, H)`` and **resize** to
   ``data.image_size`` with ``prepare.resize`` (OpenCV ``INTER_AREA`` / ``LINEAR`` /
   ``CUBIC`` / ``LANCZOS4`` / ``NEAREST``), in float32, rounded once to uint8.
3. **Augment** (train split only): ``prepare.augment_copies`` extra copies through
   :mod:`aerestore.data.augment`; copy 0 is always the unaugmented image.
4. **Degrade** the input copy (:func:`aerestore.data.degrade.degrade_image`); the clean
   image is kept as the target, the local damage weight maps (one channel per kind in
   :data:`aerestore.damage.DAMAGE_KINDS`) as the mask.

Determinism: the randomness of copy ``c`` of an image comes only from
``SeedSequence([seed mod 2^64, int(sha256, 16), c])`` (spawned into one stream for the
augmentation and one for the degradation), so outputs are byte-identical whatever the
order of the manifest rows within a split, the chunk size or the number of worker
processes. (Two byte-identical files therefore get the same degradation.)

Outputs, under ``out_dir/{train,val,test}/``: ``clean.npy`` and ``degraded.npy``
(``N, H, W, C`` uint8) and ``mask.npy`` (``N, H, W, K`` uint8, K damage kinds), rows in manifest order,
``1 + augment_copies`` consecutive rows per train image. They are written through
memory maps ``prepare.chunk`` images at a time, in a temporary sibling folder renamed
onto ``out_dir`` at the end, so a failure leaves the previous output intact.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity
from tqdm import tqdm

from aerestore.data.augment import Augmenter
from aerestore.data.degrade import degrade_image
from aerestore.damage import DAMAGE_CLASSES, DAMAGE_KINDS
from aerestore.data.layout import SPLITS, damage_labels
from aerestore.data.raw import load_image, read_manifest
from aerestore.io import atomic_dir, NpyWriter, atomic_path, open_array, write_json
from aerestore.params import Params

# PSNR of an image equal to its target is infinite; such images count as this value.
PSNR_CAP = 100.0
GRID_IMAGES = 6
GRID_TILE = 96  # tiles are upscaled (nearest) to at least this many pixels


# --------------------------------------------------------------- metrics
def psnr(clean: np.ndarray, other: np.ndarray) -> float:
    """PSNR in dB with data range 1 (uint8 / 255), capped at :data:`PSNR_CAP`."""
    diff = clean.astype(np.float64) / 255.0 - other.astype(np.float64) / 255.0
    mse = float(np.mean(diff * diff))
    return PSNR_CAP if mse <= 0 else min(PSNR_CAP, 10.0 * math.log10(1.0 / mse))


def ssim(clean: np.ndarray, other: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) of two uint8 HWC images, scaled to [0, 1].

    ``skimage.metrics.structural_similarity`` with an 11-tap Gaussian window
    (sigma 1.5), population covariances, data range 1, averaged over channels. On images
    smaller than 11 px the cropped border (``win_size``) shrinks to fit.
    """
    side = min(clean.shape[0], clean.shape[1])
    win = min(11, side if side % 2 else side - 1)
    return float(
        structural_similarity(
            clean.astype(np.float64) / 255.0,
            other.astype(np.float64) / 255.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=2,
            win_size=max(win, 1),
        )
    )


# ---------------------------------------------------------------- seeding
def image_seeds(seed: int, sha256: str, copy: int) -> tuple[int, np.random.Generator]:
    """(albumentations seed, degradation generator) of copy ``copy`` of an image."""
    ss = np.random.SeedSequence([int(seed) % 2**64, int(sha256, 16), int(copy)])
    aug_ss, deg_ss = ss.spawn(2)
    return int(aug_ss.generate_state(1)[0]), np.random.default_rng(deg_ss)


# ----------------------------------------------------------------- worker
@dataclass(frozen=True)
class _Task:
    index: int  # position in the split
    path: str
    sha256: str
    copies: int  # rows produced: 1 + augment copies (train) or 1


@dataclass
class _Result:
    index: int
    clean: np.ndarray  # (copies, H, W, C)
    degraded: np.ndarray
    mask: np.ndarray  # (copies, H, W, K)
    psnr: list[float]
    ssim: list[float]


class _Worker:
    """Turns one manifest row into its ``copies`` (clean, degraded, mask) rows."""

    def __init__(self, params: Params):
        self.params = params
        self.augment = Augmenter(params.prepare.augment) if params.prepare.augment_copies else None

    def __call__(self, task: _Task) -> _Result:
        p = self.params
        base = load_image(
            task.path, p.data.image_size, p.prepare.channels, p.prepare.resize,
            sha256=task.sha256, max_pixels=p.data.max_pixels,
        )
        cleans, degs, masks, psnrs, ssims = [], [], [], [], []
        for copy in range(task.copies):
            aug_seed, rng = image_seeds(p.seed, task.sha256, copy)
            clean = base if copy == 0 or self.augment is None else self.augment(base, aug_seed)
            degraded, mask = degrade_image(clean, p.prepare.degrade, rng)
            cleans.append(clean)
            degs.append(degraded)
            masks.append(mask)
            psnrs.append(psnr(clean, degraded))
            ssims.append(ssim(clean, degraded))
        return _Result(task.index, np.stack(cleans), np.stack(degs), np.stack(masks), psnrs, ssims)


_POOL_WORKER: _Worker | None = None


def _pool_init(params: Params) -> None:
    global _POOL_WORKER
    cv2.setNumThreads(1)  # the pool already uses the cores
    _POOL_WORKER = _Worker(params)


def _pool_run(task: _Task) -> _Result:
    assert _POOL_WORKER is not None
    return _POOL_WORKER(task)


def _mp_context(augment: bool) -> mp.context.BaseContext:
    """forkserver (spawn where it does not exist), never plain fork: a child forked from
    a process whose OpenCV thread pool has run deadlocks in OpenCV (seen with
    cv2.setNumThreads). The fork server imports this module (and albumentations, which
    imports torch, when augmenting) once, so each worker then starts in milliseconds."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__] + (["albumentations"] if augment else []))
        return ctx
    return mp.get_context("spawn")


# ------------------------------------------------------------ atomic dirs
# ------------------------------------------------------------------- grid
def _tile(img: np.ndarray, scale: int) -> np.ndarray:
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


# the colour of each damage kind in pictures of the masks (DAMAGE_KINDS order)
DAMAGE_COLOURS = {"blur": (255, 140, 0), "noise": (40, 120, 255)}


def mask_rgb(mask: np.ndarray) -> np.ndarray:
    """uint8 masks ``(..., K)`` -> RGB ``(..., 3)``: each kind in its colour of
    :data:`DAMAGE_COLOURS` scaled by its weight (black = clean)."""
    m = np.asarray(mask, dtype=np.float32) / 255.0
    out = np.zeros(m.shape[:-1] + (3,), np.float32)
    for k, kind in enumerate(DAMAGE_KINDS[: m.shape[-1]]):
        out += m[..., k : k + 1] * np.asarray(DAMAGE_COLOURS.get(kind, (255, 255, 255)), np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def make_grid(rows: Sequence[np.ndarray], min_tile: int = GRID_TILE, gap: int = 2) -> np.ndarray:
    """Tile image rows into one uint8 RGB picture (rows of ``(n, H, W, C)`` arrays).

    Each ``H x W`` image is upscaled by an integer factor (nearest neighbour) to at
    least ``min_tile`` pixels; tiles are separated by ``gap`` white pixels.
    """
    n, h, w = rows[0].shape[:3]
    scale = max(1, math.ceil(min_tile / max(1, min(h, w))))
    th, tw = h * scale, w * scale
    out = np.full((len(rows) * (th + gap) + gap, n * (tw + gap) + gap, 3), 255, np.uint8)
    for r, images in enumerate(rows):
        for i in range(n):
            y, x = gap + r * (th + gap), gap + i * (tw + gap)
            out[y : y + th, x : x + tw] = _tile(np.asarray(images[i]), scale)
    return out


def write_png(path: str | Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


# -------------------------------------------------------------------- run
def run_prepare(
    params: Params,
    raw_dir: Path,
    out_dir: Path,
    metrics_path: Path,
    grid_path: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the prepare stage (see the module docstring); returns the metrics written.

    Metrics per split: ``images`` (manifest rows), ``n`` (array rows), ``psnr`` and
    ``ssim`` of the degraded input against the clean target (per image, then the mean;
    PSNR with data range 1, identical images counted as :data:`PSNR_CAP` dB),
    ``mask_share`` (share of pixels with a nonzero mask of any kind), ``mask_mean`` (mean
    of the largest weight in [0, 1]) and, per damage class of
    :func:`aerestore.data.layout.damage_labels` (clean, blur, noise), ``<class>_share``
    (share of pixels) and ``psnr_<class>`` (PSNR of the degraded input over those pixels
    of the split, pooled): the damage the networks face, kind by kind.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    manifest = read_manifest(raw_dir)
    p = params.prepare
    size, channels = params.data.image_size, p.channels
    total = sum(len(v) for v in manifest.values())
    metrics: dict[str, Any] = {
        "image_size": size,
        "channels": channels,
        "augment_copies": p.augment_copies,
        "degrade": [op.op for op in p.degrade],
        "splits": {},
    }
    pool = None
    serial = _Worker(params) if p.workers == 1 else None
    grid_rows: list[np.ndarray] | None = None
    try:
        if serial is None:
            pool = _mp_context(p.augment_copies > 0).Pool(p.workers, initializer=_pool_init, initargs=(params,))
        bar = tqdm(total=total, desc="prepare", unit="img", file=sys.stderr, disable=not progress)
        with atomic_dir(out_dir) as tmp, bar:
            for split in SPLITS:
                rows = manifest[split]
                copies = 1 + p.augment_copies if split == "train" else 1
                n = len(rows) * copies
                shape = (n, size, size, channels)
                folder = tmp / split
                sums = {"psnr": 0.0, "ssim": 0.0, "masked": 0, "mask_sum": 0.0}
                class_px = np.zeros(len(DAMAGE_CLASSES))
                class_se = np.zeros(len(DAMAGE_CLASSES))
                with (
                    NpyWriter(folder / "clean.npy", shape) as w_clean,
                    NpyWriter(folder / "degraded.npy", shape) as w_deg,
                    NpyWriter(folder / "mask.npy", (n, size, size, len(DAMAGE_KINDS))) as w_mask,
                ):
                    for start in range(0, len(rows), p.chunk):
                        tasks = [
                            _Task(start + i, str(raw_dir / r.file), r.sha256, copies)
                            for i, r in enumerate(rows[start : start + p.chunk])
                        ]
                        if serial is not None:
                            results = [serial(t) for t in tasks]
                        else:
                            assert pool is not None
                            chunksize = max(1, len(tasks) // (4 * p.workers))
                            results = pool.map(_pool_run, tasks, chunksize=chunksize)
                        for res in results:
                            row = res.index * copies
                            w_clean.write(row, res.clean)
                            w_deg.write(row, res.degraded)
                            w_mask.write(row, res.mask)
                            sums["psnr"] += sum(res.psnr)
                            sums["ssim"] += sum(res.ssim)
                            top = res.mask.max(axis=-1)
                            sums["masked"] += int(np.count_nonzero(top))
                            sums["mask_sum"] += float(top.sum(dtype=np.float64)) / 255.0
                            labels = damage_labels(res.mask)
                            se = ((res.clean.astype(np.float64) - res.degraded) / 255.0) ** 2
                            se = se.mean(-1)
                            for c in range(len(DAMAGE_CLASSES)):
                                sel = labels == c
                                class_px[c] += sel.sum()
                                class_se[c] += se[sel].sum()
                        bar.update(len(tasks))
                        del results
                pixels = n * size * size
                metrics["splits"][split] = {
                    "images": len(rows),
                    "n": n,
                    "psnr": sums["psnr"] / n if n else None,
                    "ssim": sums["ssim"] / n if n else None,
                    "mask_share": sums["masked"] / pixels if n else None,
                    "mask_mean": sums["mask_sum"] / pixels if n else None,
                }
                for c, name in enumerate(DAMAGE_CLASSES):
                    px = class_px[c]
                    mse = class_se[c] / px if px else None
                    metrics["splits"][split][f"{name}_share"] = px / pixels if n else None
                    metrics["splits"][split][f"psnr_{name}"] = (
                        None if mse is None else PSNR_CAP if mse <= 0 else min(PSNR_CAP, 10 * math.log10(1 / mse)))
            grid_rows = _grid_rows(tmp)
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    write_json(metrics_path, metrics)
    if grid_rows is not None:
        write_png(grid_path, make_grid(grid_rows))
    return metrics


def _grid_rows(folder: Path) -> list[np.ndarray] | None:
    """Clean, degraded and mask rows of up to GRID_IMAGES evenly spaced images of the
    test split (val, then train, when it is empty)."""
    for split in ("test", "val", "train"):
        clean = open_array(folder / split / "clean.npy")
        if len(clean):
            idx = np.unique(np.linspace(0, len(clean) - 1, min(GRID_IMAGES, len(clean))).round().astype(int))
            degraded = open_array(folder / split / "degraded.npy")
            mask = open_array(folder / split / "mask.npy")
            return [np.asarray(clean[idx]), np.asarray(degraded[idx]), mask_rgb(np.asarray(mask[idx]))]
    return None
