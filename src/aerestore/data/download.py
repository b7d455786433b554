"""The ``download`` stage: gather images from a source, check them, split them.

:func:`run_download` turns ``data`` (``params.yaml``'s ``data`` section) into::

    out_dir/images/<first 16 hex of the file's sha256><ext>   kept images
    out_dir/manifest.csv    file,split,width,height,sha256   (file relative to out_dir)
    out_dir/origins.csv     file,origin   where each kept image came from

and a metrics JSON (counts found, kept, per split, duplicates, skipped per reason, and
every skipped file). The output is built in a temporary folder beside ``out_dir`` and
renamed onto it only when complete; on any error ``out_dir`` is left as it was.

Sources (``data.source``):

* ``sample``: tiles cut from photographs shipped inside scikit-image (offline).
* ``folder``: every image file under ``data.path``.
* ``url``: an archive or one image at ``data.url``, checked against ``data.sha256``.
* ``lfw``, ``mnist``, ``celeba``: presets with official addresses and checksums
  (:mod:`aerestore.data.presets`); each also takes a local copy as ``data.path``.

Order, limit and split
----------------------
Files are examined in sorted relative-path order; of duplicates (same file bytes, or
same decoded mode, size and pixels) the first in that order is kept. ``data.limit = N``
then keeps the N images with the smallest content sha256: a subset spread over the
whole source (not its first folder), and stable, since adding an image changes the
subset only if its hash is among the N smallest. The split is assigned per *group*
(one image, or one region of a sample photograph) by hashing, see :func:`assign_splits`.

The sample source and leakage
-----------------------------
Sample tiles never overlap: at each scale the photograph is cut into a grid with a
stride equal to the tile size. The split unit is a ~256 px square region of the
photograph (:func:`aerestore.data.images.region_side`), which holds every tile of both
scales whose footprint falls in it, so a val or test tile shares no source pixel with
any train tile. For the stereo pair the unit is a whole row band over both views.
Tiles of one photograph still land in different splits (neighbouring regions of the
same scene): the split tests restoration of unseen pixels, not of unseen photographs.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import requests
import urllib3
from filelock import FileLock
from tqdm import tqdm

from aerestore.data import archive as archive_mod
from aerestore.data import images as img_mod
from aerestore.data.layout import SPLITS
from aerestore.data.presets import PRESETS, Preset, RemoteFile
from aerestore.io import write_json
from aerestore.params import DataParams

MANIFEST_COLUMNS = ("file", "split", "width", "height", "sha256")

# Network settings, read at call time (tests shorten them).
RETRIES = 4  # attempts per URL
BACKOFF_S = 1.0  # wait before retry i (0-based): BACKOFF_S * 2**i
TIMEOUT_S = 30.0  # connect and read timeout
# Longest list of files printed in a warning (metrics hold all of them).
WARN_LIST_MAX = 50


class DownloadError(RuntimeError):
    """A file could not be fetched."""


class ChecksumError(ValueError):
    """A file's checksum differs from the expected one; the message has both."""


class NoUsableImagesError(ValueError):
    """Every image of the source was skipped; the message has the counts per reason."""


class SkippedFilesWarning(UserWarning):
    """Some files were skipped (listed in the message and in the metrics)."""


