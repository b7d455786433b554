"""Measures of the claims report beyond the per-image restoration metrics (issue 26): the
training loss's fall and how far a latent interpolation departs from a cross-fade. (Test
images degraded anew by another damage, the cross rows, are the evaluate stage's own
:func:`aerestore.evaluate_inputs.redegrade`, called by :func:`aerestore.studies.runner.cross_rows`.)

Used by :func:`aerestore.studies.runner.run_arm`; part of the report's own code
(:data:`aerestore.studies.report.REPORT_FILES`), not of the runs' code digest.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

# Frames of the interpolation measure, endpoints included: t = 0, 1/4, 1/2, 3/4, 1.
INTERPOLATION_STEPS = 5


def train_loss_drop(curve: str | Path) -> float:
    """How much the training loss fell, in % of its first epoch's value: ``100 * (first -
    last) / first`` over the ``train_loss`` column of a block trainer's curve CSV
    (``metrics/curves/train_<arch>.csv``, one row per epoch: the mean loss the optimiser saw
    in that epoch). The CelebA study's 4.3 reads this off its training curves ("the decreased
    percentage of the loss of ResNet (5 percent) ... Basic Network (73 percent)"). A run of
    one epoch has no fall to measure: ``nan`` (a claim on it is then inconclusive)."""
    with open(curve, newline="") as f:
        losses = [float(row["train_loss"]) for row in csv.DictReader(f)]
    if len(losses) < 2:
        return math.nan
    if losses[0] <= 0:
        raise ValueError(f"{curve}: the first epoch's train_loss is {losses[0]}, not positive")
    return 100.0 * (losses[0] - losses[-1]) / losses[0]


def interpolation_departure(model, overlap: int, images: np.ndarray, steps: int = INTERPOLATION_STEPS) -> np.ndarray:
    """Per pair of test images, how far the decoded interpolation between their codes departs
    from a cross-fade of its two end frames, relative to how different the ends are.

    ``images`` are ``(N, H, W, C)`` floats in [0, 1]; image ``i`` is paired with image ``i +
    N // 2`` (``N // 2`` pairs: the same pairs for every arm of a seed). The frames ``f_t`` are
    :func:`aerestore.explore.interpolate`'s (the codes of the image's blocks, spherical for
    VAEs as the explore stage does, decoded and merged as the restorer merges blocks), and the
    value is ``mean_t RMS(f_t - ((1 - t) f_0 + t f_1)) / RMS(f_1 - f_0)`` over the inner
    frames: 0 for an interpolation that only blends the two pictures, larger the more the
    in-between pictures change into something that is neither. This is our reading of the
    blur study's "interpolations seem to be much more drastic with fewer latent variables";
    the study shows a figure and gives no measure."""
    import torch

    from ..explore import LatentCodec, interpolate

    x = torch.from_numpy(np.ascontiguousarray(np.asarray(images, dtype=np.float32).transpose(0, 3, 1, 2)))
    half = len(x) // 2
    if half < 1:
        raise ValueError(f"the interpolation measure needs at least 2 test images, got {len(x)}")
    with torch.no_grad():
        frames = interpolate(LatentCodec(model, overlap=overlap), x[:half], x[half : 2 * half], steps).double()
    ts = torch.linspace(0.0, 1.0, steps, dtype=torch.float64).view(1, steps, 1, 1, 1)
    fade = (1 - ts) * frames[:, :1] + ts * frames[:, -1:]
    rms = lambda d: d.pow(2).flatten(2).mean(-1).sqrt()  # noqa: E731  (N, steps)
    inner = rms(frames - fade)[:, 1:-1].mean(1)
    ends = rms(frames[:, -1:] - frames[:, :1])[:, 0]
    return (inner / ends.clamp_min(1e-12)).numpy()
