"""Cutting images into overlapping square blocks and putting them back together.

Geometry (:func:`block_grid`), per axis of length ``L`` with block ``size`` and
``overlap``::

    stride = size - overlap
    n      = max(1, ceil((L - overlap) / stride))
    padded = (n - 1) * stride + size          (>= L, so every pixel is covered)
    starts = 0, stride, ..., (n - 1) * stride

The image is padded at the bottom and right by reflection without repeating the edge
pixel (``reflect``/``BORDER_REFLECT_101``); when the pad is longer than the image the
reflection repeats periodically (period ``2 (L - 1)``; a 1-pixel axis is repeated).

Merging (:func:`merge_blocks`) is a weighted overlap-add: every block is multiplied by
the separable window ``w(i, j) = s(i) s(j)``, ``s(i) = sin(pi (i + 0.5) / size)``
(the square root of a Hann window, sampled at pixel centres; > 0 at the block edges,
largest at the centre, so seams are down-weighted), summed with ``F.fold`` and divided
by the folded windows. If all blocks agree on a pixel the result is that value, hence
``merge_blocks(split_blocks(x)) == x`` up to float rounding.

Blocks are image-major, then row-major within an image. The block index used on disk
is int32 ``(image, y, x)``: the top-left corner in the padded image.
"""

from __future__ import annotations

import json

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
import torch.nn.functional as F
from tqdm import tqdm

from aerestore.damage import DAMAGE_CLASSES
from aerestore.data.layout import SPLITS, PrepareError, damage_labels
from aerestore.io import atomic_dir
from aerestore.io import NpyWriter, open_array, write_json
from aerestore.params import Params

# Images split per chunk in run_blocks: about this many bytes of blocks in memory.
CHUNK_BYTES = 16 * 2**20
# data/blocks/geometry.json: how the blocks were cut (write_geometry / read_geometry)
GEOMETRY_FILE = "geometry.json"


@dataclass(frozen=True)
class BlockGrid:
    """Where the blocks of an ``H x W`` image lie (see the module docstring)."""

    size: int
    overlap: int
    stride: int
    ny: int
    nx: int
    padded_h: int
    padded_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def per_image(self) -> int:
        return self.ny * self.nx


def block_grid(height: int, width: int, size: int, overlap: int) -> BlockGrid:
    """The block grid of an ``height x width`` image."""
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1x1, got {height}x{width}")
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got size={size}, overlap={overlap}")
    stride = size - overlap
    ny = max(1, math.ceil((height - overlap) / stride))
    nx = max(1, math.ceil((width - overlap) / stride))
    return BlockGrid(
        size=size,
        overlap=overlap,
        stride=stride,
        ny=ny,
        nx=nx,
        padded_h=(ny - 1) * stride + size,
        padded_w=(nx - 1) * stride + size,
        ys=tuple(i * stride for i in range(ny)),
        xs=tuple(i * stride for i in range(nx)),
    )


def reflect_indices(length: int, padded: int) -> np.ndarray:
    """Source index of each of ``padded`` positions of an axis of ``length`` pixels,
    reflected without repeating the edge (periodic when the pad exceeds the axis)."""
    i = np.arange(padded)
    if length == 1:
        return np.zeros(padded, dtype=np.int64)
    period = 2 * (length - 1)
    m = i % period
    return np.where(m < length, m, period - m)


def _pad(images: torch.Tensor, grid: BlockGrid) -> torch.Tensor:
    h, w = images.shape[-2:]
    ph, pw = grid.padded_h - h, grid.padded_w - w
    if ph == 0 and pw == 0:
        return images
    if ph < h and pw < w and images.is_floating_point():
        return F.pad(images, (0, pw, 0, ph), mode="reflect")  # the fast path
    rows = torch.from_numpy(reflect_indices(h, grid.padded_h)).to(images.device)
    cols = torch.from_numpy(reflect_indices(w, grid.padded_w)).to(images.device)
    return images.index_select(-2, rows).index_select(-1, cols)