# ----------------------------------------------------------------------- checksums
def file_digest(path: str | Path, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file with any ``hashlib`` algorithm, read in 1 MiB chunks."""
    try:
        h = hashlib.new(algo)
    except ValueError:
        raise ValueError(f"unknown checksum algorithm {algo!r}") from None
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: str | Path, algo: str, expected: str) -> str:
    """Check ``path``'s ``algo`` digest against ``expected``; return it.

    Raises :class:`ChecksumError` naming the file, the algorithm and both sums. The
    file is not touched (the caller decides whether to delete it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    actual = file_digest(path, algo)
    if actual.lower() != expected.lower():
        raise ChecksumError(f"{path}: {algo} mismatch: expected {expected.lower()}, got {actual}")
    return actual


# ------------------------------------------------------------------------ fetching
class _Retry(Exception):
    pass


def cache_name(url: str, checksum: str) -> str:
    """Cache file name: checksum prefix + the URL's last path component."""
    base = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    return f"{checksum.lower()[:12]}-{base}"


def fetch(
    url: str,
    dest: str | Path,
    algo: str,
    expected: str,
    *,
    retries: int | None = None,
    backoff: float | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` and verify it; return ``dest``.

    * A file already at ``dest`` with the right checksum is reused without network;
      one with another checksum is replaced.
    * The body streams to ``dest.part`` with a progress bar. A dropped connection or
      a timeout, an incomplete body or an HTTP 408/429/5xx is retried up to ``retries``
      attempts, waiting ``backoff * 2**i`` seconds; a retry asks for the rest with an
      HTTP ``Range`` header and appends if the server answers 206 from the right offset,
      else it starts over.
    * The finished file is verified; on a mismatch it is deleted and
      :class:`ChecksumError` names both sums. Only then is it renamed to ``dest``.
    * Other HTTP errors (404, 403, ...) fail at once with :class:`DownloadError`.
    """
    retries = max(1, RETRIES if retries is None else retries)
    backoff = BACKOFF_S if backoff is None else backoff
    timeout = TIMEOUT_S if timeout is None else timeout
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with FileLock(str(dest) + ".lock"):
        if dest.exists():
            if file_digest(dest, algo) == expected.lower():
                return dest
            warnings.warn(
                f"{dest}: cached file has the wrong {algo} checksum; downloading again",
                stacklevel=2,
            )
            dest.unlink()
        last: BaseException | None = None
        for attempt in range(retries):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            try:
                _fetch_once(url, part, timeout, progress)
                last = None
                break
            except DownloadError:
                raise
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError,
                _Retry,
            ) as exc:
                last = exc
        if last is not None:
            raise DownloadError(
                f"could not download {url} after {retries} attempt(s): {last}. "
                f"Without network access, copy the file to {dest}, or set data.path to a "
                f"local copy (it is checked against the same {algo} checksum)."
            ) from last
        actual = file_digest(part, algo)
        if actual != expected.lower():
            part.unlink()
            raise ChecksumError(
                f"{url}: {algo} mismatch: expected {expected.lower()}, got {actual}; "
                "the download was deleted"
            )
        os.replace(part, dest)
    return dest


def _fetch_once(url: str, part: Path, timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416 and have:  # nothing after `have`: the part may be whole
            size = r.headers.get("Content-Range", "").rpartition("/")[2]
            if size.isdigit() and int(size) == have:
                return
            part.unlink()
            raise _Retry(f"HTTP 416 for a range from byte {have}; starting over")
        if r.status_code in (408, 429) or r.status_code >= 500:
            raise _Retry(f"HTTP {r.status_code} {r.reason}")
        if r.status_code not in (200, 206):
            raise DownloadError(f"could not download {url}: HTTP {r.status_code} {r.reason}")
        mode = "wb"
        if r.status_code == 206 and have:
            start = r.headers.get("Content-Range", "").removeprefix("bytes ").split("-", 1)[0]
            if start.isdigit() and int(start) == have:
                mode = "ab"
        if mode == "wb":
            have = 0
        length = r.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        with (
            open(part, mode) as fh,
            tqdm(
                total=total,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=f"download {part.name.removesuffix('.part')}",
                disable=not progress,
            ) as bar,
        ):
            # raw bytes as sent: no transparent gunzip of a .tgz served with gzip encoding
            for chunk in r.raw.stream(1 << 20, decode_content=False):
                fh.write(chunk)
                bar.update(len(chunk))
        got = part.stat().st_size
        if total is not None and got < total:
            raise _Retry(f"connection closed after {got:,} of {total:,} bytes")


def fetch_any(
    urls: Sequence[str], cache_dir: Path, algo: str, expected: str, filename: str, progress: bool
) -> Path:
    """:func:`fetch` from the first mirror that works (all share one cache file)."""
    dest = Path(cache_dir) / cache_name(filename, expected)
    errors = []
    for url in urls:
        try:
            return fetch(url, dest, algo, expected, progress=progress)
        except DownloadError as exc:
            errors.append(str(exc))
    raise DownloadError("\n".join(errors))


# -------------------------------------------------------------------------- splits
def split_u(seed: int, key: str) -> float:
    """``u = int(first 16 hex of sha256("aerestore-split:{seed}:{key}"), 16) / 2**64``,
    uniform in [0, 1) and independent across keys and seeds."""
    d = hashlib.sha256(f"aerestore-split:{seed}:{key}".encode()).digest()
    return int.from_bytes(d[:8], "big") / 2.0**64


def split_of(u: float, shares: Mapping[str, float]) -> str:
    """``train`` if u < s_train, ``val`` if u < s_train + s_val, else ``test``."""
    edge = 0.0
    for name in SPLITS[:-1]:
        edge += shares[name]
        if u < edge:
            return name
    return SPLITS[-1]


def assign_splits(keys: Sequence[str], shares: Mapping[str, float], seed: int) -> dict[str, str]:
    """Split of each distinct key (a group of images), by hashing.

    Each key goes to :func:`split_of` (:func:`split_u` (seed, key)), so its split does not
    depend on the other keys: adding or removing images leaves the others where they
    were, and a new seed draws a new split. One correction depends on the others, and
    only when it must: if a split with a share > 0 got no key, the key whose ``u`` is
    nearest to that split's interval is moved there, taken from a split that keeps at
    least one key (repeated until every such split has one, when there are enough keys).
    """
    keys = sorted(set(keys))
    us = {k: split_u(seed, k) for k in keys}
    out = {k: split_of(us[k], shares) for k in keys}
    bounds: dict[str, tuple[float, float]] = {}
    edge = 0.0
    for name in SPLITS:
        bounds[name] = (edge, edge + shares[name])
        edge += shares[name]
    for name in SPLITS:
        if shares[name] <= 0 or name in out.values():
            continue
        counts = {s: sum(1 for v in out.values() if v == s) for s in SPLITS}
        lo, hi = bounds[name]
        donors = [k for k in keys if counts[out[k]] > 1]
        if not donors:
            break  # fewer keys than splits
        best = min(donors, key=lambda k: (max(lo - us[k], us[k] - hi, 0.0), k))
        out[best] = name
    return out


# ------------------------------------------------------------------------- output
@dataclass
class _Item:
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
class _Stats:
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


def _dedupe(items: Iterable[tuple[_Item, str]], stats: _Stats) -> list[_Item]:
    """Drop items whose bytes or pixels were seen before (pairs of item, pixel digest)."""
    by_sha: dict[str, str] = {}
    by_pix: dict[str, str] = {}
    kept: list[_Item] = []
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


def _warn_skipped(stats: _Stats) -> None:
    n = len(stats.skipped_files)
    if not n:
        return
    counts = ", ".join(f"{v} {k}" for k, v in stats.skipped.items() if v)
    lines = [
        f"  {s['file']}: {s['reason']} ({s['detail']})" for s in stats.skipped_files[:WARN_LIST_MAX]
    ]
    if n > WARN_LIST_MAX:
        lines.append(f"  ... and {n - WARN_LIST_MAX} more (all are listed in the metrics)")
    warnings.warn(
        f"download: skipped {n} of {stats.found} image file(s) from {stats.location} "
        f"({counts}):\n" + "\n".join(lines),
        SkippedFilesWarning,
        stacklevel=3,
    )


# ------------------------------------------------------------------- file sources
def _check_files(
    root: Path,
    files: list[Path],
    stats: _Stats,
    max_pixels: int,
    *,
    move: bool,
    prefix: str,
    progress: bool,
) -> list[_Item]:
    stats.found += len(files)
    checks = img_mod.check_images(files, max_pixels, progress=progress, desc="check images")
    pairs = []
    for path, c in zip(files, checks, strict=True):
        origin = prefix + path.relative_to(root).as_posix()
        if not c.ok:
            stats.skip(origin, c.reason or "corrupt", c.detail)
            continue
        assert c.size is not None
        it = _Item(
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
    root: Path, stats: _Stats, max_pixels: int, *, move: bool, prefix: str, progress: bool
) -> list[_Item]:
    files, others = img_mod.scan_folder(root)
    stats.ignored_other_files += len(others)
    return _check_files(root, files, stats, max_pixels, move=move, prefix=prefix, progress=progress)


def _from_file_or_archive(
    path: Path, display: str, work: Path, stats: _Stats, max_pixels: int, progress: bool
) -> list[_Item]:
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
    stats: _Stats,
    *,
    drop_flat: bool,
    progress: bool,
    desc: str,
) -> list[_Item]:
    """PNG-encode ``(pixels, origin, group)`` images; drop flat ones (if asked) and duplicates.

    An empty ``group`` means the image is its own split unit (keyed by its sha256).
    """
    kept = []
    for pixels, origin, group in arrays:
        stats.found += 1
        if drop_flat and img_mod.is_flat(pixels):
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
            it = _Item(
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


def _sample(data: DataParams, stats: _Stats, progress: bool) -> list[_Item]:
    tiles = ((t.pixels, t.origin, t.group) for t in img_mod.sample_tiles(data.image_size))
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
        digits = img_mod.decode_idx(path)
        if digits.ndim != 3 or digits.dtype != np.uint8:
            raise ValueError(
                f"{path}: expected uint8 images (n, rows, cols), got {digits.dtype} {digits.shape}"
            )
        out.append((name, digits))
    return out


# ------------------------------------------------------------------------ stage
def _collect(
    data: DataParams, work: Path, cache_dir: Path, progress: bool
) -> tuple[list[_Item], _Stats]:
    src = data.source
    if src == "sample":
        stats = _Stats(src, f"scikit-image sample photographs cut into {data.image_size} px tiles")
        return _sample(data, stats, progress), stats
    if src == "folder":
        assert data.path is not None
        root = Path(data.path)
        if not root.is_dir():
            raise NotADirectoryError(f"data.path = {data.path!r}: no such folder (source: folder)")
        stats = _Stats(src, str(root))
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
        stats = _Stats(src, data.url)
        return _from_file_or_archive(path, data.url, work, stats, data.max_pixels, progress), stats
    if src in ("lfw", "celeba"):
        preset = PRESETS[src]
        path = _preset_archive(preset, data, cache_dir, progress)
        stats = _Stats(src, str(path))
        return _from_file_or_archive(path, str(path), work, stats, data.max_pixels, progress), stats
    if src == "mnist":
        files, where = _mnist(data, cache_dir, progress)
        stats = _Stats(src, where)
        digits = (
            (d[i], f"{name}[{i}]", "") for name, d in _mnist_digits(files) for i in range(len(d))
        )
        return _from_arrays(
            digits, stats, drop_flat=False, progress=progress, desc="encode MNIST digits"
        ), stats
    raise ValueError(f"data.source: unknown source {src!r}")


def _limit(items: list[_Item], limit: int, stats: _Stats) -> list[_Item]:
    """Keep the ``limit`` items with the smallest sha256 (all when ``limit`` is 0)."""
    if limit <= 0 or len(items) <= limit:
        return items
    keep = sorted(items, key=lambda it: it.sha256)[:limit]
    stats.limited = len(items) - limit
    return keep


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _write_output(
    build: Path, items: list[_Item], splits: dict[str, str], progress: bool
) -> list[tuple]:
    images = build / "images"
    images.mkdir()
    rows = []
    for it in tqdm(items, desc="write images", unit="img", disable=not progress, leave=False):
        target = build / it.file
        if target.exists():  # two different files with the same 64-bit prefix
            raise RuntimeError(f"{it.origin}: name {it.file} already taken (hash prefix collision)")
        if it.data is not None:
            target.write_bytes(it.data)
        elif it.move:
            assert it.src is not None
            os.replace(it.src, target)
        else:
            assert it.src is not None
            _copy_verified(it.src, target, it.sha256)
        rows.append((it.file, splits[it.group], it.width, it.height, it.sha256, it.origin))
    order = {s: i for i, s in enumerate(SPLITS)}
    rows.sort(key=lambda r: (order[r[1]], r[0]))
    _write_csv(build / "manifest.csv", MANIFEST_COLUMNS, [r[:5] for r in rows])
    _write_csv(build / "origins.csv", ("file", "origin"), sorted((r[0], r[5]) for r in rows))
    return rows


def _copy_verified(src: Path, dst: Path, sha256: str) -> None:
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while block := fi.read(1 << 20):
            h.update(block)
            fo.write(block)
    if h.hexdigest() != sha256:
        raise RuntimeError(f"{src}: the file changed while it was being read; run again")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _replace_dir(build: Path, out_dir: Path) -> None:
    """Rename ``build`` onto ``out_dir``; an old ``out_dir`` is removed only after."""
    if not (out_dir.exists() or out_dir.is_symlink()):
        os.replace(build, out_dir)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
    os.replace(out_dir, trash / "old")
    try:
        os.replace(build, out_dir)
    except BaseException:
        os.replace(trash / "old", out_dir)
        shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def run_download(
    data: DataParams,
    seed: int,
    out_dir: Path,
    metrics_path: Path,
    cache_dir: Path = Path("data/downloads"),
    progress: bool = True,
) -> dict:
    """Gather, check, de-duplicate, limit and split the images of ``data.source``.

    Writes ``out_dir`` (see the module docstring) and ``metrics_path``; returns the
    metrics dict. Raises :class:`NoUsableImagesError` when nothing usable remains,
    and leaves ``out_dir`` untouched on any error.
    """
    out_dir, metrics_path, cache_dir = Path(out_dir), Path(metrics_path), Path(cache_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        build.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; out_dir gets the usual mode
        items, stats = _collect(data, build / "work", cache_dir, progress)
        _warn_skipped(stats)
        if not items:
            reasons = ", ".join(f"{k} {v}" for k, v in stats.skipped.items())
            raise NoUsableImagesError(
                f"no usable image in source {data.source!r} ({stats.location}): "
                f"{stats.found} found; skipped: {reasons}; {stats.duplicates} duplicates"
                + (f"; {stats.flat} flat tiles" if stats.flat else "")
                + (
                    f"; {stats.ignored_other_files} other files ignored (extensions "
                    f"{', '.join(img_mod.IMAGE_EXTENSIONS)} are read)"
                    if stats.ignored_other_files
                    else ""
                )
            )
        items = _limit(items, data.limit, stats)
        shares = {s: getattr(data.split, s) for s in SPLITS}
        splits = assign_splits([it.group for it in items], shares, seed)
        rows = _write_output(build, items, splits, progress)
        shutil.rmtree(build / "work", ignore_errors=True)
        counts = {s: sum(1 for r in rows if r[1] == s) for s in SPLITS}
        empty = [s for s in SPLITS if shares[s] > 0 and counts[s] == 0]
        if empty:
            warnings.warn(
                f"download: {len(rows)} image(s) in {len(splits)} split group(s) "
                f"cannot fill every split: {', '.join(empty)} got none",
                stacklevel=2,
            )
        _replace_dir(build, out_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    metrics = {
        "source": data.source,
        "location": stats.location,
        "found": stats.found,
        "kept": len(rows),
        "splits": counts,
        "groups": len(set(splits)),
        "duplicates": stats.duplicates,
        "skipped": dict(stats.skipped),
        "skipped_total": sum(stats.skipped.values()),
        "flat": stats.flat,
        "limited": stats.limited,
        "ignored_other_files": stats.ignored_other_files,
        "skipped_files": stats.skipped_files,
        "duplicate_files": stats.duplicate_files,
    }
    write_json(metrics_path, metrics)
    return metrics


# ------------------------------------------------------------------------ reading
def load_manifest(out_dir: str | Path) -> list[dict]:
    """Rows of ``out_dir/manifest.csv`` as dicts (width and height as int), file order.

    Raises ``ValueError`` naming the file and line for a wrong header, a bad split
    name or a non-integer size, and ``FileNotFoundError`` for a missing manifest.
    """
    path = Path(out_dir) / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (run the download stage first)")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != MANIFEST_COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames} != {list(MANIFEST_COLUMNS)}")
        rows = []
        for line, r in enumerate(reader, start=2):
            if r["split"] not in SPLITS:
                raise ValueError(f"{path}:{line}: split {r['split']!r} is not one of {SPLITS}")
            try:
                r["width"], r["height"] = int(r["width"]), int(r["height"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: width/height not integers: {r}") from None
            rows.append(dict(r))
    return rows
