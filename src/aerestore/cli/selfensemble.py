"""Geometric self-ensemble: restore an image in its eight orientations and average.

A restorer trained with random flips (the crop trainer's) is nearly, but not exactly,
equivariant to flips and quarter turns; the eight outputs, each turned back, differ a
little, and their mean is a better estimate than any one of them (Lim et al., "Enhanced
Deep Residual Networks for Single Image Super-Resolution" (EDSR), CVPRW 2017, section 3.4,
"geometric self-ensemble"; Zhang et al., DRUNet, TPAMI 2021, use the same eight). It costs
eight restores and adds nothing to the training. ``aerestore restore --self-ensemble`` and
``aerestore cbsd68 --self-ensemble`` offer it; the pipeline's evaluate stage does not use it
(its rows are single passes): it lives with the commands, outside the claims' code digest
(:data:`aerestore.studies.runner.NOT_RUN`).

Why not a library: DeepInverse's ``EquivariantDenoiser`` does this, but ``deepinv`` does not
import beside this torch build (its ``__init__`` imports torchvision, see
:mod:`aerestore.models.peers`), and ``ttach`` is unmaintained since 2020; the group is eight
NumPy views.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from aerestore.restore import Restorer

# (quarter turns, mirrored): the dihedral group of the square, identity first
ORIENTATIONS: tuple[tuple[int, bool], ...] = tuple((k, m) for m in (False, True) for k in range(4))


def orient(x: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    """``x`` (..., H, W) mirrored left-right (if ``mirrored``), then turned ``turns``
    quarter turns anticlockwise."""
    if mirrored:
        x = x[..., ::-1]
    return np.rot90(x, turns, axes=(-2, -1))


def unorient(y: np.ndarray, turns: int, mirrored: bool) -> np.ndarray:
    """The inverse of :func:`orient`: ``unorient(orient(x, t, m), t, m) == x``."""
    y = np.rot90(y, -turns, axes=(-2, -1))
    return y[..., ::-1] if mirrored else y


def self_ensemble(restore: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """The mean of ``restore`` over the eight orientations of ``x`` (float (N, C, H, W)),
    each output turned back; ``restore`` maps such an array to one of the same shape (it
    sees (N, C, W, H) for odd turns)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"self_ensemble: expected images (N, C, H, W), got shape {x.shape}")
    total = np.zeros(x.shape, np.float64)
    for turns, mirrored in ORIENTATIONS:
        y = np.asarray(restore(np.ascontiguousarray(orient(x, turns, mirrored))))
        back = unorient(y, turns, mirrored)
        if back.shape != x.shape:
            raise ValueError(f"self_ensemble: the restorer returned shape {y.shape} for input "
                             f"{orient(x, turns, mirrored).shape}")
        total += back
    return (total / len(ORIENTATIONS)).astype(x.dtype, copy=False)


def restore_self_ensemble(restorer: "Restorer", image: np.ndarray, mode: str = "multi") -> np.ndarray:
    """:meth:`aerestore.restore.Restorer.restore` (uint8 (H, W[, C]) in and out, the same
    scaling) through :func:`self_ensemble`. Each orientation goes through the restorer's
    ``_restore_array``, the array path ``restore`` itself takes, so that a restorer compiled
    by OpenVINO (:class:`~aerestore.tracks.images.restore.ConvRestorer`) is used as it is."""
    img = restorer.to_model_channels(image)
    x = (img.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None]
    y = self_ensemble(lambda a: restorer._restore_array(a, mode), x)[0].transpose(1, 2, 0)
    return np.clip(np.rint(y * np.float32(255.0)), 0, 255).astype(np.uint8)
