"""The images of a source, checked and de-duplicated, before the split: the ``download``
stage's reading side (:mod:`aerestore.data.download` documents the sources and the order).

:func:`collect` reads ``data.source`` (a folder, an archive or image at a URL or a local copy,
a preset, the sample photographs, MNIST's digit files) into :class:`Item` records (what to
write, from where, and the split group) and the counts of what was found, skipped or dropped
as a duplicate (:class:`Stats`, the download metrics)."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from aerestore.data import archive as archive_mod
from aerestore.data import images as img_mod
from aerestore.data import tiles as tiles_mod
from aerestore.data.idx import decode_idx
from aerestore.data.fetch import DownloadError, cache_name, fetch, fetch_any, verify
from aerestore.data.presets import PRESETS, Preset, RemoteFile
from aerestore.params import DataParams

__all__ = ["Item", "Stats", "collect"]


@dataclass
class Item:
    """One image that passed the checks, before the split."""

    origin: str  # source path, archive member or photo coordinates
    group: str  # split unit
    sha256: str  # of the bytes written to images/
    ext: str
    width: int
    height: int
    src: Path | None = None  # file to copy (or move) into images/
    move: bool = False  # src sits in our own extraction folder
    data: bytes | None = None  # encoded PNG (generated images)

    @property
    def file(self) -> str:
        return f"images/{self.sha256[:16]}{self.ext}"


@dataclass
class Stats:
    source: str
    location: str
    found: int = 0
    ignored_other_files: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: {r: 0 for r in img_mod.SKIP_REASONS})
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    duplicates: int = 0
    duplicate_files: list[dict[str, str]] = field(default_factory=list)
    flat: int = 0
    limited: int = 0

    def skip(self, origin: str, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        self.skipped_files.append({"file": origin, "reason": reason, "detail": detail})

    def duplicate(self, origin: str, same_as: str) -> None:
        self.duplicates += 1
        self.duplicate_files.append({"file": origin, "same_as": same_as})


def _dedupe(items: Iterable[tuple[Item, str]], stats: Stats) -> list[Item]:
    """Drop items whose bytes or pixels were seen before (pairs of item, pixel digest)."""
    by_sha: dict[str, str] = {}
    by_pix: dict[str, str] = {}
    kept: list[Item] = []
    for it, pix in items:
        first = by_sha.get(it.sha256) or (by_pix.get(pix) if pix else None)
        if first is not None:
            stats.duplicate(it.origin, first)
            continue
        by_sha[it.sha256] = it.origin
        if pix:
            by_pix[pix] = it.origin
        kept.append(it)
    return kept


# ------------------------------------------------------------------- file sources
def _check_files(
    root: Path,
    files: list[Path],
    stats: Stats,
    max_pixels: int,
    *,
    move: bool,
    prefix: str,
    progress: bool,
) -> list[Item]:
    stats.found += len(files)
    checks = img_mod.check_images(files, max_pixels, progress=progress, desc="check images")
    pairs = []
    for path, c in zip(files, checks, strict=True):
        origin = prefix + path.relative_to(root).as_posix()
        if not c.ok:
            stats.skip(origin, c.reason or "corrupt", c.detail)
            continue
        assert c.size is not None
        it = Item(
            origin=origin,
            group=c.sha256,
            sha256=c.sha256,
            ext=path.suffix.lower(),
            width=c.size[0],
            height=c.size[1],
            src=path,
            move=move,
        )
        pairs.append((it, c.pixel_sha256))
    return _dedupe(pairs, stats)


def _from_folder(
    root: Path, stats: Stats, max_pixels: int, *, move: bool, prefix: str, progress: bool
) -> list[Item]:
    files, others = img_mod.scan_folder(root)
    stats.ignored_other_files += len(others)
    return _check_files(root, files, stats, max_pixels, move=move, prefix=prefix, progress=progress)


def _from_file_or_archive(
    path: Path, display: str, work: Path, stats: Stats, max_pixels: int, progress: bool
) -> list[Item]:
    """Images of an archive (extracted safely under ``work``) or of a single image file."""
    if path.suffix.lower() in img_mod.IMAGE_EXTENSIONS:
        return _check_files(
            path.parent, [path], stats, max_pixels, move=False, prefix="", progress=False
        )
    if archive_mod.archive_format(path) is None:
        raise ValueError(
            f"{display}: neither an archive (.zip, .tar, .tar.gz, .tgz) nor an image file "
            f"({', '.join(img_mod.IMAGE_EXTENSIONS)})"
        )
    extract = work / "extract"
    archive_mod.safe_extract(path, extract, progress=progress)
    return _from_folder(
        extract, stats, max_pixels, move=True, prefix=f"{path.name}:", progress=progress
    )


def _local_copy(data: DataParams, algo: str, expected: str, what: str) -> Path:
    """``data.path`` as a local copy of ``what``, verified with ``algo``."""
    assert data.path is not None
    path = Path(data.path)
    if path.is_dir():
        raise ValueError(
            f"data.path = {data.path!r} is a folder; source {data.source!r} needs the file "
            f"{what} (for a folder of images use source: folder)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"data.path = {data.path!r}: no such file (expected {what})")
    verify(path, algo, expected)
    return path


def _preset_archive(preset: Preset, data: DataParams, cache_dir: Path, progress: bool) -> Path:
    rf = preset.files[0]
    if data.path:
        return _local_copy(data, rf.algo, rf.checksum, rf.filename)
    if not rf.urls:
        raise ValueError(f"source {preset.name!r} needs data.path: a local copy of {rf.filename}")
    return _fetch_preset_file(preset, rf, cache_dir, progress)


def _fetch_preset_file(preset: Preset, rf: RemoteFile, cache_dir: Path, progress: bool) -> Path:
    try:
        return fetch_any(rf.urls, cache_dir, rf.algo, rf.checksum, rf.filename, progress)
    except DownloadError as exc:
        where = "a folder holding it" if preset.kind == "idx" else "it"
        raise DownloadError(
            f"source {preset.name!r}: could not download {rf.filename}:\n{exc}\n"
            f"With no network: download {rf.filename} elsewhere and set data.path to {where} "
            f"({rf.algo} {rf.checksum} is checked)."
        ) from exc


# -------------------------------------------------------------- generated sources
def _from_arrays(
    arrays: Iterable[tuple[np.ndarray, str, str]],
    stats: Stats,
    *,
    drop_flat: bool,
    progress: bool,
    desc: str,
) -> list[Item]:
    """PNG-encode ``(pixels, origin, group)`` images; drop flat ones (if asked) and duplicates.

    An empty ``group`` means the image is its own split unit (keyed by its sha256).
    """
    kept = []
    for pixels, origin, group in arrays:
        stats.found += 1
        if drop_flat and tiles_mod.is_flat(pixels):
            stats.flat += 1
            continue
        kept.append((pixels, origin, group))
    pairs = []
    # PNG encoding dominates; Pillow's encoder releases the GIL, so threads help.
    with (
        ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,
        tqdm(total=len(kept), desc=desc, unit="img", disable=not progress, leave=False) as bar,
    ):
        pngs = pool.map(img_mod.encode_png, (k[0] for k in kept), chunksize=64)
        for (pixels, origin, group), png in zip(kept, pngs, strict=True):
            sha = hashlib.sha256(png).hexdigest()
            h, w = pixels.shape[:2]
            it = Item(
                origin=origin,
                group=group or sha,
                sha256=sha,
                ext=".png",
                width=w,
                height=h,
                data=png,
            )
            pairs.append((it, ""))
            bar.update()
    # Same pixels give the same PNG bytes (same encoder), so the byte hash finds them.
    return _dedupe(pairs, stats)


def _sample(data: DataParams, stats: Stats, progress: bool) -> list[Item]:
    tiles = ((t.pixels, t.origin, t.group) for t in tiles_mod.sample_tiles(data.image_size))
    return _from_arrays(tiles, stats, drop_flat=True, progress=progress, desc="cut sample tiles")


def _mnist(data: DataParams, cache_dir: Path, progress: bool) -> tuple[list[tuple[str, Path]], str]:
    preset = PRESETS["mnist"]
    files = []
    if data.path:
        folder = Path(data.path)
        if not folder.is_dir():
            raise NotADirectoryError(
                f"data.path = {data.path!r}: source 'mnist' needs a folder holding "
                + ", ".join(rf.filename for rf in preset.files)
            )
        for rf in preset.files:
            p = folder / rf.filename
            if not p.is_file():
                raise FileNotFoundError(f"data.path = {data.path!r}: {rf.filename} is missing")
            verify(p, rf.algo, rf.checksum)
            files.append((rf.filename, p))
        return files, str(folder)
    for rf in preset.files:
        files.append((rf.filename, _fetch_preset_file(preset, rf, cache_dir, progress)))
    return files, ", ".join(rf.urls[0] for rf in preset.files)


def _mnist_digits(files: list[tuple[str, Path]]) -> list[tuple[str, np.ndarray]]:
    """``[(file name, digits (n, rows, cols) uint8)]`` of MNIST's image files."""
    out = []
    for name, path in files:
        digits = decode_idx(path)
        if digits.ndim != 3 or digits.dtype != np.uint8:
            raise ValueError(
                f"{path}: expected uint8 images (n, rows, cols), got {digits.dtype} {digits.shape}"
            )
        out.append((name, digits))
    return out