def split_blocks(images: torch.Tensor, size: int, overlap: int) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N * ny * nx, C, size, size)`` blocks (image-major, row-major)."""
    if images.ndim != 4:
        raise ValueError(f"expected (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    grid = block_grid(h, w, size, overlap)
    padded = _pad(images, grid)
    # (N, C, ny, nx, size, size) -> (N, ny, nx, C, size, size)
    blocks = padded.unfold(2, size, grid.stride).unfold(3, size, grid.stride)
    return blocks.permute(0, 2, 3, 1, 4, 5).reshape(n * grid.per_image, c, size, size)


def block_window(size: int, dtype: torch.dtype = torch.float32, device: Any = None) -> torch.Tensor:
    """``(size, size)`` merge weights ``s(i) s(j)``, ``s(i) = sin(pi (i + 0.5) / size)``."""
    s = torch.sin(math.pi * (torch.arange(size, dtype=torch.float64) + 0.5) / size)
    return torch.outer(s, s).to(dtype=dtype, device=device)


def merge_blocks(blocks: torch.Tensor, height: int, width: int, size: int, overlap: int) -> torch.Tensor:
    """Inverse of :func:`split_blocks`: weighted overlap-add -> ``(N, C, height, width)``."""
    grid = block_grid(height, width, size, overlap)
    if blocks.ndim != 4 or blocks.shape[-2:] != (size, size) or blocks.shape[0] % grid.per_image:
        raise ValueError(
            f"expected (N * {grid.per_image}, C, {size}, {size}) blocks for a {height}x{width} "
            f"image, got {tuple(blocks.shape)}"
        )
    per = grid.per_image
    n, c = blocks.shape[0] // per, blocks.shape[1]
    window = block_window(size, blocks.dtype, blocks.device)
    cols = (blocks * window).reshape(n, per, c * size * size).transpose(1, 2)
    out_size = (grid.padded_h, grid.padded_w)
    summed = F.fold(cols, out_size, kernel_size=size, stride=grid.stride)
    weights = F.fold(
        window.reshape(1, size * size, 1).expand(1, size * size, per),
        out_size,
        kernel_size=size,
        stride=grid.stride,
    )
    return (summed / weights)[:, :, :height, :width]


def split_images_uint8(
    images: np.ndarray, size: int, overlap: int, first_image: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(N, H, W, C)`` images -> (uint8 ``(N * ny * nx, C, size, size)`` blocks,
    int32 ``(N * ny * nx, 3)`` index ``(first_image + image, y, x)``).

    Same blocks, same order and same padding as :func:`split_blocks`, in numpy.
    """
    if images.ndim != 4:
        raise ValueError(f"expected (N, H, W, C), got shape {images.shape}")
    n, h, w, c = images.shape
    grid = block_grid(h, w, size, overlap)
    rows = reflect_indices(h, grid.padded_h)
    cols = reflect_indices(w, grid.padded_w)
    padded = np.asarray(images)[:, rows][:, :, cols]  # (N, Hp, Wp, C)
    # a strided view (N, ny, nx, C, size, size) of every block; reshape makes the one copy
    windows = sliding_window_view(padded, (size, size), axis=(1, 2))[:, :: grid.stride, :: grid.stride]
    blocks = windows.reshape(n * grid.per_image, c, size, size)
    ys = np.asarray(grid.ys)
    xs = np.asarray(grid.xs)
    index = np.empty((n, grid.ny, grid.nx, 3), dtype=np.int32)
    index[..., 0] = (first_image + np.arange(n))[:, None, None]
    index[..., 1] = ys[None, :, None]
    index[..., 2] = xs[None, None, :]
    return blocks, index.reshape(-1, 3)


