"""Images the ``evaluate`` stage makes itself, beyond the prepared test split.

**More damage draws** (``evaluate.draws``, :func:`redegrade`): every clean test image
degraded anew by ``prepare.degrade``, so the comparisons rest on k x the test images.

**Every row's restore speed** on one image of the same size for all (``evaluate.speed_size``
px, 256 by default; 0 = off: :func:`speed_image`, :func:`row_speeds`), so that the rows'
Mpx/s can be set side by side: the ``Mpx/s`` of the test split depends on how a row batches
64 px images (a network restores a batch at once, a classical restorer one image after
another, the slow ones in worker processes), while a user restores one photo.

The image: the top-left ``speed_size`` square of scikit-image's ``astronaut`` (512 px; grey
when the data are), degraded by ``prepare.degrade`` with the run's ``seed``, so the damage is
the task's and the oracle has true masks. Each row restores it in this process with the
threads the stage runs with (``runtime.threads``; no worker processes: one image). Timing: one
call; a row faster than :data:`REPEAT_BELOW` seconds is timed twice more and the fastest of
the three kept (the first call also pays one-off costs, e.g. a compiled shape); a slower row's
one call stands (its one-off costs are small beside it). Wall-clock, so a busy machine slows
every row: compare rows of one run, not runs of two machines.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
from tqdm import tqdm

REPEAT_BELOW = 1.0  # seconds: rows faster than this are timed three times (the fastest kept)
MAX_SIZE = 512  # the astronaut's side


DRAW_TAG = 0x6472617773  # "draws": keeps these seeds apart from prepare's (seed, sha256, copy)


def redegrade(clean: np.ndarray, ops, seed: int, draw: int) -> tuple[np.ndarray, np.ndarray]:
    """Another draw of the damage for a set of images (``evaluate.draws``): every image of
    ``clean`` (uint8 ``N x H x W x C``) degraded anew by ``ops``, image ``i`` seeded by
    ``(seed, draw, i)``; returns ``(degraded, mask)`` stacked like ``clean``."""
    from .data.degrade import degrade_image

    if not ops:
        raise ValueError("evaluate.draws > 1 degrades the test images anew: prepare.degrade is empty")
    out = [degrade_image(np.asarray(img), list(ops), np.random.default_rng([DRAW_TAG, int(seed) % 2**64, draw, i]))
           for i, img in enumerate(clean)]
    return np.stack([d for d, _ in out]), np.stack([m for _, m in out])


def speed_image(size: int, channels: int, ops, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(clean, degraded, mask)`` uint8 ``(size, size, C)`` / ``(size, size, K)``: the
    astronaut's top-left square degraded by ``ops`` (``prepare.degrade``) seeded by ``seed``."""
    from skimage import data
    from skimage.color import rgb2gray

    from .damage import DAMAGE_KINDS
    from .data.degrade import degrade_image

    if not 16 <= size <= MAX_SIZE:
        raise ValueError(f"evaluate.speed_size: between 16 and {MAX_SIZE} px, or 0 for off (got {size})")
    clean = np.ascontiguousarray(data.astronaut()[:size, :size])
    if channels == 1:
        clean = np.round(rgb2gray(clean) * 255).astype(np.uint8)[..., None]
    if not ops:
        return clean, clean.copy(), np.zeros((size, size, len(DAMAGE_KINDS)), np.uint8)
    degraded, mask = degrade_image(clean, list(ops), np.random.default_rng(seed))
    return clean, degraded, mask


def time_row(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> float:
    """Seconds of one ``fn(images)``: the fastest of three calls when the first took less than
    :data:`REPEAT_BELOW` seconds, else the one."""
    best = np.inf
    for i in range(3):
        t0 = time.perf_counter()
        fn(images)
        best = min(best, time.perf_counter() - t0)
        if i == 0 and best >= REPEAT_BELOW:
            break
    return best


def row_speeds(rows: dict[str, Callable[[np.ndarray], np.ndarray]], degraded: np.ndarray,
               progress: bool = True) -> dict[str, float]:
    """Mpx/s of each row restoring ``degraded`` (uint8 ``H x W x C``, one image), in row order."""
    x = degraded[None].astype(np.float64) / 255.0
    mpx = degraded.shape[0] * degraded.shape[1] / 1e6
    out = {}
    for name, fn in tqdm(rows.items(), desc=f"evaluate (speed, one {degraded.shape[0]} px image)",
                         disable=not progress, leave=False):
        out[name] = mpx / max(time_row(fn, x), 1e-9)
    return out
