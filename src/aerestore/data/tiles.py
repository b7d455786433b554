"""The ``sample`` source's images (the offline default data set): the photographs shipped
with scikit-image cut into square tiles at two scales (:func:`sample_tiles`), with the split
regions that keep val and test tiles apart from train tiles (:func:`region_side`,
:func:`photo_tiles`; :mod:`aerestore.data.download`, "The sample source and leakage")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from aerestore.data.presets import SAMPLE_PHOTOS, SamplePhoto

# Tiles whose pixel standard deviation (0..255, over all channels) is below this are
# dropped: the black surround of the retina, empty sky. Low-contrast photographs
# (the moon, the cell micrograph, std 2-4) stay.
FLAT_STD = 2.0
# Scales at which photographs are tiled: 2 = halved (2x2 box mean), 4 = a quarter, so that
# a 64 px tile holds a face, a cup, a cat's head, as a real 64 px photo does. Full-resolution
# tiles (factor 1) of these 300-600 px photographs were mostly smooth patches: the median
# variance of the Laplacian of 64 px tiles was 0.0035 with factors (1, 2), is 0.0099 with
# (2, 4), against 0.027 for 64 px CelebA faces; a network gained about 8 dB on the smooth
# tiles and 2.5 dB on faces, so the default run's figures said little about real photos.
SAMPLE_FACTORS = (2, 4)


@dataclass(frozen=True)
class Tile:
    pixels: np.ndarray  # uint8 (size, size, 3)
    origin: str  # e.g. "skimage.data.coffee scale=1/2 x=256 y=0" (full-resolution pixels)
    group: str  # split unit: tiles of different groups share no source pixel


def load_sample_photo(photo: SamplePhoto) -> list[np.ndarray]:
    """The views of a scikit-image photograph as uint8 RGB arrays (grey is repeated)."""
    import skimage.data  # deferred: heavy import

    value = getattr(skimage.data, photo.name)()
    views = list(value[:2]) if isinstance(value, tuple) else [value]  # stereo: left, right
    out = []
    for v in views:
        v = np.asarray(v)
        if v.dtype != np.uint8:
            raise TypeError(f"skimage.data.{photo.name}: expected uint8, got {v.dtype}")
        if v.ndim == 2:
            v = np.repeat(v[:, :, None], 3, axis=2)
        elif v.shape[2] == 4:
            v = v[:, :, :3]
        out.append(np.ascontiguousarray(v))
    return out


def _halve(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    # Exact box mean over factor x factor pixels (PIL's reduce), then rounding.
    return np.asarray(Image.fromarray(image[:h, :w]).reduce(factor))


# Split regions of the sample photographs are about this many pixels on a side.
REGION_PX = 256


def region_side(size: int, factors: Sequence[int]) -> int:
    """Side of a split region: the smallest multiple of every tile footprint ``size * f``
    (their least common multiple) that is at least :data:`REGION_PX`, so that a tile of any
    scale lies inside exactly one region (256 px at size 64 with factors (2, 4)). With
    factors that do not divide each other (2 and 3) the largest footprint alone is not
    enough: a third-scale tile would straddle two regions and leak across splits."""
    foot = math.lcm(*(size * f for f in factors))
    return foot * max(1, -(-REGION_PX // foot))


def photo_tiles(
    image: np.ndarray, size: int, factors: Sequence[int] = SAMPLE_FACTORS
) -> Iterator[tuple[int, int, int, int, int, np.ndarray]]:
    """``(factor, y, x, region_y, region_x, tile)`` for a grid of non-overlapping tiles.

    At each downscale ``factor`` the image is reduced by a factor x factor box mean and
    cut into a grid of ``size`` x ``size`` tiles aligned at the top-left corner (the
    last partial row and column are dropped). ``(y, x)`` is the tile's top-left corner
    in full-resolution pixels. Regions are squares of side ``R =`` :func:`region_side`
    full-resolution pixels; since ``R`` is a multiple of every tile's footprint
    ``size * factor`` and tiles are aligned, each tile lies inside exactly one region,
    so two tiles from different regions share no source pixel, at any scale.
    """
    region = region_side(size, factors)
    for f in factors:
        small = _halve(image, f)
        h, w = small.shape[:2]
        for ty in range(0, h - size + 1, size):
            for tx in range(0, w - size + 1, size):
                y, x = ty * f, tx * f
                yield f, y, x, y // region, x // region, small[ty : ty + size, tx : tx + size]


def sample_tiles(
    size: int, photos: Sequence[SamplePhoto] | None = None, factors: Sequence[int] | None = None
) -> Iterator[Tile]:
    """Every grid tile of the sample photographs (flat tiles included), in a fixed order.

    The split unit (``Tile.group``) is the photograph's region (see :func:`photo_tiles`):
    val and test tiles never share a pixel with train tiles. For a stereo pair (``band``)
    it is the region's row band across both views, since the right view repeats the
    left one shifted along the rows. ``photos`` and ``factors`` default to
    :data:`SAMPLE_PHOTOS` and :data:`SAMPLE_FACTORS`.
    """
    photos = SAMPLE_PHOTOS if photos is None else photos
    factors = SAMPLE_FACTORS if factors is None else factors
    for photo in photos:
        views = load_sample_photo(photo)
        for v, image in enumerate(views):
            view = f"[{v}]" if len(views) > 1 else ""
            for f, y, x, ry, rx, tile in photo_tiles(image, size, factors):
                group = f"{photo.name}:band{ry}" if photo.band else f"{photo.name}:{ry}:{rx}"
                origin = f"skimage.data.{photo.name}{view} scale=1/{f} x={x} y={y}"
                yield Tile(tile, origin, group)


def is_flat(pixels: np.ndarray, threshold: float = FLAT_STD) -> bool:
    """Whether the pixel standard deviation (all channels, 0..255) is below ``threshold``."""
    return float(pixels.std()) < threshold