def collect(
    data: DataParams, work: Path, cache_dir: Path, progress: bool
) -> tuple[list[Item], Stats]:
    src = data.source
    if src == "sample":
        stats = Stats(src, f"scikit-image sample photographs cut into {data.image_size} px tiles")
        return _sample(data, stats, progress), stats
    if src == "folder":
        assert data.path is not None
        root = Path(data.path)
        if not root.is_dir():
            raise NotADirectoryError(f"data.path = {data.path!r}: no such folder (source: folder)")
        stats = Stats(src, str(root))
        return _from_folder(
            root, stats, data.max_pixels, move=False, prefix="", progress=progress
        ), stats
    if src == "url":
        assert data.url is not None and data.sha256 is not None
        if data.path:
            path = _local_copy(data, "sha256", data.sha256, f"a local copy of {data.url}")
        else:
            dest = Path(cache_dir) / cache_name(data.url, data.sha256)
            path = fetch(data.url, dest, "sha256", data.sha256, progress=progress)
        stats = Stats(src, data.url)
        return _from_file_or_archive(path, data.url, work, stats, data.max_pixels, progress), stats
    if src in ("lfw", "celeba"):
        preset = PRESETS[src]
        path = _preset_archive(preset, data, cache_dir, progress)
        stats = Stats(src, str(path))
        return _from_file_or_archive(path, str(path), work, stats, data.max_pixels, progress), stats
    if src == "mnist":
        files, where = _mnist(data, cache_dir, progress)
        stats = Stats(src, where)
        digits = (
            (d[i], f"{name}[{i}]", "") for name, d in _mnist_digits(files) for i in range(len(d))
        )
        return _from_arrays(
            digits, stats, drop_flat=False, progress=progress, desc="encode MNIST digits"
        ), stats
    raise ValueError(f"data.source: unknown source {src!r}")
