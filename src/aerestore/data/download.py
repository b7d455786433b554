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
photograph (:func:`aerestore.data.tiles.region_side`), which holds every tile of both
scales whose footprint falls in it, so a val or test tile shares no source pixel with
any train tile. For the stereo pair the unit is a whole row band over both views.
Tiles of one photograph still land in different splits (neighbouring regions of the
same scene): the split tests restoration of unseen pixels, not of unseen photographs.

The sources are read, checked and de-duplicated by :mod:`aerestore.data.sources`; files are
fetched and checked by :mod:`aerestore.data.fetch`.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tqdm import tqdm

from aerestore.data import images as img_mod
from aerestore.data.layout import SPLITS
from aerestore.data.sources import Item, Stats, collect
from aerestore.io import write_json
from aerestore.params import DataParams

MANIFEST_COLUMNS = ("file", "split", "width", "height", "sha256")

# Longest list of files printed in a warning (metrics hold all of them).
WARN_LIST_MAX = 50


class NoUsableImagesError(ValueError):
    """Every image of the source was skipped; the message has the counts per reason."""


class SkippedFilesWarning(UserWarning):
    """Some files were skipped (listed in the message and in the metrics)."""


def _warn_skipped(stats: Stats) -> None:
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
def _limit(items: list[Item], limit: int, stats: Stats) -> list[Item]:
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
    build: Path, items: list[Item], splits: dict[str, str], progress: bool
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
        items, stats = collect(data, build / "work", cache_dir, progress)
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
