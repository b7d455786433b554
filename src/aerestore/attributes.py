"""Image attributes (CelebA's ``list_attr_celeba.txt``) and latent attribute directions.

The attribute file (CelebA's format)::

    202599
    5_o_Clock_Shadow Arched_Eyebrows ... Young          (the attribute names)
    000001.jpg -1  1  1 -1 ...                          (+1 / -1 per attribute)

Prepared images are matched to it by file name: ``data/raw/origins.csv`` says where each
downloaded image came from (``000001.jpg`` or ``img_align_celeba/000001.jpg``: the base name
is looked up), ``data/raw/manifest.csv`` gives the order of a split's images, which
``prepare`` keeps (``1 + prepare.augment_copies`` consecutive rows per train image).

A direction is the mean latent code of the images with the attribute minus the mean code of
those without (the latent-vector arithmetic of White 2016, "Sampling generative networks",
section 2.3): decoding ``code + t * direction`` adds (t > 0) or removes (t < 0) the attribute.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from .explore import LatentCodec, grid, to_uint8


@dataclass
class Attributes:
    """The attribute names and each file's +1 / -1 values (int8 ``(len(names),)``)."""

    path: Path
    names: list[str]
    table: dict[str, np.ndarray]

    def labels(self, files: list[str], names: list[str]) -> np.ndarray:
        """``(len(files), len(names))`` booleans (the attribute is present) for the files'
        base names; a name not in the file or a file without a row is an error naming both."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise ValueError(f"{self.path}: no attribute(s) {unknown}; the file has {self.names}")
        cols = [self.names.index(n) for n in names]
        out = np.zeros((len(files), len(names)), bool)
        for i, f in enumerate(files):
            row = self.table.get(PurePosixPath(f).name)
            if row is None:
                raise ValueError(f"{self.path}: no row for image {f!r}")
            out[i] = row[cols] > 0
        return out


def read_attributes(path: str | Path) -> Attributes:
    """Parse an attribute file in CelebA's format; ``ValueError`` naming the file and the
    line for a malformed one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: attribute file not found (explore.attributes_file)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a line of attribute names")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise ValueError(f"{path}:1: expected the number of images, got {lines[0]!r}") from None
    names = lines[1].split()
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{path}:2: expected distinct attribute names, got {lines[1]!r}")
    table: dict[str, np.ndarray] = {}
    for n, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(names) + 1:
            raise ValueError(f"{path}:{n}: expected a file name and {len(names)} values, got {len(parts)} fields")
        try:
            values = np.array([int(v) for v in parts[1:]], np.int8)
        except ValueError:
            raise ValueError(f"{path}:{n}: values must be 1 or -1: {line!r}") from None
        if not np.isin(values, (-1, 1)).all():
            raise ValueError(f"{path}:{n}: values must be 1 or -1: {line!r}")
        table[parts[0]] = values
    if len(table) != count:
        raise ValueError(f"{path}: line 1 says {count} images, the file has {len(table)} rows")
    return Attributes(path, names, table)


def _csv_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (run the download stage first)")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}")
        return list(reader)


def prepared_origins(raw_dir: str | Path, split: str, rows: int) -> list[str]:
    """Where each of a prepared split's ``rows`` rows came from (the downloaded image's
    origin), in ``prepare``'s order."""
    raw_dir = Path(raw_dir)
    origin = {r["file"]: r["origin"] for r in _csv_rows(raw_dir / "origins.csv", ("file", "origin"))}
    files = [r["file"] for r in _csv_rows(raw_dir / "manifest.csv", ("file", "split")) if r["split"] == split]
    if not files or rows % len(files):
        raise ValueError(f"{raw_dir}/manifest.csv lists {len(files)} {split} images, the prepared split has "
                         f"{rows} rows: not a whole number of copies each (rerun download and prepare)")
    copies = rows // len(files)
    return [origin[f] for f in files for _ in range(copies)]


@torch.no_grad()
def directions(codec: LatentCodec, images: torch.Tensor, labels: np.ndarray) -> torch.Tensor:
    """Per attribute (column of boolean ``labels (N, K)``): mean code of the images with it
    minus the mean code of those without -> ``(K, P, D)``."""
    labels = np.asarray(labels, bool)
    if labels.ndim != 2 or len(labels) != len(images):
        raise ValueError(f"labels {labels.shape} do not match {len(images)} images")
    z = torch.cat([codec.encode(images[s : s + 256]) for s in range(0, len(images), 256)])
    out = []
    for k in range(labels.shape[1]):
        yes = torch.from_numpy(labels[:, k])
        if yes.all() or not yes.any():
            raise ValueError(f"attribute column {k}: {int(yes.sum())} of {len(yes)} images have it; "
                             "a direction needs images with and without it")
        out.append(z[yes].mean(0) - z[~yes].mean(0))
    return torch.stack(out)


def attribute_grid(codec: LatentCodec, images: torch.Tensor, direction: torch.Tensor,
                   scales: list[float]) -> np.ndarray:
    """One row per image: the image, then the decoded ``code + t * direction`` for each t
    in ``scales`` (t = 0: its reconstruction)."""
    z = codec.encode(images)
    frames = [to_uint8(codec.decode(z + t * direction, images.shape[-2:])) for t in scales]
    original = to_uint8(images)
    return grid([np.stack([original[i]] + [f[i] for f in frames]) for i in range(len(images))])