# -------------------------------------------------------------------- stage
def run_blocks(
    params: Params, prepared_dir: Path, out_dir: Path, metrics_path: Path, progress: bool = True
) -> dict[str, Any]:
    """Cut the prepared clean, degraded and mask arrays of every split into blocks.

    Writes ``out_dir/{split}/clean.npy``, ``degraded.npy`` (``N, C, s, s`` uint8),
    ``mask.npy`` (``N, K, s, s`` uint8, one channel per damage kind) and ``index.npy`` (``N, 3`` int32), reading the
    prepared arrays through memory maps a chunk of images at a time. Metrics per split:
    ``images``, ``blocks``, ``blocks_per_image``, ``grid`` ``[ny, nx]`` and
    ``masked_share`` (share of blocks with at least one nonzero mask pixel) and, per damage
    class (clean, blur, noise), ``<class>_blocks``: the share of blocks whose pixels are
    mostly of that class.
    """
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    size, overlap = params.blocks.size, params.blocks.overlap
    arrays = {split: _open_prepared(prepared_dir / split) for split in SPLITS}
    metrics: dict[str, Any] = {"size": size, "overlap": overlap, "stride": size - overlap, "splits": {}}
    total = sum(len(a[0]) for a in arrays.values())
    bar = tqdm(total=total, desc="blocks", unit="img", file=sys.stderr, disable=not progress)
    with atomic_dir(out_dir) as tmp, bar:
        for split in SPLITS:
            clean, degraded, mask = arrays[split]
            n_img, h, w, c = clean.shape
            grid = block_grid(h, w, size, overlap)
            n_blocks = n_img * grid.per_image
            k = mask.shape[3]
            chunk = max(1, CHUNK_BYTES // max(1, grid.per_image * (2 * c + k) * size * size))
            masked = 0
            majority = np.zeros(len(DAMAGE_CLASSES), np.int64)
            folder = tmp / split
            with (
                NpyWriter(folder / "clean.npy", (n_blocks, c, size, size)) as w_clean,
                NpyWriter(folder / "degraded.npy", (n_blocks, c, size, size)) as w_deg,
                NpyWriter(folder / "mask.npy", (n_blocks, k, size, size)) as w_mask,
                NpyWriter(folder / "index.npy", (n_blocks, 3), np.int32) as w_index,
            ):
                for start in range(0, n_img, chunk):
                    stop = min(n_img, start + chunk)
                    row = start * grid.per_image
                    b_clean, index = split_images_uint8(clean[start:stop], size, overlap, start)
                    b_deg, _ = split_images_uint8(degraded[start:stop], size, overlap, start)
                    b_mask, _ = split_images_uint8(mask[start:stop], size, overlap, start)
                    w_clean.write(row, b_clean)
                    w_deg.write(row, b_deg)
                    w_mask.write(row, b_mask)
                    w_index.write(row, index)
                    masked += int(np.count_nonzero(b_mask.reshape(len(b_mask), -1).any(axis=1)))
                    labels = damage_labels(b_mask, axis=1).reshape(len(b_mask), -1)
                    counts = np.stack([(labels == j).sum(1) for j in range(k + 1)], axis=1)
                    majority[: k + 1] += np.bincount(counts.argmax(1), minlength=k + 1)[: k + 1]
                    bar.update(stop - start)
            metrics["splits"][split] = {
                "images": n_img,
                "blocks": n_blocks,
                "blocks_per_image": grid.per_image,
                "grid": [grid.ny, grid.nx],
                "padded": [grid.padded_h, grid.padded_w],
                "masked_share": masked / n_blocks if n_blocks else None,
                **{f"{name}_blocks": float(majority[j]) / n_blocks if n_blocks else None
                   for j, name in enumerate(DAMAGE_CLASSES)},
            }
        h, w = arrays["train"][0].shape[1:3]
        write_geometry(tmp, BlockGeometry(size, overlap, int(h) if h == w else None))
    write_json(metrics_path, metrics)
    return metrics


@dataclass(frozen=True)
class BlockGeometry:
    """How the blocks of ``data/blocks`` were cut: ``size`` px squares, neighbours sharing
    ``overlap`` px, from images of ``image_size`` px (the side of the square prepared images;
    None if they are not square). The blocks stage writes it beside the blocks; the train
    stage reads it (not the ``blocks.*`` params, which are not among its params) and keeps
    it in ``model.pt`` for the restorer."""

    size: int
    overlap: int
    image_size: int | None = None


def write_geometry(folder: str | Path, geometry: BlockGeometry) -> None:
    write_json(Path(folder) / GEOMETRY_FILE, {"size": geometry.size, "overlap": geometry.overlap,
                                              "image_size": geometry.image_size})


def read_geometry(folder: str | Path) -> BlockGeometry:
    """The geometry the blocks stage wrote to ``folder``; a one-line error naming the file."""
    path = Path(folder) / GEOMETRY_FILE
    try:
        doc = json.loads(path.read_text())
        size, overlap = int(doc["size"]), int(doc["overlap"])
        image_size = None if doc.get("image_size") is None else int(doc["image_size"])
    except FileNotFoundError:
        raise PrepareError(f"{path}: not found (blocks cut by an older version: rerun the blocks stage)") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PrepareError(f"{path}: not a block geometry ({type(exc).__name__}: {exc})") from None
    if size < 1 or not 0 <= overlap < size:
        raise PrepareError(f"{path}: size {size}, overlap {overlap}: need size >= 1 and 0 <= overlap < size")
    return BlockGeometry(size, overlap, image_size)


def _open_prepared(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Memory-map and check the three prepared arrays of a split."""
    out = []
    for name in ("clean", "degraded", "mask"):
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise PrepareError(f"{path}: not found (run the prepare stage first)")
        try:
            arr = open_array(path)
        except Exception as exc:
            raise PrepareError(f"{path}: not a readable .npy file ({exc})") from None
        if arr.dtype != np.uint8 or arr.ndim != 4:
            raise PrepareError(f"{path}: expected uint8 (N, H, W, C), got {arr.dtype} {arr.shape}")
        out.append(arr)
    clean, degraded, mask = out
    if degraded.shape != clean.shape:
        raise PrepareError(f"{folder / 'degraded.npy'}: shape {degraded.shape} differs from clean {clean.shape}")
    if mask.shape[:3] != clean.shape[:3] or mask.shape[3] < 1:
        raise PrepareError(
            f"{folder / 'mask.npy'}: shape {mask.shape}, expected {clean.shape[:3] + (len(DAMAGE_CLASSES) - 1,)} "
            "(one channel per damage kind; rerun the prepare stage)")
    if clean.shape[1] < 1 or clean.shape[2] < 1:
        raise PrepareError(f"{folder / 'clean.npy'}: empty images {clean.shape}")
    return clean, degraded, mask
