"""Natural-scene training and validation images that ship with the installed packages, for
training a denoiser on textured photographs offline (docs/cbsd68.md, "natural scenes").

    python benchmarks/natural_tiles.py /tmp/natural [--size 128] [--factors 1 2] \
        [--faces /path/to/celeba-3k]

Writes two folders of PNG files:

- ``train/``: every non-flat grid tile (``--size`` px, at each downscale ``--factor``) of
  the scikit-image photographs the ``sample`` source uses (:data:`SAMPLE_PHOTOS`), minus
  the held-out ones and three that are not scenes (retina, telescope, cells). These are the sample source's own tiles (:func:`sample_tiles`) at
  other sizes and scales: full resolution (factor 1) keeps the fur, gravel, grass and
  fabric textures that the sample source's halved and quartered tiles smooth away.
  ``--faces DIR`` also copies the images of DIR into ``train/`` (a faces + scenes mix).
- ``val/``: the held-out photographs whole, never tiled into ``train/``: scikit-image's
  ``chelsea`` (fur) and ``brick`` (a grey texture, repeated to RGB) and scikit-learn's two
  sample photographs, ``china`` and ``flower``. A choice between networks trained on
  different data is made on these (``aerestore cbsd68 <out>/val --model ...``, the
  benchmark's own noise protocol on other images), never on a benchmark's test images.

Point the pipeline at ``train/`` with ``-S data.source=folder -S data.path=<out>/train``
(its split then keeps a share of the tiles for the run's own validation). A JSON manifest
(``manifest.json``) lists every file's origin.

This is not BSD400 or DIV2K: 11 photographs (12 views: the motorcycle is a stereo pair), one
a stained micrograph and six grey (the camera man, the moon, coins, a clock, and the grass
and gravel textures); 199 tiles at the defaults. It is what is at hand without a download.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aerestore.data.images import encode_png, scan_folder  # noqa: E402
from aerestore.data.presets import SAMPLE_PHOTOS  # noqa: E402
from aerestore.data.tiles import is_flat, load_sample_photo, sample_tiles  # noqa: E402

HELD_OUT_SKIMAGE = ("chelsea", "brick")
HELD_OUT_SKLEARN = ("china.jpg", "flower.jpg")
# Left out of train/ by default: not scenes, and mostly black or smooth at full resolution
# (the retina's surround and the telescope's sky would be 45 % of the tiles).
NOT_SCENES = ("retina", "hubble_deep_field", "cell")


def _sklearn_photos() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_images  # deferred: heavy import

    bunch = load_sample_images()
    return {Path(f).name: np.ascontiguousarray(img) for f, img in zip(bunch.filenames, bunch.images)}


def build(
    out: Path, size: int = 128, factors: tuple[int, ...] = (1, 2), faces: Path | None = None,
    photos: tuple[str, ...] | None = None,
) -> dict:
    """Write ``out/train`` and ``out/val`` (see the module docstring); return the manifest.
    ``photos`` names the training photographs (in :data:`SAMPLE_PHOTOS`; default: all but
    the held-out ones and :data:`NOT_SCENES`)."""
    keep = [p for p in SAMPLE_PHOTOS if p.name not in HELD_OUT_SKIMAGE
            and (p.name in photos if photos is not None else p.name not in NOT_SCENES)]
    if photos is not None and len(keep) != len(photos):
        known = sorted(p.name for p in SAMPLE_PHOTOS if p.name not in HELD_OUT_SKIMAGE)
        raise ValueError(f"--photos: unknown or held-out names in {photos}; known: {known}")
    face_files = scan_folder(faces)[0] if faces is not None else []
    if faces is not None and not face_files:
        raise FileNotFoundError(f"--faces {faces}: no images in this folder")
    train, val = out / "train", out / "val"
    for d in (train, val):
        if d.exists() and any(d.iterdir()):
            raise FileExistsError(f"{d} is not empty: choose a new output folder")
        d.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"size": size, "factors": list(factors), "train": {}, "val": {}, "flat_dropped": 0}
    for i, tile in enumerate(sample_tiles(size, keep, factors)):
        if is_flat(tile.pixels):
            manifest["flat_dropped"] += 1
            continue
        name = f"tile_{i:05d}.png"
        (train / name).write_bytes(encode_png(tile.pixels))
        manifest["train"][name] = tile.origin
    for f in face_files:
        name = "face_" + f.relative_to(faces).as_posix().replace("/", "_")
        shutil.copyfile(f, train / name)
        manifest["train"][name] = str(f)
    held = {f"{n}.png": (f"skimage.data.{n}",
                         load_sample_photo(next(p for p in SAMPLE_PHOTOS if p.name == n))[0])
            for n in HELD_OUT_SKIMAGE}
    held.update({n.replace(".jpg", ".png"): (f"sklearn.datasets.load_sample_images {n}", img)
                 for n, img in _sklearn_photos().items() if n in HELD_OUT_SKLEARN})
    for name, (origin, img) in held.items():
        (val / name).write_bytes(encode_png(img))
        manifest["val"][name] = origin
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--faces", type=Path, default=None, help="also copy this folder's images into train/")
    ap.add_argument("--photos", nargs="+", default=None, help="only these training photographs")
    a = ap.parse_args(argv)
    try:
        m = build(a.out, a.size, tuple(a.factors), a.faces, tuple(a.photos) if a.photos else None)
    except (ValueError, OSError) as exc:  # bad names, an empty faces folder, a used output
        print(f"natural_tiles: {exc}", file=sys.stderr)
        return 2
    tiles = sum(1 for n in m["train"] if n.startswith("tile_"))
    print(f"{a.out}/train: {len(m['train'])} images ({tiles} tiles of {a.size} px at factors "
          f"{a.factors}, {m['flat_dropped']} flat tiles dropped); {a.out}/val: {sorted(m['val'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
